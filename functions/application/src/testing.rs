//! What unit tests of the use cases and of the tools share (the `testing` feature, or this
//! crate's own tests): the ports in memory — blobs, the store parts the use cases hold, a clock
//! that is set, a bus that records, a signal that never wakes early.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use chrono::{DateTime, Utc};

use crate::ports::{
    BlobHead, Blobs, BusError, Clock, CostStore, DeliveryStore, EventBus, InvoiceStore,
    LedgerStore, RunSignal, RunStore, RunWatcher, Served, StoreError, StoreResult, UploadStore,
};
use spellcast_domain::cast::{CastCheck, CastOutcome, NewCast};
use spellcast_domain::events::ExecutionStarted;
use spellcast_domain::ids::{CreditTxId, InvoiceId, RunId, UploadId, UserId};
use spellcast_domain::invoice::{IdempotencyRecord, InvoiceRecord, InvoiceState, IssueOutcome};
use spellcast_domain::ledger::{GrantKey, GrantOutcome, LedgerEntry};
use spellcast_domain::prices::{SpellStats, ToolCostTotal};
use spellcast_domain::run::{Applied, OutputFile, Run, RunChange, RunEvent, RunVersion};
use spellcast_domain::uploads::{SignedPut, Upload};
use spellcast_domain::webhooks::{Attempt, Delivery, WebhookSecret};

/// Blobs in a map, as the port says they behave (no signed URLs: the caller serves them).
#[derive(Default)]
pub struct MemoryBlobs(Mutex<HashMap<String, Vec<u8>>>);

impl MemoryBlobs {
    /// How many keys hold bytes.
    pub fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or_default()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self, key: &str) -> Option<Vec<u8>> {
        self.0.lock().ok()?.get(key).cloned()
    }
}

#[async_trait]
impl Blobs for MemoryBlobs {
    async fn put(&self, key: &str, _mime: &str, bytes: Vec<u8>) -> StoreResult<()> {
        let mut map = self.0.lock().map_err(StoreError::from_err)?;
        map.insert(key.to_owned(), bytes);
        Ok(())
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.read(key))
    }

    async fn signed_url(&self, _: &str, _: Duration, _: &Served) -> StoreResult<Option<String>> {
        Ok(None)
    }

    async fn head(&self, key: &str, first: usize) -> StoreResult<Option<BlobHead>> {
        Ok(self.read(key).map(|b| BlobHead {
            size: b.len() as u64,
            first: b[..first.min(b.len())].to_vec(),
        }))
    }

    async fn signed_put(
        &self,
        _: &str,
        _: &str,
        _: u64,
        _: Duration,
    ) -> StoreResult<Option<SignedPut>> {
        Ok(None)
    }

    async fn copy(&self, from: &str, to: &str, _mime: &str) -> StoreResult<()> {
        match (self.read(from), self.read(to)) {
            (Some(bytes), _) => self.put(to, "", bytes).await,
            (None, Some(_)) => Ok(()),
            (None, None) => Err(StoreError::new(format!("no blob {from}"))),
        }
    }
}

/// The store parts the use cases' unit tests need, in memory, behaving as the port says (each
/// change atomic under one lock). The adapters' own behaviour is the store contract's business.
#[derive(Default)]
pub struct MemoryStore(Mutex<MemoryState>);

/// What a [`MemoryStore`] holds.
#[derive(Default)]
pub struct MemoryState {
    /// Runs by id.
    pub runs: std::collections::BTreeMap<RunId, Run>,
    /// Every run's events, in order.
    pub events: HashMap<RunId, Vec<RunEvent>>,
    /// Invoices by id.
    pub invoices: HashMap<InvoiceId, InvoiceRecord>,
    /// Idempotency keys by user and key.
    pub keys: HashMap<(UserId, String), IdempotencyRecord>,
    /// Balances.
    pub balances: HashMap<UserId, i64>,
    /// Every ledger entry, oldest first.
    pub ledger: Vec<LedgerEntry>,
    /// Grant keys used, with their entry and fingerprint.
    pub grant_keys: HashMap<String, (LedgerEntry, String)>,
    /// Saved spell prices.
    pub stats: Vec<SpellStats>,
    /// Deliveries by run and webhook id.
    pub deliveries: Vec<Delivery>,
    /// Commits refused because the run had moved on.
    pub conflicts: usize,
    /// A change another writer commits just before the next commit: a race, staged.
    pub race: Option<RunChange>,
    /// Recording a step's cost fails (a throttled counter).
    pub costs_fail: bool,
}

