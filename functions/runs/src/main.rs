//! The `runs` Lambda: GET /api/v1/runs/{runId} and its outputs.

use spellcast_lambda::{serve, start, EndpointKind, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let app = start().await?;
    serve(app, &[EndpointKind::RunSnapshot, EndpointKind::RunOutput]).await
}
