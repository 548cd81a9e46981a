//! The webhooks queue on SQS: a delivery not due yet, or to be tried again, goes back on the
//! queue with a delay. SQS delays at most 15 minutes, so a longer wait is a chain of messages,
//! each of which finds the delivery not due yet and sends the next.

use std::time::Duration;

use aws_sdk_sqs::Client;
use spellcast_application::ports::BusError;
use spellcast_domain::ids::RunId;

/// Longest delay SQS gives one message.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

/// Sends "attempt this delivery" messages to one queue.
#[derive(Clone)]
pub struct WebhookQueue {
    client: Client,
    url: String,
}

impl WebhookQueue {
    /// The queue at `url`.
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        WebhookQueue {
            client,
            url: url.into(),
        }
    }

    /// Asks for delivery `webhook_id` of `run_id` to be looked at again after `delay` (at most
    /// [`MAX_DELAY`]). The body is the same `{runId, webhookId}` as the `webhookDue` event's detail.
    pub async fn send(
        &self,
        run_id: &RunId,
        webhook_id: &str,
        delay: Duration,
    ) -> Result<(), BusError> {
        let body = serde_json::json!({ "runId": run_id, "webhookId": webhook_id });
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body.to_string())
            .delay_seconds(delay.min(MAX_DELAY).as_secs() as i32)
            .send()
            .await
            .map_err(|e| BusError(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
        Ok(())
    }
}
