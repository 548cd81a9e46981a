//! The `removed` Lambda: POST /api/v1/payments/{prepare-spell,confirm}, gone: 410 with the successor's link.

use spellcast_lambda::{serve, start, EndpointKind, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let app = start().await?;
    serve(app, &[EndpointKind::Removed]).await
}
