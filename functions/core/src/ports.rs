//! The ports: what the core needs from the outside world. Adapters (the embedded store, DynamoDB,
//! EventBridge, ...) implement them; the core takes them as trait objects.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{CreditTxId, InvoiceId, RunId, ShareId, Slug, UserId};
use crate::invoice::{IdempotencyRecord, InvoiceRecord, IssueOutcome};
use crate::ledger::LedgerEntry;
use crate::run::{OutputFile, Run, RunChange, RunEvent};
use crate::webhooks::{Attempt, Delivery, WebhookSecret};

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

/// Everything a cast writes, in one atomic change.
#[derive(Debug, Clone)]
pub struct NewCast {
    /// The invoice paid (`jti`).
    pub invoice_id: InvoiceId,
    /// Who pays.
    pub user_id: UserId,
    /// Hash of the context, to recognise a retry.
    pub context_hash: String,
    /// Now: an open invoice past its expiry can no longer be consumed.
    pub now: DateTime<Utc>,
    /// The queued run (its `cost_pts` is the amount debited).
    pub run: Run,
    /// The debit entry.
    pub debit: LedgerEntry,
}

/// What the stored invoice says a cast must do: the one rule every store applies before writing.
#[derive(Debug, Clone)]
pub enum CastCheck {
    /// Answer this without writing anything.
    Answer(CastOutcome),
    /// The invoice already paid for this very cast: answer with that run.
    Replay {
        /// The run it paid for.
        run_id: RunId,
    },
    /// Pay: the run and the debit, priced at the invoice's binding cost.
    Pay {
        /// The queued run.
        run: Run,
        /// The debit entry.
        debit: LedgerEntry,
    },
}

impl NewCast {
    /// Decides the cast from the stored invoice (if any): unknown or someone else's, consumed by
    /// this cast or another, expired, or payable at its price.
    pub fn check(&self, invoice: Option<&InvoiceRecord>) -> CastCheck {
        let Some(invoice) = invoice.filter(|i| i.user_id == self.user_id) else {
            return CastCheck::Answer(CastOutcome::UnknownInvoice);
        };
        if let crate::invoice::InvoiceState::Consumed {
            run_id,
            context_hash,
            ..
        } = &invoice.state
        {
            return if *context_hash == self.context_hash {
                CastCheck::Replay {
                    run_id: run_id.clone(),
                }
            } else {
                CastCheck::Answer(CastOutcome::ContextMismatch)
            };
        }
        if self.now >= invoice.expires_at {
            return CastCheck::Answer(CastOutcome::Expired);
        }
        let mut run = self.run.clone();
        run.cost_pts = invoice.cost_pts;
        CastCheck::Pay {
            debit: run.debit_entry(),
            run,
        }
    }
}

/// What a cast did.
#[derive(Debug, Clone)]
pub enum CastOutcome {
    /// The invoice was consumed, the balance debited, the run queued.
    Created(Run),
    /// The invoice was already consumed by the same cast: the same run.
    Replayed(Run),
    /// The invoice was already consumed with another context.
    ContextMismatch,
    /// The balance does not cover the price; nothing changed.
    InsufficientBalance {
        /// The balance as it is.
        balance: i64,
    },
    /// The invoice is still open but has expired.
    Expired,
    /// No such invoice, or it belongs to someone else.
    UnknownInvoice,
}

/// Running totals of what a tool actually cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolCostTotal {
    /// The tool name.
    pub tool: String,
    /// Calls recorded.
    pub calls: u64,
    /// Points they cost together.
    pub pts: i64,
}

/// A spell's cached price, recomputed every 15 minutes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpellStats {
    /// The spell.
    pub slug: Slug,
    /// Its average cost.
    pub avg_cost_pts: i64,
    /// When this was computed.
    pub updated_at: DateTime<Utc>,
}

