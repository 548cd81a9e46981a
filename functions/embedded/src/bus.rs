//! The in-process event bus (execution requests go to the runner through a channel) and the run
//! signal (a broadcast of run ids that woken streams filter by their run).

use std::time::Duration;

use async_trait::async_trait;
use spellcast_core::ids::RunId;
use spellcast_core::ports::{BusError, EventBus, ExecutionStarted, RunSignal, RunWatcher};
use spellcast_core::run::{Run, RunEvent};
use tokio::sync::{broadcast, mpsc};

/// Sends `executionStarted` to the runner of this process.
pub struct LocalBus {
    runner: mpsc::UnboundedSender<ExecutionStarted>,
}

impl LocalBus {
    /// A bus and the receiving end the runner reads. Dropping the receiver (no runner) makes
    /// every publication fail, as a lost event would: recovery publishes it again later.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<ExecutionStarted>) {
        let (runner, rx) = mpsc::unbounded_channel();
        (LocalBus { runner }, rx)
    }
}

#[async_trait]
impl EventBus for LocalBus {
    async fn execution_started(&self, event: ExecutionStarted) -> Result<(), BusError> {
        self.runner
            .send(event)
            .map_err(|_| BusError("no runner is listening".into()))
    }

    async fn run_event(&self, _run: &Run, event: &RunEvent) -> Result<(), BusError> {
        // Streams read the store and are woken by the signal; nothing else listens locally.
        tracing::debug!(seq = event.seq, kind = event.body.kind(), "run event");
        Ok(())
    }
}

/// Wakes the streams of a run when it changes.
pub struct LocalSignal {
    changes: broadcast::Sender<RunId>,
}

impl Default for LocalSignal {
    fn default() -> Self {
        let (changes, _) = broadcast::channel(1024);
        LocalSignal { changes }
    }
}

impl RunSignal for LocalSignal {
    fn watch(&self, run_id: &RunId) -> Box<dyn RunWatcher> {
        Box::new(LocalWatcher {
            run_id: run_id.clone(),
            changes: self.changes.subscribe(),
        })
    }

    fn notify(&self, run_id: &RunId) {
        // No receiver means no stream is open: nothing to wake.
        let _ = self.changes.send(run_id.clone());
    }
}

struct LocalWatcher {
    run_id: RunId,
    changes: broadcast::Receiver<RunId>,
}

#[async_trait]
impl RunWatcher for LocalWatcher {
    async fn changed(&mut self, timeout: Duration) {
        let wait = async {
            loop {
                match self.changes.recv().await {
                    Ok(id) if id == self.run_id => return,
                    Ok(_) => continue,
                    // Lagged: some notification may have been ours; let the stream re-read.
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn a_watcher_wakes_for_its_run_only() {
        let signal = LocalSignal::default();
        let mut watcher = signal.watch(&"a".into());
        signal.notify(&"b".into());
        let started = Instant::now();
        watcher.changed(Duration::from_millis(100)).await;
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "woken by another run"
        );
        signal.notify(&"a".into());
        let started = Instant::now();
        watcher.changed(Duration::from_secs(5)).await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "not woken by its run"
        );
    }

    #[tokio::test]
    async fn without_a_runner_publication_fails() {
        let (bus, rx) = LocalBus::new();
        drop(rx);
        let event = ExecutionStarted {
            run_id: "r".into(),
            slug: spellcast_core::ids::Slug::parse("s").unwrap(),
        };
        assert!(bus.execution_started(event).await.is_err());
    }
}
