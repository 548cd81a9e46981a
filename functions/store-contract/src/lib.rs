//! The store contract: one suite for the store port, run by every store adapter with the same
//! code (`spellcast-embedded` on redb; `spellcast-aws` on moto and Amazon's DynamoDB Local, which
//! models transaction conflicts). Each check takes a fresh, empty store; [`store_contract!`]
//! makes a test of each for one backend.

use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use serde_json::json;
use spellcast_application::advancing::{advance, advance_held};
use spellcast_application::app::Ports;
use spellcast_application::auth::TokenKeys;
use spellcast_application::ports::{Store, SystemClock};
use spellcast_application::runner::Execution;
use spellcast_application::{App, Config};
use spellcast_domain::cast::CastOutcome;
use spellcast_domain::ids::{new_id, RunId, Slug, UserId};
use spellcast_domain::invoice::{IdempotencyRecord, InvoiceRecord, InvoiceState, IssueOutcome};
use spellcast_domain::ledger::{LedgerKind, PTS};
use spellcast_domain::prices::SpellStats;
use spellcast_domain::run::{
    EventBody, FileBody, Lease, Metered, NewOutput, OutputKind, RunChange, RunError, RunStatus,
    RunVersion, StepStatus, Usage,
};
use spellcast_domain::webhooks::{Attempt, WebhookSecret, WebhookTarget};
use spellcast_embedded::{LocalBus, LocalSignal};

pub mod fixtures;

use fixtures::{cast_ok, entry, invoice, new_cast};

/// A test of every check of the contract against the store `$backend().await` gives (`None`:
/// the backend is not there, and the test passes by skipping, as the backend says).
#[macro_export]
macro_rules! store_contract {
    ($backend:path) => {
        $crate::store_contract!(@each $backend, an_upload_is_kept_for_its_owner_and_a_run_keeps_its_files, grants_move_the_balance_and_the_ledger_pages_newest_first, idempotency_keys_replay_or_conflict, a_cast_consumes_debits_and_queues_atomically, refused_casts_change_nothing, runs_advance_through_their_state_machine, a_failure_refunds_once, many_casts_of_one_invoice_spend_once, many_invoices_over_a_small_balance_never_go_below_zero, racing_failures_refund_exactly_once, a_users_runs_are_listed_newest_first_in_pages, a_webhook_secret_is_kept_once_and_rotated, deliveries_are_written_with_their_events_and_attempted_once_each, a_run_is_shared_once_and_unshared, a_cancel_refunds_by_its_rule_once, racing_cancels_settle_to_one_outcome, a_duplicate_delivery_executes_nothing_twice, costs_and_prices_are_kept, the_ledger_follows_its_model, outputs_of_any_size_fit_the_store, a_streamed_answer_and_its_metering_are_kept, a_keyed_grant_is_posted_once_and_never_below_zero, racing_runners_take_a_lost_run_once_and_a_stale_one_writes_nothing);
    };
    (@each $backend:path, $($check:ident),*) => { $(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $check() {
            if let Some(store) = $backend().await {
                $crate::$check(store).await
            }
        }
    )* };
}

// ---- helpers ----------------------------------------------------------------------------------

/// A step change with an attempt and what the step used (SPEC §7.2, §8.3).
fn attempt(
    index: usize,
    status: StepStatus,
    attempt: Option<u32>,
    outputs: Vec<NewOutput>,
    metered: Option<Metered>,
) -> RunChange {
    RunChange::Step {
        index,
        status,
        progress: 0.0,
        message: None,
        outputs,
        at: Utc::now(),
        metered,
        attempt,
    }
}

/// The runner's start at `at`, due (and holding its lease) until `until`.
fn start_until(at: chrono::DateTime<Utc>, until: chrono::DateTime<Utc>) -> RunChange {
    RunChange::Start {
        at,
        deadline: until,
        lease_until: until,
    }
}

fn delta(index: usize, text: &str) -> RunChange {
    RunChange::Delta {
        index,
        text: text.into(),
        progress: 0.5,
    }
}

/// SPEC §7.2 on every store: a streamed answer's deltas are events, its text so far is on the
/// step while it runs (afresh for another attempt), and its success keeps its usage, cost and
/// outputs — what later steps read by reference.
/// SPEC §7.3: an upload record reads back whole, for its id only; a run keeps the files it took
/// (with the sniffed type) through its changes.
/// A check of the contract (see the crate's tests for what it holds).
pub async fn an_upload_is_kept_for_its_owner_and_a_run_keeps_its_files(store: Arc<dyn Store>) {
    use spellcast_domain::uploads::{RunUpload, Upload};
    let now = Utc::now();
    let upload = Upload {
        upload_id: spellcast_domain::ids::UploadId::new(),
        user_id: new_id("user").into(),
        mime: "image/png".into(),
        bytes: 1234,
        created_at: now,
        expires_at: now + chrono::Duration::days(1),
    };
    store.put_upload(&upload).await.unwrap();
    let read = store.upload(&upload.upload_id).await.unwrap().unwrap();
    // Stores keep times to the millisecond or better: compare what matters exactly.
    assert_eq!(
        (
            read.upload_id.clone(),
            read.user_id.clone(),
            read.mime.clone(),
            read.bytes
        ),
        (
            upload.upload_id.clone(),
            upload.user_id.clone(),
            upload.mime.clone(),
            1234
        )
    );
    assert_eq!(read.expires_at.timestamp(), upload.expires_at.timestamp());
    assert!(store.upload(&"upl_nope".into()).await.unwrap().is_none());

    let user = upload.user_id.as_str().to_owned();
    store
        .grant(entry(&user, LedgerKind::Grant, 10))
        .await
        .unwrap();
    let inv = invoice(store.as_ref(), &user, 5).await;
    let mut cast = new_cast(&user, &inv, "h", &["look"]);
    cast.run.uploads = vec![RunUpload {
        input: "picture".into(),
        upload_id: upload.upload_id.clone(),
        mime: "image/png".into(),
        bytes: 1234,
    }];
    let run_id = match store.cast(cast).await.unwrap() {
        CastOutcome::Created(run) => run.run_id,
        other => panic!("{other:?}"),
    };
    let now = Utc::now();
    advance(
        &*store,
        &run_id,
        start_until(now, now + chrono::Duration::minutes(1)),
    )
    .await
    .unwrap()
    .unwrap();
    let run = store.run(&run_id).await.unwrap().unwrap();
    assert_eq!(run.uploads.len(), 1);
    assert_eq!(run.uploads[0].upload_id, upload.upload_id);
    assert_eq!(run.uploads[0].key(), format!("inputs/{}", upload.upload_id));
}

