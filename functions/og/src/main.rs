//! The `og` Lambda: the pre-rendered OpenGraph pages crawlers get — a spell's
//! (`/spells/{slug}/og`) and a shared run's (`/r/{shareId}/og`) — and a shared run's card
//! (`/r/{shareId}/og.png`) and a spell's (`/spells/{slug}/og.png`), drawn here; all cached at
//! the edge.

use std::sync::Arc;

use spellcast_lambda::{endpoints, serve, start, Error, NoBlobs, NoEvents, Toolbox};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let start = start().await?;
    let app = start.app(Arc::new(NoEvents), Arc::new(NoBlobs), Toolbox::default())?;
    serve(
        app,
        &[
            &endpoints::OG,
            &endpoints::SPELL_CARD,
            &endpoints::SHARE_OG,
            &endpoints::SHARE_CARD,
        ],
    )
    .await
}
