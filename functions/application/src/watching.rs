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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::Clock;
    use crate::testing::{Fixture, QuietSignal};
    use serde_json::json;
    use spellcast_domain::run::{RunChange, RunError};

    fn fixture() -> Fixture {
        Fixture::new(spellcast_domain::testing::catalog_of(json!([
            {"id": "a", "title": "A", "tool": "text.render", "with": {"template": "a"}}
        ])))
    }

    fn watching(f: &Fixture, heartbeat_ms: u64, limit_ms: u64) -> Watching {
        Watching {
            runs: f.store.clone(),
            signal: Arc::new(QuietSignal),
            heartbeat: Duration::from_millis(heartbeat_ms),
            limit: Duration::from_millis(limit_ms),
        }
    }

    /// Everything a watch sends until it ends.
    async fn watch(w: Watching, run: &Run, after: u64) -> Vec<Watched> {
        let (tx, mut rx) = mpsc::channel(64);
        w.watch(run, after, tx).await;
        let mut got = Vec::new();
        while let Some(item) = rx.recv().await {
            got.push(item);
        }
        got
    }

    fn seqs(got: &[Watched]) -> Vec<u64> {
        got.iter()
            .filter_map(|w| match w {
                Watched::Event(e) => Some(e.seq),
                Watched::Ping => None,
            })
            .collect()
    }

    async fn ended_run(f: &Fixture) -> Run {
        let run = f.cast_run("u", json!({})).await;
        let now = f.clock.now();
        let log = f.run_log();
        let start = RunChange::Start {
            at: now,
            deadline: now + chrono::Duration::minutes(1),
            lease_until: now + chrono::Duration::minutes(1),
        };
        log.advance(&run.run_id, start).await.unwrap().unwrap();
        let fail = RunChange::Fail {
            at: now,
            error: RunError {
                code: "x".into(),
                message: "x".into(),
                step_id: None,
            },
        };
        let (run, _) = log.advance(&run.run_id, fail).await.unwrap().unwrap();
        run
    }

    #[tokio::test]
    async fn a_watch_sends_what_follows_and_ends_with_the_terminal_event() {
        let f = fixture();
        let run = ended_run(&f).await;
        assert_eq!(
            seqs(&watch(watching(&f, 1000, 60_000), &run, 0).await),
            [1, 2]
        );
        assert_eq!(seqs(&watch(watching(&f, 1000, 60_000), &run, 1).await), [2]);
    }

    #[tokio::test]
    async fn a_quiet_watch_pings_and_closes_at_its_limit() {
        let f = fixture();
        let run = f.cast_run("u", json!({})).await;
        let opened = Instant::now();
        let got = watch(watching(&f, 20, 150), &run, 0).await;
        assert!(opened.elapsed() >= Duration::from_millis(150));
        assert!(seqs(&got).is_empty());
        let pings = got.iter().filter(|w| matches!(w, Watched::Ping)).count();
        assert!(
            (3..=8).contains(&pings),
            "{pings} pings in 150 ms at one per 20 ms"
        );
    }

    #[tokio::test]
    async fn a_watch_from_beyond_the_end_closes_once_the_run_has_ended() {
        let f = fixture();
        let run = ended_run(&f).await;
        let opened = Instant::now();
        let got = watch(watching(&f, 1000, 60_000), &run, run.last_seq + 5).await;
        assert!(got.is_empty());
        assert!(opened.elapsed() < Duration::from_secs(5));
    }
}
