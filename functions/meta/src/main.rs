//! The `meta` Lambda: GET /api/v1/spells/{slug}/meta (the public spell metadata and quote) and
//! GET /api/v1/openapi.json.

use std::sync::Arc;

use spellcast_lambda::{endpoints, serve, start, Error, NoBlobs, NoEvents, Toolbox};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let start = start().await?;
    let app = start.app(Arc::new(NoEvents), Arc::new(NoBlobs), Toolbox::default())?;
    // The API's own description is public and read-only like the spells' (and needs no table).
    serve(app, &[&endpoints::META, &endpoints::OPENAPI]).await
}
