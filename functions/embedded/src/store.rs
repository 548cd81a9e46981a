//! The redb store. Every port method is one redb transaction; redb serialises write transactions,
//! so each multi-record change (cast, refund) is atomic and isolated by construction.
//!
//! Tables (values are JSON unless noted):
//! - `balances`: user → points (i64)
//! - `ledger`: (user, tx id) → entry; tx ids are time-sortable, so a reverse range is newest first
//! - `invoices`: invoice id → record
//! - `idempotency`: (user, key) → record
//! - `runs`: run id → run; `runs_by_tx`: credit tx id → run id; `unfinished`: run id → ()
//! - `events`: (run id, seq) → event; `files`: (run id, n) → (mime, bytes)
//! - `tool_costs`: cost key → (calls, points); `spell_stats`: slug → stats
//! - `shares`: share id → share; `run_shares`: run id → share id
//! - `deliveries`: (run id, webhook id) → delivery; `due_deliveries`: (due µs, run id, webhook id)
//!   → () for the pending ones

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use spellcast_application::ports::{
    CostStore, DeliveryStore, InvoiceStore, LedgerStore, RunStore, ShareStore, StoreError,
    StoreResult, UploadStore,
};
use spellcast_domain::cast::{CastCheck, CastOutcome, NewCast};
use spellcast_domain::ids::{CreditTxId, RunId, ShareId, UploadId, UserId};
use spellcast_domain::invoice::{IdempotencyRecord, InvoiceRecord, InvoiceState, IssueOutcome};
use spellcast_domain::ledger::{GrantKey, GrantOutcome, LedgerEntry};
use spellcast_domain::prices::{SpellStats, ToolCostTotal};
use spellcast_domain::run::{Applied, FileBody, OutputFile, Run, RunEvent, RunVersion};
use spellcast_domain::sharing::Share;
use spellcast_domain::uploads::Upload;
use spellcast_domain::webhooks::{Attempt, Delivery, WebhookSecret};

const BALANCES: TableDefinition<&str, i64> = TableDefinition::new("balances");
const LEDGER: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("ledger");
const INVOICES: TableDefinition<&str, &[u8]> = TableDefinition::new("invoices");
const IDEMPOTENCY: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("idempotency");
const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
const RUNS_BY_TX: TableDefinition<&str, &str> = TableDefinition::new("runs_by_tx");
/// Each user's webhook signing secret.
const WEBHOOK_SECRETS: TableDefinition<&str, &str> = TableDefinition::new("webhook_secrets");
/// A user's runs by (user, run id): run ids sort by time.
const USER_RUNS: TableDefinition<(&str, &str), ()> = TableDefinition::new("user_runs");
const UNFINISHED: TableDefinition<&str, ()> = TableDefinition::new("unfinished");
/// Shared runs by share id, and each shared run's share id.
const SHARES: TableDefinition<&str, &[u8]> = TableDefinition::new("shares");
const RUN_SHARES: TableDefinition<&str, &str> = TableDefinition::new("run_shares");
/// Webhook deliveries by (run id, webhook id).
const DELIVERIES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("deliveries");
/// Pending deliveries by (when due in Unix microseconds, run id, webhook id): the worker reads
/// the front.
const DUE_DELIVERIES: TableDefinition<(i64, &str, &str), ()> =
    TableDefinition::new("due_deliveries");
const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
const FILES: TableDefinition<(&str, u64), (&str, &[u8])> = TableDefinition::new("files");
/// Large files: their media type and their key in the blob store.
const BLOB_FILES: TableDefinition<(&str, u64), (&str, &str)> = TableDefinition::new("blob_files");
const TOOL_COSTS: TableDefinition<&str, (u64, i64)> = TableDefinition::new("tool_costs");
const SPELL_STATS: TableDefinition<&str, &[u8]> = TableDefinition::new("spell_stats");
const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");
/// Uploads by id (SPEC §7.3); the sweeper removes expired ones.
const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");
/// Grants made at most once, by their key: `{fingerprint, entry}` as JSON.
const GRANT_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("grant_keys");

