//! The `stream` Lambda: GET /api/v1/spells/{slug}/stream, the run's Server-Sent Events over Lambda response streaming.

use spellcast_lambda::{serve_streaming, start, EndpointKind, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let app = start().await?;
    serve_streaming(app, &[EndpointKind::Stream]).await
}
