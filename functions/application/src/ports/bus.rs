//! The event bus: execution events between functions (EventBridge on AWS, a channel locally).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use spellcast_domain::events::ExecutionStarted;
use spellcast_domain::ids::RunId;

/// A bus failure (the event may not have been delivered).
#[derive(Debug, thiserror::Error)]
#[error("event bus: {0}")]
pub struct BusError(pub String);

/// Publishes execution events (EventBridge on AWS, a channel locally).
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Asks for a run to be executed.
    async fn execution_started(&self, event: ExecutionStarted) -> Result<(), BusError>;
    /// Asks for a stored webhook delivery to be attempted (best effort: a pending delivery
    /// stays in the store, where the sweep finds it again).
    async fn webhook_due(&self, run_id: &RunId, webhook_id: &str) -> Result<(), BusError>;
    /// Asks for a run to be executed at `at`, when its wait is due (SPEC §8.2). Best effort: a
    /// waiting run is in the store, and recovery's sweep sends it once due; a bus without a
    /// scheduler of its own leaves it to the sweep.
    async fn execution_due(
        &self,
        _event: ExecutionStarted,
        _at: DateTime<Utc>,
    ) -> Result<(), BusError> {
        Ok(())
    }
}
