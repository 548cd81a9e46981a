//! The `runner` Lambda: the target of the executionStarted rule and of the wake-ups queue;
//! executes the run (idempotent under duplicate delivery).

use spellcast_lambda::{serve_runner, start, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let start = start().await?;
    let budget = start.settings.handover_budget;
    let tools = spellcast_tools::configured(&start.settings.tools)?;
    let bus = start.runner_events();
    let blobs = start.blobs()?;
    let app = start.app(bus, blobs, tools)?;
    serve_runner(app, budget).await
}
