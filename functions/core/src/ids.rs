//! Identifiers: validated slugs and sortable opaque ids.

use std::fmt;
use std::sync::Mutex;

/// A spell slug, valid by construction: `^[a-z0-9][a-z0-9-]{0,63}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slug(String);

impl Slug {
    /// Parses a slug, refusing anything outside the allowed alphabet and length.
    pub fn parse(raw: &str) -> Option<Slug> {
        let bytes = raw.as_bytes();
        let first_ok = bytes
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok = bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
        (first_ok && rest_ok && bytes.len() <= 64).then(|| Slug(raw.to_owned()))
    }

    /// The slug as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A new time-sortable id with a short prefix naming what it identifies (`run_`, `tx_`, ...).
/// Ids made by one process are strictly increasing, even within one millisecond.
pub fn new_id(prefix: &str) -> String {
    static GENERATOR: Mutex<ulid::Generator> = Mutex::new(ulid::Generator::new());
    let next = GENERATOR.lock().ok().and_then(|mut g| g.generate().ok());
    // The generator fails only if 2^80 ids are made in one millisecond; fall back to a random one.
    let id = match next {
        Some(id) => id,
        None => ulid::Ulid::new(),
    };
    format!("{prefix}_{}", id.to_string().to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_the_contract() {
        assert!(Slug::parse("hello-sigil").is_some());
        assert!(Slug::parse("a").is_some());
        assert!(Slug::parse(&"a".repeat(64)).is_some());
        assert!(Slug::parse(&"a".repeat(65)).is_none());
        assert!(Slug::parse("").is_none());
        assert!(Slug::parse("-lead").is_none());
        assert!(Slug::parse("Upper").is_none());
        assert!(Slug::parse("a/b").is_none());
        assert!(Slug::parse("a_b").is_none());
    }

    #[test]
    fn ids_sort_by_creation() {
        let ids: Vec<String> = (0..1000).map(|_| new_id("tx")).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "strictly increasing within a millisecond"
        );
        assert!(ids[0].starts_with("tx_"));
    }
}
