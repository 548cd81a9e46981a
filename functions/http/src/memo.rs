//! Answers worth keeping between requests (a spell's meta document, its og page): made once per
//! key and shared until the key changes. The key names everything an answer depends on (the
//! spell, its price and when it was computed, the public origin), so nothing is invalidated by
//! hand; the map is bounded, since origins can come from a client's `Host`.

use std::collections::HashMap;
use std::sync::RwLock;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use spellcast_domain::ids::{RunId, Slug};

/// At most this many answers are kept; past it the map starts over.
const MAX_ENTRIES: usize = 256;

/// A rendered answer: its body and a strong validator of it.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The body.
    pub body: Bytes,
    /// A strong ETag (quoted, ASCII) of the body: bytes, so a response header can share them.
    pub etag: Bytes,
}

/// What a kept answer depends on. Made of values, not formatted into text: building the key is
/// on every request's path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// Which answer (`"meta"`, `"og"`).
    pub answer: &'static str,
    /// The spell.
    pub slug: Slug,
    /// The public origin of its links.
    pub origin: String,
    /// The price it shows (points) and when that was computed, if it shows one.
    pub price: Option<(i64, Option<DateTime<Utc>>)>,
    /// The shared run it shows, if any (the share is looked up first on every request, so an
    /// unshared run is never answered from here).
    pub share: Option<spellcast_domain::ids::ShareId>,
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

/// At most this many run events' frames are kept (a few seconds of busy runs); past it the map
/// starts over.
const MAX_FRAMES: usize = 4096;

/// Rendered answers by key, and run events' stream frames.
#[derive(Debug, Default)]
pub struct Memo {
    entries: RwLock<HashMap<Key, Rendered>>,
    /// An event's SSE frame by run and seq (an event never changes): made once for all the
    /// streams of its run, which are handed the same event at the same moment.
    frames: RwLock<HashMap<(RunId, u64), Bytes>>,
}

impl Memo {
    /// The answer kept for `key`, if there is one.
    pub fn get(&self, key: &Key) -> Option<Rendered> {
        self.entries.read().ok().and_then(|m| m.get(key).cloned())
    }

    /// Keeps `rendered` as the answer for `key` (made elsewhere: asynchronously).
    pub fn put(&self, key: Key, rendered: Rendered) {
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(key, rendered);
        }
    }

    /// Event `seq` of `run_id` as `frame` makes it, made once and shared.
    pub fn frame(&self, run_id: &RunId, seq: u64, frame: impl FnOnce() -> Bytes) -> Bytes {
        let key = (run_id.clone(), seq);
        if let Some(found) = self.frames.read().ok().and_then(|m| m.get(&key).cloned()) {
            return found;
        }
        let made = frame();
        if let Ok(mut frames) = self.frames.write() {
            if frames.len() >= MAX_FRAMES {
                frames.clear();
            }
            frames.insert(key, made.clone());
        }
        made
    }

    /// The answer kept for `key`, else `render`'s, kept for next time.
    pub fn get_or_render<E>(
        &self,
        key: Key,
        render: impl FnOnce() -> Result<Rendered, E>,
    ) -> Result<Rendered, E> {
        if let Some(found) = self.get(&key) {
            return Ok(found);
        }
        let rendered = render()?;
        self.put(key, rendered.clone());
        Ok(rendered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn key(origin: &str, price: Option<(i64, Option<DateTime<Utc>>)>) -> Key {
        Key {
            answer: "meta",
            slug: Slug::parse("s").unwrap(),
            origin: origin.into(),
            price,
            share: None,
        }
    }

    #[test]
    fn an_event_is_framed_once_for_all_its_streams() {
        let memo = Memo::default();
        let frames = Cell::new(0);
        let frame = |text: &'static str| {
            frames.set(frames.get() + 1);
            Bytes::from_static(text.as_bytes())
        };
        let run = RunId::from("run_a");
        for _ in 0..3 {
            assert_eq!(memo.frame(&run, 1, || frame("one")), "one");
        }
        assert_eq!(memo.frame(&run, 2, || frame("two")), "two");
        assert_eq!(frames.get(), 2, "once per event");
        for seq in 3..=MAX_FRAMES as u64 + 1 {
            memo.frame(&run, seq, || frame("more"));
        }
        assert!(memo.frames.read().unwrap().len() <= MAX_FRAMES, "bounded");
    }

    #[test]
    fn renders_once_per_key_and_stays_bounded() {
        let memo = Memo::default();
        let renders = Cell::new(0);
        let render = |text: &'static str| {
            renders.set(renders.get() + 1);
            Ok::<_, ()>(Rendered::new(text))
        };
        let a = memo.get_or_render(key("a", None), || render("A")).unwrap();
        let again = memo
            .get_or_render(key("a", None), || render("other"))
            .unwrap();
        assert_eq!(
            (a.body.as_ref(), again.body.as_ref()),
            (&b"A"[..], &b"A"[..])
        );
        assert_eq!(renders.get(), 1);
        let b = memo.get_or_render(key("b", None), || render("B")).unwrap();
        assert_ne!(a.etag, b.etag);
        assert_eq!(renders.get(), 2);
        // A new price is a new answer.
        memo.get_or_render(key("a", Some((5, None))), || render("A at 5"))
            .unwrap();
        assert_eq!(renders.get(), 3);
        // An error is not kept.
        assert!(memo
            .get_or_render(key("c", None), || Err::<Rendered, _>(()))
            .is_err());
        assert_eq!(
            memo.get_or_render(key("c", None), || render("C"))
                .unwrap()
                .body,
            "C"
        );
        for i in 0..1000 {
            memo.get_or_render(key(&format!("k{i}"), None), || render("x"))
                .unwrap();
        }
        assert!(memo.entries.read().unwrap().len() <= MAX_ENTRIES);
    }
}
