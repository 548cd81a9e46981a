//! Rate limit counters and open-stream counts for one process (the local server is one): a map
//! of window counts, pruned of ended windows as it grows, and counts of open streams per user
//! and per run, dropped at zero, so both stay bounded.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use spellcast_application::ports::{RateLimiter, StreamSlots};
use spellcast_application::ports::{StoreError, StoreResult};
use spellcast_domain::ids::{RunId, UserId};
use spellcast_domain::limits::{Limit, Slot, StreamCaps, Verdict};

/// Above this many counters, ended windows are dropped before counting.
const PRUNE_ABOVE: usize = 10_000;

/// A counter's key: the limit's name, the subject, the window's start.
type Window = (&'static str, String, i64);

/// Window counts in memory.
#[derive(Default)]
pub struct MemoryLimiter {
    /// Each window's hits so far and its end.
    counts: Mutex<HashMap<Window, (u64, DateTime<Utc>)>>,
    /// Open streams per user and per run.
    open: Mutex<OpenStreams>,
}

#[derive(Default)]
struct OpenStreams {
    per_user: HashMap<String, u32>,
    per_run: HashMap<String, u32>,
}

#[async_trait]
impl StreamSlots for MemoryLimiter {
    async fn take(
        &self,
        user: &UserId,
        run: &RunId,
        caps: &StreamCaps,
        _now: DateTime<Utc>,
    ) -> StoreResult<Slot> {
        let mut open = self
            .open
            .lock()
            .map_err(|_| StoreError::new("stream slots poisoned"))?;
        if open.per_user.get(user.as_str()).copied().unwrap_or(0) >= caps.per_user {
            return Ok(Slot::UserFull);
        }
        if open.per_run.get(run.as_str()).copied().unwrap_or(0) >= caps.per_run {
            return Ok(Slot::RunFull);
        }
        *open.per_user.entry(user.to_string()).or_default() += 1;
        *open.per_run.entry(run.to_string()).or_default() += 1;
        Ok(Slot::Taken)
    }

    async fn give_back(&self, user: &UserId, run: &RunId) -> StoreResult<()> {
        let mut open = self
            .open
            .lock()
            .map_err(|_| StoreError::new("stream slots poisoned"))?;
        let OpenStreams { per_user, per_run } = &mut *open;
        for (map, key) in [(per_user, user.as_str()), (per_run, run.as_str())] {
            if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl RateLimiter for MemoryLimiter {
    async fn hit(&self, limit: &Limit, subject: &str, now: DateTime<Utc>) -> StoreResult<Verdict> {
        let (start, end) = limit.window_of(now);
        let mut counts = self
            .counts
            .lock()
            .map_err(|_| StoreError::new("rate limiter poisoned"))?;
        if counts.len() > PRUNE_ABOVE {
            counts.retain(|_, (_, ends)| *ends > now);
        }
        let entry = counts
            .entry((limit.name, subject.to_owned(), start))
            .or_insert((0, end));
        entry.0 += 1;
        Ok(limit.verdict(entry.0, end, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_per_subject_and_window_and_stays_bounded() {
        let limiter = MemoryLimiter::default();
        let limit = Limit::per_minute("casts", 2);
        let now = DateTime::from_timestamp(1_000_000_000, 0).unwrap();
        for _ in 0..2 {
            assert_eq!(
                limiter.hit(&limit, "a", now).await.unwrap(),
                Verdict::Allowed
            );
        }
        assert!(matches!(
            limiter.hit(&limit, "a", now).await.unwrap(),
            Verdict::Limited { .. }
        ));
        assert_eq!(
            limiter.hit(&limit, "b", now).await.unwrap(),
            Verdict::Allowed
        );
        let next = now + chrono::Duration::seconds(60);
        assert_eq!(
            limiter.hit(&limit, "a", next).await.unwrap(),
            Verdict::Allowed
        );
        for i in 0..(PRUNE_ABOVE + 10) {
            limiter.hit(&limit, &format!("s{i}"), now).await.unwrap();
        }
        let later = now + chrono::Duration::seconds(600);
        limiter.hit(&limit, "z", later).await.unwrap();
        assert!(
            limiter.counts.lock().unwrap().len() < 10,
            "ended windows dropped"
        );
    }
}
