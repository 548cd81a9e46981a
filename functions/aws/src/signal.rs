//! A run signal for streams that do not share memory with the runner (the stream Lambda): the
//! stream re-reads the store after each wait, polling fast while events flow and backing off,
//! up to a bound, while the run is idle.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use spellcast_application::ports::{RunSignal, RunWatcher};
use spellcast_domain::ids::RunId;
use spellcast_domain::run::RunEvent;

/// Polls every `fastest` while events arrive, doubling the wait while idle up to `slowest`.
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
}

impl PollingWatcher {
    /// The wait before the next read, and the one after it if nothing arrives meanwhile.
    fn step(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.slowest);
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_waits_double_up_to_the_bound_and_events_reset_them() {
        let signal = PollingSignal::new(Duration::from_millis(100), Duration::from_millis(1000));
        let mut w = PollingWatcher {
            next: signal.fastest,
            fastest: signal.fastest,
            slowest: signal.slowest,
        };
        let waits: Vec<u64> = (0..6).map(|_| w.step().as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        w.delivered();
        assert_eq!(w.step(), Duration::from_millis(100));
    }
}