/// An upper bound for ids in key ranges (ids are lowercase ASCII, all below `~`).
const ID_MAX: &str = "~";

/// Spellcast's state in a redb database.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
}

fn err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::from_err(e.into())
}

fn to_json<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(StoreError::from_err)
}

fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(StoreError::from_err)
}

impl RedbStore {
    /// Opens (or creates) the database file `spellcast.redb` in `dir`, keeping up to
    /// `cache_bytes` of its pages in memory.
    pub fn open(dir: &Path, cache_bytes: usize) -> StoreResult<Self> {
        std::fs::create_dir_all(dir).map_err(StoreError::from_err)?;
        let file = dir.join("spellcast.redb");
        // redb caches up to 1 GiB by default, and the cache is the only part of the process that
        // grows with the data (a heap profile of scripts/soak: ~11 KB a run until the cap); the
        // recent runs that streams read fit in far less, and older pages come from the OS's page
        // cache.
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(&file)
            .map_err(err)?;
        // The database holds balances and (without a configured one) the token secret: only
        // its owner may read it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(StoreError::from_err)?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .map_err(StoreError::from_err)?;
        }
        Self::init(db)
    }

    /// A database that lives in memory only (`--memory`).
    pub fn in_memory() -> StoreResult<Self> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(err)?;
        Self::init(db)
    }

    fn init(db: Database) -> StoreResult<Self> {
        // Create every table up front, so reads never meet a missing table.
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(BALANCES).map_err(err)?;
        tx.open_table(LEDGER).map_err(err)?;
        tx.open_table(INVOICES).map_err(err)?;
        tx.open_table(IDEMPOTENCY).map_err(err)?;
        tx.open_table(RUNS).map_err(err)?;
        tx.open_table(RUNS_BY_TX).map_err(err)?;
        {
            // A data dir from before this index: index the runs it has, once.
            let mut by_user = tx.open_table(USER_RUNS).map_err(err)?;
            if by_user.is_empty().map_err(err)? {
                let runs = tx.open_table(RUNS).map_err(err)?;
                for item in runs.iter().map_err(err)? {
                    let (_, v) = item.map_err(err)?;
                    let run: Run = from_json(v.value())?;
                    by_user
                        .insert((run.user_id.as_str(), run.run_id.as_str()), ())
                        .map_err(err)?;
                }
            }
        }
        tx.open_table(UNFINISHED).map_err(err)?;
        tx.open_table(GRANT_KEYS).map_err(err)?;
        tx.open_table(DELIVERIES).map_err(err)?;
        tx.open_table(SHARES).map_err(err)?;
        tx.open_table(RUN_SHARES).map_err(err)?;
        tx.open_table(DUE_DELIVERIES).map_err(err)?;
        tx.open_table(WEBHOOK_SECRETS).map_err(err)?;
        tx.open_table(EVENTS).map_err(err)?;
        tx.open_table(FILES).map_err(err)?;
        tx.open_table(BLOB_FILES).map_err(err)?;
        tx.open_table(TOOL_COSTS).map_err(err)?;
        tx.open_table(SPELL_STATS).map_err(err)?;
        tx.open_table(SETTINGS).map_err(err)?;
        tx.open_table(UPLOADS).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(RedbStore { db: Arc::new(db) })
    }

    /// A setting, created with `init` on first use (the local token secret lives here).
    pub fn setting_or_init(
        &self,
        name: &str,
        init: impl FnOnce() -> Vec<u8>,
    ) -> StoreResult<Vec<u8>> {
        let tx = self.db.begin_write().map_err(err)?;
        let value = {
            let mut table = tx.open_table(SETTINGS).map_err(err)?;
            let existing = table.get(name).map_err(err)?.map(|v| v.value().to_vec());
            match existing {
                Some(v) => v,
                None => {
                    let v = init();
                    table.insert(name, v.as_slice()).map_err(err)?;
                    v
                }
            }
        };
        tx.commit().map_err(err)?;
        Ok(value)
    }

    /// Removes the uploads that expired before `now` (DynamoDB's TTL does this on AWS). Returns
    /// how many went.
    pub async fn remove_expired_uploads(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<usize> {
        self.write(move |tx| {
            let mut table = tx.open_table(UPLOADS).map_err(err)?;
            let mut expired = Vec::new();
            for item in table.iter().map_err(err)? {
                let (k, v) = item.map_err(err)?;
                let upload: Upload = from_json(v.value())?;
                if upload.expires_at <= now {
                    expired.push(k.value().to_owned());
                }
            }
            for id in &expired {
                table.remove(id.as_str()).map_err(err)?;
            }
            Ok(expired.len())
        })
        .await
    }

    /// Runs blocking database work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(StoreError::from_err)?
    }

    /// Runs a short read on the calling thread. A redb read transaction never waits for a writer
    /// and the pages a stream reads (a run's latest events) are in the cache, so it takes
    /// microseconds; a hop to the blocking pool per stream wake-up cost more than the read
    /// (measured with scripts/bench: 1,000 streams on live runs).
    fn read_now<T>(&self, work: impl FnOnce(&Database) -> StoreResult<T>) -> StoreResult<T> {
        work(&self.db)
    }

    /// Runs a write transaction: `work` decides, and its changes commit only if it returns `Ok`.
    async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&WriteTransaction) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(err)?;
            let out = work(&tx)?;
            tx.commit().map_err(err)?;
            Ok(out)
        })
        .await
    }
}

