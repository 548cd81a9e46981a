//! Rate limits (SPEC §2): at most so many requests of a kind per subject (a user, or a client
//! address where there is none) in a fixed window, and caps on open streams per user and per run.
//! The rules only; the counts live behind the application's limiter port.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// At most `max` hits per `window` for one subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// What is limited (`invoices`, `casts`, ...): part of the counter's key.
    pub name: &'static str,
    /// Hits allowed per window.
    pub max: u32,
    /// The window.
    pub window: Duration,
}

impl Limit {
    /// `max` hits per minute.
    pub const fn per_minute(name: &'static str, max: u32) -> Limit {
        Limit {
            name,
            max,
            window: Duration::from_secs(60),
        }
    }

    /// The fixed window `now` falls in: its start (seconds since the epoch) and its end.
    pub fn window_of(&self, now: DateTime<Utc>) -> (i64, DateTime<Utc>) {
        let len = self.window.as_secs().max(1) as i64;
        let start = now.timestamp().div_euclid(len) * len;
        let end = DateTime::from_timestamp(start + len, 0).unwrap_or(now);
        (start, end)
    }

    /// The verdict for the `hits`-th hit of a window ending at `end`.
    pub fn verdict(&self, hits: u64, end: DateTime<Utc>, now: DateTime<Utc>) -> Verdict {
        if hits <= u64::from(self.max) {
            Verdict::Allowed
        } else {
            // Whole seconds, at least one: what `Retry-After` can say.
            let wait = (end - now).num_milliseconds().max(0) as u64;
            Verdict::Limited {
                retry_after_secs: wait.div_ceil(1000).max(1),
            }
        }
    }
}

/// The limits every entry point applies: per user, and per client address for what needs no
/// user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Quotes asked for, per user.
    pub invoices: Limit,
    /// Casts, per user.
    pub casts: Limit,
    /// Uploads asked for (file inputs), per user.
    pub uploads: Limit,
    /// Demo sessions made (each a new user with demo points), per client address: the one
    /// request that writes without a user (local server only).
    pub sessions: Limit,
}

impl Limits {
    /// Quotes a user may ask for per minute unless configured otherwise (SPEC §2).
    pub const INVOICES_PER_MINUTE: u32 = 60;
    /// Casts a user may make per minute unless configured otherwise (SPEC §2).
    pub const CASTS_PER_MINUTE: u32 = 30;
    /// Uploads a user may ask for per minute.
    pub const UPLOADS_PER_MINUTE: u32 = 60;
    /// Demo sessions one client address may make per minute unless configured otherwise.
    pub const SESSIONS_PER_MINUTE: u32 = 30;

    /// Limits of so many invoices and casts per user and minute (and the default for sessions).
    pub const fn per_minute(invoices: u32, casts: u32) -> Limits {
        Limits {
            invoices: Limit::per_minute("invoices", invoices),
            casts: Limit::per_minute("casts", casts),
            uploads: Limit::per_minute("uploads", Self::UPLOADS_PER_MINUTE),
            sessions: Limit::per_minute("sessions", Self::SESSIONS_PER_MINUTE),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::per_minute(Self::INVOICES_PER_MINUTE, Self::CASTS_PER_MINUTE)
    }
}

/// Whether a hit may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit.
    Allowed,
    /// Over it: try again after this many seconds.
    Limited {
        /// When the window ends, in whole seconds from now.
        retry_after_secs: u64,
    },
}

/// Caps on open streams (SPEC §2): per user, and per run, each held for at most `lease`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCaps {
    /// Open streams one user may hold.
    pub per_user: u32,
    /// Open streams one run may have.
    pub per_run: u32,
    /// Longer than any stream lasts (streams close themselves at the stream limit): a slot
    /// whose stream died without giving it back is free again after this.
    pub lease: Duration,
}

impl StreamCaps {
    /// Open streams per user unless configured otherwise.
    pub const PER_USER: u32 = 20;
    /// Open streams per run unless configured otherwise.
    pub const PER_RUN: u32 = 5;

    /// `per_user` and `per_run` open streams that close themselves after `stream_limit`.
    pub fn new(per_user: u32, per_run: u32, stream_limit: Duration) -> StreamCaps {
        StreamCaps {
            per_user,
            per_run,
            lease: stream_limit + Duration::from_secs(60),
        }
    }
}

/// Whether a stream may open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A slot was taken: give it back when the stream ends.
    Taken,
    /// The user holds as many open streams as allowed.
    UserFull,
    /// The run has as many open streams as allowed.
    RunFull,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_fixed_and_the_wait_is_until_the_next_one() {
        let limit = Limit::per_minute("x", 2);
        let now = DateTime::from_timestamp(1_000_000_030, 400_000_000).unwrap();
        let (start, end) = limit.window_of(now);
        assert_eq!((start, end.timestamp()), (1_000_000_020, 1_000_000_080));
        assert_eq!(limit.verdict(2, end, now), Verdict::Allowed);
        // 49.6 s left: rounded up.
        assert_eq!(
            limit.verdict(3, end, now),
            Verdict::Limited {
                retry_after_secs: 50
            }
        );
        let late = DateTime::from_timestamp(1_000_000_079, 900_000_000).unwrap();
        assert_eq!(limit.window_of(late).0, 1_000_000_020);
        assert_eq!(
            limit.verdict(3, end, late),
            Verdict::Limited {
                retry_after_secs: 1
            }
        );
    }
}
