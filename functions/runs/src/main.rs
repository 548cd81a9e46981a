//! The `runs` Lambda: GET /api/v1/runs/{runId}, its outputs and its webhook attempts, and the
//! public reads of a shared run (/api/v1/shares/{shareId} and its outputs).

use std::sync::Arc;

use spellcast_lambda::{endpoints, serve, start, Error, NoEvents, Toolbox};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let start = start().await?;
    let blobs = start.blobs()?;
    let app = start.app(Arc::new(NoEvents), blobs, Toolbox::default())?;
    serve(
        app,
        &[
            &endpoints::RUN_SNAPSHOT,
            &endpoints::RUN_OUTPUT,
            &endpoints::RUN_WEBHOOKS,
            &endpoints::SHARED_RUN,
            &endpoints::SHARED_OUTPUT,
        ],
    )
    .await
}
