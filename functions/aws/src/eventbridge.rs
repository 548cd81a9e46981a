//! Execution events on EventBridge: `PutEvents` in batches of at most 10 entries; entries that
//! fail (`FailedEntryCount`) are retried alone, a bounded number of times, so nothing is lost
//! and nothing that succeeded is sent twice by us.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;
use spellcast_application::ports::{BusError, EventBus};
use spellcast_domain::events::ExecutionStarted;
use spellcast_domain::ids::RunId;

/// The `source` of every Spellcast event (rules match on it).
pub const SOURCE: &str = "spellcast";
/// The detail-type of "a webhook delivery is due" (the rule to the webhooks queue matches it).
pub const WEBHOOK_DUE: &str = "webhookDue";
/// Most entries one `PutEvents` call takes.
const BATCH: usize = 10;
/// Attempts per entry.
const ATTEMPTS: u32 = 4;

/// The `PutEvents` call: per entry, `None` if accepted or the error code if not. A seam so fault
/// injection can stand between the bus and EventBridge.
#[async_trait]
pub trait PutEvents: Send + Sync {
    /// Sends one batch (at most 10 entries).
    async fn send_batch(
        &self,
        entries: Vec<PutEventsRequestEntry>,
    ) -> Result<Vec<Option<String>>, BusError>;
}

#[async_trait]
impl PutEvents for Client {
    async fn send_batch(
        &self,
        entries: Vec<PutEventsRequestEntry>,
    ) -> Result<Vec<Option<String>>, BusError> {
        let out = self
            .put_events()
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| {
                BusError(aws_sdk_eventbridge::error::DisplayErrorContext(&e).to_string())
            })?;
        // Results line up with the request entries.
        Ok(out
            .entries()
            .iter()
            .map(|r| r.error_code().map(str::to_owned))
            .collect())
    }
}

/// Publishes to one event bus.
#[derive(Clone)]
pub struct EventBridgeBus {
    api: Arc<dyn PutEvents>,
    bus_name: String,
}

/// One event to publish: its detail-type and JSON detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The detail-type (`executionStarted`, `stepUpdate`, ...).
    pub detail_type: String,
    /// The JSON detail.
    pub detail: String,
}

impl EventBridgeBus {
    /// A bus publishing to `bus_name` with a client made from the process's `SdkConfig`.
    pub fn new(client: Client, bus_name: impl Into<String>) -> Self {
        Self::with_api(Arc::new(client), bus_name)
    }

    /// A bus publishing through any [`PutEvents`] (tests wrap the client to inject faults).
    pub fn with_api(api: Arc<dyn PutEvents>, bus_name: impl Into<String>) -> Self {
        EventBridgeBus {
            api,
            bus_name: bus_name.into(),
        }
    }

    /// Publishes every entry, in batches of ten, retrying failed entries alone.
    pub async fn put_all(&self, entries: Vec<Entry>) -> Result<(), BusError> {
        let mut pending = entries;
        for attempt in 0..ATTEMPTS {
            if pending.is_empty() {
                return Ok(());
            }
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            let mut failed = Vec::new();
            for batch in pending.chunks(BATCH) {
                failed.extend(self.put_batch(batch).await);
            }
            pending = failed;
        }
        if pending.is_empty() {
            Ok(())
        } else {
            Err(BusError(format!(
                "{} event(s) not accepted after {ATTEMPTS} attempts",
                pending.len()
            )))
        }
    }

    /// Sends one batch; returns the entries that were not accepted.
    async fn put_batch(&self, batch: &[Entry]) -> Vec<Entry> {
        let request = batch.iter().map(|e| {
            PutEventsRequestEntry::builder()
                .source(SOURCE)
                .detail_type(&e.detail_type)
                .detail(&e.detail)
                .event_bus_name(&self.bus_name)
                .build()
        });
        match self.api.send_batch(request.collect()).await {
            // Results line up with the request: an entry with an error code was not accepted.
            Ok(results) => batch
                .iter()
                .zip(
                    results
                        .into_iter()
                        .chain(std::iter::repeat(Some("Missing".into()))),
                )
                .filter(|(_, error)| error.is_some())
                .map(|(entry, _)| entry.clone())
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "PutEvents failed");
                batch.to_vec()
            }
        }
    }
}

#[async_trait]
impl EventBus for EventBridgeBus {
    async fn execution_started(&self, event: ExecutionStarted) -> Result<(), BusError> {
        let detail = serde_json::to_string(&event).map_err(|e| BusError(e.to_string()))?;
        self.put_all(vec![Entry {
            detail_type: "executionStarted".into(),
            detail,
        }])
        .await
    }

    async fn webhook_due(&self, run_id: &RunId, webhook_id: &str) -> Result<(), BusError> {
        // A rule sends these to the webhooks queue (infra/template.yaml, `WebhookDue`).
        let detail = serde_json::json!({ "runId": run_id, "webhookId": webhook_id });
        self.put_all(vec![Entry {
            detail_type: WEBHOOK_DUE.into(),
            detail: detail.to_string(),
        }])
        .await
    }
}
