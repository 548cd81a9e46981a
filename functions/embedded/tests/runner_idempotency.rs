//! The runner and recovery against the real redb store: a duplicate `executionStarted` executes
//! nothing twice, and racing failures refund exactly once (SPEC §5.3).

use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use serde_json::json;
use spellcast_core::auth::TokenKeys;
use spellcast_core::catalog::Catalog;
use spellcast_core::ids::{new_id, Slug};
use spellcast_core::invoice::{InvoiceRecord, InvoiceState};
use spellcast_core::ledger::{LedgerEntry, LedgerKind, PTS};
use spellcast_core::ports::{CastOutcome, NewCast, SystemClock};
use spellcast_core::run::{EventBody, Run, RunChange, RunError, RunStatus, StepState, StepStatus};
use spellcast_core::runner::{execute, Execution};
use spellcast_core::stats::PriceBook;
use spellcast_core::tools::Toolbox;
use spellcast_core::{App, Config};
use spellcast_embedded::{LocalBus, LocalSignal, RedbStore};

fn app() -> Arc<App> {
    let tools = Toolbox::builtin(None);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/spells");
    let catalog = Catalog::load(&dir, &tools).unwrap();
    let (bus, _) = LocalBus::new();
    Arc::new(App {
        config: Config::new("http://test"),
        catalog,
        tools,
        store: Arc::new(RedbStore::in_memory().unwrap()),
        bus: Arc::new(bus),
        signal: Arc::new(LocalSignal::default()),
        clock: Arc::new(SystemClock),
        keys: TokenKeys::hs256(&[1; 32], "test").unwrap(),
        prices: PriceBook::default(),
        metrics: None,
    })
}

/// Grants 100 points to `user` and casts `slug` for 10 of them, straight through the store.
async fn paid_run(app: &App, user: &str, slug: &str) -> Run {
    let now = Utc::now();
    let entry = |kind, pts| LedgerEntry {
        tx_id: new_id("tx"),
        user_id: user.into(),
        kind,
        asset: PTS.into(),
        pts,
        run_id: None,
        invoice_id: None,
        at: now,
    };
    app.store
        .grant(entry(LedgerKind::Grant, 100))
        .await
        .unwrap();
    let spell = app.catalog.get(&Slug::parse(slug).unwrap()).unwrap();
    let invoice_id = new_id("inv");
    app.store
        .issue_invoice(
            InvoiceRecord {
                invoice_id: invoice_id.clone(),
                user_id: user.into(),
                slug: slug.into(),
                version: spell.def.version,
                cost_pts: 10,
                asset: PTS.into(),
                issued_at: now,
                expires_at: now + chrono::Duration::minutes(5),
                state: InvoiceState::Open,
            },
            None,
        )
        .await
        .unwrap();
    let run = Run {
        run_id: new_id("run"),
        credit_tx_id: new_id("tx"),
        invoice_id: invoice_id.clone(),
        user_id: user.into(),
        slug: slug.into(),
        spell_version: spell.def.version,
        status: RunStatus::Queued,
        steps: spell
            .def
            .steps
            .iter()
            .map(|s| StepState {
                id: s.id.clone(),
                title: s.title.clone(),
                status: StepStatus::Pending,
                progress: 0.0,
                message: None,
            })
            .collect(),
        outputs: vec![],
        cost_pts: 10,
        refunded_pts: 0,
        context: json!({"name": "Twice"}),
        created_at: now,
        started_at: None,
        finished_at: None,
        deadline_at: None,
        error: None,
        last_seq: 0,
    };
    let mut debit = entry(LedgerKind::Debit, -10);
    debit.tx_id = run.credit_tx_id.clone();
    let outcome = app
        .store
        .cast(NewCast {
            invoice_id,
            user_id: user.into(),
            context_hash: "h".into(),
            now,
            run,
            debit,
        })
        .await
        .unwrap();
    match outcome {
        CastOutcome::Created(run) => run,
        other => panic!("cast failed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicate_delivery_executes_nothing_twice() {
    let app = app();
    let run = paid_run(&app, "u1", "hello-sigil").await;
    let (a, b, c) = tokio::join!(
        execute(&app, &run.run_id),
        execute(&app, &run.run_id),
        execute(&app, &run.run_id)
    );
    let outcomes = [a.unwrap(), b.unwrap(), c.unwrap()];
    let ran = outcomes
        .iter()
        .filter(|o| **o == Execution::Ran(RunStatus::Succeeded))
        .count();
    assert_eq!(ran, 1, "{outcomes:?}");
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == Execution::Skipped)
            .count(),
        2
    );
    let events = app.store.run_events(&run.run_id, 0, 1000).await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    let starts = events
        .iter()
        .filter(|e| matches!(e.body, EventBody::ExecutionStarted { .. }))
        .count();
    assert_eq!(starts, 1);
    // A late redelivery after the run finished does nothing either.
    assert_eq!(
        execute(&app, &run.run_id).await.unwrap(),
        Execution::Skipped
    );
    assert_eq!(app.store.balance("u1").await.unwrap(), 90);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_failures_refund_exactly_once() {
    let app = app();
    let run = paid_run(&app, "u2", "slow-scroll").await;
    let attempts = (0..50).map(|_| {
        let app = app.clone();
        let id = run.run_id.clone();
        tokio::spawn(async move {
            let change = RunChange::Fail {
                at: Utc::now(),
                error: RunError {
                    code: "timed_out".into(),
                    message: "race".into(),
                    step_id: None,
                },
            };
            app.store.advance_run(&id, change).await.unwrap().is_some()
        })
    });
    let mut applied = 0;
    for attempt in attempts {
        applied += usize::from(attempt.await.unwrap());
    }
    assert_eq!(applied, 1);
    assert_eq!(app.store.balance("u2").await.unwrap(), 100);
    let ledger = app.store.ledger("u2", 100, None).await.unwrap();
    let refunds = ledger
        .iter()
        .filter(|e| e.kind == LedgerKind::Refund)
        .count();
    assert_eq!(refunds, 1);
    assert_eq!(ledger.iter().map(|e| e.pts).sum::<i64>(), 100);
    // The runner arriving after the sweeper finds nothing to do.
    assert_eq!(
        execute(&app, &run.run_id).await.unwrap(),
        Execution::Skipped
    );
}
