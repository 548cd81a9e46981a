//! Fault injection at the store boundary: for every n along cast → run → finish or refund, the
//! n-th store call fails — before it reaches the store, or after it was applied (the answer is
//! lost) — then the client retries its cast and recovery sweeps. Afterwards the ledger equals the
//! balance, and the debit ended in exactly one of: a succeeded run, or a failed run refunded once.
//! Runs on redb, and on DynamoDB (moto) when `SPELLCAST_MOTO_ENDPOINT` is set.

use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;
use spellcast_application::app::Ports;
use spellcast_application::auth::TokenKeys;
use spellcast_application::ports::{
    Clock, CostStore, DeliveryStore, InvoiceStore, LedgerStore, RunStore, ShareStore, Store,
    StoreError, StoreResult, UploadStore,
};
use spellcast_application::{App, Config};
use spellcast_aws::DynamoStore;
use spellcast_domain::cast::{CastOutcome, NewCast};
use spellcast_domain::ids::{new_id, CreditTxId, InvoiceId, RunId, ShareId, Slug, UserId};
use spellcast_domain::invoice::{IdempotencyRecord, InvoiceRecord, InvoiceState, IssueOutcome};
use spellcast_domain::ledger::{LedgerEntry, LedgerKind, PTS};
use spellcast_domain::prices::{SpellStats, ToolCostTotal};
use spellcast_domain::run::{Applied, OutputFile, Run, RunEvent, RunStatus, RunVersion};
use spellcast_domain::sharing::Share;
use spellcast_domain::webhooks::{Attempt, Delivery, WebhookSecret};
use spellcast_embedded::{LocalBus, LocalSignal, RedbStore};

mod engines;

/// Fails call number `fail_at` (1-based), before or after forwarding it.
struct FaultyStore {
    inner: Arc<dyn Store>,
    calls: AtomicUsize,
    fail_at: AtomicUsize,
    after: bool,
}

impl FaultyStore {
    fn new(inner: Arc<dyn Store>, fail_at: usize, after: bool) -> Self {
        FaultyStore {
            inner,
            calls: AtomicUsize::new(0),
            fail_at: AtomicUsize::new(fail_at),
            after,
        }
    }

    async fn call<T>(
        &self,
        work: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let fail = n == self.fail_at.load(Ordering::SeqCst);
        if fail && !self.after {
            return Err(StoreError::new(format!("injected failure before call {n}")));
        }
        let result = work.await;
        if fail {
            return Err(StoreError::new(format!(
                "injected failure after call {n} (it was applied)"
            )));
        }
        result
    }
}

#[async_trait]
impl RunStore for FaultyStore {
    async fn run(&self, run_id: &RunId) -> StoreResult<Option<Run>> {
        self.call(self.inner.run(run_id)).await
    }

    async fn user_runs(
        &self,
        user_id: &UserId,
        limit: usize,
        before: Option<&RunId>,
    ) -> StoreResult<Vec<Run>> {
        self.call(self.inner.user_runs(user_id, limit, before))
            .await
    }

    async fn run_by_credit_tx(&self, credit_tx_id: &CreditTxId) -> StoreResult<Option<Run>> {
        self.call(self.inner.run_by_credit_tx(credit_tx_id)).await
    }

    async fn commit_run(
        &self,
        run: &Run,
        applied: &Applied,
        read: &RunVersion,
    ) -> StoreResult<bool> {
        self.call(self.inner.commit_run(run, applied, read)).await
    }

    async fn run_events(
        &self,
        run_id: &RunId,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<RunEvent>> {
        self.call(self.inner.run_events(run_id, after, limit)).await
    }

    async fn output_file(&self, run_id: &RunId, n: usize) -> StoreResult<Option<OutputFile>> {
        self.call(self.inner.output_file(run_id, n)).await
    }

    async fn unfinished_runs(&self) -> StoreResult<Vec<Run>> {
        self.call(self.inner.unfinished_runs()).await
    }
}

#[async_trait]
impl InvoiceStore for FaultyStore {
    async fn idempotency(
        &self,
        user_id: &UserId,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        self.call(self.inner.idempotency(user_id, key)).await
    }

    async fn issue_invoice(
        &self,
        invoice: InvoiceRecord,
        idem: Option<IdempotencyRecord>,
    ) -> StoreResult<IssueOutcome> {
        self.call(self.inner.issue_invoice(invoice, idem)).await
    }

    async fn cast(&self, cast: NewCast) -> StoreResult<CastOutcome> {
        self.call(self.inner.cast(cast)).await
    }
}

#[async_trait]
impl LedgerStore for FaultyStore {
    async fn grant(&self, entry: LedgerEntry) -> StoreResult<i64> {
        self.call(self.inner.grant(entry)).await
    }

    async fn grant_once(
        &self,
        entry: LedgerEntry,
        key: &spellcast_domain::ledger::GrantKey,
    ) -> StoreResult<spellcast_domain::ledger::GrantOutcome> {
        self.call(self.inner.grant_once(entry, key)).await
    }