/// Adds a ledger entry and moves the balance by its amount, in the caller's transaction.
fn post_entry(tx: &WriteTransaction, entry: &LedgerEntry) -> StoreResult<i64> {
    let mut balances = tx.open_table(BALANCES).map_err(err)?;
    let balance = balances
        .get(entry.user_id.as_str())
        .map_err(err)?
        .map_or(0, |v| v.value());
    let next = balance + entry.pts;
    balances.insert(entry.user_id.as_str(), next).map_err(err)?;
    let mut ledger = tx.open_table(LEDGER).map_err(err)?;
    ledger
        .insert(
            (entry.user_id.as_str(), entry.tx_id.as_str()),
            to_json(entry)?.as_slice(),
        )
        .map_err(err)?;
    Ok(next)
}

fn put_run(tx: &WriteTransaction, run: &Run) -> StoreResult<()> {
    let mut runs = tx.open_table(RUNS).map_err(err)?;
    runs.insert(run.run_id.as_str(), to_json(run)?.as_slice())
        .map_err(err)?;
    let mut unfinished = tx.open_table(UNFINISHED).map_err(err)?;
    if run.status.is_terminal() {
        unfinished.remove(run.run_id.as_str()).map_err(err)?;
    } else {
        unfinished.insert(run.run_id.as_str(), ()).map_err(err)?;
    }
    Ok(())
}

/// Writes a delivery and files it under when it is due (if it is pending), in the caller's
/// transaction; `was_due` is where it was filed before.
fn put_delivery(
    tx: &WriteTransaction,
    delivery: &Delivery,
    was_due: Option<DateTime<Utc>>,
) -> StoreResult<()> {
    let (run, id) = (delivery.run_id.as_str(), delivery.webhook_id.as_str());
    let mut deliveries = tx.open_table(DELIVERIES).map_err(err)?;
    deliveries
        .insert((run, id), to_json(delivery)?.as_slice())
        .map_err(err)?;
    let mut due = tx.open_table(DUE_DELIVERIES).map_err(err)?;
    if let Some(was) = was_due {
        due.remove((was.timestamp_micros(), run, id)).map_err(err)?;
    }
    if let Some(next) = delivery.next_at {
        due.insert((next.timestamp_micros(), run, id), ())
            .map_err(err)?;
    }
    Ok(())
}

fn get_json<K: redb::Key + 'static, T: DeserializeOwned>(
    table: &impl ReadableTable<K, &'static [u8]>,
    key: K::SelfType<'_>,
) -> StoreResult<Option<T>> {
    match table.get(key).map_err(err)? {
        Some(v) => from_json(v.value()).map(Some),
        None => Ok(None),
    }
}

