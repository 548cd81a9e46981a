//! A run signal for streams that do not share memory with the runner (the stream Lambda): the
//! stream re-reads the store after each wait — often while the run is busy, seldom once it has
//! been quiet for a while.
//!
//! Measured by `scripts/bench-cost` (step change → client through the stream function): a wait
//! that doubled from 100 ms up to 1 s gave p50 124 ms / p99 231 ms, its backoff landing in the
//! gaps between a run's steps. Now a busy run is read at most every `busy` (200 ms) for
//! [`QUIET_AFTER`] after its last event, and only after that backs off to `slowest` (a
//! durable wait, a queued run nobody executes): an empty read costs a read unit
//! ($0.125 per million), a stream's Lambda second at 128 MB fifteen times that.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use spellcast_application::ports::{RunSignal, RunWatcher};
use spellcast_domain::ids::RunId;
use spellcast_domain::run::RunEvent;

/// How long after its last event a run still counts as busy.
pub const QUIET_AFTER: Duration = Duration::from_secs(3);
/// The longest wait between reads while a run is busy.
pub const BUSY: Duration = Duration::from_millis(200);

/// Polls every `fastest` while events arrive, doubling the wait while idle — up to [`BUSY`]
/// for [`QUIET_AFTER`], then up to `slowest`.
pub struct PollingSignal {
    fastest: Duration,
    slowest: Duration,
}

impl PollingSignal {
    /// A signal whose watchers wait between `fastest` and `slowest` between reads.
    pub fn new(fastest: Duration, slowest: Duration) -> Self {
        PollingSignal {
            fastest,
            slowest: slowest.max(fastest),
        }
    }
}

impl RunSignal for PollingSignal {
    fn watch(&self, _run_id: &RunId) -> Box<dyn RunWatcher> {
        Box::new(PollingWatcher {
            next: self.fastest,
            fastest: self.fastest,
            slowest: self.slowest,
            busy: BUSY.clamp(self.fastest, self.slowest),
            last_event: Instant::now(),
        })
    }

    fn notify(&self, _run_id: &RunId, _event: &RunEvent) {
        // Writers and readers are different processes: readers poll, nothing to wake here.
    }
}

struct PollingWatcher {
    next: Duration,
    fastest: Duration,
    slowest: Duration,
    busy: Duration,
    /// When the watch began or last delivered an event.
    last_event: Instant,
}

impl PollingWatcher {
    /// The wait before the next read, and the one after it if nothing arrives meanwhile.
    fn step(&mut self) -> Duration {
        let cap = if self.last_event.elapsed() < QUIET_AFTER {
            self.busy
        } else {
            self.slowest
        };
        let wait = self.next.min(cap);
        self.next = (wait * 2).min(self.slowest);
        wait
    }
}

#[async_trait]
impl RunWatcher for PollingWatcher {
    async fn changed(&mut self, timeout: Duration) -> Option<Arc<RunEvent>> {
        let wait = self.step();
        tokio::time::sleep(wait.min(timeout)).await;
        None
    }

    fn delivered(&mut self) {
        self.next = self.fastest;
        self.last_event = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_busy_bound_then_to_the_slowest_once_quiet() {
        let signal = PollingSignal::new(Duration::from_millis(50), Duration::from_millis(1000));
        let mut w = PollingWatcher {
            next: signal.fastest,
            fastest: signal.fastest,
            slowest: signal.slowest,
            busy: BUSY,
            last_event: Instant::now(),
        };
        let waits: Vec<u64> = (0..5).map(|_| w.step().as_millis() as u64).collect();
        assert_eq!(waits, [50, 100, 200, 200, 200], "busy: at most 200 ms");
        w.last_event = Instant::now() - QUIET_AFTER;
        let waits: Vec<u64> = (0..3).map(|_| w.step().as_millis() as u64).collect();
        assert_eq!(waits, [400, 800, 1000], "quiet: backs off to the slowest");
        w.delivered();
        assert_eq!(w.step(), Duration::from_millis(50));
    }
}