/// A check of the contract (see the crate's tests for what it holds).
pub async fn a_streamed_answer_and_its_metering_are_kept(store: Arc<dyn Store>) {
    store
        .grant(entry("u", LedgerKind::Grant, 10))
        .await
        .unwrap();
    let run = cast_ok(store.as_ref(), "u", 4, &["ask", "echo"]).await;
    let id = &run.run_id;
    let now = Utc::now();
    let start = start_until(now, now + chrono::Duration::minutes(1));
    advance(&*store, id, start).await.unwrap().unwrap();
    assert!(
        advance(&*store, id, delta(0, "early"))
            .await
            .unwrap()
            .is_none(),
        "a step that has not started appends nothing"
    );
    let running = attempt(0, StepStatus::Running, Some(1), vec![], None);
    advance(&*store, id, running).await.unwrap().unwrap();
    for piece in ["Hel", "lo"] {
        advance(&*store, id, delta(0, piece))
            .await
            .unwrap()
            .unwrap();
    }
    let stored = store.run(id).await.unwrap().unwrap();
    assert_eq!(stored.steps[0].partial.as_deref(), Some("Hello"));
    assert_eq!(stored.steps[0].attempt, Some(1));
    assert!(advance(&*store, id, delta(1, "x")).await.unwrap().is_none());
    // Another attempt answers afresh.
    let again = attempt(0, StepStatus::Running, Some(2), vec![], None);
    advance(&*store, id, again).await.unwrap().unwrap();
    assert_eq!(store.run(id).await.unwrap().unwrap().steps[0].partial, None);
    advance(&*store, id, delta(0, "Hi!"))
        .await
        .unwrap()
        .unwrap();
    let answer = NewOutput {
        kind: OutputKind::Text,
        mime: "text/plain; charset=utf-8".into(),
        title: None,
        value: Some(json!("Hi!")),
        file: None,
    };
    let metered = Metered {
        cost_pts: 3,
        usage: Some(Usage {
            prompt_tokens: 12,
            completion_tokens: 2,
            estimated: true,
        }),
        usage_estimated: true,
    };
    let done = attempt(0, StepStatus::Succeeded, None, vec![answer], Some(metered));
    advance(&*store, id, done).await.unwrap().unwrap();
    let stored = store.run(id).await.unwrap().unwrap();
    let step = &stored.steps[0];
    assert_eq!(
        step.partial, None,
        "the answer so far is gone once it succeeded"
    );
    assert_eq!((step.attempt, step.cost_pts), (Some(2), Some(3)));
    assert_eq!(
        (
            step.usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
            step.usage_estimated
        ),
        (Some((12, 2)), true)
    );
    assert_eq!(step.outputs, vec![0]);
    let scope = spellcast_domain::references::scope(&stored, 1, &Default::default());
    assert_eq!(scope["steps"]["ask"]["text"], "Hi!");
    assert_eq!(scope["steps"]["ask"]["usage"]["completionTokens"], 2);
    let texts: Vec<String> = store
        .run_events(id, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::StepDelta { text, index: 0, .. } => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(
        texts,
        ["Hel", "lo", "Hi!"],
        "deltas are events, in order, once"
    );
}

async fn ledger_sum(store: &dyn Store, user: &str) -> i64 {
    store
        .ledger(&user.into(), 1000, None)
        .await
        .unwrap()
        .iter()
        .map(|e| e.pts)
        .sum()
}

fn fail(code: &str) -> RunChange {
    RunChange::Fail {
        at: Utc::now(),
        error: RunError {
            code: code.into(),
            message: "m".into(),
            step_id: None,
        },
    }
}

fn step(index: usize, status: StepStatus, outputs: Vec<NewOutput>) -> RunChange {
    RunChange::Step {
        index,
        status,
        progress: if status == StepStatus::Succeeded {
            1.0
        } else {
            0.5
        },
        message: Some("tick".into()),
        outputs,
        at: Utc::now(),
        metered: None,
        attempt: None,
    }
}

// ---- the contract -----------------------------------------------------------------------------

/// A check of the contract (see the crate's tests for what it holds).
pub async fn grants_move_the_balance_and_the_ledger_pages_newest_first(store: Arc<dyn Store>) {
    assert_eq!(store.balance(&"nobody".into()).await.unwrap(), 0);
    let mut ids = vec![];
    for pts in [100, 20, 3] {
        let e = entry("u", LedgerKind::Grant, pts);
        ids.push(e.tx_id.clone());
        store.grant(e).await.unwrap();
    }
    assert_eq!(store.balance(&"u".into()).await.unwrap(), 123);
    let all = store.ledger(&"u".into(), 10, None).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.tx_id.clone()).collect::<Vec<_>>(),
        ids.iter().rev().cloned().collect::<Vec<_>>()
    );
    let first = store.ledger(&"u".into(), 2, None).await.unwrap();
    assert_eq!(first.len(), 2);
    let rest = store
        .ledger(&"u".into(), 2, Some(&first[1].tx_id))
        .await
        .unwrap();
    assert_eq!(rest.iter().map(|e| e.pts).collect::<Vec<_>>(), vec![100]);
    assert!(store
        .ledger(&"someone-else".into(), 10, None)
        .await
        .unwrap()
        .is_empty());
}

/// A check of the contract (see the crate's tests for what it holds).
pub async fn a_keyed_grant_is_posted_once_and_never_below_zero(store: Arc<dyn Store>) {
    use spellcast_domain::ledger::{GrantKey, GrantOutcome};
    let user = UserId::new();
    let key = GrantKey {
        key: format!("welcome:{user}"),
        fingerprint: "welcome".into(),
    };
    // Twenty first requests at once: one grant.
    let racers = (0..20).map(|_| {
        let (store, key) = (store.clone(), key.clone());
        let mut e = entry(user.as_str(), LedgerKind::Grant, 100);
        e.reason = Some("welcome".into());
        tokio::spawn(async move { store.grant_once(e, &key).await.unwrap() })
    });
    let outcomes = futures::future::join_all(racers).await;
    let granted: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o.as_ref().unwrap() {
            GrantOutcome::Granted { entry, balance } => Some((entry.clone(), *balance)),
            _ => None,
        })
        .collect();
    assert_eq!(granted.len(), 1, "{outcomes:?}");
    assert_eq!(granted[0].1, 100);
    for o in &outcomes {
        if let GrantOutcome::Repeated { entry, fingerprint } = o.as_ref().unwrap() {
            assert_eq!((entry, fingerprint.as_str()), (&granted[0].0, "welcome"));
        }
    }
    assert_eq!(store.balance(&user).await.unwrap(), 100);
    assert_eq!(ledger_sum(store.as_ref(), user.as_str()).await, 100);
    let kept = store.ledger(&user, 10, None).await.unwrap();
    assert_eq!(kept, vec![granted[0].0.clone()], "reason and grantor kept");

    // Taking back more than there is changes nothing; exactly all of it is allowed.
    let take = |pts: i64, key: &str| {
        (
            entry(user.as_str(), LedgerKind::Grant, pts),
            GrantKey {
                key: key.into(),
                fingerprint: pts.to_string(),
            },
        )
    };
    let (e, k) = take(-101, "admin:too-much");
    assert_eq!(
        store.grant_once(e, &k).await.unwrap(),
        GrantOutcome::Insufficient { balance: 100 }
    );
    let (e, k) = take(-100, "admin:too-much");
    assert!(
        matches!(
            store.grant_once(e, &k).await.unwrap(),
            GrantOutcome::Granted { balance: 0, .. }
        ),
        "a refused grant did not use up its key"
    );
    assert_eq!(store.balance(&user).await.unwrap(), 0);
    assert_eq!(ledger_sum(store.as_ref(), user.as_str()).await, 0);
    let stranger = UserId::new();
    let (mut e, k) = take(-1, "admin:stranger");
    e.user_id = stranger.clone();
    assert_eq!(
        store.grant_once(e, &k).await.unwrap(),
        GrantOutcome::Insufficient { balance: 0 }
    );
    assert_eq!(store.balance(&stranger).await.unwrap(), 0);
}