#[async_trait]
impl RunStore for RedbStore {
    async fn user_runs(
        &self,
        user_id: &UserId,
        limit: usize,
        before: Option<&RunId>,
    ) -> StoreResult<Vec<Run>> {
        let user = user_id.to_owned();
        let before = before.cloned();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let by_user = tx.open_table(USER_RUNS).map_err(err)?;
            let runs = tx.open_table(RUNS).map_err(err)?;
            let upper = before.as_ref().map_or(ID_MAX, RunId::as_str);
            let mut found = Vec::new();
            for item in by_user
                .range((user.as_str(), "")..(user.as_str(), upper))
                .map_err(err)?
                .rev()
            {
                let (key, _) = item.map_err(err)?;
                let (_, run_id) = key.value();
                if let Some(run) = get_json::<&str, Run>(&runs, run_id)? {
                    found.push(run);
                }
                if found.len() == limit {
                    break;
                }
            }
            Ok(found)
        })
        .await
    }

    async fn run(&self, run_id: &RunId) -> StoreResult<Option<Run>> {
        self.read_now(|db| {
            let tx = db.begin_read().map_err(err)?;
            let runs = tx.open_table(RUNS).map_err(err)?;
            get_json(&runs, run_id.as_str())
        })
    }

    async fn run_by_credit_tx(&self, credit_tx_id: &CreditTxId) -> StoreResult<Option<Run>> {
        let id = credit_tx_id.to_owned();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let by_tx = tx.open_table(RUNS_BY_TX).map_err(err)?;
            let Some(run_id) = by_tx
                .get(id.as_str())
                .map_err(err)?
                .map(|v| v.value().to_owned())
            else {
                return Ok(None);
            };
            let runs = tx.open_table(RUNS).map_err(err)?;
            get_json(&runs, run_id.as_str())
        })
        .await
    }

    async fn commit_run(
        &self,
        run: &Run,
        applied: &Applied,
        read: &RunVersion,
    ) -> StoreResult<bool> {
        let (run, applied, read) = (run.clone(), applied.clone(), *read);
        self.write(move |tx| {
            let runs = tx.open_table(RUNS).map_err(err)?;
            let stored: Option<Run> = get_json(&runs, run.run_id.as_str())?;
            drop(runs);
            // Only over the run as it was read: its last event, its status, its lease.
            if !stored.is_some_and(|s| s.is_at(&read)) {
                return Ok(false);
            }
            put_run(tx, &run)?;
            if let Some(event) = &applied.event {
                let mut events = tx.open_table(EVENTS).map_err(err)?;
                let key = (run.run_id.as_str(), event.seq);
                if events.get(key).map_err(err)?.is_some() {
                    return Err(StoreError::new(format!(
                        "event {} of {} written twice",
                        event.seq, run.run_id
                    )));
                }
                events
                    .insert(key, to_json(event)?.as_slice())
                    .map_err(err)?;
            }
            let mut files = tx.open_table(FILES).map_err(err)?;
            let mut blob_files = tx.open_table(BLOB_FILES).map_err(err)?;
            for file in &applied.files {
                let at = (run.run_id.as_str(), file.n as u64);
                match &file.body {
                    FileBody::Inline(bytes) => {
                        files
                            .insert(at, (file.mime.as_str(), bytes.as_slice()))
                            .map_err(err)?;
                    }
                    FileBody::Blob(key) => {
                        blob_files
                            .insert(at, (file.mime.as_str(), key.as_str()))
                            .map_err(err)?;
                    }
                }
            }
            if applied.refund_pts > 0 {
                post_entry(tx, &run.refund_entry(applied.refund_pts))?;
            }
            if let Some(delivery) = &applied.delivery {
                put_delivery(tx, delivery, None)?;
            }
            Ok(true)
        })
        .await
    }

    async fn run_events(
        &self,
        run_id: &RunId,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<RunEvent>> {
        self.read_now(|db| {
            let tx = db.begin_read().map_err(err)?;
            let events = tx.open_table(EVENTS).map_err(err)?;
            let mut out = Vec::new();
            for item in events
                .range::<(&str, u64)>((
                    Bound::Excluded((run_id.as_str(), after)),
                    Bound::Included((run_id.as_str(), u64::MAX)),
                ))
                .map_err(err)?
            {
                let (_, v) = item.map_err(err)?;
                out.push(from_json(v.value())?);
                if out.len() == limit {
                    break;
                }
            }
            Ok(out)
        })
    }

    async fn output_file(&self, run_id: &RunId, n: usize) -> StoreResult<Option<OutputFile>> {
        let id = run_id.to_owned();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let at = (id.as_str(), n as u64);
            let files = tx.open_table(FILES).map_err(err)?;
            if let Some(v) = files.get(at).map_err(err)? {
                let (mime, bytes) = v.value();
                return Ok(Some(OutputFile {
                    n,
                    mime: mime.to_owned(),
                    body: FileBody::Inline(bytes.to_vec()),
                }));
            }
            let blob_files = tx.open_table(BLOB_FILES).map_err(err)?;
            Ok(blob_files.get(at).map_err(err)?.map(|v| {
                let (mime, key) = v.value();
                OutputFile {
                    n,
                    mime: mime.to_owned(),
                    body: FileBody::Blob(key.to_owned()),
                }
            }))
        })
        .await
    }

    async fn unfinished_runs(&self) -> StoreResult<Vec<Run>> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(err)?;
            let unfinished = tx.open_table(UNFINISHED).map_err(err)?;
            let runs = tx.open_table(RUNS).map_err(err)?;
            let mut out = Vec::new();
            for item in unfinished.iter().map_err(err)? {
                let (id, _) = item.map_err(err)?;
                if let Some(run) = get_json::<&str, Run>(&runs, id.value())? {
                    out.push(run);
                }
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl InvoiceStore for RedbStore {
    async fn idempotency(
        &self,
        user_id: &UserId,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        let (user, key) = (user_id.to_owned(), key.to_owned());
        let now = chrono::Utc::now();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let table = tx.open_table(IDEMPOTENCY).map_err(err)?;
            let record: Option<IdempotencyRecord> =
                get_json(&table, (user.as_str(), key.as_str()))?;
            Ok(record.filter(|r| r.expires_at > now))
        })
        .await
    }

    async fn issue_invoice(
        &self,
        invoice: InvoiceRecord,
        idempotency: Option<IdempotencyRecord>,
    ) -> StoreResult<IssueOutcome> {
        self.write(move |tx| {
            if let Some(record) = &idempotency {
                let mut keys = tx.open_table(IDEMPOTENCY).map_err(err)?;
                let key = (record.user_id.as_str(), record.key.as_str());
                let seen: Option<IdempotencyRecord> = get_json(&keys, key)?;
                if let Some(seen) = seen.filter(|s| s.expires_at > record.created_at) {
                    return Ok(if seen.request_hash == record.request_hash {
                        IssueOutcome::Replayed(seen)
                    } else {
                        IssueOutcome::KeyConflict
                    });
                }
                keys.insert(key, to_json(record)?.as_slice()).map_err(err)?;
            }
            let mut invoices = tx.open_table(INVOICES).map_err(err)?;
            invoices
                .insert(invoice.invoice_id.as_str(), to_json(&invoice)?.as_slice())
                .map_err(err)?;
            Ok(IssueOutcome::Issued)
        })
        .await
    }

    async fn cast(&self, cast: NewCast) -> StoreResult<CastOutcome> {
        self.write(move |tx| {
            let mut invoices = tx.open_table(INVOICES).map_err(err)?;
            let invoice: Option<InvoiceRecord> = get_json(&invoices, cast.invoice_id.as_str())?;
            let (run, debit) = match cast.check(invoice.as_ref()) {
                CastCheck::Answer(outcome) => return Ok(outcome),
                CastCheck::Replay { run_id } => {
                    let runs = tx.open_table(RUNS).map_err(err)?;
                    let run: Option<Run> = get_json(&runs, run_id.as_str())?;
                    return run.map(CastOutcome::Replayed).ok_or_else(|| {
                        StoreError::new(format!("invoice {} names a missing run", cast.invoice_id))
                    });
                }
                CastCheck::Pay { run, debit } => (run, debit),
            };
            let Some(mut invoice) = invoice else {
                return Ok(CastOutcome::UnknownInvoice);
            };
            let balance = tx
                .open_table(BALANCES)
                .map_err(err)?
                .get(cast.user_id.as_str())
                .map_err(err)?
                .map_or(0, |v| v.value());
            if balance < run.cost_pts {
                return Ok(CastOutcome::InsufficientBalance { balance });
            }
            post_entry(tx, &debit)?;
            invoice.state = InvoiceState::Consumed {
                run_id: run.run_id.clone(),
                credit_tx_id: run.credit_tx_id.clone(),
                context_hash: cast.context_hash,
            };
            invoices
                .insert(invoice.invoice_id.as_str(), to_json(&invoice)?.as_slice())
                .map_err(err)?;
            put_run(tx, &run)?;
            tx.open_table(RUNS_BY_TX)
                .map_err(err)?
                .insert(run.credit_tx_id.as_str(), run.run_id.as_str())
                .map_err(err)?;
            tx.open_table(USER_RUNS)
                .map_err(err)?
                .insert((run.user_id.as_str(), run.run_id.as_str()), ())
                .map_err(err)?;
            Ok(CastOutcome::Created(run))
        })
        .await
    }
}

