//! Test data made the same way by every store suite: ledger entries, invoices and queued runs.

use chrono::Utc;
use serde_json::json;
use spellcast_application::ports::Store;
use spellcast_domain::cast::{CastOutcome, NewCast};
use spellcast_domain::ids::{CreditTxId, InvoiceId, RunId, Slug};
use spellcast_domain::invoice::{InvoiceRecord, InvoiceState, IssueOutcome};
use spellcast_domain::ledger::{LedgerEntry, LedgerKind, PTS};
use spellcast_domain::run::{Run, RunStatus, StepState};

/// A ledger entry of `pts` for `user`, now.
pub fn entry(user: &str, kind: LedgerKind, pts: i64) -> LedgerEntry {
    LedgerEntry {
        tx_id: CreditTxId::new(),
        user_id: user.into(),
        kind,
        asset: PTS.into(),
        pts,
        run_id: None,
        invoice_id: None,
        at: Utc::now(),
        reason: None,
        granted_by: None,
    }
}

/// An open invoice of `user` for `cost`, issued now.
pub async fn invoice(store: &dyn Store, user: &str, cost: i64) -> InvoiceId {
    let now = Utc::now();
    let id = InvoiceId::new();
    let record = InvoiceRecord {
        invoice_id: id.clone(),
        user_id: user.into(),
        slug: Slug::parse("hello-sigil").unwrap(),
        version: 3,
        cost_pts: cost,
        asset: PTS.into(),
        issued_at: now,
        expires_at: now + chrono::Duration::minutes(5),
        state: InvoiceState::Open,
    };
    assert_eq!(
        store.issue_invoice(record, None).await.unwrap(),
        IssueOutcome::Issued
    );
    id
}

/// A queued run of `user` paid by `invoice_id`, with these steps.
pub fn queued_run(user: &str, invoice_id: &InvoiceId, steps: &[&str]) -> Run {
    Run {
        run_id: RunId::new(),
        credit_tx_id: CreditTxId::new(),
        invoice_id: invoice_id.clone(),
        user_id: user.into(),
        slug: Slug::parse("hello-sigil").unwrap(),
        spell_version: 3,
        status: RunStatus::Queued,
        steps: steps
            .iter()
            .map(|id| StepState::pending(id, &id.to_uppercase()))
            .collect(),
        outputs: vec![],
        cost_pts: 0,
        refunded_pts: 0,
        context: json!({"name": "Ada", "nested": {"n": 1.5, "list": [1, "two", null]}}),
        created_at: Utc::now(),
        started_at: None,
        finished_at: None,
        deadline_at: None,
        lease_fence: 0,
        lease_until: None,
        error: None,
        last_seq: 0,
        webhook: None,
        uploads: Vec::new(),
        call_back: None,
    }
}

/// The cast of a queued run paid by `invoice_id`.
pub fn new_cast(user: &str, invoice_id: &InvoiceId, context_hash: &str, steps: &[&str]) -> NewCast {
    let run = queued_run(user, invoice_id, steps);
    let debit = run.debit_entry();
    NewCast {
        invoice_id: invoice_id.clone(),
        user_id: user.into(),
        context_hash: context_hash.into(),
        now: Utc::now(),
        run,
        debit,
    }
}

/// Quotes `cost` for `user` and casts a run with these steps; the cast must succeed.
pub async fn cast_ok(store: &dyn Store, user: &str, cost: i64, steps: &[&str]) -> Run {
    cast_with(store, user, cost, steps, None).await
}

/// As [`cast_ok`], with these inputs instead of the default ones.
pub async fn cast_with(
    store: &dyn Store,
    user: &str,
    cost: i64,
    steps: &[&str],
    context: Option<serde_json::Value>,
) -> Run {
    let inv = invoice(store, user, cost).await;
    let mut cast = new_cast(user, &inv, "h", steps);
    if let Some(context) = context {
        cast.run.context = context;
    }
    match store.cast(cast).await.unwrap() {
        CastOutcome::Created(run) => run,
        other => panic!("cast: {other:?}"),
    }
}
