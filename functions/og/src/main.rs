//! The `og` Lambda: GET /spells/{slug}/og, the pre-rendered OpenGraph page crawlers get (cached at the edge).

use spellcast_lambda::{serve, start, EndpointKind, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let app = start().await?;
    serve(app, &[EndpointKind::Og]).await
}
