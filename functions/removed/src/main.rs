//! The `removed` Lambda: POST /api/v1/payments/{prepare-spell,confirm}, gone: 410 with the successor's link.

use std::sync::Arc;

use spellcast_lambda::{endpoints, serve, start, Error, NoBlobs, NoEvents, Toolbox};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let start = start().await?;
    let app = start.app(Arc::new(NoEvents), Arc::new(NoBlobs), Toolbox::default())?;
    serve(
        app,
        &[&endpoints::REMOVED_PREPARE, &endpoints::REMOVED_CONFIRM],
    )
    .await
}
