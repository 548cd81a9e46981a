//! Limiting: rate limits and open-stream caps as entry points apply them, over the limiter port.

use std::sync::Arc;

use crate::ports::{Clock, Limiter, StoreResult};
use spellcast_domain::ids::{RunId, UserId};
use spellcast_domain::limits::{Limit, Slot, StreamCaps, Verdict};

/// Rate limits and open-stream caps, as entry points apply them.
pub struct Limiting {
    /// The counters.
    pub limiter: Arc<dyn Limiter>,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// The caps on open streams.
    pub caps: StreamCaps,
}

impl Limiting {
    /// Counts one hit of `subject` against `limit`.
    pub async fn hit(&self, limit: &Limit, subject: &str) -> StoreResult<Verdict> {
        self.limiter.hit(limit, subject, self.clock.now()).await
    }

    /// Takes a slot for one more stream of `run` by `user`; `Err` with the cap reached
    /// ([`Slot::UserFull`] or [`Slot::RunFull`]) when there is none.
    pub async fn open_stream(
        &self,
        user: &UserId,
        run: &RunId,
    ) -> StoreResult<Result<StreamSlot, Slot>> {
        Ok(
            match self
                .limiter
                .take(user, run, &self.caps, self.clock.now())
                .await?
            {
                Slot::Taken => Ok(StreamSlot {
                    limiter: self.limiter.clone(),
                    user: user.clone(),
                    run: run.clone(),
                }),
                full => Err(full),
            },
        )
    }
}

/// One open stream's slot, to give back when the stream ends (else its lease frees it).
pub struct StreamSlot {
    limiter: Arc<dyn Limiter>,
    user: UserId,
    run: RunId,
}

impl StreamSlot {
    /// Gives the slot back.
    pub async fn give_back(self) -> StoreResult<()> {
        self.limiter.give_back(&self.user, &self.run).await
    }
}
