//! Coalescing a streamed answer into `stepDelta` events (SPEC §7.2): text that arrives within one
//! window travels as one event, so a long answer is a few dozen events rather than one per token,
//! and the first text is sent at once.

use std::time::Duration;

use tokio::time::Instant;

/// The default window: at most one delta per step per 100 ms.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(100);

/// Text waiting to be sent as a delta, and when the last one went.
#[derive(Debug)]
pub struct Coalescer {
    window: Duration,
    pending: String,
    last_sent: Option<Instant>,
}

impl Coalescer {
    /// Deltas at most once per `window`.
    pub fn new(window: Duration) -> Self {
        Coalescer {
            window,
            pending: String::new(),
            last_sent: None,
        }
    }

    /// Adds text that arrived at `now`; returns what to send now, if the window allows.
    pub fn push(&mut self, text: &str, now: Instant) -> Option<String> {
        self.pending.push_str(text);
        match self.last_sent {
            Some(last) if last + self.window > now => None,
            // Nothing sent yet (the first text goes at once), or the window has passed.
            _ => self.take(now),
        }
    }

    /// When the waiting text must go, if any waits.
    pub fn due(&self) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        self.last_sent.map(|last| last + self.window)
    }

    /// Takes the waiting text (none if nothing waits), counting it as sent at `now`.
    pub fn take(&mut self, now: Instant) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        self.last_sent = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_first_text_goes_at_once_and_the_rest_once_per_window() {
        let mut c = Coalescer::new(Duration::from_millis(100));
        let t0 = Instant::now();
        assert_eq!(c.push("Hel", t0).as_deref(), Some("Hel"));
        assert_eq!(c.push("lo", t0 + Duration::from_millis(10)), None);
        assert_eq!(c.push(",", t0 + Duration::from_millis(50)), None);
        assert_eq!(c.due(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(
            c.push(" world", t0 + Duration::from_millis(100)).as_deref(),
            Some("lo, world")
        );
        assert_eq!(c.due(), None);
        assert_eq!(c.take(t0 + Duration::from_millis(150)), None);
        // A lull longer than the window: the next text goes at once.
        assert_eq!(
            c.push("!", t0 + Duration::from_millis(400)).as_deref(),
            Some("!")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_thousand_tokens_in_a_second_make_about_ten_deltas() {
        let mut c = Coalescer::new(Duration::from_millis(100));
        let t0 = Instant::now();
        let mut sent = Vec::new();
        for i in 0..1000u64 {
            let now = t0 + Duration::from_millis(i);
            if let Some(due) = c.due() {
                if due <= now {
                    sent.extend(c.take(now));
                }
            }
            sent.extend(c.push("x", now));
        }
        sent.extend(c.take(t0 + Duration::from_millis(1000)));
        assert_eq!(sent.concat().len(), 1000, "nothing lost, nothing doubled");
        assert!((10..=12).contains(&sent.len()), "{} deltas", sent.len());
    }
}