/// A check of the contract (see the crate's tests for what it holds).
pub async fn idempotency_keys_replay_or_conflict(store: Arc<dyn Store>) {
    let now = Utc::now();
    let record = |hash: &str, invoice: &str| IdempotencyRecord {
        user_id: "u".into(),
        key: "k-1".into(),
        request_hash: hash.into(),
        response: json!({"invoiceId": invoice}),
        created_at: now,
        expires_at: now + chrono::Duration::hours(24),
    };
    let inv = |id: &str| InvoiceRecord {
        invoice_id: id.into(),
        user_id: "u".into(),
        slug: Slug::parse("s").unwrap(),
        version: 1,
        cost_pts: 5,
        asset: PTS.into(),
        issued_at: now,
        expires_at: now + chrono::Duration::minutes(5),
        state: InvoiceState::Open,
    };
    assert!(store
        .idempotency(&"u".into(), "k-1")
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store
            .issue_invoice(inv("inv_a"), Some(record("h1", "a")))
            .await
            .unwrap(),
        IssueOutcome::Issued
    );
    match store
        .issue_invoice(inv("inv_b"), Some(record("h1", "b")))
        .await
        .unwrap()
    {
        IssueOutcome::Replayed(seen) => assert_eq!(seen.response, json!({"invoiceId": "a"})),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store
            .issue_invoice(inv("inv_c"), Some(record("h2", "c")))
            .await
            .unwrap(),
        IssueOutcome::KeyConflict
    );
    assert_eq!(
        store
            .idempotency(&"u".into(), "k-1")
            .await
            .unwrap()
            .unwrap()
            .request_hash,
        "h1"
    );
    assert!(store
        .idempotency(&"other-user".into(), "k-1")
        .await
        .unwrap()
        .is_none());
}

/// A check of the contract (see the crate's tests for what it holds).
pub async fn a_cast_consumes_debits_and_queues_atomically(store: Arc<dyn Store>) {
    store
        .grant(entry("u", LedgerKind::Grant, 50))
        .await
        .unwrap();
    let inv = invoice(store.as_ref(), "u", 12).await;
    let cast = new_cast("u", &inv, "h", &["a", "b"]);
    let run = match store.cast(cast.clone()).await.unwrap() {
        CastOutcome::Created(run) => run,
        other => panic!("{other:?}"),
    };
    assert_eq!(run.cost_pts, 12, "the invoice's price is charged");
    assert_eq!(store.balance(&"u".into()).await.unwrap(), 38);
    assert_eq!(store.run(&run.run_id).await.unwrap().unwrap(), run);
    assert_eq!(
        store
            .run_by_credit_tx(&run.credit_tx_id)
            .await
            .unwrap()
            .unwrap()
            .run_id,
        run.run_id
    );
    let debit = &store.ledger(&"u".into(), 10, None).await.unwrap()[0];
    assert_eq!(
        (debit.kind, debit.pts, debit.tx_id.clone()),
        (LedgerKind::Debit, -12, run.credit_tx_id.clone())
    );
    assert!(store
        .unfinished_runs()
        .await
        .unwrap()
        .iter()
        .any(|r| r.run_id == run.run_id));
    // The same cast again gets the same run; other inputs are refused.
    match store
        .cast(new_cast("u", &inv, "h", &["a", "b"]))
        .await
        .unwrap()
    {
        CastOutcome::Replayed(again) => assert_eq!(again.run_id, run.run_id),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store
            .cast(new_cast("u", &inv, "other", &["a"]))
            .await
            .unwrap(),
        CastOutcome::ContextMismatch
    ));
    assert_eq!(store.balance(&"u".into()).await.unwrap(), 38);
    assert_eq!(ledger_sum(store.as_ref(), "u").await, 38);
}

/// A check of the contract (see the crate's tests for what it holds).
pub async fn refused_casts_change_nothing(store: Arc<dyn Store>) {
    store
        .grant(entry("u", LedgerKind::Grant, 10))
        .await
        .unwrap();
    let dear = invoice(store.as_ref(), "u", 11).await;
    match store.cast(new_cast("u", &dear, "h", &["a"])).await.unwrap() {
        CastOutcome::InsufficientBalance { balance } => assert_eq!(balance, 10),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store
            .cast(new_cast("u", &"inv_unknown".into(), "h", &["a"]))
            .await
            .unwrap(),
        CastOutcome::UnknownInvoice
    ));
    assert!(matches!(
        store
            .cast(new_cast("mallory", &dear, "h", &["a"]))
            .await
            .unwrap(),
        CastOutcome::UnknownInvoice
    ));
    let mut late = new_cast("u", &invoice(store.as_ref(), "u", 1).await, "h", &["a"]);
    late.now = Utc::now() + chrono::Duration::minutes(6);
    assert!(matches!(
        store.cast(late).await.unwrap(),
        CastOutcome::Expired
    ));
    assert_eq!(store.balance(&"u".into()).await.unwrap(), 10);
    assert_eq!(store.ledger(&"u".into(), 10, None).await.unwrap().len(), 1);
    assert!(store.unfinished_runs().await.unwrap().is_empty());
    // The refused invoice is still payable once the balance covers it.
    store.grant(entry("u", LedgerKind::Grant, 1)).await.unwrap();
    assert!(matches!(
        store.cast(new_cast("u", &dear, "h", &["a"])).await.unwrap(),
        CastOutcome::Created(_)
    ));
}

