//! The `meta` Lambda: the public, read-only descriptions — GET /api/v1/spells (the catalog),
//! /api/v1/spells/{slug}/meta (a spell and its price) and /api/v1/openapi.json.

use std::sync::Arc;

use spellcast_lambda::{endpoints, serve, start, Error, NoBlobs, NoEvents, Toolbox};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let start = start().await?;
    let app = start.app(Arc::new(NoEvents), Arc::new(NoBlobs), Toolbox::default())?;
    // The API's own description is public and read-only like the spells' (and needs no table).
    serve(
        app,
        &[&endpoints::CATALOG, &endpoints::META, &endpoints::OPENAPI],
    )
    .await
}