    async fn balance(&self, user_id: &UserId) -> StoreResult<i64> {
        self.call(self.inner.balance(user_id)).await
    }

    async fn ledger(
        &self,
        user_id: &UserId,
        limit: usize,
        before: Option<&CreditTxId>,
    ) -> StoreResult<Vec<LedgerEntry>> {
        self.call(self.inner.ledger(user_id, limit, before)).await
    }
}

#[async_trait]
impl ShareStore for FaultyStore {
    async fn share_run(&self, share: Share) -> StoreResult<Share> {
        self.call(self.inner.share_run(share)).await
    }

    async fn unshare_run(&self, run_id: &RunId) -> StoreResult<bool> {
        self.call(self.inner.unshare_run(run_id)).await
    }

    async fn share(&self, share_id: &ShareId) -> StoreResult<Option<Share>> {
        self.call(self.inner.share(share_id)).await
    }

    async fn run_share(&self, run_id: &RunId) -> StoreResult<Option<Share>> {
        self.call(self.inner.run_share(run_id)).await
    }
}

#[async_trait]
impl DeliveryStore for FaultyStore {
    async fn webhook_secret(&self, user_id: &UserId) -> StoreResult<Option<WebhookSecret>> {
        self.call(self.inner.webhook_secret(user_id)).await
    }

    async fn put_webhook_secret(
        &self,
        user_id: &UserId,
        secret: WebhookSecret,
        replace: bool,
    ) -> StoreResult<WebhookSecret> {
        self.call(self.inner.put_webhook_secret(user_id, secret, replace))
            .await
    }

    async fn deliveries(&self, run_id: &RunId) -> StoreResult<Vec<Delivery>> {
        self.call(self.inner.deliveries(run_id)).await
    }

    async fn delivery(&self, run_id: &RunId, webhook_id: &str) -> StoreResult<Option<Delivery>> {
        self.call(self.inner.delivery(run_id, webhook_id)).await
    }

    async fn record_attempt(
        &self,
        run_id: &RunId,
        webhook_id: &str,
        attempt: Attempt,
    ) -> StoreResult<bool> {
        self.call(self.inner.record_attempt(run_id, webhook_id, attempt))
            .await
    }

    async fn due_deliveries(&self, at: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Delivery>> {
        self.call(self.inner.due_deliveries(at, limit)).await
    }
}

#[async_trait]
impl CostStore for FaultyStore {
    async fn record_tool_cost(&self, tool: &str, pts: i64) -> StoreResult<()> {
        self.call(self.inner.record_tool_cost(tool, pts)).await
    }

    async fn tool_costs(&self) -> StoreResult<Vec<ToolCostTotal>> {
        self.call(self.inner.tool_costs()).await
    }

    async fn save_spell_stats(&self, stats: &[SpellStats]) -> StoreResult<()> {
        self.call(self.inner.save_spell_stats(stats)).await
    }

    async fn spell_stats(&self) -> StoreResult<Vec<SpellStats>> {
        self.call(self.inner.spell_stats()).await
    }
}

#[async_trait]
impl UploadStore for FaultyStore {
    async fn put_upload(&self, upload: &spellcast_domain::uploads::Upload) -> StoreResult<()> {
        self.call(self.inner.put_upload(upload)).await
    }

    async fn upload(
        &self,
        upload_id: &spellcast_domain::ids::UploadId,
    ) -> StoreResult<Option<spellcast_domain::uploads::Upload>> {
        self.call(self.inner.upload(upload_id)).await
    }
}

/// A clock the test moves forward, so recovery sees deadlines pass.
#[derive(Default)]
struct ShiftedClock(AtomicI64);

impl Clock for ShiftedClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::seconds(self.0.load(Ordering::SeqCst))
    }
}

async fn backend(moto: bool) -> Option<Arc<dyn Store>> {
    if !moto {
        return Some(Arc::new(RedbStore::in_memory().unwrap()));
    }
    let config = engines::engine("SPELLCAST_MOTO_ENDPOINT").await?;
    let store = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&config),
        format!("faults-{}", new_id("t").replace('_', "-")),
        chrono::Duration::days(1),
    );
    store.create_table().await.unwrap();
    Some(Arc::new(store))
}

/// One scenario: what happened to the money.
#[derive(Debug)]
struct Outcome {
    calls: usize,
    status: Option<RunStatus>,
}