/// A check of the contract (see the crate's tests for what it holds).
pub async fn runs_advance_through_their_state_machine(store: Arc<dyn Store>) {
    store
        .grant(entry("u", LedgerKind::Grant, 10))
        .await
        .unwrap();
    let run = cast_ok(store.as_ref(), "u", 4, &["a", "b"]).await;
    let id = &run.run_id;
    let now = Utc::now();
    assert!(
        advance(&*store, id, step(0, StepStatus::Running, vec![]))
            .await
            .unwrap()
            .is_none(),
        "not started"
    );
    let (started, ev) = advance(
        &*store,
        id,
        start_until(now, now + chrono::Duration::minutes(1)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        (started.status, ev.map(|e| e.seq)),
        (RunStatus::Running, Some(1))
    );
    assert!(advance(&*store, id, start_until(now, now))
        .await
        .unwrap()
        .is_none());
    advance(&*store, id, step(0, StepStatus::Running, vec![]))
        .await
        .unwrap()
        .unwrap();
    let png = NewOutput {
        kind: OutputKind::Image,
        mime: "image/png".into(),
        title: Some("t".into()),
        value: None,
        file: Some(FileBody::Inline(vec![137, 80, 78, 71, 0, 255])),
    };
    advance(&*store, id, step(0, StepStatus::Succeeded, vec![png]))
        .await
        .unwrap()
        .unwrap();
    // A large file lives in the blob store: the run keeps its key.
    let large = NewOutput {
        kind: OutputKind::File,
        mime: "application/octet-stream".into(),
        title: None,
        value: None,
        file: Some(FileBody::Blob("runs/r/0123abcd".into())),
    };
    advance(&*store, id, step(1, StepStatus::Succeeded, vec![large]))
        .await
        .unwrap()
        .unwrap();
    let (done, last) = advance(&*store, id, RunChange::Finish { at: Utc::now() })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (done.status, last.map(|e| e.seq)),
        (RunStatus::Succeeded, Some(5))
    );
    assert!(advance(&*store, id, fail("late")).await.unwrap().is_none());
    let events = store.run_events(id, 0, 100).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert!(matches!(
        events[4].body,
        EventBody::ExecutionFinished { .. }
    ));
    assert_eq!(
        store
            .run_events(id, 2, 2)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert!(store.run_events(id, 5, 10).await.unwrap().is_empty());
    // A client's Last-Event-ID can be any u64.
    assert!(store.run_events(id, u64::MAX, 10).await.unwrap().is_empty());
    let file = store.output_file(id, 0).await.unwrap().unwrap();
    assert_eq!(
        (file.mime.as_str(), file.body),
        (
            "image/png",
            FileBody::Inline(vec![137u8, 80, 78, 71, 0, 255])
        )
    );
    let file = store.output_file(id, 1).await.unwrap().unwrap();
    assert_eq!(
        (file.mime.as_str(), file.body),
        (
            "application/octet-stream",
            FileBody::Blob("runs/r/0123abcd".into())
        )
    );
    assert!(store.output_file(id, 2).await.unwrap().is_none());
    assert_eq!(store.run(id).await.unwrap().unwrap(), done);
    assert!(!store
        .unfinished_runs()
        .await
        .unwrap()
        .iter()
        .any(|r| r.run_id == *id));
}

/// A check of the contract (see the crate's tests for what it holds).
pub async fn a_failure_refunds_once(store: Arc<dyn Store>) {
    store
        .grant(entry("u", LedgerKind::Grant, 10))
        .await
        .unwrap();
    let run = cast_ok(store.as_ref(), "u", 7, &["a"]).await;
    assert_eq!(store.balance(&"u".into()).await.unwrap(), 3);
    let (failed, event) = advance(&*store, &run.run_id, fail("timed_out"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((failed.status, failed.refunded_pts), (RunStatus::Failed, 7));
    assert!(matches!(
        event.map(|e| e.body),
        Some(EventBody::SpellExecutionError {
            refunded_pts: 7,
            ..
        })
    ));
    assert!(advance(&*store, &run.run_id, fail("again"))
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.balance(&"u".into()).await.unwrap(), 10);
    let kinds: Vec<LedgerKind> = store
        .ledger(&"u".into(), 10, None)
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![LedgerKind::Refund, LedgerKind::Debit, LedgerKind::Grant]
    );
    assert_eq!(ledger_sum(store.as_ref(), "u").await, 10);
}

/// A check of the contract (see the crate's tests for what it holds).
pub async fn many_casts_of_one_invoice_spend_once(store: Arc<dyn Store>) {
    store
        .grant(entry("u", LedgerKind::Grant, 100))
        .await
        .unwrap();
    let inv = invoice(store.as_ref(), "u", 9).await;
    let casts = (0..200).map(|_| {
        let store = store.clone();
        let cast = new_cast("u", &inv, "same", &["a"]);
        tokio::spawn(async move { store.cast(cast).await.unwrap() })
    });
    let outcomes = futures::future::join_all(casts).await;
    let mut created = 0;
    let mut run_ids = std::collections::BTreeSet::new();
    for outcome in outcomes {
        match outcome.unwrap() {
            CastOutcome::Created(run) => {
                created += 1;
                run_ids.insert(run.run_id);
            }
            CastOutcome::Replayed(run) => {
                run_ids.insert(run.run_id);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(run_ids.len(), 1);
    assert_eq!(store.balance(&"u".into()).await.unwrap(), 91);
    assert_eq!(ledger_sum(store.as_ref(), "u").await, 91);
}

/// A check of the contract (see the crate's tests for what it holds).
pub async fn many_invoices_over_a_small_balance_never_go_below_zero(store: Arc<dyn Store>) {
    store
        .grant(entry("u", LedgerKind::Grant, 50))
        .await
        .unwrap();
    let mut invoices = vec![];
    for _ in 0..200 {
        invoices.push(invoice(store.as_ref(), "u", 7).await);
    }
    let casts = invoices.into_iter().map(|inv| {
        let store = store.clone();
        let cast = new_cast("u", &inv, "h", &["a"]);
        tokio::spawn(async move { store.cast(cast).await.unwrap() })
    });
    let outcomes = futures::future::join_all(casts).await;
    let created = outcomes
        .iter()
        .filter(|o| matches!(o.as_ref().unwrap(), CastOutcome::Created(_)))
        .count();
    let refused = outcomes
        .iter()
        .filter(|o| matches!(o.as_ref().unwrap(), CastOutcome::InsufficientBalance { .. }))
        .count();
    assert_eq!((created, refused), (7, 193));
    assert_eq!(store.balance(&"u".into()).await.unwrap(), 1);
    assert_eq!(ledger_sum(store.as_ref(), "u").await, 1);
}

/// A check of the contract (see the crate's tests for what it holds).
pub async fn a_cancel_refunds_by_its_rule_once(store: Arc<dyn Store>) {
    let user = new_id("canceler");
    store
        .grant(entry(&user, LedgerKind::Grant, 100))
        .await
        .unwrap();
    // Queued: canceled at once, everything back.
    let queued = cast_ok(store.as_ref(), &user, 10, &["a", "b"]).await;
    let (canceled, event) = advance(
        &*store,
        &queued.run_id,
        RunChange::Cancel { at: Utc::now() },
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        (canceled.status, canceled.refunded_pts),
        (RunStatus::Canceled, 10)
    );
    assert_eq!(
        event.map(|e| (e.seq, e.body.kind())),
        Some((1, "executionCanceled"))
    );
    assert_eq!(store.balance(&user.as_str().into()).await.unwrap(), 100);

    // Running, one of two steps done: canceling without an event, then stopped with
    // floor(7 × 1 / 2) = 3 back.
    let running = cast_ok(store.as_ref(), &user, 7, &["a", "b"]).await;
    let id = &running.run_id;
    let now = Utc::now();
    for change in [
        start_until(now, now + chrono::Duration::minutes(5)),
        step(0, StepStatus::Succeeded, vec![]),
    ] {
        advance(&*store, id, change).await.unwrap().unwrap();
    }
    let (asked, none) = advance(&*store, id, RunChange::Cancel { at: now })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (asked.status, none, asked.last_seq),
        (RunStatus::Canceling, None, 2)
    );
    assert_eq!(
        store.run(id).await.unwrap().unwrap().status,
        RunStatus::Canceling
    );
    assert!(advance(&*store, id, RunChange::Cancel { at: now })
        .await
        .unwrap()
        .is_none());
    let (stopped, last) = advance(&*store, id, RunChange::Stop { at: now })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stopped.status, stopped.refunded_pts),
        (RunStatus::Canceled, 3)
    );
    assert!(matches!(
        last.map(|e| (e.seq, e.body)),
        Some((
            3,
            EventBody::ExecutionCanceled {
                completed_steps: 1,
                refunded_pts: 3,
                ..
            }
        ))
    ));
    assert!(advance(&*store, id, RunChange::Stop { at: now })
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.balance(&user.as_str().into()).await.unwrap(), 96);
    assert_eq!(ledger_sum(store.as_ref(), &user).await, 96);
    let events = store.run_events(id, 0, 100).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
}

/// Cancels, stops, failures and the last step with its finish, all at once on one running run:
/// one outcome, and the money moves once, by that outcome's rule.
/// A check of the contract (see the crate's tests for what it holds).
pub async fn racing_cancels_settle_to_one_outcome(store: Arc<dyn Store>) {
    for round in 0..3 {
        let user = new_id("racer");
        store
            .grant(entry(&user, LedgerKind::Grant, 100))
            .await
            .unwrap();
        let run = cast_ok(store.as_ref(), &user, 10, &["a", "b", "c"]).await;
        let id = run.run_id.clone();
        let now = Utc::now();
        for change in [
            start_until(now, now + chrono::Duration::minutes(5)),
            step(0, StepStatus::Succeeded, vec![]),
            step(1, StepStatus::Succeeded, vec![]),
        ] {
            advance(&*store, &id, change).await.unwrap().unwrap();
        }
        let racers = (0..40).map(|i| {
            let store = store.clone();
            let id = id.clone();
            tokio::spawn(async move {
                // Each round favours another racer by where it starts in the mix.
                match (i + round) % 4 {
                    0 => advance(&*store, &id, RunChange::Cancel { at: Utc::now() }).await,
                    1 => advance(&*store, &id, RunChange::Stop { at: Utc::now() }).await,
                    2 => advance(&*store, &id, fail("step_failed")).await,
                    _ => {
                        advance(&*store, &id, step(2, StepStatus::Succeeded, vec![]))
                            .await
                            .unwrap();
                        advance(&*store, &id, RunChange::Finish { at: Utc::now() }).await
                    }
                }
                .unwrap()
                .is_some()
            })
        });
        futures::future::join_all(racers).await;
        // A cancel that won without the stop that follows it: the runner's stop comes now.
        advance(&*store, &id, RunChange::Stop { at: Utc::now() })
            .await
            .unwrap();
        let settled = store.run(&id).await.unwrap().unwrap();
        let expected_refund = match settled.status {
            RunStatus::Succeeded => 0,
            RunStatus::Failed => 10,
            // The last step either made it (nothing back) or not (a third back, rounded down).
            RunStatus::Canceled if settled.steps[2].status == StepStatus::Succeeded => 0,
            RunStatus::Canceled => 3,
            other => panic!("round {round}: the run did not settle: {other:?}"),
        };
        assert_eq!(settled.refunded_pts, expected_refund, "round {round}");
        let refunds: Vec<i64> = store
            .ledger(&user.as_str().into(), 100, None)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.kind == LedgerKind::Refund)
            .map(|e| e.pts)
            .collect();
        assert!(refunds.len() <= 1, "round {round}: refunds {refunds:?}");
        assert_eq!(refunds.iter().sum::<i64>(), expected_refund);
        let balance = store.balance(&user.as_str().into()).await.unwrap();
        assert_eq!(balance, 90 + expected_refund, "round {round}");
        assert_eq!(ledger_sum(store.as_ref(), &user).await, balance);
        let events = store.run_events(&id, 0, 100).await.unwrap();
        let terminal = events.iter().filter(|e| e.body.is_terminal()).count();
        assert_eq!(terminal, 1, "round {round}: one terminal event");
        assert!(events.last().unwrap().body.is_terminal());
    }
}

/// A check of the contract (see the crate's tests for what it holds).
pub async fn a_users_runs_are_listed_newest_first_in_pages(store: Arc<dyn Store>) {
    let (user, other) = (new_id("lister"), new_id("other"));
    for u in [&user, &other] {
        store.grant(entry(u, LedgerKind::Grant, 100)).await.unwrap();
    }
    let mut cast = Vec::new();
    for _ in 0..5 {
        cast.push(cast_ok(store.as_ref(), &user, 1, &["a"]).await.run_id);
    }
    cast_ok(store.as_ref(), &other, 1, &["a"]).await;
    advance(&*store, &cast[4], fail("step_failed"))
        .await
        .unwrap()
        .unwrap();
    let newest_first: Vec<RunId> = cast.iter().rev().cloned().collect();
    let uid = user.as_str().into();
    let all = store.user_runs(&uid, 100, None).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.run_id.clone()).collect::<Vec<_>>(),
        newest_first
    );
    assert!(all.iter().all(|r| r.user_id.as_str() == user));
    assert_eq!(
        all[0].status,
        RunStatus::Failed,
        "a run is listed as it is now"
    );
    // Pages of two: each after the last run of the page before.
    let mut paged = Vec::new();
    let mut before: Option<RunId> = None;
    loop {
        let page = store.user_runs(&uid, 2, before.as_ref()).await.unwrap();
        paged.extend(page.iter().map(|r| r.run_id.clone()));
        match page.last() {
            Some(last) if page.len() == 2 => before = Some(last.run_id.clone()),
            _ => break,
        }
    }
    assert_eq!(paged, newest_first);
    let stranger = new_id("nobody");
    assert!(store
        .user_runs(&stranger.as_str().into(), 10, None)
        .await
        .unwrap()
        .is_empty());
}

