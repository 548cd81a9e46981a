//! The cancel Lambda: POST /api/v1/runs/{runId}/cancel. Its own function because it writes
//! (the run, its refund): the runs function that shows runs keeps read-only permissions.

use std::sync::Arc;

use spellcast_lambda::{endpoints, serve, start, Error, NoBlobs, NoEvents, Toolbox};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let start = start().await?;
    // A canceled run's terminal event reaches its streams through the table they watch; no
    // execution event is published, and no output file is read.
    let app = start.app(Arc::new(NoEvents), Arc::new(NoBlobs), Toolbox::default())?;
    serve(app, &[&endpoints::RUN_CANCEL]).await
}
