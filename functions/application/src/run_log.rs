//! Where a run's changes go: through the store (the truth, `crate::advancing`), then to this
//! process's streams (the signal), the run metrics and, for an event that calls for a webhook
//! delivery, the bus. Shared by the runner, canceling and recovery.

use crate::ports::{EventBus, RunSignal, RunStore, StoreResult};
use spellcast_domain::ids::RunId;
use spellcast_domain::run::{Lease, Run, RunChange, RunEvent};

/// Where run changes go: the store (the truth), the signal (wakes this process's streams) and,
/// for an event that calls for a webhook delivery, the bus (the delivery worker). Run events
/// themselves are not published: streams read the store, and nothing else consumes them.
/// Shared by the runner and recovery.
#[derive(Clone, Copy)]
pub struct RunLog<'a> {
    /// Runs and their events.
    pub runs: &'a dyn RunStore,
    /// Wakes streams.
    pub signal: &'a dyn RunSignal,
    /// Announces due webhook deliveries.
    pub bus: &'a dyn EventBus,
}

impl RunLog<'_> {
    /// Applies a change through the store, then announces its event (if it made one) and records
    /// metrics. `None` when the run refused the change (it moved on without us).
    pub async fn advance(
        &self,
        run_id: &RunId,
        change: RunChange,
    ) -> StoreResult<Option<(Run, Option<RunEvent>)>> {
        let done = crate::advancing::advance(self.runs, run_id, change).await?;
        self.announce(run_id, done).await
    }

    /// [`RunLog::advance`] for the runner holding `lease`: refused once another runner took the
    /// run over; it renews the lease. `known`: the run as the holder last committed it (see
    /// [`crate::advancing::advance_held`]).
    pub async fn advance_held(
        &self,
        run_id: &RunId,
        lease: Lease,
        known: Option<Run>,
        change: RunChange,
    ) -> StoreResult<Option<(Run, Option<RunEvent>)>> {
        let done = crate::advancing::advance_held(self.runs, run_id, lease, known, change).await?;
        self.announce(run_id, done).await
    }

    async fn announce(
        &self,
        run_id: &RunId,
        done: Option<(Run, Option<RunEvent>)>,
    ) -> StoreResult<Option<(Run, Option<RunEvent>)>> {
        let Some((run, event)) = done else {
            return Ok(None);
        };
        let Some(event) = event else {
            return Ok(Some((run, None)));
        };
        self.signal.notify(run_id, &event);
        crate::metrics::record(&run.slug, &event.body, run.duration_ms());
        if let Some(webhook_id) = run.delivery_id(&event) {
            // Stored with the event; a lost announcement is found again by the sweep.
            if let Err(e) = self.bus.webhook_due(run_id, &webhook_id).await {
                tracing::warn!(error = %e, webhook_id, "webhook delivery not announced");
            }
        }
        Ok(Some((run, Some(event))))
    }
}