/// Durable state: balances, ledger, invoices, idempotency keys, runs, run events, output files,
/// cost statistics. Every method that changes more than one record does so atomically.
#[async_trait]
pub trait Store: Send + Sync {
    /// Adds a grant entry and credits the balance; returns the new balance.
    async fn grant(&self, entry: LedgerEntry) -> StoreResult<i64>;
    /// Posts a grant at most once under `key`: the key's record, the entry and the balance
    /// change in one transaction. A negative grant never takes the balance below zero.
    async fn grant_once(
        &self,
        entry: LedgerEntry,
        key: &crate::ledger::GrantKey,
    ) -> StoreResult<crate::ledger::GrantOutcome>;
    /// The user's balance (0 for a stranger).
    async fn balance(&self, user_id: &UserId) -> StoreResult<i64>;
    /// Ledger entries newest first, strictly older than `before` (a tx id) when given.
    async fn ledger(
        &self,
        user_id: &UserId,
        limit: usize,
        before: Option<&CreditTxId>,
    ) -> StoreResult<Vec<LedgerEntry>>;
    /// A remembered idempotency key of a user, unless it has expired.
    async fn idempotency(
        &self,
        user_id: &UserId,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>>;
    /// Stores a new invoice, honouring an idempotency key if there is one.
    async fn issue_invoice(
        &self,
        invoice: InvoiceRecord,
        idempotency: Option<IdempotencyRecord>,
    ) -> StoreResult<IssueOutcome>;
    /// The cast transaction: invoice open→consumed, debit, ledger entry, queued run.
    async fn cast(&self, cast: NewCast) -> StoreResult<CastOutcome>;
    /// A run by id.
    async fn run(&self, run_id: &RunId) -> StoreResult<Option<Run>>;
    /// The user's webhook signing secret, if one was made.
    async fn webhook_secret(&self, user_id: &UserId) -> StoreResult<Option<WebhookSecret>>;
    /// Stores `secret` as the user's: always when `replace` (a rotation), else only if the user
    /// has none (two first reads racing keep one secret). Returns the secret stored.
    async fn put_webhook_secret(
        &self,
        user_id: &UserId,
        secret: WebhookSecret,
        replace: bool,
    ) -> StoreResult<WebhookSecret>;
    /// A user's runs, newest first, strictly older than `before` (a run id) when given. For a
    /// listing: a store may leave out their inputs and outputs (`context`, `outputs`).
    async fn user_runs(
        &self,
        user_id: &UserId,
        limit: usize,
        before: Option<&RunId>,
    ) -> StoreResult<Vec<Run>>;
    /// A run by its debit's transaction id.
    async fn run_by_credit_tx(&self, credit_tx_id: &CreditTxId) -> StoreResult<Option<Run>>;
    /// Applies `change` with [`Run::apply`] and writes the run, its new event (if the change
    /// makes one), any output files and any refund, atomically: only over the run as it was read
    /// (its `last_seq` and status). `None` when the run refused the change.
    async fn advance_run(
        &self,
        run_id: &RunId,
        change: RunChange,
    ) -> StoreResult<Option<(Run, Option<RunEvent>)>>;
    /// A run's webhook deliveries, oldest first (each with its attempts).
    async fn deliveries(&self, run_id: &RunId) -> StoreResult<Vec<Delivery>>;
    /// One webhook delivery of a run.
    async fn delivery(&self, run_id: &RunId, webhook_id: &str) -> StoreResult<Option<Delivery>>;
    /// Records an attempt of a delivery and when the next one is due (its `next_at`; `None`:
    /// delivered or given up) — only if it is the delivery's next attempt (number
    /// `attempts + 1`); `false` when another worker recorded that attempt first.
    async fn record_attempt(
        &self,
        run_id: &RunId,
        webhook_id: &str,
        attempt: Attempt,
    ) -> StoreResult<bool>;
    /// Pending deliveries due at or before `at`, soonest first, at most `limit`.
    async fn due_deliveries(&self, at: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Delivery>>;
    /// Makes a run public: stores `share` unless the run has one already, in which case that one
    /// is kept (its id) with `include_inputs` as `share` says. Returns the share stored.
    async fn share_run(&self, share: crate::sharing::Share) -> StoreResult<crate::sharing::Share>;
    /// Takes a run back from the public: its share goes. Whether there was one.
    async fn unshare_run(&self, run_id: &RunId) -> StoreResult<bool>;
    /// A share by its id.
    async fn share(&self, share_id: &ShareId) -> StoreResult<Option<crate::sharing::Share>>;
    /// A run's share, if it is shared.
    async fn run_share(&self, run_id: &RunId) -> StoreResult<Option<crate::sharing::Share>>;
    /// Events with seq greater than `after`, in order, at most `limit`.
    async fn run_events(
        &self,
        run_id: &RunId,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<RunEvent>>;
    /// Output file `n` of a run.
    async fn output_file(&self, run_id: &RunId, n: usize) -> StoreResult<Option<OutputFile>>;
    /// Runs that are queued or running (for recovery).
    async fn unfinished_runs(&self) -> StoreResult<Vec<Run>>;
    /// Adds one call's actual cost to a tool's totals.
    async fn record_tool_cost(&self, tool: &str, pts: i64) -> StoreResult<()>;
    /// Every tool's totals.
    async fn tool_costs(&self) -> StoreResult<Vec<ToolCostTotal>>;
    /// Saves recomputed spell prices.
    async fn save_spell_stats(&self, stats: &[SpellStats]) -> StoreResult<()>;
    /// Every spell's saved price.
    async fn spell_stats(&self) -> StoreResult<Vec<SpellStats>>;
    /// Records an upload a user asked for (SPEC §7.3); the store forgets it some time after it
    /// expires.
    async fn put_upload(&self, upload: &crate::uploads::Upload) -> StoreResult<()>;
    /// An upload, if the store still has it (perhaps expired: the caller judges).
    async fn upload(
        &self,
        upload_id: &crate::ids::UploadId,
    ) -> StoreResult<Option<crate::uploads::Upload>>;
}

/// An execution event for the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionStarted {
    /// The run to execute.
    pub run_id: RunId,
    /// Its spell.
    pub slug: Slug,
}

/// A bus failure (the event may not have been delivered).
#[derive(Debug, thiserror::Error)]
#[error("event bus: {0}")]
pub struct BusError(pub String);

/// Publishes execution events (EventBridge on AWS, a channel locally).
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Asks for a run to be executed.
    async fn execution_started(&self, event: ExecutionStarted) -> Result<(), BusError>;
    /// Announces a run event to whoever listens (best effort: the store holds the truth).
    async fn run_event(&self, run: &Run, event: &RunEvent) -> Result<(), BusError>;
    /// Asks for a stored webhook delivery to be attempted (best effort: a pending delivery
    /// stays in the store, where the sweep finds it again).
    async fn webhook_due(&self, run_id: &RunId, webhook_id: &str) -> Result<(), BusError>;
}

/// Where large output files live (S3 on AWS, files under the data dir locally), so that no store
/// item nears its size limit (SPEC §5.7). Keys are made by the runner from the run id and the
/// file's hash: writing the same file twice is harmless.
#[async_trait]
pub trait Blobs: Send + Sync {
    /// Stores `bytes` of media type `mime` under `key`.
    async fn put(&self, key: &str, mime: &str, bytes: Vec<u8>) -> StoreResult<()>;
    /// The bytes under `key`, if any.
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// A URL the client may fetch the bytes from directly for `ttl` (an S3 presigned URL),
    /// answered as `served` says whatever they were stored as, or `None` where the server
    /// serves them itself.
    async fn signed_url(
        &self,
        key: &str,
        ttl: Duration,
        served: &Served,
    ) -> StoreResult<Option<String>>;
    /// The size of the bytes under `key` and their first `first` bytes, if there are any.
    async fn head(&self, key: &str, first: usize) -> StoreResult<Option<BlobHead>>;
    /// A URL a client may PUT exactly `bytes` bytes of `mime` to under `key` for `ttl`, with the
    /// size and type bound by its signature (an S3 presigned PUT), or `None` where the server
    /// takes uploads itself.
    async fn signed_put(
        &self,
        key: &str,
        mime: &str,
        bytes: u64,
        ttl: Duration,
    ) -> StoreResult<Option<crate::uploads::SignedPut>>;
    /// Copies the bytes under `from` to `to`, kept as media type `mime` (whatever type they were
    /// written with). Nothing under `from` is fine if `to` has them already (a copy made
    /// before); else it is an error.
    async fn copy(&self, from: &str, to: &str, mime: &str) -> StoreResult<()>;
}

/// How the blob store answers a signed URL: with this media type, and as a download unless the
/// file is an image a browser only ever draws. Opened from the bucket's own domain, an SVG or an
/// HTML file would run there; the type is forced so what was stored cannot decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// The `Content-Type` to answer with.
    pub mime: String,
    /// Whether to answer `Content-Disposition: attachment`.
    pub attachment: bool,
}

