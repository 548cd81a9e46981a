//! The cancel Lambda: the owner's changes to a run — POST /api/v1/runs/{runId}/cancel, and
//! sharing it (GET|POST|DELETE /api/v1/runs/{runId}/share). Its own function because it writes
//! (the run, its refund, the share): the runs function that shows runs keeps read-only
//! permissions.

use std::sync::Arc;

use spellcast_lambda::{endpoints, serve, start, Error, NoBlobs, Toolbox};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let start = start().await?;
    // A canceled run's terminal event reaches its streams through the table they watch; the bus
    // announces its webhook delivery (and the run event), and no output file is read.
    let bus = start.events();
    let app = start.app(bus, Arc::new(NoBlobs), Toolbox::default())?;
    serve(app, &[&endpoints::RUN_CANCEL, &endpoints::RUN_SHARE]).await
}