#[async_trait]
impl LedgerStore for RedbStore {
    async fn grant(&self, entry: LedgerEntry) -> StoreResult<i64> {
        self.write(move |tx| post_entry(tx, &entry)).await
    }

    async fn grant_once(&self, entry: LedgerEntry, key: &GrantKey) -> StoreResult<GrantOutcome> {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Record {
            fingerprint: String,
            entry: LedgerEntry,
        }
        let key = key.clone();
        // The write lock makes the read of the key, the balance check and the post one step.
        self.write(move |tx| {
            let mut keys = tx.open_table(GRANT_KEYS).map_err(err)?;
            if let Some(first) = get_json::<&str, Record>(&keys, key.key.as_str())? {
                return Ok(GrantOutcome::Repeated {
                    entry: first.entry,
                    fingerprint: first.fingerprint,
                });
            }
            let balance = tx
                .open_table(BALANCES)
                .map_err(err)?
                .get(entry.user_id.as_str())
                .map_err(err)?
                .map_or(0, |v| v.value());
            if balance + entry.pts < 0 {
                return Ok(GrantOutcome::Insufficient { balance });
            }
            let record = Record {
                fingerprint: key.fingerprint,
                entry,
            };
            keys.insert(key.key.as_str(), to_json(&record)?.as_slice())
                .map_err(err)?;
            let balance = post_entry(tx, &record.entry)?;
            Ok(GrantOutcome::Granted {
                entry: record.entry,
                balance,
            })
        })
        .await
    }