/// Casts `slug` through a store that fails call `fail_at`, recovers, and checks the invariants.
async fn scenario(inner: Arc<dyn Store>, slug: &str, fail_at: usize, after: bool) -> Outcome {
    let user = UserId::new();
    let now = Utc::now();
    let grant = LedgerEntry {
        tx_id: CreditTxId::new(),
        user_id: user.clone(),
        kind: LedgerKind::Grant,
        asset: PTS.into(),
        pts: 100,
        run_id: None,
        invoice_id: None,
        at: now,
        reason: None,
        granted_by: None,
    };
    inner.grant(grant).await.unwrap();
    let invoice_id = InvoiceId::new();
    let invoice = InvoiceRecord {
        invoice_id: invoice_id.clone(),
        user_id: user.clone(),
        slug: Slug::parse(slug).unwrap(),
        version: 1,
        cost_pts: 10,
        asset: PTS.into(),
        issued_at: now,
        expires_at: now + chrono::Duration::minutes(5),
        state: InvoiceState::Open,
    };
    inner.issue_invoice(invoice, None).await.unwrap();

    let faulty = Arc::new(FaultyStore::new(inner.clone(), fail_at, after));
    let tools = spellcast_tools::builtin();
    let catalog = spellcast_application::catalog_files::load_catalog(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/spells"),
    )
    .unwrap();
    let spell = catalog.get(&Slug::parse(slug).unwrap()).unwrap();
    let (bus, mut executions) = LocalBus::new();
    let clock = Arc::new(ShiftedClock::default());
    let ports = Ports {
        tools,
        store: faulty.clone(),
        // Large files: in cargo's scratch directory for integration tests.
        blobs: Arc::new(
            spellcast_embedded::DiskBlobs::open(
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("blobs"),
            )
            .unwrap(),
        ),
        bus: Arc::new(bus),
        signal: Arc::new(LocalSignal::default()),
        clock: clock.clone(),
        limiter: Arc::new(spellcast_embedded::MemoryLimiter::default()),
        provider_documents: None,
    };
    let keys = TokenKeys::hs256(&[1; 32], "test").unwrap();
    let app = App::new(Config::new("http://test"), catalog, keys, ports);
    let run = Run::queued(
        &spell,
        &invoice_id,
        &user,
        10,
        json!({"name": "Fault"}),
        now,
    );
    let debit = run.debit_entry();
    let cast = NewCast {
        invoice_id,
        user_id: user.clone(),
        context_hash: "h".into(),
        now,
        run,
        debit,
    };

    // The client casts; on an error it retries the same cast once (the invoice makes it safe).
    let outcome = match faulty.cast(cast.clone()).await {
        Ok(outcome) => outcome,
        Err(_) => faulty.cast(cast.clone()).await.unwrap(),
    };
    let run_id = match outcome {
        CastOutcome::Created(run) | CastOutcome::Replayed(run) => run.run_id,
        other => panic!("cast after retry: {other:?}"),
    };
    // The runner may die on the fault part-way; its error is what a crash would leave.
    let _ = app.runner().execute(&run_id).await;

    // Recovery: first lost start events are published again (and executed), then stuck runs
    // are failed and refunded once their deadline has passed.
    let calls = faulty.calls.load(Ordering::SeqCst);
    faulty.fail_at.store(usize::MAX, Ordering::SeqCst);
    for shift in [30, 3600] {
        clock.0.store(shift, Ordering::SeqCst);
        app.recovery().sweep().await.unwrap();
        while let Ok(event) = executions.try_recv() {
            app.runner().execute(&event.run_id).await.unwrap();
        }
    }

    let run = inner.run(&run_id).await.unwrap().unwrap();
    let ledger = inner.ledger(&user, 100, None).await.unwrap();
    let balance = inner.balance(&user).await.unwrap();
    let count = |kind| ledger.iter().filter(|e| e.kind == kind).count();
    let context = format!(
        "fail_at={fail_at} after={after} run={:?} ledger={ledger:?}",
        run.status
    );
    assert_eq!(
        ledger.iter().map(|e| e.pts).sum::<i64>(),
        balance,
        "{context}"
    );
    assert_eq!(count(LedgerKind::Debit), 1, "{context}");
    match run.status {
        RunStatus::Succeeded => {
            assert_eq!((count(LedgerKind::Refund), balance), (0, 90), "{context}")
        }
        RunStatus::Failed => {
            assert_eq!((count(LedgerKind::Refund), balance), (1, 100), "{context}");
            assert_eq!(run.refunded_pts, 10, "{context}");
        }
        other => panic!("run left {other:?}: {context}"),
    }
    Outcome {
        calls,
        status: Some(run.status),
    }
}

/// Every n from 1 past the end of the clean flow, in both failure modes.
async fn sweep_every_call(moto: bool, slug: &str) {
    let Some(probe) = backend(moto).await else {
        return;
    };
    let clean = scenario(probe, slug, usize::MAX, false).await;
    assert!(
        clean.calls > 5,
        "the clean flow makes {} store calls",
        clean.calls
    );
    let expected = if slug == "fizzle" {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    };
    assert_eq!(clean.status, Some(expected));
    let store = backend(moto).await.unwrap();
    for fail_at in 1..=clean.calls {
        for after in [false, true] {
            scenario(store.clone(), slug, fail_at, after).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_along_a_succeeding_run_keeps_the_money_exact_on_redb() {
    sweep_every_call(false, "hello-sigil").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_along_a_failing_run_keeps_the_money_exact_on_redb() {
    sweep_every_call(false, "fizzle").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_along_a_succeeding_run_keeps_the_money_exact_on_moto() {
    sweep_every_call(true, "hello-sigil").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_along_a_failing_run_keeps_the_money_exact_on_moto() {
    sweep_every_call(true, "fizzle").await;
}