/// A check of the contract (see the crate's tests for what it holds).
pub async fn a_webhook_secret_is_kept_once_and_rotated(store: Arc<dyn Store>) {
    let user: spellcast_domain::ids::UserId = new_id("hooked").as_str().into();
    assert_eq!(store.webhook_secret(&user).await.unwrap(), None);
    // First reads racing: one secret wins and every one of them gets it.
    let firsts = (0..8).map(|_| {
        let (store, user) = (store.clone(), user.clone());
        tokio::spawn(async move {
            store
                .put_webhook_secret(&user, WebhookSecret::generate(), false)
                .await
                .unwrap()
        })
    });
    let got: Vec<WebhookSecret> = futures::future::join_all(firsts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(got.windows(2).all(|w| w[0] == w[1]), "one secret");
    assert_eq!(
        store.webhook_secret(&user).await.unwrap(),
        Some(got[0].clone())
    );
    let rotated = store
        .put_webhook_secret(&user, WebhookSecret::generate(), true)
        .await
        .unwrap();
    assert_ne!(rotated, got[0]);
    assert_eq!(store.webhook_secret(&user).await.unwrap(), Some(rotated));
    let other: spellcast_domain::ids::UserId = new_id("other").as_str().into();
    assert_eq!(store.webhook_secret(&other).await.unwrap(), None);
}

/// A check of the contract (see the crate's tests for what it holds).
pub async fn deliveries_are_written_with_their_events_and_attempted_once_each(
    store: Arc<dyn Store>,
) {
    let user = new_id("integrator");
    store
        .grant(entry(&user, LedgerKind::Grant, 100))
        .await
        .unwrap();
    let inv = invoice(store.as_ref(), &user, 5).await;
    let mut cast = new_cast(&user, &inv, "h", &["a"]);
    let events = ["start".to_owned(), "completed".to_owned()];
    cast.run.webhook =
        Some(WebhookTarget::parse("https://hooks.example/in", &events, false).unwrap());
    let CastOutcome::Created(run) = store.cast(cast).await.unwrap() else {
        panic!("cast refused")
    };
    let id = &run.run_id;
    assert!(
        store.deliveries(id).await.unwrap().is_empty(),
        "none before an event"
    );
    let plain = cast_ok(store.as_ref(), &user, 0, &["a"]).await;

    let at = Utc::now();
    let start = RunChange::Start {
        at,
        deadline: at + chrono::Duration::minutes(5),
        lease_until: at + chrono::Duration::minutes(5),
    };
    advance(&*store, id, start.clone()).await.unwrap().unwrap();
    advance(&*store, &plain.run_id, start.clone())
        .await
        .unwrap()
        .unwrap();
    // A refused change (a duplicate start) and a step write no delivery.
    assert!(advance(&*store, id, start).await.unwrap().is_none());
    advance(&*store, id, step(0, StepStatus::Running, vec![]))
        .await
        .unwrap()
        .unwrap();
    let written = store.deliveries(id).await.unwrap();
    assert_eq!(written.len(), 1, "{written:?}");
    let started = &written[0];
    assert_eq!(
        (started.kind.as_str(), started.url.as_str(), started.next_at),
        ("run.started", "https://hooks.example/in", Some(at))
    );
    assert_eq!(started.webhook_id, format!("msg_{id}_1"));
    let body: serde_json::Value = serde_json::from_str(&started.body).unwrap();
    assert_eq!(body["data"]["status"], "running");
    assert!(
        store.deliveries(&plain.run_id).await.unwrap().is_empty(),
        "no webhook, no delivery"
    );
    let due_ids = |due: Vec<spellcast_domain::webhooks::Delivery>| -> Vec<String> {
        due.into_iter()
            .filter(|d| &d.run_id == id)
            .map(|d| d.webhook_id)
            .collect()
    };
    let soon = at + chrono::Duration::seconds(1);
    assert_eq!(
        due_ids(store.due_deliveries(soon, 1000).await.unwrap()),
        vec![started.webhook_id.clone()]
    );
    let before = at - chrono::Duration::seconds(1);
    assert!(due_ids(store.due_deliveries(before, 1000).await.unwrap()).is_empty());

    // The end: a second delivery, with the run as it ended.
    advance(&*store, id, fail("step_failed"))
        .await
        .unwrap()
        .unwrap();
    let written = store.deliveries(id).await.unwrap();
    assert_eq!(written.len(), 2);
    let completed = written.iter().find(|d| d.kind == "run.completed").unwrap();
    let body: serde_json::Value = serde_json::from_str(&completed.body).unwrap();
    assert_eq!(
        (
            body["data"]["status"].as_str(),
            body["data"]["refundedPts"].as_i64()
        ),
        (Some("failed"), Some(5))
    );

    // Eight workers record attempt 1 of one delivery at once: one record stands.
    let retry_at = at + chrono::Duration::minutes(5);
    let attempt = |n: u32, status: u16, next_at| Attempt {
        webhook_id: started.webhook_id.clone(),
        kind: started.kind.clone(),
        attempt: n,
        status: Some(status),
        error: (status >= 300).then(|| format!("the receiver answered {status}")),
        at,
        next_at,
    };
    let racers = (0..8).map(|i| {
        let (store, id, a) = (
            store.clone(),
            id.clone(),
            attempt(1, 500 + i, Some(retry_at)),
        );
        let webhook_id = started.webhook_id.clone();
        tokio::spawn(async move { store.record_attempt(&id, &webhook_id, a).await.unwrap() })
    });
    let won: Vec<bool> = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    let now_started = store
        .delivery(id, &started.webhook_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now_started.attempts.len(), 1);
    assert_eq!(now_started.next_at, Some(retry_at));
    assert!(
        !due_ids(store.due_deliveries(soon, 1000).await.unwrap()).contains(&started.webhook_id),
        "not due until its retry"
    );
    assert!(
        due_ids(store.due_deliveries(retry_at, 1000).await.unwrap()).contains(&started.webhook_id)
    );
    // Attempt 3 before 2 is refused; 2 delivers; nothing after.
    assert!(!store
        .record_attempt(id, &started.webhook_id, attempt(3, 200, None))
        .await
        .unwrap());
    assert!(store
        .record_attempt(id, &started.webhook_id, attempt(2, 200, None))
        .await
        .unwrap());
    assert!(!store
        .record_attempt(id, &started.webhook_id, attempt(3, 200, None))
        .await
        .unwrap());
    let delivered = store
        .delivery(id, &started.webhook_id)
        .await
        .unwrap()
        .unwrap();
    assert!(!delivered.is_pending());
    assert_eq!(
        delivered
            .attempts
            .iter()
            .map(|a| a.attempt)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    let far = at + chrono::Duration::days(2);
    assert_eq!(
        due_ids(store.due_deliveries(far, 1000).await.unwrap()),
        vec![completed.webhook_id.clone()]
    );
    assert_eq!(store.delivery(id, "msg_nope").await.unwrap(), None);
}

/// A check of the contract (see the crate's tests for what it holds).
pub async fn a_run_is_shared_once_and_unshared(store: Arc<dyn Store>) {
    use spellcast_domain::ids::ShareId;
    use spellcast_domain::sharing::Share;
    let user = new_id("sharer");
    store
        .grant(entry(&user, LedgerKind::Grant, 10))
        .await
        .unwrap();
    let run = cast_ok(store.as_ref(), &user, 1, &["a"]).await;
    let id = &run.run_id;
    assert_eq!(store.run_share(id).await.unwrap(), None);
    assert!(
        !store.unshare_run(id).await.unwrap(),
        "nothing to take back"
    );
    let share = |include_inputs| Share {
        share_id: ShareId::unguessable(),
        run_id: id.clone(),
        user_id: user.as_str().into(),
        include_inputs,
        created_at: Utc::now(),
    };
    // Eight requests share it at once: one id stands, and every one of them gets it.
    let racers = (0..8).map(|i| {
        let (store, s) = (store.clone(), share(i % 2 == 0));
        tokio::spawn(async move { store.share_run(s).await.unwrap() })
    });
    let got: Vec<Share> = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let first = got[0].share_id.clone();
    assert!(got.iter().all(|s| s.share_id == first), "{got:?}");
    // Sharing again keeps the id and changes whether the inputs show.
    let again = store.share_run(share(true)).await.unwrap();
    assert_eq!(
        (again.share_id.clone(), again.include_inputs),
        (first.clone(), true)
    );
    assert_eq!(store.share(&first).await.unwrap(), Some(again.clone()));
    assert_eq!(store.run_share(id).await.unwrap(), Some(again));
    assert!(store.unshare_run(id).await.unwrap());
    assert_eq!(store.share(&first).await.unwrap(), None, "the link is dead");
    assert_eq!(store.run_share(id).await.unwrap(), None);
    // Shared again after that: a new id (the old link stays dead).
    let renewed = store.share_run(share(false)).await.unwrap();
    assert_ne!(renewed.share_id, first);
    assert_eq!(store.share(&first).await.unwrap(), None);
}

/// A check of the contract (see the crate's tests for what it holds).
pub async fn racing_failures_refund_exactly_once(store: Arc<dyn Store>) {
    store
        .grant(entry("u", LedgerKind::Grant, 100))
        .await
        .unwrap();
    let run = cast_ok(store.as_ref(), "u", 10, &["a"]).await;
    let attempts = (0..50).map(|_| {
        let store = store.clone();
        let id = run.run_id.clone();
        tokio::spawn(async move {
            advance(&*store, &id, fail("timed_out"))
                .await
                .unwrap()
                .is_some()
        })
    });
    let applied = futures::future::join_all(attempts)
        .await
        .into_iter()
        .filter(|a| *a.as_ref().unwrap())
        .count();
    assert_eq!(applied, 1);
    assert_eq!(store.balance(&"u".into()).await.unwrap(), 100);
    let refunds = store
        .ledger(&"u".into(), 100, None)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == LedgerKind::Refund)
        .count();
    assert_eq!(refunds, 1);
    assert_eq!(ledger_sum(store.as_ref(), "u").await, 100);
}

/// Large files: in cargo's scratch directory for integration tests.
fn test_blobs() -> spellcast_embedded::DiskBlobs {
    spellcast_embedded::DiskBlobs::open(
        std::env::temp_dir().join(format!("spellcast-contract-{}", std::process::id())),
    )
    .unwrap()
}

fn app(store: Arc<dyn Store>) -> Arc<App> {
    let tools = spellcast_tools::builtin();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/spells");
    let (bus, _) = LocalBus::new();
    let ports = Ports {
        tools,
        store,
        blobs: Arc::new(test_blobs()),
        bus: Arc::new(bus),
        signal: Arc::new(LocalSignal::default()),
        clock: Arc::new(SystemClock),
        limiter: Arc::new(spellcast_embedded::MemoryLimiter::default()),
        provider_documents: None,
    };
    let keys = TokenKeys::hs256(&[1; 32], "test").unwrap();
    Arc::new(App::new(
        Config::new("http://test"),
        spellcast_application::catalog_files::load_catalog(&dir).unwrap(),
        keys,
        ports,
    ))
}

/// A check of the contract (see the crate's tests for what it holds).
pub async fn a_duplicate_delivery_executes_nothing_twice(store: Arc<dyn Store>) {
    store
        .grant(entry("u", LedgerKind::Grant, 100))
        .await
        .unwrap();
    let app = app(store.clone());
    let spell = app
        .catalog()
        .get(&Slug::parse("hello-sigil").unwrap())
        .unwrap();
    let steps: Vec<&str> = spell.def.steps.iter().map(|s| s.id.as_str()).collect();
    let run = cast_ok(store.as_ref(), "u", 10, &steps).await;
    let runner = app.runner();
    let (a, b, c) = tokio::join!(
        runner.execute(&run.run_id),
        runner.execute(&run.run_id),
        runner.execute(&run.run_id)
    );
    let outcomes = [a.unwrap(), b.unwrap(), c.unwrap()];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == Execution::Ran(RunStatus::Succeeded))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == Execution::Skipped)
            .count(),
        2
    );
    let events = store.run_events(&run.run_id, 0, 1000).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=events.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e.body, EventBody::ExecutionStarted { .. }))
            .count(),
        1
    );
    assert_eq!(
        app.runner().execute(&run.run_id).await.unwrap(),
        Execution::Skipped,
        "late redelivery"
    );
    assert_eq!(store.balance(&"u".into()).await.unwrap(), 90);
}

