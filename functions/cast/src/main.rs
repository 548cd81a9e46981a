//! The `cast` Lambda: POST /api/v1/spells/cast, pays an invoice and queues the run.

use spellcast_lambda::{endpoints, serve, start, Error, Toolbox};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let start = start().await?;
    let bus = start.events();
    let app = start.app(bus, Toolbox::default())?;
    serve(app, &[&endpoints::CAST]).await
}
