//! The `balance` Lambda: GET /api/v1/me/balance and /api/v1/me/ledger.

use std::sync::Arc;

use spellcast_lambda::{endpoints, serve, start, Error, NoBlobs, NoEvents, Toolbox};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let start = start().await?;
    let app = start.app(Arc::new(NoEvents), Arc::new(NoBlobs), Toolbox::default())?;
    serve(app, &[&endpoints::BALANCE, &endpoints::LEDGER]).await
}