/// A check of the contract (see the crate's tests for what it holds).
pub async fn racing_runners_take_a_lost_run_once_and_a_stale_one_writes_nothing(
    store: Arc<dyn Store>,
) {
    store
        .grant(entry("u", LedgerKind::Grant, 10))
        .await
        .unwrap();
    let run = cast_ok(store.as_ref(), "u", 3, &["a", "b", "c"]).await;
    let id = &run.run_id;
    let now = Utc::now();
    let minute = chrono::Duration::minutes(1);
    let start = RunChange::Start {
        at: now,
        deadline: now + minute * 10,
        lease_until: now + minute,
    };
    advance(&*store, id, start).await.unwrap().unwrap();
    let first = Lease {
        fence: 1,
        until: now + minute,
    };
    let done = attempt(0, StepStatus::Succeeded, None, vec![], None);
    advance_held(&*store, id, first, None, done)
        .await
        .unwrap()
        .unwrap();
    // The first runner is about to finish step b when it stalls; its lease runs out.
    let mut stale = store.run(id).await.unwrap().unwrap();
    let known = stale.clone();
    let read = RunVersion {
        held: true,
        ..stale.version()
    };
    let late = attempt(1, StepStatus::Succeeded, None, vec![], None);
    let stale_change = stale.apply_held(first, late.clone()).unwrap();

    // Eight runners race to take the run over: one wins the lease.
    let later = now + minute * 2;
    let racers = (0..8).map(|_| {
        let store = store.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let resume = RunChange::Resume {
                at: later,
                lease_until: later + chrono::Duration::minutes(1),
                repeatable: vec![true; 3],
            };
            advance(&*store, &id, resume).await.unwrap()
        })
    });
    let mut won = 0;
    for racer in racers {
        won += usize::from(racer.await.unwrap().is_some());
    }
    assert_eq!(won, 1, "one runner takes the lease");
    let taken = store.run(id).await.unwrap().unwrap();
    assert_eq!(taken.lease_fence, 2);
    assert_eq!(taken.steps[0].status, StepStatus::Succeeded);

    // The stale runner wakes: its commit over the run as it read it is refused by the store,
    // and its change decided afresh is refused by the run.
    assert!(!store
        .commit_run(&stale, &stale_change, &read)
        .await
        .unwrap());
    // Decided first over the run as it knew it (no read): refused by the store, then read.
    assert!(advance_held(&*store, id, first, Some(known), late)
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.run(id).await.unwrap().unwrap(), taken);
    let events = store.run_events(id, 0, 100).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=taken.last_seq).collect::<Vec<_>>()
    );
    assert_eq!(store.balance(&"u".into()).await.unwrap(), 7);
}