impl MemoryStore {
    /// Writes a committed change: the run, its event, its refund, its delivery.
    fn write(s: &mut MemoryState, run: &Run, applied: &Applied) {
        s.runs.insert(run.run_id.clone(), run.clone());
        if let Some(event) = &applied.event {
            s.events
                .entry(run.run_id.clone())
                .or_default()
                .push(event.clone());
        }
        if applied.refund_pts > 0 {
            Self::post(s, &run.refund_entry(applied.refund_pts));
        }
        if let Some(delivery) = &applied.delivery {
            s.deliveries.push(delivery.clone());
        }
    }

    /// A look at (or a change of) what the store holds.
    pub fn with<T>(&self, f: impl FnOnce(&mut MemoryState) -> T) -> T {
        let mut state = self.0.lock().expect("the memory store's lock");
        f(&mut state)
    }

    fn post(state: &mut MemoryState, entry: &LedgerEntry) {
        *state.balances.entry(entry.user_id.clone()).or_default() += entry.pts;
        state.ledger.push(entry.clone());
    }
}

#[async_trait]
impl RunStore for MemoryStore {
    async fn run(&self, run_id: &RunId) -> StoreResult<Option<Run>> {
        Ok(self.with(|s| s.runs.get(run_id).cloned()))
    }

    async fn user_runs(
        &self,
        user_id: &UserId,
        limit: usize,
        before: Option<&RunId>,
    ) -> StoreResult<Vec<Run>> {
        Ok(self.with(|s| {
            s.runs
                .values()
                .rev()
                .filter(|r| &r.user_id == user_id && before.is_none_or(|b| &r.run_id < b))
                .take(limit)
                .cloned()
                .collect()
        }))
    }

    async fn run_by_credit_tx(&self, credit_tx_id: &CreditTxId) -> StoreResult<Option<Run>> {
        Ok(self.with(|s| {
            s.runs
                .values()
                .find(|r| &r.credit_tx_id == credit_tx_id)
                .cloned()
        }))
    }

    async fn commit_run(
        &self,
        run: &Run,
        applied: &Applied,
        read: &RunVersion,
    ) -> StoreResult<bool> {
        Ok(self.with(|s| {
            if let Some(change) = s.race.take() {
                let mut other = s.runs[&run.run_id].clone();
                if let Ok(applied) = other.apply(change) {
                    Self::write(s, &other, &applied);
                }
            }
            if !s.runs.get(&run.run_id).is_some_and(|r| r.is_at(read)) {
                s.conflicts += 1;
                return false;
            }
            Self::write(s, run, applied);
            true
        }))
    }

    async fn run_events(
        &self,
        run_id: &RunId,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<RunEvent>> {
        Ok(self.with(|s| {
            s.events
                .get(run_id)
                .into_iter()
                .flatten()
                .filter(|e| e.seq > after)
                .take(limit)
                .cloned()
                .collect()
        }))
    }

    async fn output_file(&self, _run_id: &RunId, _n: usize) -> StoreResult<Option<OutputFile>> {
        Ok(None)
    }

    async fn unfinished_runs(&self) -> StoreResult<Vec<Run>> {
        Ok(self.with(|s| {
            s.runs
                .values()
                .filter(|r| !r.status.is_terminal())
                .cloned()
                .collect()
        }))
    }
}

#[async_trait]
impl InvoiceStore for MemoryStore {
    async fn idempotency(
        &self,
        user_id: &UserId,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        Ok(self.with(|s| s.keys.get(&(user_id.clone(), key.to_owned())).cloned()))
    }

    async fn issue_invoice(
        &self,
        invoice: InvoiceRecord,
        idempotency: Option<IdempotencyRecord>,
    ) -> StoreResult<IssueOutcome> {
        Ok(self.with(|s| {
            if let Some(record) = idempotency {
                let at = (record.user_id.clone(), record.key.clone());
                if let Some(seen) = s.keys.get(&at) {
                    return if seen.request_hash == record.request_hash {
                        IssueOutcome::Replayed(seen.clone())
                    } else {
                        IssueOutcome::KeyConflict
                    };
                }
                s.keys.insert(at, record);
            }
            s.invoices.insert(invoice.invoice_id.clone(), invoice);
            IssueOutcome::Issued
        }))
    }

