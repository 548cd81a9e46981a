//! Spellcast's local adapters: [`RedbStore`], a real embedded database (redb: ACID, persisted to
//! one file, or in memory for `--memory`), and [`LocalBus`] with [`LocalSignal`], the in-process
//! event bus and run-change signal of the one-process local server, and [`MemoryLimiter`], its
//! rate limit counters, and [`DiskBlobs`], large output files under the data dir.

mod blobs;
mod bus;
mod limiter;
mod store;

pub use blobs::DiskBlobs;
pub use bus::{LocalBus, LocalSignal};
pub use limiter::MemoryLimiter;
pub use store::RedbStore;
