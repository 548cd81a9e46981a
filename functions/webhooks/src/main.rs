//! The `webhooks` Lambda: the webhooks queue's target; attempts due run webhook deliveries
//! (public https receivers only) and queues their retries.

use std::sync::Arc;

use spellcast_deliveries::{Deliveries, Reach};
use spellcast_lambda::{serve_webhooks, start, Error, NoBlobs, NoEvents, Toolbox};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let start = start().await?;
    let queue = start.webhook_queue()?;
    let app = start.app(Arc::new(NoEvents), Arc::new(NoBlobs), Toolbox::default())?;
    serve_webhooks(app, Arc::new(Deliveries::new(Reach::PublicOnly)), queue).await
}
