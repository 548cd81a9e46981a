//! The `balance` Lambda: the signed-in user's account — GET /api/v1/me/balance,
//! /api/v1/me/ledger, /api/v1/me/runs (their run history) and their webhook signing secret
//! (GET, and POST to rotate it), and signing in on the page (GET /api/v1/auth/config, POST
//! /api/v1/auth/token). Its writes: the webhook secret and the welcome grant (see the template).

use std::sync::Arc;

use spellcast_lambda::{endpoints, serve, start, Error, NoBlobs, NoEvents, Toolbox};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let start = start().await?;
    let app = start.app(Arc::new(NoEvents), Arc::new(NoBlobs), Toolbox::default())?;
    serve(
        app,
        &[
            &endpoints::BALANCE,
            &endpoints::LEDGER,
            &endpoints::MY_RUNS,
            &endpoints::WEBHOOK_SECRET,
            &endpoints::AUTH_CONFIG,
            &endpoints::AUTH_TOKEN,
        ],
    )
    .await
}
