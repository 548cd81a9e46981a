//! The `runner` Lambda: the target of the executionStarted rule; executes the run (idempotent under duplicate delivery).

use spellcast_lambda::{serve_runner, start, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let app = start().await?;
    serve_runner(app).await
}
