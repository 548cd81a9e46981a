//! Run change signals, so a stream does not poll needlessly.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use spellcast_domain::ids::RunId;
use spellcast_domain::run::RunEvent;

/// Tells a stream that a run may have new events, so it does not poll needlessly.
pub trait RunSignal: Send + Sync {
    /// A watcher for one run. Create it *before* reading the events, so no change is missed.
    fn watch(&self, run_id: &RunId) -> Box<dyn RunWatcher>;
    /// Announces a run's new event, stored (a no-op where watchers poll the store).
    fn notify(&self, run_id: &RunId, event: &RunEvent);
}

/// Waits for one run to change.
#[async_trait]
pub trait RunWatcher: Send {
    /// Returns when the run may have changed, or after `timeout`; with the newest event
    /// announced where the signal carries them (a watcher that has sent the one before it need
    /// not read the store: with many streams on a run, one read per change instead of one per
    /// stream).
    async fn changed(&mut self, timeout: Duration) -> Option<Arc<RunEvent>>;
    /// Tells the watcher that the last wait was followed by new events (a polling watcher goes
    /// back to its fastest rate).
    fn delivered(&mut self) {}
}
