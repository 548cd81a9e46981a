//! The `stats` Lambda: recomputes prices and sweeps lost or stuck runs on the 15-minute schedule; POST /api/v1/internal/stats/refresh, the signed webhook.

use spellcast_lambda::{serve_stats, start, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let app = start().await?;
    serve_stats(app).await
}
