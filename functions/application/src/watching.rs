//! Watching a run: its events after a given one, as they are stored, with heartbeats while
//! nothing happens, until the run ends, the watcher leaves, or the time limit (so the client
//! resumes before the platform cuts the connection). A watch never outlives its run, whatever
//! `after` the client claims.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::ports::{RunSignal, RunStore};
use spellcast_domain::ids::RunId;
use spellcast_domain::run::{Run, RunEvent};

/// Events read from the store at a time.
const PAGE: usize = 100;

/// What a watcher receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Watched {
    /// The next event of the run (shared: every stream of the run sends the same one; and
    /// small, since a stream's channel holds a block of these from the start).
    Event(Arc<RunEvent>),
    /// Nothing happened for a heartbeat interval.
    Ping,
}

/// What watching needs: the store, the signal that wakes it, and its timings. Owned, because a
/// watch outlives the request that started it.
pub struct Watching {
    /// Run events.
    pub runs: Arc<dyn RunStore>,
    /// Wakes the watch when the run changes.
    pub signal: Arc<dyn RunSignal>,
    /// How long without a write before a [`Watched::Ping`].
    pub heartbeat: Duration,
    /// How long one watch may last.
    pub limit: Duration,
}

impl Watching {
    /// Sends the events of `run` after seq `after` into `tx` until the terminal one, `tx`
    /// closing, or the time limit. A store failure ends the watch (the client resumes).
    pub async fn watch(self, run: &Run, mut after: u64, tx: mpsc::Sender<Watched>) {
        let run_id = run.run_id.clone();
        // A client that claims an event beyond the run's last never reads the terminal event:
        // such a watch asks for the run's status whenever nothing new was read, and ends with
        // the run (within one wake-up of the signal).
        let beyond_the_end = after > run.last_seq;
        // Watch before reading, so a change between the read and the wait is not missed.
        let mut watcher = self.signal.watch(&run_id);
        let opened = Instant::now();
        let mut last_write = Instant::now();
        // The event the signal handed over with the last wake-up, if any.
        let mut announced: Option<Arc<RunEvent>> = None;
        // After sending the event the signal handed over, the store holds nothing newer (a
        // newer event wakes the watch again): the store is not read.
        let mut caught_up = false;
        loop {
            let (events, handed_over): (Vec<Arc<RunEvent>>, bool) = match announced.take() {
                Some(event) if event.seq == after + 1 => (vec![event], true),
                Some(event) if event.seq <= after => (vec![], false),
                _ if caught_up => (vec![], false),
                _ => match self.runs.run_events(&run_id, after, PAGE).await {
                    Ok(events) => (events.into_iter().map(Arc::new).collect(), false),
                    Err(e) => {
                        tracing::error!(error = %e, "watch read failed; closing so the client resumes");
                        return;
                    }
                },
            };
            caught_up = false;
            if events.is_empty() {
                if beyond_the_end && self.has_ended(&run_id).await {
                    return;
                }
                let open_for = opened.elapsed();
                if open_for >= self.limit {
                    tracing::info!("watch time limit reached; closing so the client resumes");
                    return;
                }
                if last_write.elapsed() >= self.heartbeat {
                    if tx.send(Watched::Ping).await.is_err() {
                        return;
                    }
                    last_write = Instant::now();
                }
                let wait = self
                    .heartbeat
                    .saturating_sub(last_write.elapsed())
                    .min(self.limit - open_for);
                // A watcher that left is noticed at once, not at the next write: its stream's
                // slot and task are freed without waiting for a heartbeat.
                tokio::select! {
                    event = watcher.changed(wait) => announced = event,
                    () = tx.closed() => return,
                }
                continue;
            }
            for event in events {
                let seq = event.seq;
                let terminal = event.body.is_terminal();
                if tx.send(Watched::Event(event)).await.is_err() {
                    return;
                }
                after = seq;
                if terminal {
                    return;
                }
            }
            caught_up = handed_over;
            last_write = Instant::now();
            watcher.delivered();
        }
    }

    /// Whether the run is terminal (a store failure counts as ended: the client resumes).
    async fn has_ended(&self, run_id: &RunId) -> bool {
        match self.runs.run(run_id).await {
            Ok(Some(run)) => run.status.is_terminal(),
            Ok(None) => true,
            Err(e) => {
                tracing::error!(error = %e, "watch read failed; closing so the client resumes");
                true
            }
        }
    }
}
