//! The in-process event bus (execution requests go to the runner through a channel, due webhook
//! deliveries wake the delivery worker) and the run signal (per watched run, the newest event, which its streams wait on).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use spellcast_application::ports::{BusError, EventBus, RunSignal, RunWatcher};
use spellcast_domain::events::ExecutionStarted;
use spellcast_domain::ids::RunId;
use spellcast_domain::run::RunEvent;
use tokio::sync::{mpsc, watch, Notify};

/// Sends `executionStarted` to the runner of this process (now, or when a run's wait is due),
/// and wakes its webhook worker.
pub struct LocalBus {
    runner: mpsc::UnboundedSender<ExecutionStarted>,
    webhooks: Arc<Notify>,
    /// The due time of each run with a timer set: one timer per run and due time, whoever asks.
    due: Arc<Mutex<HashMap<RunId, DateTime<Utc>>>>,
}

impl LocalBus {
    /// A bus and the receiving end the runner reads. Dropping the receiver (no runner) makes
    /// every publication fail, as a lost event would: recovery publishes it again later.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<ExecutionStarted>) {
        let (runner, rx) = mpsc::unbounded_channel();
        let webhooks = Arc::new(Notify::new());
        let due = Arc::default();
        (
            LocalBus {
                runner,
                webhooks,
                due,
            },
            rx,
        )
    }

    /// What the webhook worker waits on: notified when a delivery is due now.
    pub fn webhooks_due(&self) -> Arc<Notify> {
        self.webhooks.clone()
    }
}

#[async_trait]
impl EventBus for LocalBus {
    async fn execution_started(&self, event: ExecutionStarted) -> Result<(), BusError> {
        self.runner
            .send(event)
            .map_err(|_| BusError("no runner is listening".into()))
    }

    async fn webhook_due(&self, _run_id: &RunId, _webhook_id: &str) -> Result<(), BusError> {
        // The worker reads what is due from the store; this only spares it a wait.
        self.webhooks.notify_one();
        Ok(())
    }

    /// A timer in this process. The due time is also in the store: after a restart, recovery's
    /// first sweep sets the timers again.
    async fn execution_due(
        &self,
        event: ExecutionStarted,
        at: DateTime<Utc>,
    ) -> Result<(), BusError> {
        if lock(&self.due).insert(event.run_id.clone(), at) == Some(at) {
            return Ok(());
        }
        let (runner, due) = (self.runner.clone(), self.due.clone());
        tokio::spawn(async move {
            let wait = (at - Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(wait).await;
            {
                let mut due = lock(&due);
                if due.get(&event.run_id) != Some(&at) {
                    return; // set again for another time
                }
                due.remove(&event.run_id);
            }
            let _ = runner.send(event);
        });
        Ok(())
    }
}

/// Wakes the streams of a run when it changes, handing them the new event: one channel per
/// watched run, so a change wakes that run's streams only, and a run's entry goes with its last
/// watcher.
#[derive(Default)]
pub struct LocalSignal {
    runs: Arc<Mutex<Runs>>,
}

/// Each watched run's newest announced event.
type Runs = HashMap<RunId, watch::Sender<Option<Arc<RunEvent>>>>;

impl RunSignal for LocalSignal {
    fn watch(&self, run_id: &RunId) -> Box<dyn RunWatcher> {
        let mut runs = lock(&self.runs);
        let changes = runs
            .entry(run_id.clone())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe();
        Box::new(LocalWatcher {
            run_id: run_id.clone(),
            changes: Some(changes),
            runs: self.runs.clone(),
        })
    }

    fn notify(&self, run_id: &RunId, event: &RunEvent) {
        // No entry means no stream is open: nothing to wake.
        if let Some(changes) = lock(&self.runs).get(run_id) {
            changes.send_replace(Some(Arc::new(event.clone())));
        }
    }
}

/// The map stays usable even if a holder panicked: it only ever holds whole entries.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct LocalWatcher {
    run_id: RunId,
    /// Taken out (and dropped) under the lock when the watcher goes, so the last one out sees
    /// no receiver left and removes the run's entry.
    changes: Option<watch::Receiver<Option<Arc<RunEvent>>>>,
    runs: Arc<Mutex<Runs>>,
}

impl Drop for LocalWatcher {
    fn drop(&mut self) {
        let mut runs = lock(&self.runs);
        drop(self.changes.take());
        if runs
            .get(&self.run_id)
            .is_some_and(|changes| changes.receiver_count() == 0)
        {
            runs.remove(&self.run_id);
        }
    }
}

#[async_trait]
impl RunWatcher for LocalWatcher {
    async fn changed(&mut self, timeout: Duration) -> Option<Arc<RunEvent>> {
        let changes = self.changes.as_mut()?;
        // The sender lives as long as any watcher of the run, so `changed` only ends with a
        // new event.
        match tokio::time::timeout(timeout, changes.changed()).await {
            Ok(Ok(())) => changes.borrow_and_update().clone(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spellcast_domain::run::{EventBody, StepStatus};
    use std::time::Instant;

    fn event(seq: u64) -> RunEvent {
        RunEvent {
            seq,
            body: EventBody::StepUpdate {
                run_id: "a".into(),
                step_id: "s".into(),
                index: 0,
                of: 1,
                status: StepStatus::Running,
                progress: 0.5,
                message: None,
                outputs: None,
                at: None,
                attempt: None,
                resumed: false,
                until: None,
            },
        }
    }

    #[tokio::test]
    async fn a_watcher_wakes_for_its_run_only() {
        let signal = LocalSignal::default();
        let mut watcher = signal.watch(&"a".into());
        signal.notify(&"b".into(), &event(1));
        let started = Instant::now();
        watcher.changed(Duration::from_millis(100)).await;
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "woken by another run"
        );
        signal.notify(&"a".into(), &event(1));
        let started = Instant::now();
        let announced = watcher.changed(Duration::from_secs(5)).await;
        assert_eq!(
            announced.map(|e| e.seq),
            Some(1),
            "the event is handed over"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "not woken by its run"
        );
    }

    #[tokio::test]
    async fn a_change_while_busy_is_not_missed_and_entries_go_with_their_watchers() {
        let signal = LocalSignal::default();
        let mut first = signal.watch(&"a".into());
        let second = signal.watch(&"a".into());
        // Notified before it waits: the next wait returns at once, with the newest event.
        signal.notify(&"a".into(), &event(1));
        signal.notify(&"a".into(), &event(2));
        let started = Instant::now();
        let announced = first.changed(Duration::from_secs(5)).await;
        assert_eq!(announced.map(|e| e.seq), Some(2));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(signal.runs.lock().unwrap().len(), 1);
        drop(first);
        assert_eq!(signal.runs.lock().unwrap().len(), 1, "one watcher is left");
        drop(second);
        assert!(
            signal.runs.lock().unwrap().is_empty(),
            "the run's entry stayed"
        );
        // Notifying a run nobody watches creates nothing.
        signal.notify(&"b".into(), &event(1));
        assert!(signal.runs.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn without_a_runner_publication_fails() {
        let (bus, rx) = LocalBus::new();
        drop(rx);
        let event = ExecutionStarted {
            run_id: "r".into(),
            slug: spellcast_domain::ids::Slug::parse("s").unwrap(),
        };
        assert!(bus.execution_started(event).await.is_err());
    }
}
