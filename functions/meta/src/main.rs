//! The `meta` Lambda: GET /api/v1/spells/{slug}/meta, the public spell metadata and quote.

use spellcast_lambda::{serve, start, EndpointKind, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let app = start().await?;
    serve(app, &[EndpointKind::Meta]).await
}
