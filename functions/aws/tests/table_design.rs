//! The table design at scale (issue 10, item 9), read back raw over the wire from moto and
//! Amazon's DynamoDB Local: a run is a small head that every change rewrites and a body (inputs,
//! outputs) written only when outputs arrive, so a progress tick costs the head's write units
//! however large the inputs are; the sparse `unfinished` index spreads its writes over shards.

use std::collections::{HashMap, HashSet};

use aws_sdk_dynamodb::types::AttributeValue as Av;
use aws_sdk_dynamodb::Client;
use chrono::Utc;
use serde_json::json;
use spellcast_application::advancing::{advance, advance_held};
use spellcast_application::ports::{LedgerStore, RunStore};
use spellcast_aws::DynamoStore;
use spellcast_domain::ids::RunId;
use spellcast_domain::ledger::LedgerKind;
use spellcast_domain::run::{Lease, NewOutput, OutputKind, Run, RunChange, RunError, StepStatus};

mod engines;

use engines::fixtures::{cast_with, entry, fresh_table};

type Item = HashMap<String, Av>;

/// A paid, queued run of user `u` with steps `a` and `b`, whose inputs are `context`.
async fn cast(store: &DynamoStore, context: serde_json::Value) -> Run {
    store.grant(entry("u", LedgerKind::Grant, 1)).await.unwrap();
    cast_with(store, "u", 1, &["a", "b"], Some(context)).await
}

