//! The `stream` Lambda: GET /api/v1/spells/{slug}/stream, the run's Server-Sent Events over Lambda response streaming.

use std::sync::Arc;

use spellcast_lambda::{endpoints, serve_streaming, start, Error, NoBlobs, NoEvents, Toolbox};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let start = start().await?;
    let app = start.app(Arc::new(NoEvents), Arc::new(NoBlobs), Toolbox::default())?;
    serve_streaming(app, &[&endpoints::STREAM]).await
}
