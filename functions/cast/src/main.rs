//! The `cast` Lambda: POST /api/v1/spells/cast, pays an invoice and queues the run.

use std::sync::Arc;

use spellcast_lambda::{endpoints, serve, start, Error, NoBlobs, Toolbox};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let start = start().await?;
    let bus = start.events();
    let app = start.app(bus, Arc::new(NoBlobs), Toolbox::default())?;
    serve(app, &[&endpoints::CAST]).await
}