    async fn balance(&self, user_id: &UserId) -> StoreResult<i64> {
        let user = user_id.to_owned();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let table = tx.open_table(BALANCES).map_err(err)?;
            Ok(table
                .get(user.as_str())
                .map_err(err)?
                .map_or(0, |v| v.value()))
        })
        .await
    }

    async fn ledger(
        &self,
        user_id: &UserId,
        limit: usize,
        before: Option<&CreditTxId>,
    ) -> StoreResult<Vec<LedgerEntry>> {
        let user = user_id.to_owned();
        let before = before.cloned();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let table = tx.open_table(LEDGER).map_err(err)?;
            let upper = before.as_ref().map_or(ID_MAX, CreditTxId::as_str);
            let mut entries = Vec::new();
            for item in table
                .range((user.as_str(), "")..(user.as_str(), upper))
                .map_err(err)?
                .rev()
            {
                let (_, v) = item.map_err(err)?;
                entries.push(from_json(v.value())?);
                if entries.len() == limit {
                    break;
                }
            }
            Ok(entries)
        })
        .await
    }
}

#[async_trait]
impl ShareStore for RedbStore {
    async fn share_run(&self, share: Share) -> StoreResult<Share> {
        self.write(move |tx| {
            let mut by_run = tx.open_table(RUN_SHARES).map_err(err)?;
            let mut shares = tx.open_table(SHARES).map_err(err)?;
            let existing = by_run
                .get(share.run_id.as_str())
                .map_err(err)?
                .map(|v| v.value().to_owned());
            let stored = match existing {
                Some(id) => match get_json::<&str, Share>(&shares, id.as_str())? {
                    Some(kept) => Share {
                        include_inputs: share.include_inputs,
                        ..kept
                    },
                    None => share,
                },
                None => share,
            };
            shares
                .insert(stored.share_id.as_str(), to_json(&stored)?.as_slice())
                .map_err(err)?;
            by_run
                .insert(stored.run_id.as_str(), stored.share_id.as_str())
                .map_err(err)?;
            Ok(stored)
        })
        .await
    }

