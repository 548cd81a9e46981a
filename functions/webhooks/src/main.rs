//! The `webhooks` Lambda: the webhooks queue's target; attempts due run webhook deliveries
//! (public https receivers only) and queues their retries.

use std::sync::Arc;

use spellcast_deliveries::{Deliveries, Reach};
use spellcast_lambda::{serve_webhooks, start, Error, NoBlobs, NoEvents, Toolbox};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let start = start().await?;
    let queue = start.webhook_queue()?;
    let sender = match &start.settings.webhook_ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
            Deliveries::trusting(Reach::PublicOnly, &pem)?
        }
        None => Deliveries::new(Reach::PublicOnly),
    };
    let app = start.app(Arc::new(NoEvents), Arc::new(NoBlobs), Toolbox::default())?;
    serve_webhooks(app, Arc::new(sender), queue).await
}
