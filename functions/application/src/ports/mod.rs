//! The ports: what the application needs from the outside world, one trait per aggregate.
//! Adapters (the embedded store, DynamoDB, EventBridge, S3, ...) implement them; use cases hold
//! only the ones they use.

mod blobs;
mod bus;
mod clock;
mod costs;
mod deliveries;
mod invoices;
mod ledger;
mod limits;
mod runs;
mod shares;
mod signal;
mod uploads;

pub use blobs::{drawn_only, BlobHead, Blobs, Served};
pub use bus::{BusError, EventBus};
pub use clock::{Clock, SystemClock};
pub use costs::CostStore;
pub use deliveries::{DeliveryStore, WebhookSender};
pub use invoices::InvoiceStore;
pub use ledger::LedgerStore;
pub use limits::{Limiter, RateLimiter, StreamSlots};
pub use runs::RunStore;
pub use shares::ShareStore;
pub use signal::{RunSignal, RunWatcher};
pub use uploads::UploadStore;

/// A store failure that is not the client's fault (I/O, corruption, an unreachable service).
#[derive(Debug, thiserror::Error)]
#[error("store: {message}")]
pub struct StoreError {
    message: String,
    unavailable: bool,
}

impl StoreError {
    /// A failure, described.
    pub fn new(message: impl Into<String>) -> Self {
        StoreError {
            message: message.into(),
            unavailable: false,
        }
    }

    /// Wraps any error.
    pub fn from_err(e: impl std::fmt::Display) -> Self {
        StoreError::new(e.to_string())
    }

    /// The service behind the store timed out, throttled or could not be reached: nothing is
    /// wrong with the request, which may be sent again as it is.
    pub fn unavailable(e: impl std::fmt::Display) -> Self {
        StoreError {
            message: e.to_string(),
            unavailable: true,
        }
    }

    /// Whether trying again later may succeed (see [`StoreError::unavailable`]).
    pub fn is_unavailable(&self) -> bool {
        self.unavailable
    }
}

/// Results of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Durable state, every part of it: what a store adapter offers. Every method that changes more
/// than one record does so atomically. A use case holds only the parts it uses.
pub trait Store:
    RunStore + InvoiceStore + LedgerStore + ShareStore + DeliveryStore + CostStore + UploadStore
{
}

impl<T> Store for T where
    T: RunStore + InvoiceStore + LedgerStore + ShareStore + DeliveryStore + CostStore + UploadStore
{
}
