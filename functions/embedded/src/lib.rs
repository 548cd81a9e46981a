//! Spellcast's local adapters: [`RedbStore`], a real embedded database (redb: ACID, persisted to
//! one file, or in memory for `--memory`), and [`LocalBus`] with [`LocalSignal`], the in-process
//! event bus and run-change signal of the one-process local server, and [`MemoryLimiter`], its
//! rate limit counters.

mod bus;
mod limiter;
mod store;

pub use bus::{LocalBus, LocalSignal};
pub use limiter::MemoryLimiter;
pub use store::RedbStore;