    async fn cast(&self, cast: NewCast) -> StoreResult<CastOutcome> {
        Ok(self.with(|s| {
            let invoice = s.invoices.get(&cast.invoice_id).cloned();
            let (run, debit) = match cast.check(invoice.as_ref()) {
                CastCheck::Answer(outcome) => return outcome,
                CastCheck::Replay { run_id } => {
                    return CastOutcome::Replayed(s.runs[&run_id].clone());
                }
                CastCheck::Pay { run, debit } => (run, debit),
            };
            let balance = s.balances.get(&cast.user_id).copied().unwrap_or(0);
            if balance < run.cost_pts {
                return CastOutcome::InsufficientBalance { balance };
            }
            Self::post(s, &debit);
            if let Some(invoice) = s.invoices.get_mut(&cast.invoice_id) {
                invoice.state = InvoiceState::Consumed {
                    run_id: run.run_id.clone(),
                    credit_tx_id: run.credit_tx_id.clone(),
                    context_hash: cast.context_hash.clone(),
                };
            }
            s.runs.insert(run.run_id.clone(), run.clone());
            CastOutcome::Created(run)
        }))
    }
}

#[async_trait]
impl LedgerStore for MemoryStore {
    async fn grant(&self, entry: LedgerEntry) -> StoreResult<i64> {
        Ok(self.with(|s| {
            Self::post(s, &entry);
            s.balances[&entry.user_id]
        }))
    }

    async fn grant_once(&self, entry: LedgerEntry, key: &GrantKey) -> StoreResult<GrantOutcome> {
        Ok(self.with(|s| {
            if let Some((first, fingerprint)) = s.grant_keys.get(&key.key) {
                return GrantOutcome::Repeated {
                    entry: first.clone(),
                    fingerprint: fingerprint.clone(),
                };
            }
            let balance = s.balances.get(&entry.user_id).copied().unwrap_or(0);
            if balance + entry.pts < 0 {
                return GrantOutcome::Insufficient { balance };
            }
            s.grant_keys
                .insert(key.key.clone(), (entry.clone(), key.fingerprint.clone()));
            Self::post(s, &entry);
            GrantOutcome::Granted {
                balance: s.balances[&entry.user_id],
                entry,
            }
        }))
    }

    async fn balance(&self, user_id: &UserId) -> StoreResult<i64> {
        Ok(self.with(|s| s.balances.get(user_id).copied().unwrap_or(0)))
    }

    async fn ledger(
        &self,
        user_id: &UserId,
        limit: usize,
        before: Option<&CreditTxId>,
    ) -> StoreResult<Vec<LedgerEntry>> {
        Ok(self.with(|s| {
            s.ledger
                .iter()
                .rev()
                .filter(|e| &e.user_id == user_id && before.is_none_or(|b| &e.tx_id < b))
                .take(limit)
                .cloned()
                .collect()
        }))
    }
}

#[async_trait]
impl CostStore for MemoryStore {
    async fn record_tool_cost(&self, _tool: &str, _pts: i64) -> StoreResult<()> {
        match self.with(|s| s.costs_fail) {
            true => Err(StoreError::new("the cost counter is throttled")),
            false => Ok(()),
        }
    }

    async fn tool_costs(&self) -> StoreResult<Vec<ToolCostTotal>> {
        Ok(Vec::new())
    }

    async fn save_spell_stats(&self, stats: &[SpellStats]) -> StoreResult<()> {
        self.with(|s| s.stats = stats.to_vec());
        Ok(())
    }

    async fn spell_stats(&self) -> StoreResult<Vec<SpellStats>> {
        Ok(self.with(|s| s.stats.clone()))
    }
}

#[async_trait]
impl UploadStore for MemoryStore {
    async fn put_upload(&self, _upload: &Upload) -> StoreResult<()> {
        Ok(())
    }

    async fn upload(&self, _upload_id: &UploadId) -> StoreResult<Option<Upload>> {
        Ok(None)
    }
}

#[async_trait]
impl DeliveryStore for MemoryStore {
    async fn webhook_secret(&self, _user_id: &UserId) -> StoreResult<Option<WebhookSecret>> {
        Ok(None)
    }

    async fn put_webhook_secret(
        &self,
        _user_id: &UserId,
        secret: WebhookSecret,
        _replace: bool,
    ) -> StoreResult<WebhookSecret> {
        Ok(secret)
    }

