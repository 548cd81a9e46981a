//! Delay queues on SQS: a message to be looked at again later goes on a queue with a delay. SQS
//! delays at most 15 minutes, so a longer wait is a chain of messages, each of which finds its
//! work not due yet and sends the next. Two queues use it: the webhooks queue (a retry, or a
//! delivery not due yet) and the wake-ups queue (a run's durable wait, SPEC §8.2).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use spellcast_application::ports::{BusError, EventBus};
use spellcast_domain::events::ExecutionStarted;
use spellcast_domain::ids::{RunId, Slug};

/// Longest delay SQS gives one message.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

/// Sends messages to one queue, each with its delay.
#[derive(Clone)]
pub struct DelayQueue {
    client: Client,
    url: String,
}

impl DelayQueue {
    /// The queue at `url`.
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        DelayQueue {
            client,
            url: url.into(),
        }
    }

    /// Sends `body`, to be received after `delay`: at most [`MAX_DELAY`], rounded up to whole
    /// seconds (SQS's unit), so a message is never received before it is due.
    pub async fn send(&self, body: String, delay: Duration) -> Result<(), BusError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(whole_seconds(delay.min(MAX_DELAY)))
            .send()
            .await
            .map_err(|e| BusError(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
        Ok(())
    }

    /// Asks for delivery `webhook_id` of `run_id` to be looked at again after `delay`. The body
    /// is the same `{runId, webhookId}` as the `webhookDue` event's detail.
    pub async fn send_webhook(
        &self,
        run_id: &RunId,
        webhook_id: &str,
        delay: Duration,
    ) -> Result<(), BusError> {
        let body = serde_json::json!({ "runId": run_id, "webhookId": webhook_id });
        self.send(body.to_string(), delay).await
    }
}

/// `delay` in whole seconds, rounded up.
fn whole_seconds(delay: Duration) -> i32 {
    let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// A wake-up message: run `run_id` is to be executed at `due_at` (the end of its durable wait).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WakeUp {
    /// The run.
    pub run_id: RunId,
    /// Its spell.
    pub slug: Slug,
    /// When its wait is due.
    pub due_at: DateTime<Utc>,
}

impl WakeUp {
    /// The execution event it stands for.
    pub fn execution(&self) -> ExecutionStarted {
        ExecutionStarted {
            run_id: self.run_id.clone(),
            slug: self.slug.clone(),
        }
    }
}

/// An [`EventBus`] whose durable waits wake their runs through a delay queue (the runner is the
/// queue's target), and which leaves everything else to `events` (EventBridge). A wake-up is
/// received within a second after it is due (SQS delays are whole seconds); a wait over 15
/// minutes takes one message per 15 minutes ([`WakeUpBus::hop`]).
pub struct WakeUpBus<B> {
    events: B,
    wake_ups: DelayQueue,
}

impl<B> WakeUpBus<B> {
    /// `events`, with wake-ups sent to `wake_ups`.
    pub fn new(events: B, wake_ups: DelayQueue) -> Self {
        WakeUpBus { events, wake_ups }
    }

    /// How long the next message of a wait due at `due_at` is delayed, if `now` is before it.
    pub fn hop(due_at: DateTime<Utc>, now: DateTime<Utc>) -> Option<Duration> {
        (due_at > now).then(|| (due_at - now).to_std().unwrap_or_default().min(MAX_DELAY))
    }
}

#[async_trait]
impl<B: EventBus> EventBus for WakeUpBus<B> {
    async fn execution_started(&self, event: ExecutionStarted) -> Result<(), BusError> {
        self.events.execution_started(event).await
    }

    async fn webhook_due(&self, run_id: &RunId, webhook_id: &str) -> Result<(), BusError> {
        self.events.webhook_due(run_id, webhook_id).await
    }

    async fn execution_due(
        &self,
        event: ExecutionStarted,
        at: DateTime<Utc>,
    ) -> Result<(), BusError> {
        let wake_up = WakeUp {
            run_id: event.run_id,
            slug: event.slug,
            due_at: at,
        };
        let delay = Self::hop(at, Utc::now()).unwrap_or_default();
        let body = serde_json::to_string(&wake_up).map_err(|e| BusError(e.to_string()))?;
        self.wake_ups.send(body, delay).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_is_rounded_up_to_whole_seconds_so_nothing_comes_early() {
        assert_eq!(whole_seconds(Duration::from_millis(0)), 0);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(2000)), 2);
        assert_eq!(whole_seconds(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn a_long_wait_is_a_chain_of_fifteen_minute_hops() {
        let now = Utc::now();
        let due = now + chrono::Duration::hours(2) + chrono::Duration::seconds(30);
        let (mut at, mut hops) = (now, 0);
        while let Some(delay) = WakeUpBus::<()>::hop(due, at) {
            assert!(delay <= MAX_DELAY);
            at += chrono::Duration::from_std(delay).unwrap();
            hops += 1;
        }
        assert_eq!((hops, at), (9, due), "eight full hops, then the 30 s left");
        assert_eq!(WakeUpBus::<()>::hop(now, now), None, "due now: no hop");
    }

    #[test]
    fn a_wake_up_reads_back_as_written() {
        let wake_up = WakeUp {
            run_id: "run_1".into(),
            slug: Slug::parse("slow-scroll").unwrap(),
            due_at: "2026-12-06T12:00:00Z".parse().unwrap(),
        };
        let body = serde_json::to_string(&wake_up).unwrap();
        assert_eq!(
            body,
            r#"{"runId":"run_1","slug":"slow-scroll","dueAt":"2026-12-06T12:00:00Z"}"#
        );
        assert_eq!(serde_json::from_str::<WakeUp>(&body).unwrap(), wake_up);
    }
}