/// A check of the contract (see the crate's tests for what it holds).
pub async fn costs_and_prices_are_kept(store: Arc<dyn Store>) {
    store.record_tool_cost("s/a/text.render", 2).await.unwrap();
    store.record_tool_cost("s/a/text.render", 3).await.unwrap();
    store.record_tool_cost("s/b/time.delay", 1).await.unwrap();
    let mut costs = store.tool_costs().await.unwrap();
    costs.sort_by(|a, b| a.tool.cmp(&b.tool));
    assert_eq!(
        costs
            .iter()
            .map(|c| (c.tool.as_str(), c.calls, c.pts))
            .collect::<Vec<_>>(),
        vec![("s/a/text.render", 2, 5), ("s/b/time.delay", 1, 1)]
    );
    let stats = vec![SpellStats {
        slug: Slug::parse("s").unwrap(),
        avg_cost_pts: 4,
        updated_at: Utc::now(),
    }];
    store.save_spell_stats(&stats).await.unwrap();
    assert_eq!(store.spell_stats().await.unwrap(), stats);
}

/// SPEC §5.7: a 5 MB file and a 1 MB text, through the runner's offload, fit every store (a
/// DynamoDB item holds 400 KB, a transaction 4 MB) and come back exact.
/// A check of the contract (see the crate's tests for what it holds).
pub async fn outputs_of_any_size_fit_the_store(store: Arc<dyn Store>) {
    use spellcast_application::viewing::{FileAnswer, Viewer};
    store
        .grant(entry("u", LedgerKind::Grant, 10))
        .await
        .unwrap();
    let app = app(store.clone());
    let run = cast_ok(store.as_ref(), "u", 1, &["a"]).await;
    let id = &run.run_id;
    let now = Utc::now();
    advance(
        &*store,
        id,
        start_until(now, now + chrono::Duration::minutes(5)),
    )
    .await
    .unwrap()
    .unwrap();
    // Bytes that do not repeat in a short period (nothing in between compresses them).
    let file: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let text = "spellcast ".repeat(100 * 1024);
    let outputs = vec![
        NewOutput {
            kind: OutputKind::File,
            mime: "application/octet-stream".into(),
            title: None,
            value: None,
            file: Some(FileBody::Inline(file.clone())),
        },
        NewOutput {
            kind: OutputKind::Text,
            mime: "text/plain; charset=utf-8".into(),
            title: None,
            value: Some(json!(text)),
            file: None,
        },
    ];
    let outputs = spellcast_application::runner::offload(&test_blobs(), id, outputs)
        .await
        .unwrap();
    let (done, event) = advance(&*store, id, step(0, StepStatus::Succeeded, outputs))
        .await
        .unwrap()
        .expect("the step with its outputs is stored");
    assert!(serde_json::to_string(&event).unwrap().len() < 4096);
    assert!(done
        .outputs
        .iter()
        .all(|o| o.value.is_none() && o.url.is_some()));
    let viewer = Viewer::User("u".into());
    for (n, expected) in [(0, file), (1, text.into_bytes())] {
        match app.viewing().output(&viewer, id, n).await.unwrap() {
            FileAnswer::Bytes { bytes, .. } => assert!(bytes == expected, "output {n} differs"),
            FileAnswer::Elsewhere(url) => panic!("files on disk are served, not sent to {url}"),
        }
    }
}