    async fn deliveries(&self, run_id: &RunId) -> StoreResult<Vec<Delivery>> {
        Ok(self.with(|s| {
            s.deliveries
                .iter()
                .filter(|d| &d.run_id == run_id)
                .cloned()
                .collect()
        }))
    }

    async fn delivery(&self, run_id: &RunId, webhook_id: &str) -> StoreResult<Option<Delivery>> {
        Ok(self.with(|s| {
            s.deliveries
                .iter()
                .find(|d| &d.run_id == run_id && d.webhook_id == webhook_id)
                .cloned()
        }))
    }

    async fn record_attempt(
        &self,
        _run_id: &RunId,
        _webhook_id: &str,
        _attempt: Attempt,
    ) -> StoreResult<bool> {
        Ok(false)
    }

    async fn due_deliveries(&self, at: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Delivery>> {
        Ok(self.with(|s| {
            s.deliveries
                .iter()
                .filter(|d| d.next_at.is_some_and(|n| n <= at))
                .take(limit)
                .cloned()
                .collect()
        }))
    }
}

/// A clock that says what it is set to.
pub struct FixedClock(pub Mutex<DateTime<Utc>>);

impl FixedClock {
    /// A clock stopped at `at`.
    pub fn at(at: DateTime<Utc>) -> FixedClock {
        FixedClock(Mutex::new(at))
    }

    /// Moves it on by `by`.
    pub fn advance(&self, by: chrono::Duration) {
        *self.0.lock().expect("the clock's lock") += by;
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("the clock's lock")
    }
}

/// A bus that records what was published.
#[derive(Default)]
pub struct RecordingBus {
    /// Runs whose execution was asked for.
    pub started: Mutex<Vec<RunId>>,
    /// Deliveries announced as due.
    pub due: Mutex<Vec<String>>,
    /// Runs asked for at a later time, and when.
    pub later: Mutex<Vec<(RunId, DateTime<Utc>)>>,
}

#[async_trait]
impl EventBus for RecordingBus {
    async fn execution_started(&self, event: ExecutionStarted) -> Result<(), BusError> {
        self.started.lock().expect("lock").push(event.run_id);
        Ok(())
    }

    async fn webhook_due(&self, _run_id: &RunId, webhook_id: &str) -> Result<(), BusError> {
        self.due.lock().expect("lock").push(webhook_id.to_owned());
        Ok(())
    }

    async fn execution_due(
        &self,
        event: ExecutionStarted,
        at: DateTime<Utc>,
    ) -> Result<(), BusError> {
        self.later.lock().expect("lock").push((event.run_id, at));
        Ok(())
    }
}

/// A signal that never wakes a watcher early: it waits out its timeout (a polling watcher).
#[derive(Default)]
pub struct QuietSignal;

struct QuietWatcher;

impl RunSignal for QuietSignal {
    fn watch(&self, _run_id: &RunId) -> Box<dyn RunWatcher> {
        Box::new(QuietWatcher)
    }

    fn notify(&self, _run_id: &RunId, _event: &RunEvent) {}
}

#[async_trait]
impl RunWatcher for QuietWatcher {
    async fn changed(&mut self, timeout: Duration) -> Option<std::sync::Arc<RunEvent>> {
        tokio::time::sleep(timeout).await;
        None
    }
}

/// The ports of one use case test, in memory, and the use cases over them.
pub struct Fixture {
    /// The store parts.
    pub store: std::sync::Arc<MemoryStore>,
    /// What was published.
    pub bus: RecordingBus,
    /// The time.
    pub clock: FixedClock,
    /// Files.
    pub blobs: MemoryBlobs,
    /// The spells.
    pub catalog: spellcast_domain::catalog::Catalog,
    /// Token keys.
    pub keys: crate::auth::TokenKeys,
    /// This fixture's price cache.
    pub prices: crate::pricing::PriceBook,
}

impl Fixture {
    /// How long a quote stays payable here.
    pub const INVOICE_TTL_MINUTES: i64 = 10;
    /// How long a runner holds a run here.
    pub const LEASE_SECS: i64 = 30;
    /// How long a wait must be to be durable here.
    pub const DURABLE_WAIT_AFTER_SECS: i64 = 60;

