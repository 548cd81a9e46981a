//! The limiter: rate limit counters and open-stream counts (the table on AWS, so they hold across
//! instances; memory locally).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use spellcast_domain::ids::{RunId, UserId};
use spellcast_domain::limits::{Limit, Slot, StreamCaps, Verdict};

use super::StoreResult;

/// Counts hits per limit, subject and window.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Counts one hit of `subject` against `limit` at `now` and says whether it may go on.
    async fn hit(&self, limit: &Limit, subject: &str, now: DateTime<Utc>) -> StoreResult<Verdict>;
}

/// What guards against too much: request rates and open streams, counted together.
pub trait Limiter: RateLimiter + StreamSlots {}

impl<T: RateLimiter + StreamSlots> Limiter for T {}

/// Counts open streams per user and per run.
#[async_trait]
pub trait StreamSlots: Send + Sync {
    /// Takes a slot for one more stream of `run` by `user`, unless a cap is reached.
    async fn take(
        &self,
        user: &UserId,
        run: &RunId,
        caps: &StreamCaps,
        now: DateTime<Utc>,
    ) -> StoreResult<Slot>;
    /// Gives back a slot taken for `user` and `run`.
    async fn give_back(&self, user: &UserId, run: &RunId) -> StoreResult<()>;
}