// ---- a state-machine model of the money -------------------------------------------------------

/// What a generated step does; runs and users are picked by index among those that exist.
#[derive(Debug, Clone)]
enum Op {
    Grant {
        user: usize,
        pts: i64,
    },
    Cast {
        user: usize,
        cost: i64,
    },
    Start {
        run: usize,
    },
    StepDone {
        run: usize,
    },
    Finish {
        run: usize,
    },
    Fail {
        run: usize,
    },
    Cancel {
        run: usize,
    },
    Stop {
        run: usize,
    },
    /// The last change given to a run, delivered again (a runner retried, a sweeper raced it).
    Again {
        run: usize,
    },
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        (0..3usize, 0..40i64).prop_map(|(user, pts)| Op::Grant { user, pts }),
        (0..3usize, 0..25i64).prop_map(|(user, cost)| Op::Cast { user, cost }),
        (0..8usize).prop_map(|run| Op::Start { run }),
        (0..8usize).prop_map(|run| Op::StepDone { run }),
        (0..8usize).prop_map(|run| Op::Finish { run }),
        (0..8usize).prop_map(|run| Op::Fail { run }),
        (0..8usize).prop_map(|run| Op::Cancel { run }),
        (0..8usize).prop_map(|run| Op::Stop { run }),
        (0..8usize).prop_map(|run| Op::Again { run }),
    ]
}

/// A run as the model sees it.
struct ModelRun {
    id: RunId,
    user: usize,
    cost: i64,
    status: RunStatus,
    step_done: bool,
    last: Option<RunChange>,
}

/// Plays `ops` on `store` and on a model of balances and runs, and after every step compares:
/// each balance equals the model's and the sum of its ledger, and is never negative; each run's
/// status equals the model's. Money moves once per cast and once per failure or cancel,
/// whatever is delivered twice.
async fn play(store: &dyn Store, ops: Vec<Op>) -> Result<(), String> {
    let users: Vec<String> = (0..3).map(|_| new_id("model")).collect();
    let mut balances = [0i64; 3];
    let mut runs: Vec<ModelRun> = Vec::new();
    for op in ops {
        match op.clone() {
            Op::Grant { user, pts } => {
                store
                    .grant(entry(&users[user], LedgerKind::Grant, pts))
                    .await
                    .map_err(|e| e.to_string())?;
                balances[user] += pts;
            }
            Op::Cast { user, cost } => {
                let inv = invoice(store, &users[user], cost).await;
                match store
                    .cast(new_cast(&users[user], &inv, "h", &["only"]))
                    .await
                    .map_err(|e| e.to_string())?
                {
                    CastOutcome::Created(run) if balances[user] >= cost => {
                        balances[user] -= cost;
                        runs.push(ModelRun {
                            id: run.run_id,
                            user,
                            cost,
                            status: RunStatus::Queued,
                            step_done: false,
                            last: None,
                        });
                    }
                    CastOutcome::InsufficientBalance { balance } if balances[user] < cost => {
                        if balance != balances[user] {
                            return Err(format!("{op:?}: refused with balance {balance}"));
                        }
                    }
                    other => return Err(format!("{op:?} with {}: {other:?}", balances[user])),
                }
            }
            Op::Start { run }
            | Op::StepDone { run }
            | Op::Finish { run }
            | Op::Fail { run }
            | Op::Cancel { run }
            | Op::Stop { run }
            | Op::Again { run } => {
                let Some(r) = (!runs.is_empty())
                    .then(|| run % runs.len())
                    .map(|i| &mut runs[i])
                else {
                    continue;
                };
                let now = Utc::now();
                let going = matches!(r.status, RunStatus::Running | RunStatus::Canceling);
                let (change, expected) = match &op {
                    Op::Start { .. } => (
                        start_until(now, now + chrono::Duration::minutes(5)),
                        (r.status == RunStatus::Queued).then_some(RunStatus::Running),
                    ),
                    Op::StepDone { .. } => (
                        step(0, StepStatus::Succeeded, vec![]),
                        (going && !r.step_done).then_some(r.status),
                    ),
                    Op::Finish { .. } => (
                        RunChange::Finish { at: now },
                        (going && r.step_done).then_some(RunStatus::Succeeded),
                    ),
                    Op::Fail { .. } => (
                        fail("model"),
                        (!r.status.is_terminal()).then_some(RunStatus::Failed),
                    ),
                    Op::Cancel { .. } => (
                        RunChange::Cancel { at: now },
                        match r.status {
                            RunStatus::Queued => Some(RunStatus::Canceled),
                            RunStatus::Running => Some(RunStatus::Canceling),
                            _ => None,
                        },
                    ),
                    Op::Stop { .. } => (
                        RunChange::Stop { at: now },
                        (r.status == RunStatus::Canceling).then_some(RunStatus::Canceled),
                    ),
                    _ => match r.last.clone() {
                        // Everything already applied is refused the second time.
                        Some(change) => (change, None),
                        None => continue,
                    },
                };
                let applied = advance(store, &r.id, change.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                match (applied, expected) {
                    (Some((stored, _)), Some(status)) => {
                        if stored.status != status {
                            return Err(format!("{op:?}: {:?} not {status:?}", stored.status));
                        }
                        if matches!(op, Op::StepDone { .. }) {
                            r.step_done = true;
                        }
                        balances[r.user] += match status {
                            RunStatus::Failed => r.cost,
                            // One step: nothing back once it is done, all of it before.
                            RunStatus::Canceled if r.step_done => 0,
                            RunStatus::Canceled => r.cost,
                            _ => 0,
                        };
                        r.status = status;
                        r.last = Some(change);
                    }
                    (None, None) => {}
                    (applied, expected) => {
                        return Err(format!(
                            "{op:?} on a {:?} run: applied {}, expected {expected:?}",
                            r.status,
                            applied.is_some()
                        ))
                    }
                }
            }
        }
        for (i, user) in users.iter().enumerate() {
            let balance = store
                .balance(&user.as_str().into())
                .await
                .map_err(|e| e.to_string())?;
            let ledger = ledger_sum(store, user).await;
            if balance != balances[i] || ledger != balance || balance < 0 {
                return Err(format!(
                    "after {op:?}: user {i} balance {balance}, ledger {ledger}, model {}",
                    balances[i]
                ));
            }
        }
        for r in &runs {
            let stored = store.run(&r.id).await.map_err(|e| e.to_string())?;
            if stored.as_ref().map(|s| s.status) != Some(r.status) {
                return Err(format!("after {op:?}: run {} is not {:?}", r.id, r.status));
            }
        }
    }
    Ok(())
}

/// A check of the contract (see the crate's tests for what it holds).
pub async fn the_ledger_follows_its_model(store: Arc<dyn Store>) {
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    // Fewer, shorter cases over the wire than in memory: the engines answer in milliseconds.
    let cases = std::env::var("SPELLCAST_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    let ops = proptest::collection::vec(op(), 1..30);
    let result = runner.run(&ops, |ops| {
        tokio::task::block_in_place(|| handle.block_on(play(store.as_ref(), ops)))
            .map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("the store departs from the model: {e}");
    }
}
