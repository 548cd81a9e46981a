//! Answers worth keeping between requests (a spell's meta document, its og page): made once per
//! key and shared until the key changes. The key names everything an answer depends on (the
//! spell, its price and when it was computed, the public origin), so nothing is invalidated by
//! hand; the map is bounded, since origins can come from a client's `Host`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;

/// At most this many answers are kept; past it the map starts over.
const MAX_ENTRIES: usize = 256;

/// A rendered answer: its body and a strong validator of it.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The body.
    pub body: Bytes,
    /// A strong ETag (quoted) of the body.
    pub etag: Arc<str>,
}

impl Rendered {
    /// A body with its ETag: the first 16 bytes of its SHA-256, in hex.
    pub fn new(body: impl Into<Bytes>) -> Rendered {
        use sha2::{Digest, Sha256};
        let body = body.into();
        let etag = format!("\"{}\"", hex::encode(&Sha256::digest(&body)[..16])).into();
        Rendered { body, etag }
    }
}

/// Rendered answers by key.
#[derive(Debug, Default)]
pub struct Memo {
    entries: RwLock<HashMap<String, Rendered>>,
}

impl Memo {
    /// The answer kept for `key`, else `render`'s, kept for next time.
    pub fn get_or_render<E>(
        &self,
        key: String,
        render: impl FnOnce() -> Result<Rendered, E>,
    ) -> Result<Rendered, E> {
        if let Some(found) = self.entries.read().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(found);
        }
        let rendered = render()?;
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(key, rendered.clone());
        }
        Ok(rendered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn renders_once_per_key_and_stays_bounded() {
        let memo = Memo::default();
        let renders = Cell::new(0);
        let render = |text: &'static str| {
            renders.set(renders.get() + 1);
            Ok::<_, ()>(Rendered::new(text))
        };
        let a = memo.get_or_render("a".into(), || render("A")).unwrap();
        let again = memo.get_or_render("a".into(), || render("other")).unwrap();
        assert_eq!(
            (a.body.as_ref(), again.body.as_ref()),
            (&b"A"[..], &b"A"[..])
        );
        assert_eq!(renders.get(), 1);
        let b = memo.get_or_render("b".into(), || render("B")).unwrap();
        assert_ne!(a.etag, b.etag);
        assert_eq!(renders.get(), 2);
        // An error is not kept.
        assert!(memo
            .get_or_render("c".into(), || Err::<Rendered, _>(()))
            .is_err());
        assert_eq!(
            memo.get_or_render("c".into(), || render("C")).unwrap().body,
            "C"
        );
        for i in 0..1000 {
            memo.get_or_render(format!("k{i}"), || render("x")).unwrap();
        }
        assert!(memo.entries.read().unwrap().len() <= MAX_ENTRIES);
    }
}
