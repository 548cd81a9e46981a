//! The `balance` Lambda: GET /api/v1/me/balance and /api/v1/me/ledger.

use spellcast_lambda::{serve, start, EndpointKind, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let app = start().await?;
    serve(app, &[EndpointKind::Balance, EndpointKind::Ledger]).await
}
