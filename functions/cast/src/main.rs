//! The `cast` Lambda: POST /api/v1/spells/cast, pays an invoice and queues the run.

use spellcast_lambda::{serve, start, EndpointKind, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let app = start().await?;
    serve(app, &[EndpointKind::Cast]).await
}
