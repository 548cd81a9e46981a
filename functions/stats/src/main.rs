//! The `stats` Lambda: recomputes prices and sweeps lost or stuck runs on the 15-minute schedule; POST /api/v1/internal/stats/refresh, the signed webhook.

use std::sync::Arc;

use spellcast_lambda::{serve_stats, start, Error, NoBlobs, Toolbox};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let start = start().await?;
    let bus = start.events();
    let app = start.app(bus, Arc::new(NoBlobs), Toolbox::default())?;
    serve_stats(app).await
}
