//! The webhooks function: the target of the webhooks queue (SQS, batches). Each message names a
//! stored delivery (`{runId, webhookId}`, or a `webhookDue` EventBridge event carrying it); the
//! delivery is attempted if it is due, and whatever comes next — a retry, or an attempt not due
//! yet — goes back on the queue with a delay. A message that could not be handled (the store
//! failed) is reported as a batch item failure: SQS gives it again, then to the dead-letter queue.

use spellcast_http::Api;
use std::sync::Arc;

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde::Deserialize;
use serde_json::{json, Value};
use spellcast_application::delivering::Next;
use spellcast_application::ports::WebhookSender;
use spellcast_application::App;
use spellcast_aws::DelayQueue;
use spellcast_domain::ids::RunId;

use crate::emf;
use crate::sqs_batch::{Batch, Message};

/// Which delivery a message names.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Named {
    run_id: RunId,
    webhook_id: String,
}

/// The delivery a message body names: the queue's own message, or the EventBridge event the
/// `WebhookDue` rule put on the queue (its `detail`).
fn named(body: &str) -> Option<Named> {
    let value: Value = serde_json::from_str(body).ok()?;
    let inner = value.get("detail").unwrap_or(&value);
    Named::deserialize(inner).ok()
}

/// Handles one batch: the `batchItemFailures` answer of a function with
/// `ReportBatchItemFailures`. Its messages are attempted all at once, so a batch takes as long
/// as its slowest receiver (one attempt's timeout), not the sum of them: a user whose receivers
/// do not answer holds up nobody else's deliveries, and the batch ends within the function's time.
pub async fn webhook_batch(
    app: &App,
    sender: &dyn WebhookSender,
    queue: &DelayQueue,
    event: Value,
) -> Result<Value, Error> {
    let batch: Batch = serde_json::from_value(event)?;
    let delivering = app.delivering(sender);
    let failures = all_at_once(distinct(batch.records), |message| {
        handle(app, &delivering, queue, message)
    })
    .await;
    Ok(json!({ "batchItemFailures": failures }))
}

/// The batch's messages with each delivery named once: SQS delivers at least once, and two
/// attempts of one delivery at once would both send before either is recorded.
fn distinct(records: Vec<Message>) -> Vec<Message> {
    let mut seen = std::collections::HashSet::new();
    records
        .into_iter()
        .filter(|m| named(&m.body).is_none_or(|n| seen.insert((n.run_id, n.webhook_id))))
        .collect()
}

/// Runs `work` for every item at once; what each returned that is `Some`, in order.
async fn all_at_once<T, F, Fut>(items: Vec<T>, work: F) -> Vec<Value>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Option<Value>>,
{
    futures::future::join_all(items.into_iter().map(work))
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// One message: its delivery attempted, what comes next queued; the batch item failure if the
/// message must be given again.
async fn handle(
    app: &App,
    delivering: &spellcast_application::delivering::Delivering<'_>,
    queue: &DelayQueue,
    message: Message,
) -> Option<Value> {
    let Some(named) = named(&message.body) else {
        // Nothing to do with it, ever: not worth a retry.
        tracing::error!(
            message_id = message.message_id,
            "not a webhook message; dropped"
        );
        return None;
    };
    let handled = match delivering.attempt(&named.run_id, &named.webhook_id).await {
        Ok(Next::Done) => Ok(()),
        Ok(Next::At(at)) => {
            let wait = (at - app.now()).to_std().unwrap_or_default();
            queue
                .send_webhook(&named.run_id, &named.webhook_id, wait)
                .await
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    match handled {
        Ok(()) => None,
        Err(error) => {
            tracing::warn!(
                message_id = message.message_id,
                error,
                "webhook message kept for a retry"
            );
            Some(json!({ "itemIdentifier": message.message_id }))
        }
    }
}

/// Serves the webhooks function until the runtime stops.
pub async fn serve_webhooks(
    app: Arc<Api>,
    sender: Arc<dyn WebhookSender>,
    queue: DelayQueue,
) -> Result<(), Error> {
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (app, sender, queue) = (app.clone(), sender.clone(), queue.clone());
        async move {
            let result = webhook_batch(&app, sender.as_ref(), &queue, event.payload).await;
            emf::flush();
            result
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_names_its_delivery_itself_or_in_an_eventbridge_event() {
        let own = r#"{"runId":"run_1","webhookId":"msg_run_1_1"}"#;
        let wanted = Named {
            run_id: "run_1".into(),
            webhook_id: "msg_run_1_1".into(),
        };
        assert_eq!(named(own), Some(wanted));
        let event = r#"{"version":"0","detail-type":"webhookDue","source":"spellcast",
            "detail":{"runId":"run_2","webhookId":"msg_run_2_5"}}"#;
        assert_eq!(
            named(event).map(|n| n.webhook_id),
            Some("msg_run_2_5".into())
        );
        for bad in ["", "{}", "[1]", r#"{"runId":"run_1"}"#, r#"{"detail":{}}"#] {
            assert_eq!(named(bad), None, "{bad}");
        }
    }

    /// Ten receivers that each take the whole attempt timeout (10 s) finish together in 10 s,
    /// not one after another in 100 s: under the function's 30 s, whoever they belong to.
    #[tokio::test(start_paused = true)]
    async fn a_batch_is_attempted_all_at_once() {
        let started = tokio::time::Instant::now();
        let failures = all_at_once((0..10).collect(), |i: u32| async move {
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            i.is_multiple_of(3)
                .then(|| json!({ "itemIdentifier": i.to_string() }))
        })
        .await;
        assert_eq!(started.elapsed(), std::time::Duration::from_secs(10));
        let ids: Vec<&str> = failures
            .iter()
            .map(|f| f["itemIdentifier"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            ["0", "3", "6", "9"],
            "the failures, in the batch's order"
        );
    }

    #[test]
    fn a_delivery_named_twice_in_a_batch_is_attempted_once() {
        let message = |id: &str, body: &str| Message {
            message_id: id.into(),
            body: body.into(),
        };
        let kept = distinct(vec![
            message("a", r#"{"runId":"run_1","webhookId":"msg_1"}"#),
            message("b", r#"{"detail":{"runId":"run_1","webhookId":"msg_1"}}"#),
            message("c", r#"{"runId":"run_1","webhookId":"msg_2"}"#),
            message("d", "not json"),
        ]);
        let ids: Vec<&str> = kept.iter().map(|m| m.message_id.as_str()).collect();
        assert_eq!(ids, ["a", "c", "d"]);
    }
}