async fn raw(client: &Client, table: &str, run_id: &RunId, sk: &str) -> Item {
    client
        .get_item()
        .table_name(table)
        .key("pk", Av::S(format!("RUN#{run_id}")))
        .key("sk", Av::S(sk.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap_or_else(|| panic!("RUN#{run_id}/{sk} is stored"))
}

/// An item's size as DynamoDB bills it, closely enough: names plus values.
fn size(item: &Item) -> usize {
    fn value(v: &Av) -> usize {
        match v {
            Av::S(s) => s.len(),
            Av::N(n) => n.len() / 2 + 1,
            Av::B(b) => b.as_ref().len(),
            Av::L(l) => 3 + l.iter().map(|v| 1 + value(v)).sum::<usize>(),
            Av::M(m) => 3 + m.iter().map(|(k, v)| 1 + k.len() + value(v)).sum::<usize>(),
            _ => 1,
        }
    }
    item.iter().map(|(k, v)| k.len() + value(v)).sum()
}

/// Marks the stored body, so a later rewrite of it shows (the mark is gone).
async fn mark_body(client: &Client, table: &str, run_id: &RunId) {
    client
        .update_item()
        .table_name(table)
        .key("pk", Av::S(format!("RUN#{run_id}")))
        .key("sk", Av::S("BODY".into()))
        .update_expression("SET probe = :one")
        .expression_attribute_values(":one", Av::N("1".into()))
        .send()
        .await
        .unwrap();
}

fn tick(index: usize, progress: f64, outputs: Vec<NewOutput>) -> RunChange {
    RunChange::Step {
        index,
        status: if progress < 1.0 {
            StepStatus::Running
        } else {
            StepStatus::Succeeded
        },
        progress,
        message: Some(format!("{:.0} %", progress * 100.0)),
        outputs,
        at: Utc::now(),
        metered: None,
        attempt: None,
    }
}

async fn progress_ticks_rewrite_only_the_small_head(variable: &str) {
    let Some((client, table, store)) = fresh_table(variable, "design").await else {
        return;
    };
    let prompt = "x".repeat(100 * 1024);
    let run = cast(&store, json!({ "prompt": prompt })).await;
    let id = &run.run_id;
    let now = Utc::now();
    advance(
        &*store,
        id,
        RunChange::Start {
            at: now,
            deadline: now + chrono::Duration::minutes(5),
            lease_until: now + chrono::Duration::minutes(5),
        },
    )
    .await
    .unwrap()
    .unwrap();
    mark_body(&client, &table, id).await;
    for i in 1..=20 {
        advance(&*store, id, tick(0, f64::from(i) / 25.0, vec![]))
            .await
            .unwrap()
            .expect("a tick while running applies");
    }
    let head = raw(&client, &table, id, "RUN").await;
    let body = raw(&client, &table, id, "BODY").await;
    assert!(
        size(&head) < 2048,
        "the head stays small whatever the inputs: {} bytes",
        size(&head)
    );
    assert!(size(&body) > 100 * 1024, "the inputs live in the body");
    assert!(
        body.contains_key("probe"),
        "twenty progress ticks left the body item alone"
    );
    assert_eq!(
        head.get("lastSeq").and_then(|v| v.as_n().ok()).unwrap(),
        "21"
    );

    // Outputs are body: a step that produces one rewrites it, once.
    let output = NewOutput {
        kind: OutputKind::Text,
        mime: "text/plain".into(),
        title: Some("Result".into()),
        value: Some(json!("done")),
        file: None,
    };
    advance(&*store, id, tick(0, 1.0, vec![output]))
        .await
        .unwrap()
        .unwrap();
    let body = raw(&client, &table, id, "BODY").await;
    assert!(!body.contains_key("probe"), "the body was rewritten");
    let read = store.run(id).await.unwrap().unwrap();
    assert_eq!(read.context["prompt"].as_str().unwrap().len(), 100 * 1024);
    assert_eq!(read.outputs.len(), 1);
    assert_eq!(read.steps[0].status, StepStatus::Succeeded);
    assert_eq!(read.last_seq, 22);
}

async fn unfinished_runs_spread_over_shards(variable: &str) {
    let Some((client, table, store)) = fresh_table(variable, "design").await else {
        return;
    };
    let mut ids = HashSet::new();
    let mut shards = HashSet::new();
    for _ in 0..48 {
        let run = cast(&store, json!({"name": "A"})).await;
        let head = raw(&client, &table, &run.run_id, "RUN").await;
        shards.insert(head["unfinished"].as_s().unwrap().clone());
        ids.insert(run.run_id);
    }
    assert!(
        shards.len() >= 8,
        "48 runs land on {} index partitions",
        shards.len()
    );
    let found: HashSet<RunId> = store
        .unfinished_runs()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(found, ids, "recovery reads every shard");
    // A finished run leaves the index.
    let one = ids.iter().next().unwrap().clone();
    let now = Utc::now();
    advance(
        &*store,
        &one,
        RunChange::Fail {
            at: now,
            error: spellcast_domain::run::RunError {
                code: "x".into(),
                message: "m".into(),
                step_id: None,
            },
        },
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!raw(&client, &table, &one, "RUN")
        .await
        .contains_key("unfinished"));
    assert_eq!(store.unfinished_runs().await.unwrap().len(), 47);
}

async fn event_seqs(store: &DynamoStore, id: &RunId) -> Vec<u64> {
    let events = store.run_events(id, 0, 100).await.unwrap();
    events.iter().map(|e| e.seq).collect()
}

/// The holder's everyday change is two plain writes (head, then event: half a transaction's
/// units); if the holder stops between them, the next writer that does not hold the run writes
/// the event the head carries before its own, so the events stay gapless.
async fn an_event_a_holder_left_unwritten_is_written_by_the_next_writer(variable: &str) {
    let Some((client, table, store)) = fresh_table(variable, "design").await else {
        return;
    };
    let run = cast(&store, json!({"name": "A"})).await;
    let id = &run.run_id;
    let now = Utc::now();
    let minute = chrono::Duration::minutes(1);
    let start = RunChange::Start {
        at: now,
        deadline: now + minute * 5,
        lease_until: now + minute,
    };
    advance(&*store, id, start).await.unwrap().unwrap();
    let lease = Lease {
        fence: 1,
        until: now + minute,
    };
    let (_, event) = advance_held(&*store, id, lease, None, tick(0, 0.5, vec![]))
        .await
        .unwrap()
        .unwrap();
    let event = event.unwrap();
    assert_eq!(event_seqs(&store, id).await, vec![1, 2]);
    let head = raw(&client, &table, id, "RUN").await;
    assert_eq!(
        head["lastEvent"].as_m().unwrap()["seq"].as_n().unwrap(),
        &event.seq.to_string(),
        "the head carries the event it committed"
    );
    // The holder stops after the head's write, before the event's.
    client
        .delete_item()
        .table_name(&table)
        .key("pk", Av::S(format!("EVENTS#{id}")))
        .key("sk", Av::S(format!("{:020}", event.seq)))
        .send()
        .await
        .unwrap();
    assert_eq!(event_seqs(&store, id).await, vec![1]);
    // Recovery ends the run (it does not hold it): the owed event comes first.
    let fail = RunChange::Fail {
        at: Utc::now(),
        error: RunError {
            code: "interrupted".into(),
            message: "lost".into(),
            step_id: None,
        },
    };
    advance(&*store, id, fail).await.unwrap().unwrap();
    assert_eq!(event_seqs(&store, id).await, vec![1, 2, 3]);
    let events = store.run_events(id, 1, 1).await.unwrap();
    assert_eq!(events[0], event, "the event as the holder made it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_moto_an_event_a_holder_left_unwritten_is_written_by_the_next_writer() {
    an_event_a_holder_left_unwritten_is_written_by_the_next_writer("SPELLCAST_MOTO_ENDPOINT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_dynamodb_local_an_event_a_holder_left_unwritten_is_written_by_the_next_writer() {
    an_event_a_holder_left_unwritten_is_written_by_the_next_writer(
        "SPELLCAST_DYNAMODB_LOCAL_ENDPOINT",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_moto_progress_ticks_rewrite_only_the_small_head() {
    progress_ticks_rewrite_only_the_small_head("SPELLCAST_MOTO_ENDPOINT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_dynamodb_local_progress_ticks_rewrite_only_the_small_head() {
    progress_ticks_rewrite_only_the_small_head("SPELLCAST_DYNAMODB_LOCAL_ENDPOINT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_moto_unfinished_runs_spread_over_shards() {
    unfinished_runs_spread_over_shards("SPELLCAST_MOTO_ENDPOINT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_dynamodb_local_unfinished_runs_spread_over_shards() {
    unfinished_runs_spread_over_shards("SPELLCAST_DYNAMODB_LOCAL_ENDPOINT").await;
}