    async fn unshare_run(&self, run_id: &RunId) -> StoreResult<bool> {
        let run = run_id.to_owned();
        self.write(move |tx| {
            let mut by_run = tx.open_table(RUN_SHARES).map_err(err)?;
            let Some(id) = by_run
                .remove(run.as_str())
                .map_err(err)?
                .map(|v| v.value().to_owned())
            else {
                return Ok(false);
            };
            tx.open_table(SHARES)
                .map_err(err)?
                .remove(id.as_str())
                .map_err(err)?;
            Ok(true)
        })
        .await
    }

    async fn share(&self, share_id: &ShareId) -> StoreResult<Option<Share>> {
        let id = share_id.to_owned();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let shares = tx.open_table(SHARES).map_err(err)?;
            get_json(&shares, id.as_str())
        })
        .await
    }

    async fn run_share(&self, run_id: &RunId) -> StoreResult<Option<Share>> {
        let run = run_id.to_owned();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let by_run = tx.open_table(RUN_SHARES).map_err(err)?;
            let Some(id) = by_run
                .get(run.as_str())
                .map_err(err)?
                .map(|v| v.value().to_owned())
            else {
                return Ok(None);
            };
            let shares = tx.open_table(SHARES).map_err(err)?;
            get_json(&shares, id.as_str())
        })
        .await
    }
}

#[async_trait]
impl DeliveryStore for RedbStore {
    async fn webhook_secret(&self, user_id: &UserId) -> StoreResult<Option<WebhookSecret>> {
        self.read_now(|db| {
            let tx = db.begin_read().map_err(err)?;
            let table = tx.open_table(WEBHOOK_SECRETS).map_err(err)?;
            let stored = table.get(user_id.as_str()).map_err(err)?;
            Ok(stored.and_then(|v| WebhookSecret::parse(v.value())))
        })
    }

    async fn put_webhook_secret(
        &self,
        user_id: &UserId,
        secret: WebhookSecret,
        replace: bool,
    ) -> StoreResult<WebhookSecret> {
        let user = user_id.to_owned();
        self.write(move |tx| {
            let mut table = tx.open_table(WEBHOOK_SECRETS).map_err(err)?;
            if !replace {
                let existing = table.get(user.as_str()).map_err(err)?;
                if let Some(kept) = existing.and_then(|v| WebhookSecret::parse(v.value())) {
                    return Ok(kept);
                }
            }
            table.insert(user.as_str(), secret.as_str()).map_err(err)?;
            Ok(secret)
        })
        .await
    }