impl Served {
    /// How a file of media type `mime` is served: inline only as a raster image.
    pub fn as_type(mime: &str) -> Served {
        Served {
            mime: mime.to_owned(),
            attachment: !drawn_only(mime),
        }
    }
}

/// Whether a file of media type `mime` is an image format that holds no script (PNG, JPEG, GIF,
/// WebP, AVIF; not SVG).
pub fn drawn_only(mime: &str) -> bool {
    let base = mime.split(';').next().unwrap_or_default().trim();
    [
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
    ]
    .iter()
    .any(|t| base.eq_ignore_ascii_case(t))
}

/// What [`Blobs::head`] tells of stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobHead {
    /// How many bytes there are.
    pub size: u64,
    /// The first of them (as many as asked for, or all if fewer).
    pub first: Vec<u8>,
}

/// Tells a stream that a run may have new events, so it does not poll needlessly.
pub trait RunSignal: Send + Sync {
    /// A watcher for one run. Create it *before* reading the events, so no change is missed.
    fn watch(&self, run_id: &RunId) -> Box<dyn RunWatcher>;
    /// Announces a run's new event, stored (a no-op where watchers poll the store).
    fn notify(&self, run_id: &RunId, event: &RunEvent);
}

/// Waits for one run to change.
#[async_trait]
pub trait RunWatcher: Send {
    /// Returns when the run may have changed, or after `timeout`; with the newest event
    /// announced where the signal carries them (a watcher that has sent the one before it need
    /// not read the store: with many streams on a run, one read per change instead of one per
    /// stream).
    async fn changed(&mut self, timeout: Duration) -> Option<Arc<RunEvent>>;
    /// Tells the watcher that the last wait was followed by new events (a polling watcher goes
    /// back to its fastest rate).
    fn delivered(&mut self) {}
}

/// The time, as a port so tests and recovery logic can be exact.
pub trait Clock: Send + Sync {
    /// Now, in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
