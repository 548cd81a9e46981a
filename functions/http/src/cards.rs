//! Share cards as answers: drawn once per process (on a blocking thread: ~25 ms of CPU) and kept
//! in the memo under their key; the spell's card and a shared run's card both come through here.

use std::future::Future;

use crate::memo::{Key, Rendered};
use crate::Api;

use super::{Handled, Problem};

/// What a card shows, owned (it travels to the drawing thread).
pub(crate) struct CardText {
    pub title: String,
    pub excerpt: Option<String>,
    pub image_png: Option<Vec<u8>>,
    pub footer: String,
}

/// The card kept under `key`, else the one `make` describes, drawn now and kept; answered with
/// `cache` and an ETag.
pub(crate) async fn card_answer<F, Fut>(
    app: &Api,
    req: &http::request::Parts,
    key: Key,
    cache: &'static str,
    make: F,
) -> Handled
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<CardText, Problem>>,
{
    let rendered = match app.memo.get(&key) {
        Some(kept) => kept,
        None => {
            let text = make().await?;
            let png = tokio::task::spawn_blocking(move || {
                spellcast_cards::render(&spellcast_cards::Card {
                    title: &text.title,
                    excerpt: text.excerpt.as_deref().filter(|e| !e.is_empty()),
                    image_png: text.image_png.as_deref(),
                    footer: &text.footer,
                })
            })
            .await
            .map_err(Problem::internal)?
            .map_err(Problem::internal)?;
            let rendered = Rendered::new(png);
            app.memo.put(key, rendered.clone());
            rendered
        }
    };
    Ok(super::spells::cacheable(req, "image/png", cache, rendered))
}
