//! A run signal for streams that do not share memory with the runner (the stream Lambda): a
//! watcher waits a bounded poll interval, then the stream reads the store again.

use std::time::Duration;

use async_trait::async_trait;
use spellcast_core::ports::{RunSignal, RunWatcher};

/// Polls at most every `interval`.
pub struct PollingSignal {
    interval: Duration,
}

impl PollingSignal {
    /// A signal that lets streams re-read the store every `interval`.
    pub fn new(interval: Duration) -> Self {
        PollingSignal { interval }
    }
}

impl RunSignal for PollingSignal {
    fn watch(&self, _run_id: &str) -> Box<dyn RunWatcher> {
        Box::new(PollingWatcher {
            interval: self.interval,
        })
    }

    fn notify(&self, _run_id: &str) {
        // Writers and readers are different processes: readers poll, nothing to wake here.
    }
}

struct PollingWatcher {
    interval: Duration,
}

#[async_trait]
impl RunWatcher for PollingWatcher {
    async fn changed(&mut self, timeout: Duration) {
        tokio::time::sleep(self.interval.min(timeout)).await;
    }
}