    async fn deliveries(&self, run_id: &RunId) -> StoreResult<Vec<Delivery>> {
        let id = run_id.to_owned();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let table = tx.open_table(DELIVERIES).map_err(err)?;
            let mut out: Vec<Delivery> = Vec::new();
            for item in table
                .range((id.as_str(), "")..=(id.as_str(), ID_MAX))
                .map_err(err)?
            {
                let (_, v) = item.map_err(err)?;
                out.push(from_json(v.value())?);
            }
            out.sort_by_key(|d| d.created_at);
            Ok(out)
        })
        .await
    }

    async fn delivery(&self, run_id: &RunId, webhook_id: &str) -> StoreResult<Option<Delivery>> {
        let (run, id) = (run_id.to_owned(), webhook_id.to_owned());
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let table = tx.open_table(DELIVERIES).map_err(err)?;
            get_json(&table, (run.as_str(), id.as_str()))
        })
        .await
    }

    async fn record_attempt(
        &self,
        run_id: &RunId,
        webhook_id: &str,
        attempt: Attempt,
    ) -> StoreResult<bool> {
        let (run, id) = (run_id.to_owned(), webhook_id.to_owned());
        self.write(move |tx| {
            let table = tx.open_table(DELIVERIES).map_err(err)?;
            let found: Option<Delivery> = get_json(&table, (run.as_str(), id.as_str()))?;
            drop(table);
            let Some(mut delivery) = found else {
                return Ok(false);
            };
            if delivery.attempts.len() as u32 + 1 != attempt.attempt || !delivery.is_pending() {
                return Ok(false);
            }
            let was_due = delivery.next_at;
            delivery.next_at = attempt.next_at;
            delivery.attempts.push(attempt);
            put_delivery(tx, &delivery, was_due)?;
            Ok(true)
        })
        .await
    }

    async fn due_deliveries(&self, at: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Delivery>> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let due = tx.open_table(DUE_DELIVERIES).map_err(err)?;
            let deliveries = tx.open_table(DELIVERIES).map_err(err)?;
            let mut out = Vec::new();
            for item in due
                .range((i64::MIN, "", "")..=(at.timestamp_micros(), ID_MAX, ID_MAX))
                .map_err(err)?
            {
                let (key, _) = item.map_err(err)?;
                let (_, run, id) = key.value();
                if let Some(delivery) = get_json(&deliveries, (run, id))? {
                    out.push(delivery);
                }
                if out.len() == limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl CostStore for RedbStore {
    async fn record_tool_cost(&self, tool: &str, pts: i64) -> StoreResult<()> {
        let key = tool.to_owned();
        self.write(move |tx| {
            let mut costs = tx.open_table(TOOL_COSTS).map_err(err)?;
            let (calls, total) = costs
                .get(key.as_str())
                .map_err(err)?
                .map_or((0, 0), |v| v.value());
            costs
                .insert(key.as_str(), (calls + 1, total + pts))
                .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn tool_costs(&self) -> StoreResult<Vec<ToolCostTotal>> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(err)?;
            let costs = tx.open_table(TOOL_COSTS).map_err(err)?;
            let mut out = Vec::new();
            for item in costs.iter().map_err(err)? {
                let (k, v) = item.map_err(err)?;
                let (calls, pts) = v.value();
                out.push(ToolCostTotal {
                    tool: k.value().to_owned(),
                    calls,
                    pts,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn save_spell_stats(&self, stats: &[SpellStats]) -> StoreResult<()> {
        let stats = stats.to_vec();
        self.write(move |tx| {
            let mut table = tx.open_table(SPELL_STATS).map_err(err)?;
            for s in &stats {
                table
                    .insert(s.slug.as_str(), to_json(s)?.as_slice())
                    .map_err(err)?;
            }
            Ok(())
        })
        .await
    }

    async fn spell_stats(&self) -> StoreResult<Vec<SpellStats>> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(err)?;
            let table = tx.open_table(SPELL_STATS).map_err(err)?;
            let mut out = Vec::new();
            for item in table.iter().map_err(err)? {
                let (_, v) = item.map_err(err)?;
                out.push(from_json(v.value())?);
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl UploadStore for RedbStore {
    async fn put_upload(&self, upload: &Upload) -> StoreResult<()> {
        let upload = upload.clone();
        self.write(move |tx| {
            let mut table = tx.open_table(UPLOADS).map_err(err)?;
            table
                .insert(upload.upload_id.as_str(), to_json(&upload)?.as_slice())
                .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn upload(&self, upload_id: &UploadId) -> StoreResult<Option<Upload>> {
        let id = upload_id.to_owned();
        self.read_now(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let table = tx.open_table(UPLOADS).map_err(err)?;
            get_json(&table, id.as_str())
        })
    }
}
