//! Identifiers: validated slugs and one type per kind of opaque id, so a run id cannot be passed
//! where a user id is expected.

use std::fmt;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// A spell slug, valid by construction: `^[a-z0-9][a-z0-9-]{0,63}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Slug(String);

impl TryFrom<String> for Slug {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Slug::parse(&raw).ok_or_else(|| format!("not a spell slug: {raw:?}"))
    }
}

impl From<Slug> for String {
    fn from(slug: Slug) -> String {
        slug.0
    }
}

impl PartialEq<str> for Slug {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Slug {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

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

/// The longest id accepted from outside. Ids become parts of store keys (DynamoDB refuses a
/// key over 2 KB, or an empty one), and none this product or an identity provider makes is longer.
pub const MAX_ID_LEN: usize = 128;

/// Whether `raw` has the shape of an id: 1 to [`MAX_ID_LEN`] visible ASCII characters (no space,
/// no control character). Ids made here are `prefix_` and a lowercase ULID; user ids come from an
/// identity provider (UUIDs, `auth0|…`).
pub fn is_id(raw: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic())
}

/// Declares an opaque id type: a string made by [`new_id`] with its own prefix, or received
/// from a store, a signed token or a client (which only ever looks it up).
macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The prefix of the ids this process makes.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh id, later than every one this process made before.
            #[allow(clippy::new_without_default)] // an id is made, never defaulted
            pub fn new() -> Self {
                $name(new_id($prefix))
            }

            /// An id received from a client (a path, a query, a token's claim): `None` unless
            /// it has the shape of an id, see [`is_id`].
            pub fn parse(raw: &str) -> Option<Self> {
                is_id(raw).then(|| $name(raw.to_owned()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        // Deserialized ids (request bodies, token claims, stored records) have the shape of one.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                if is_id(&raw) {
                    Ok($name(raw))
                } else {
                    Err(serde::de::Error::custom(format!(
                        "not an id: 1 to {MAX_ID_LEN} visible ASCII characters expected"
                    )))
                }
            }
        }

        // Ids are opaque: text from this process's own stores and tests converts as it is (an
        // unknown id simply finds nothing); text from a client goes through `parse`.
        impl From<String> for $name {
            fn from(raw: String) -> Self {
                $name(raw)
            }
        }

        impl From<&str> for $name {
            fn from(raw: &str) -> Self {
                $name(raw.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

opaque_id!(
    /// A run (`run_…`).
    RunId,
    "run"
);
opaque_id!(
    /// A user: the subject of a session token (`user_…` for demo users, anything an identity
    /// provider issues otherwise).
    UserId,
    "user"
);
opaque_id!(
    /// An invoice: the `jti` of its token (`inv_…`).
    InvoiceId,
    "inv"
);
opaque_id!(
    /// A ledger transaction (`tx_…`); a run's debit is its `creditTxId`.
    CreditTxId,
    "tx"
);

opaque_id!(
    /// A file a user uploaded for a cast's input (`upl_…`).
    UploadId,
    "upl"
);

opaque_id!(
    /// A shared run's public id (`sh_…`): made by [`ShareId::unguessable`], since whoever knows
    /// it sees the run.
    ShareId,
    "sh"
);

impl ShareId {
    /// A new share id of 128 random bits (not time-ordered: one share says nothing of another).
    pub fn unguessable() -> ShareId {
        ShareId(format!("sh_{:032x}", rand::random::<u128>()))
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
    fn typed_ids_carry_their_prefix_and_serialize_as_text() {
        let run = RunId::new();
        assert!(run.as_str().starts_with("run_"));
        assert_eq!(serde_json::to_string(&run).unwrap(), format!("\"{run}\""));
        let back: RunId = serde_json::from_str(&format!("\"{run}\"")).unwrap();
        assert_eq!(back, run);
        assert!(UserId::new().as_str().starts_with("user_"));
        assert!(InvoiceId::new().as_str().starts_with("inv_"));
        assert!(CreditTxId::new().as_str().starts_with("tx_"));
    }

    #[test]
    fn ids_from_outside_must_have_the_shape_of_one() {
        assert!(RunId::parse("run_01jabc").is_some());
        assert!(UserId::parse("auth0|5f7c8ec7c33c6c004bbafe82").is_some());
        assert!(RunId::parse(&"r".repeat(MAX_ID_LEN)).is_some());
        for bad in ["", " ", "run 1", "run\u{0}", "r\u{e9}", "\u{202e}"] {
            assert!(RunId::parse(bad).is_none(), "{bad:?}");
        }
        assert!(RunId::parse(&"r".repeat(MAX_ID_LEN + 1)).is_none());
        assert!(serde_json::from_str::<UserId>("\"\"").is_err());
        assert!(serde_json::from_str::<UserId>(&format!("\"{}\"", "u".repeat(3000))).is_err());
    }

    #[test]
    fn slugs_deserialize_only_when_valid() {
        let ok: Slug = serde_json::from_str("\"hello-sigil\"").unwrap();
        assert_eq!(ok.as_str(), "hello-sigil");
        assert!(serde_json::from_str::<Slug>("\"../etc\"").is_err());
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