    /// The ports over `catalog`, the clock at a fixed time, the store empty.
    pub fn new(catalog: spellcast_domain::catalog::Catalog) -> Fixture {
        Fixture {
            store: Default::default(),
            bus: RecordingBus::default(),
            clock: FixedClock::at(
                DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
                    .expect("a time")
                    .with_timezone(&Utc),
            ),
            blobs: MemoryBlobs::default(),
            catalog,
            keys: crate::auth::TokenKeys::hs256(&[9; 32], "test").expect("a key"),
            prices: Default::default(),
        }
    }

    /// Gives `user` `pts` points.
    pub async fn fund(&self, user: &str, pts: i64) {
        let entry = LedgerEntry::grant(&user.into(), pts, "test", "test", self.clock.now());
        self.store.grant(entry).await.expect("a grant");
    }

    /// `user`'s balance.
    pub fn balance(&self, user: &str) -> i64 {
        self.store
            .with(|s| s.balances.get(&UserId::from(user)).copied().unwrap_or(0))
    }

    /// Quoting.
    pub fn quotes(&self) -> crate::quote::Quotes<'_> {
        crate::quote::Quotes {
            catalog: &self.catalog,
            prices: &self.prices,
            invoices: self.store.as_ref(),
            ledger: self.store.as_ref(),
            costs: self.store.as_ref(),
            keys: &self.keys,
            clock: &self.clock,
            invoice_ttl: chrono::Duration::minutes(Self::INVOICE_TTL_MINUTES),
            idempotency_ttl: chrono::Duration::hours(24),
        }
    }

    /// Casting.
    pub fn casting(&self) -> crate::cast::Casting<'_> {
        crate::cast::Casting {
            catalog: &self.catalog,
            invoices: self.store.as_ref(),
            uploads: self.store.as_ref(),
            bus: &self.bus,
            keys: &self.keys,
            clock: &self.clock,
            blobs: &self.blobs,
        }
    }

    /// Where run changes go.
    pub fn run_log(&self) -> crate::run_log::RunLog<'_> {
        crate::run_log::RunLog {
            runs: self.store.as_ref(),
            signal: &QuietSignal,
            bus: &self.bus,
        }
    }

    /// Canceling.
    pub fn canceling(&self) -> crate::cancel::Canceling<'_> {
        crate::cancel::Canceling {
            log: self.run_log(),
            clock: &self.clock,
        }
    }

    /// The runner, with `tools`, holding runs for [`Fixture::LEASE_SECS`].
    pub fn runner<'a>(&'a self, tools: &'a crate::tools::Toolbox) -> crate::runner::Runner<'a> {
        crate::runner::Runner {
            catalog: &self.catalog,
            tools,
            blobs: &self.blobs,
            log: self.run_log(),
            costs: self.store.as_ref(),
            clock: &self.clock,
            lease: chrono::Duration::seconds(Self::LEASE_SECS),
            durable_wait_after: chrono::Duration::seconds(Self::DURABLE_WAIT_AFTER_SECS),
            progress_every: Duration::ZERO,
        }
    }

    /// Recovery, republishing a queued run's start after `republish_after`.
    pub fn recovery(&self, republish_after: chrono::Duration) -> crate::recovery::Recovery<'_> {
        crate::recovery::Recovery {
            catalog: &self.catalog,
            log: self.run_log(),
            deliveries: self.store.as_ref(),
            clock: &self.clock,
            republish_after,
        }
    }

    /// A paid, queued run of `user` (funded first with its price) with `context`.
    pub async fn cast_run(&self, user: &str, context: serde_json::Value) -> Run {
        let slug = self.catalog.iter().next().expect("a spell").slug.clone();
        let quote = self
            .quotes()
            .quote(crate::quote::QuoteRequest {
                user: user.into(),
                slug: slug.clone(),
                asset: "PTS".into(),
                idempotency: None,
            })
            .await;
        let quote = match quote {
            Ok(quote) => quote,
            Err(crate::quote::QuoteError::InsufficientBalance { cost_pts, .. }) => {
                self.fund(user, cost_pts).await;
                return Box::pin(self.cast_run(user, context)).await;
            }
            Err(e) => panic!("quote: {e}"),
        };
        let cast = self
            .casting()
            .cast(crate::cast::CastRequest {
                user: user.into(),
                slug,
                invoice: &quote.invoice_id,
                context,
                webhook: None,
            })
            .await
            .expect("a cast");
        match cast {
            crate::cast::Cast::Created(run) | crate::cast::Cast::Replayed(run) => run,
        }
    }
}
