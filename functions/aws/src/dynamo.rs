//! The store port on DynamoDB.
//!
//! # Table design
//!
//! One table (on-demand billing), string keys `pk` and `sk`, items written with `serde_dynamo` so
//! every field is a real attribute (readable in the console, usable in conditions):
//!
//! | item            | pk                  | sk                   | notes                                          |
//! |-----------------|---------------------|----------------------|------------------------------------------------|
//! | balance         | `USER#{user}`       | `BALANCE`            | `balance` (N); debits conditional on `>= cost`  |
//! | ledger entry    | `LEDGER#{user}`     | `{txId}`             | tx ids sort by time: a reverse query is newest first |
//! | invoice         | `INVOICE#{id}`      | `INVOICE`            | `state` open → consumed, conditional; `ttl` retention after expiry |
//! | idempotency key | `IDEM#{user}`       | `{key}`              | `ttl` (epoch s): expires after retention        |
//! | run head        | `RUN#{runId}`       | `RUN`                | status, steps, times; `lastSeq` guards every change (optimistic lock); `lastEvent` after a holder's plain change; ~1 KB |
//! | run body        | `RUN#{runId}`       | `BODY`               | `context`, `outputs`: written at the cast and when outputs arrive, never by a progress tick |
//! | tx → run        | `TX#{creditTxId}`   | `TX`                 | `runId`; the stream finds the run by its debit  |
//! | run event       | `EVENTS#{runId}`    | `{seq:020}`          | written only if absent; `ttl` after retention   |
//! | shared run      | `SHARE#{shareId}`   | `SHARE`              | the share (run, owner, whether inputs show)     |
//! | run → share     | `RUNSHARE#{runId}`  | `SHARE`              | `shareId`; written only if absent, with the share, in one transaction |
//! | webhook delivery | `HOOKS#{runId}`    | `{webhookId}`        | written with its event; `attemptCount` guards each attempt; `unfinished` shard `h00`..`h15` while pending |
//! | output file     | `FILE#{runId}`      | `{n:06}`             | `mime`, and `bytes` (B, at most 256 KB) or `blob` (its S3 key) |
//! | tool cost       | `TOOLCOST#{00..15}` | `{slug/step/tool}`   | `calls`, `pts` counters (ADD), on a shard at random; read summed |
//! | spell price     | `STATS`             | `{slug}`             | recomputed every 15 minutes                     |
//! | upload          | `UPLOAD#{uploadId}` | `UPLOAD`             | owner, declared type and size, `expiresAt`; `ttl` then |
//! | rate counter    | `RATE#{limit}#{subject}` | `{window start}` | `hits` (ADD); `ttl` when the window ends        |
//! | open streams    | `STREAMS#USER#{user}` / `STREAMS#RUN#{runId}` | `OPEN` | `open` count, conditional `< cap`; `leaseUntil`; `ttl` |
//!
//! Global secondary index `unfinished-keys` (pk `unfinished`, sk `createdAt`, projection
//! KEYS_ONLY) is sparse: only the heads of queued and running runs carry `unfinished` — a shard
//! `u00`..`u15` from a hash of the run id, so casts and finishes spread over 16 index partitions
//! rather than one hot key — and recovery reads exactly those, one query per shard, then the
//! items by key (`BatchGetItem`). Keys only: a run's every event rewrites its head, and an index
//! holding the whole head was written with it each time (a write request unit or two per event,
//! measured by `scripts/bench-cost`); with keys only the index is written when a run enters it
//! and when it leaves. Pending webhook deliveries use the same index under their own shards
//! (`h00`..`h15`), so the sweep finds the ones whose queue message was lost.
//!
//! # Capacity per operation (on-demand; transactional writes cost 2 WCU per KB of each item,
//! strongly consistent reads 1 RCU per 4 KB)
//!
//! | operation            | reads                                   | writes (transaction)                               |
//! |----------------------|-----------------------------------------|----------------------------------------------------|
//! | quote (invoice)      | balance 1 RCU                           | invoice 1 WCU (+ idempotency key 1 WCU)             |
//! | cast                 | invoice 1 RCU                           | invoice, balance, ledger, run head, run body (inputs: 2 WCU per KB), tx link: ≥ 12 WCU |
//! | progress tick / step without outputs (the holder) | none (the holder decides over the run it committed) | head with its event (1-2 WCU) + event (1 WCU), two plain writes |
//! | run start / takeover / cancel (not the holder) | run head + body (1 RCU per 4 KB), the owed event (1 RCU) | head + event in a transaction: 4 WCU (+ the owed event: 1 WCU) |
//! | step with outputs    | none (the holder)                       | head + event + body in a transaction (2 WCU per KB each) + output files (1 WCU per KB, plain, first) |
//! | finish / fail        | as above                                | head + event (+ refund: balance, ledger): 4-8 WCU   |
//! | stream page          | events query 1 RCU per 4 KB             | open-stream counters: 2 WCU to take, 2 to give back |
//! | recovery sweep       | 16 index queries (0.5 RCU each when empty), then the heads by key (0.5 RCU each) | only for lost or stuck runs |
//!
//! Access patterns: balance and invoice by key (strongly consistent reads); ledger page by query on
//! `LEDGER#{user}` descending; run events after a seq by strongly consistent query (the stream);
//! unfinished runs by the index (eventually consistent is fine: every change is conditional).
//!
//! # Atomicity
//!
//! A cast is one `TransactWriteItems`: invoice open→consumed (condition), balance debit (condition
//! `balance >= cost`), ledger entry, run, tx→run. A run change is one transaction too: the run
//! (condition `lastSeq` unchanged), its event (condition absent), and for a failure the refund
//! (balance ADD + ledger entry); `Run::apply` refuses a second failure, so a refund happens
//! once. Output files are written just before it (plain: nothing reads them until the body that
//! names them commits). The one exception is the runner holding the run making an everyday change
//! (no money, outputs, files, delivery, not the end): the head, under the same condition, then the
//! event — see `DynamoStore::commit_held` for why the events stay gapless. Cancellations are
//! mapped by their reasons; `TransactionConflict` and throttling are retried with jittered
//! backoff, a bounded number of times. Transient errors resend the very same request with the
//! same `ClientRequestToken`, so DynamoDB applies it at most once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sdk_error::{is_transient, store_error};
use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue as Av, BillingMode, Delete, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, KeysAndAttributes, Projection, ProjectionType, Put,
    ScalarAttributeType, TimeToLiveSpecification, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use spellcast_application::ports::{
    CostStore, DeliveryStore, InvoiceStore, LedgerStore, RunStore, ShareStore, StoreError,
    StoreResult, UploadStore,
};
use spellcast_application::ports::{RateLimiter, StreamSlots};
use spellcast_domain::cast::{CastCheck, CastOutcome, NewCast};
use spellcast_domain::ids::{CreditTxId, RunId, ShareId, UploadId, UserId};
use spellcast_domain::invoice::{IdempotencyRecord, InvoiceRecord, IssueOutcome};
use spellcast_domain::ledger::{GrantKey, GrantOutcome, LedgerEntry};
use spellcast_domain::limits::{Limit, Slot, StreamCaps, Verdict};
use spellcast_domain::prices::{SpellStats, ToolCostTotal};
use spellcast_domain::run::{Applied, FileBody, OutputFile, Run, RunEvent, RunVersion};
use spellcast_domain::sharing::Share;
use spellcast_domain::uploads::Upload;
use spellcast_domain::webhooks::{Attempt, Delivery, WebhookSecret};

type Item = HashMap<String, Av>;

/// The sparse index of unfinished runs and pending deliveries (keys only).
const UNFINISHED_INDEX: &str = "unfinished-keys";
/// Most keys one `BatchGetItem` takes.
const BATCH_GET: usize = 100;
/// How often a transaction is tried before giving up (conflicts between writers).
const ATTEMPTS: u32 = 12;
/// How often a transaction that timed out or was throttled is sent (the SDK's own retries
/// included in each): bounded, so a request fails with 503 within seconds.
const TRANSIENT_ATTEMPTS: u32 = 3;

/// Spellcast's state in one DynamoDB table.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    retention: chrono::Duration,
    /// Runs whose last event this process's holder owes (see `DynamoStore::commit_held`).
    owed: Arc<Mutex<HashSet<RunId>>>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::from_err(e)
}

/// Whether a conditional write was made: `false` when its condition did not hold (nothing
/// was written), an error for anything else.
fn conditional<T, E, R>(sent: Result<T, SdkError<E, R>>) -> StoreResult<bool>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match sent {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
        Err(e) => Err(store_error(e)),
    }
}

/// An update whose condition did not hold changed nothing, which is what the caller wanted.
fn unless_condition_failed<T, E, R>(sent: Result<T, SdkError<E, R>>) -> StoreResult<()>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    conditional(sent).map(drop)
}

fn s(v: impl Into<String>) -> Av {
    Av::S(v.into())
}

fn n(v: impl ToString) -> Av {
    Av::N(v.to_string())
}

fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

/// A domain value as an item under `pk`/`sk`.
fn item<T: Serialize>(
    value: &T,
    pk: impl Into<String>,
    sk: impl Into<String>,
) -> StoreResult<Item> {
    let mut item: Item = serde_dynamo::to_item(value).map_err(err)?;
    item.extend(key(pk, sk));
    Ok(item)
}

fn from_item<T: DeserializeOwned>(item: Item) -> StoreResult<T> {
    serde_dynamo::from_item(item).map_err(err)
}

fn number(item: &Item, name: &str) -> i64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn put(item: Item, table: &str, condition: Option<&str>) -> StoreResult<TransactWriteItem> {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .set_condition_expression(condition.map(str::to_owned))
        .build()
        .map_err(err)?;
    Ok(TransactWriteItem::builder().put(put).build())
}

fn ledger_put(entry: &LedgerEntry, table: &str) -> StoreResult<TransactWriteItem> {
    let item = item(
        entry,
        format!("LEDGER#{}", entry.user_id),
        entry.tx_id.to_string(),
    )?;
    put(item, table, Some("attribute_not_exists(pk)"))
}

fn balance_add(user: &UserId, pts: i64, table: &str) -> StoreResult<TransactWriteItem> {
    let update = Update::builder()
        .table_name(table)
        .set_key(Some(key(format!("USER#{user}"), "BALANCE")))
        .update_expression("ADD balance :pts")
        .expression_attribute_values(":pts", n(pts))
        .build()
        .map_err(err)?;
    Ok(TransactWriteItem::builder().update(update).build())
}

/// How a cancelled transaction ended, reason by reason.
enum Cancelled {
    /// The conditions of these items (by index) failed.
    Conditions(Vec<usize>),
    /// A conflict or throttling: try again later.
    Retry,
}

/// Jittered exponential backoff for attempt `attempt` (1-based).
async fn backoff(attempt: u32) {
    let cap = 10u64 << attempt.min(6);
    let ms = rand::random::<u64>() % cap + 5;
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

impl DynamoStore {
    /// A store on `table`, keeping idempotency keys and run events for `retention`.
    pub fn new(client: Client, table: impl Into<String>, retention: chrono::Duration) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            retention,
            owed: Arc::default(),
        }
    }

    fn ttl(&self, from: DateTime<Utc>) -> Av {
        n((from + self.retention).timestamp())
    }

    /// Creates the table, its index and TTL (for local runs and tests; SAM creates it on AWS).
    pub async fn create_table(&self) -> StoreResult<()> {
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let schema = |name: &str, kind| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
        };
        let index = GlobalSecondaryIndex::builder()
            .index_name(UNFINISHED_INDEX)
            .key_schema(schema("unfinished", KeyType::Hash).map_err(err)?)
            .key_schema(schema("createdAt", KeyType::Range).map_err(err)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::KeysOnly)
                    .build(),
            )
            .build()
            .map_err(err)?;
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("pk").map_err(err)?)
            .attribute_definitions(attr("sk").map_err(err)?)
            .attribute_definitions(attr("unfinished").map_err(err)?)
            .attribute_definitions(attr("createdAt").map_err(err)?)
            .key_schema(schema("pk", KeyType::Hash).map_err(err)?)
            .key_schema(schema("sk", KeyType::Range).map_err(err)?)
            .global_secondary_indexes(index)
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) =>
            {
                return Ok(())
            }
            Err(e) => return Err(store_error(e)),
        }
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name("ttl")
                    .enabled(true)
                    .build()
                    .map_err(err)?,
            )
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// One page of the items under `pk`, highest sort key first, below `before` when given
    /// (sort keys that are ids sort by time: newest first).
    async fn page_down(
        &self,
        pk: String,
        limit: usize,
        before: Option<&str>,
    ) -> StoreResult<Vec<Item>> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .expression_attribute_values(":pk", s(pk))
            .scan_index_forward(false)
            .consistent_read(true)
            .limit(limit.clamp(1, 1000) as i32);
        query = match before {
            Some(cursor) => query
                .key_condition_expression("pk = :pk AND sk < :before")
                .expression_attribute_values(":before", s(cursor)),
            None => query.key_condition_expression("pk = :pk"),
        };
        let out = query.send().await.map_err(store_error)?;
        Ok(out.items.unwrap_or_default())
    }

    async fn get(&self, pk: String, sk: &str) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(store_error)?;
        Ok(out.item)
    }

    async fn get_as<T: DeserializeOwned>(&self, pk: String, sk: &str) -> StoreResult<Option<T>> {
        self.get(pk, sk).await?.map(from_item).transpose()
    }

    /// What a link item points at: its string attribute `field` (a debit's run, a run's share).
    async fn link(&self, pk: String, sk: &str, field: &str) -> StoreResult<Option<String>> {
        let item = self.get(pk, sk).await?;
        Ok(item
            .as_ref()
            .and_then(|l| l.get(field))
            .and_then(|v| v.as_s().ok())
            .cloned())
    }

    /// Every item under `pk` (sorted by `sk`), strongly consistent.
    async fn query_all(&self, pk: &str) -> StoreResult<Vec<Item>> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pk))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(store_error)?;
            items.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// Sends one transaction. Transient failures resend the same request with the same client
    /// token (applied at most once); cancellations are returned with their reasons.
    async fn transact(&self, items: Vec<TransactWriteItem>) -> StoreResult<Result<(), Cancelled>> {
        let token = format!("{:032x}", rand::random::<u128>());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .client_request_token(&token)
                .send()
                .await;
            let e = match sent {
                Ok(_) => return Ok(Ok(())),
                Err(e) => e,
            };
            if let Some(TransactWriteItemsError::TransactionCanceledException(cancel)) =
                e.as_service_error()
            {
                let codes: Vec<&str> = cancel
                    .cancellation_reasons()
                    .iter()
                    .map(|r| r.code().unwrap_or("None"))
                    .collect();
                let failed: Vec<usize> = codes
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c == "ConditionalCheckFailed")
                    .map(|(i, _)| i)
                    .collect();
                if !failed.is_empty() {
                    return Ok(Err(Cancelled::Conditions(failed)));
                }
                // TransactionConflict, throttling: nothing was written; the caller re-reads.
                tracing::debug!(?codes, "transaction cancelled; retrying");
                return Ok(Err(Cancelled::Retry));
            }
            // The SDK has retried already; a few more tries with the same token, then the
            // caller answers 503 and the client may retry.
            if !is_transient(&e) || attempt >= TRANSIENT_ATTEMPTS {
                return Err(store_error(e));
            }
            backoff(attempt).await;
        }
    }

    /// The holder's change as two writes: the head (under the same condition a transaction
    /// would check, so a runner that lost the run or a canceled run writes nothing), then its
    /// event. Between the two, the head carries the event (`lastEvent`): if the holder stops
    /// there, whoever changes the run next writes it first (`write_last_event`), so the events
    /// stay gapless — a stream waits at most until then. Readers never see an event the head
    /// does not have.
    async fn commit_held(
        &self,
        run_id: &RunId,
        locked: Put,
        event_item: Option<Item>,
    ) -> StoreResult<bool> {
        let sent = self
            .client
            .put_item()
            .table_name(locked.table_name)
            .set_item(Some(locked.item))
            .set_condition_expression(locked.condition_expression)
            .set_expression_attribute_names(locked.expression_attribute_names)
            .set_expression_attribute_values(locked.expression_attribute_values)
            .send()
            .await;
        match conditional(sent) {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) => {
                // It may have been written (a timeout): then its event is owed.
                self.owe(run_id);
                return Err(e);
            }
        }
        let Some(event_item) = event_item else {
            return Ok(true);
        };
        // Unconditional: the head made this the event at its seq, whoever writes it.
        let sent = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(event_item))
            .send()
            .await;
        if let Err(e) = sent {
            self.owe(run_id);
            return Err(store_error(e));
        }
        Ok(true)
    }

    /// A run event as its item, kept for the retention.
    fn event_item(&self, run_id: &RunId, event: &RunEvent) -> StoreResult<Item> {
        let mut it = item(
            event,
            format!("EVENTS#{run_id}"),
            format!("{:020}", event.seq),
        )?;
        it.insert("ttl".into(), self.ttl(Utc::now()));
        Ok(it)
    }

    /// Notes that this process owes `run_id`'s last event (its write failed after its head's).
    fn owe(&self, run_id: &RunId) {
        if let Ok(mut owed) = self.owed.lock() {
            owed.insert(run_id.clone());
        }
    }

    /// Writes the event a head carries (`lastEvent`, left by a holder's two-write change), in
    /// case its holder stopped between the two writes. Unconditional and idempotent: the head
    /// made it the event at its seq.
    async fn write_last_event(&self, run_id: &RunId) -> StoreResult<()> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("RUN#{run_id}"), "RUN")))
            .projection_expression("lastEvent")
            .consistent_read(true)
            .send()
            .await
            .map_err(store_error)?;
        let Some(Av::M(event)) = out.item.and_then(|mut it| it.remove("lastEvent")) else {
            return Ok(());
        };
        let event: RunEvent = from_item(event)?;
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.event_item(run_id, &event)?))
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// A run as its two items: the small head every change rewrites (status, steps, `lastSeq`,
    /// the `unfinished` shard while it is unfinished), and the body with what can be large (the
    /// inputs, the outputs), written only when it changes.
    fn run_items(&self, run: &Run) -> StoreResult<(Item, Item)> {
        let pk = format!("RUN#{}", run.run_id);
        let mut head = item(run, &pk, "RUN")?;
        let mut body = key(&pk, "BODY");
        for field in BODY_FIELDS {
            if let Some(value) = head.remove(field) {
                body.insert(field.to_owned(), value);
            }
        }
        if !run.status.is_terminal() {
            head.insert("unfinished".into(), s(unfinished_shard(&run.run_id)));
        }
        Ok((head, body))
    }

    /// A delivery as its item: filed in the index while pending, kept a day past the retention
    /// (its retries last 27 hours).
    fn delivery_item(&self, delivery: &Delivery) -> StoreResult<Item> {
        let mut it = item(
            delivery,
            format!("HOOKS#{}", delivery.run_id),
            &delivery.webhook_id,
        )?;
        it.insert("attemptCount".into(), n(delivery.attempts.len()));
        it.insert(
            "ttl".into(),
            self.ttl(delivery.created_at + chrono::Duration::hours(28)),
        );
        if delivery.is_pending() {
            it.insert(
                "unfinished".into(),
                s(shard_of("h", delivery.run_id.as_str())),
            );
        }
        Ok(it)
    }

    /// Every item of one shard of the `unfinished` index.
    async fn index_shard(&self, shard: String) -> StoreResult<Vec<Item>> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(UNFINISHED_INDEX)
                .key_condition_expression("unfinished = :shard")
                .expression_attribute_values(":shard", s(&shard))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(store_error)?;
            items.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// The items the index names (it holds their keys only), read in batches; an item gone
    /// since (a run finished, a delivery expired) is left out. Eventually consistent: whoever
    /// acts on what it reads does so by a conditional change.
    async fn items_named(&self, index_items: Vec<Item>) -> StoreResult<Vec<Item>> {
        let mut found = Vec::new();
        for chunk in index_items.chunks(BATCH_GET) {
            let mut keys: Vec<Item> = chunk
                .iter()
                .filter_map(|it| Some(key(str_of(it, "pk")?, str_of(it, "sk")?)))
                .collect();
            for attempt in 0..ATTEMPTS {
                if keys.is_empty() {
                    break;
                }
                if attempt > 0 {
                    backoff(attempt).await;
                }
                let wanted = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut keys)))
                    .build()
                    .map_err(err)?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, wanted)
                    .send()
                    .await
                    .map_err(store_error)?;
                found.extend(
                    out.responses
                        .and_then(|mut r| r.remove(&self.table))
                        .unwrap_or_default(),
                );
                // Keys DynamoDB did not get to (throttling, size) are asked for again.
                keys = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                    .map(|k| k.keys)
                    .unwrap_or_default();
            }
            if !keys.is_empty() {
                return Err(err("BatchGetItem left keys unprocessed"));
            }
        }
        Ok(found)
    }

    /// The unfinished runs of one shard of the index (heads only).
    async fn unfinished_in(&self, shard: String) -> StoreResult<Vec<Run>> {
        let named = self.index_shard(shard).await?;
        self.items_named(named)
            .await?
            .into_iter()
            .filter(|head| head.contains_key("unfinished"))
            .map(|head| run_from_items(head, None))
            .collect()
    }
}

/// The fields of a run kept in its body item.
const BODY_FIELDS: [&str; 2] = ["context", "outputs"];

/// How many partitions the `unfinished` index spreads its writes over: one constant key would
/// put every cast and every finish of the whole product on one partition of the index.
const UNFINISHED_SHARDS: u32 = 16;
/// How many keys the tool cost counters are spread over.
const TOOLCOST_SHARDS: u32 = 16;

/// The index shard of a run: a stable hash of its id (FNV-1a), `u00`..`u15`.
fn unfinished_shard(run_id: &RunId) -> String {
    shard_of("u", run_id.as_str())
}

/// Shard `{prefix}00`..`{prefix}15` of `id`, by a stable hash (FNV-1a).
fn shard_of(prefix: &str, id: &str) -> String {
    let hash = id.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{prefix}{:02}", hash % UNFINISHED_SHARDS)
}

/// The string attribute `name` of an item.
fn str_of(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

/// A delivery from its item.
fn delivery_from_item(mut it: Item) -> StoreResult<Delivery> {
    for extra in ["unfinished", "attemptCount", "ttl"] {
        it.remove(extra);
    }
    from_item(it)
}

/// A run from its head and body items (a head alone, from the index, has no inputs or outputs).
fn run_from_items(mut head: Item, body: Option<Item>) -> StoreResult<Run> {
    head.remove("unfinished");
    head.remove("lastEvent");
    match body {
        Some(mut body) => {
            for field in BODY_FIELDS {
                if let Some(value) = body.remove(field) {
                    head.insert(field.to_owned(), value);
                }
            }
        }
        None => {
            head.insert("context".into(), Av::Null(true));
            head.insert("outputs".into(), Av::L(Vec::new()));
        }
    }
    from_item(head)
}

#[async_trait]
impl RunStore for DynamoStore {
    async fn user_runs(
        &self,
        user_id: &UserId,
        limit: usize,
        before: Option<&RunId>,
    ) -> StoreResult<Vec<Run>> {
        let before = before.map(RunId::as_str);
        let listed = self
            .page_down(format!("USERRUNS#{user_id}"), limit, before)
            .await?;
        let ids: Vec<RunId> = listed
            .iter()
            .filter_map(|item| item.get("sk").and_then(|v| v.as_s().ok()))
            .map(|id| RunId::from(id.as_str()))
            .collect();
        // One page is at most `limit` (an API page: 100) reads, made together; heads only — a
        // listing shows no inputs or outputs, and a body can be hundreds of KB.
        let heads = futures::future::try_join_all(
            ids.iter().map(|id| self.get(format!("RUN#{id}"), "RUN")),
        )
        .await?;
        heads
            .into_iter()
            .flatten()
            .map(|head| run_from_items(head, None))
            .collect()
    }

    async fn run(&self, run_id: &RunId) -> StoreResult<Option<Run>> {
        // Head and body in one strongly consistent query (they share the partition).
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(format!("RUN#{run_id}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(store_error)?;
        let (mut head, mut body) = (None, None);
        for item in out.items.unwrap_or_default() {
            match item
                .get("sk")
                .and_then(|v| v.as_s().ok())
                .map(String::as_str)
            {
                Some("RUN") => head = Some(item),
                Some("BODY") => body = Some(item),
                _ => {}
            }
        }
        match (head, body) {
            (Some(head), Some(body)) => run_from_items(head, Some(body)).map(Some),
            (None, _) => Ok(None),
            (Some(_), None) => Err(StoreError::new(format!("run {run_id} has no body item"))),
        }
    }

    async fn run_by_credit_tx(&self, credit_tx_id: &CreditTxId) -> StoreResult<Option<Run>> {
        match self
            .link(format!("TX#{credit_tx_id}"), "TX", "runId")
            .await?
        {
            Some(run_id) => self.run(&RunId::from(run_id.as_str())).await,
            None => Ok(None),
        }
    }

    async fn commit_run(
        &self,
        run: &Run,
        applied: &Applied,
        read: &RunVersion,
    ) -> StoreResult<bool> {
        let run_id = &run.run_id;
        // A writer that does not hold the run (a cancel, recovery, a takeover) first writes the
        // event its last holder may still owe (see `commit_held`); so does a holder whose own
        // event write failed.
        let owed = self
            .owed
            .lock()
            .map(|mut o| o.remove(run_id))
            .unwrap_or(false);
        if (!read.held && read.fence > 0) || owed {
            if let Err(e) = self.write_last_event(run_id).await {
                if owed {
                    self.owe(run_id);
                }
                return Err(e);
            }
        }
        let (mut head, body) = self.run_items(run)?;
        let event_item = applied
            .event
            .as_ref()
            .map(|event| self.event_item(run_id, event))
            .transpose()?;
        // The holder's everyday change (a step starts, makes progress, succeeds without outputs)
        // is two plain writes, not a transaction (which costs twice): the head, fenced as below
        // and carrying the event, then the event. Anything with money, files, outputs or a
        // delivery in it, the end of the run, and every change by a non-holder stay one
        // transaction.
        let plain = read.held
            && applied.files.is_empty()
            && applied.refund_pts == 0
            && applied.delivery.is_none()
            && run.outputs.len() == read.outputs
            && !run.status.is_terminal();
        if let (true, Some(event)) = (plain, &applied.event) {
            // The event alone (its keys and expiry are made again from it): a head under 1 KB
            // stays one write unit.
            head.insert(
                "lastEvent".into(),
                Av::M(serde_dynamo::to_item(event).map_err(err)?),
            );
        }
        // Optimistic lock: the run must still be where it was read — its last event, its status
        // and its lease's fencing number (a run stored before leases has none: 0). The body is
        // written only when outputs were added: a progress tick rewrites the small head alone.
        let fenced = if read.fence == 0 {
            "(attribute_not_exists(leaseFence) OR leaseFence = :fence)"
        } else {
            "leaseFence = :fence"
        };
        let locked = Put::builder()
            .table_name(&self.table)
            .set_item(Some(head))
            .condition_expression(format!(
                "lastSeq = :previous AND #status = :status AND {fenced}"
            ))
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":previous", n(read.last_seq))
            .expression_attribute_values(":status", s(read.status.as_str()))
            .expression_attribute_values(":fence", n(read.fence))
            .build()
            .map_err(err)?;
        if plain {
            return self.commit_held(run_id, locked, event_item).await;
        }
        // Output files first, each one plain write (a transaction would cost twice, and an
        // image is kilobytes): nothing reads a file before the body that names it is committed,
        // and a change decided again writes the same file number over it.
        for file in &applied.files {
            let mut f = key(format!("FILE#{run_id}"), format!("{:06}", file.n));
            f.insert("mime".into(), s(&file.mime));
            match &file.body {
                FileBody::Inline(bytes) => f.insert("bytes".into(), Av::B(bytes.clone().into())),
                FileBody::Blob(blob) => f.insert("blob".into(), s(blob)),
            };
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(f))
                .send()
                .await
                .map_err(store_error)?;
        }
        let mut items = vec![TransactWriteItem::builder().put(locked).build()];
        if run.outputs.len() != read.outputs {
            items.push(put(body, &self.table, None)?);
        }
        if let Some(event_item) = event_item {
            items.push(put(
                event_item,
                &self.table,
                Some("attribute_not_exists(pk)"),
            )?);
        }
        if applied.refund_pts > 0 {
            let refund = run.refund_entry(applied.refund_pts);
            items.push(balance_add(&run.user_id, refund.pts, &self.table)?);
            items.push(ledger_put(&refund, &self.table)?);
        }
        if let Some(delivery) = &applied.delivery {
            items.push(put(
                self.delivery_item(delivery)?,
                &self.table,
                Some("attribute_not_exists(pk)"),
            )?);
        }
        // A refused transaction: someone else changed the run (or a conflict); the caller reads
        // it again and decides afresh.
        Ok(self.transact(items).await?.is_ok())
    }

    async fn run_events(
        &self,
        run_id: &RunId,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<RunEvent>> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk > :after")
            .expression_attribute_values(":pk", s(format!("EVENTS#{run_id}")))
            .expression_attribute_values(":after", s(format!("{after:020}")))
            .consistent_read(true)
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(store_error)?;
        out.items
            .unwrap_or_default()
            .into_iter()
            .map(from_item)
            .collect()
    }

    async fn output_file(&self, run_id: &RunId, n: usize) -> StoreResult<Option<OutputFile>> {
        let Some(item) = self
            .get(format!("FILE#{run_id}"), &format!("{n:06}"))
            .await?
        else {
            return Ok(None);
        };
        let mime = item
            .get("mime")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default();
        let body = match (item.get("blob"), item.get("bytes")) {
            (Some(Av::S(blob)), _) => FileBody::Blob(blob.clone()),
            (_, Some(Av::B(bytes))) => FileBody::Inline(bytes.as_ref().to_vec()),
            _ => {
                return Err(StoreError::new(format!(
                    "file {n} of {run_id} has no bytes"
                )))
            }
        };
        Ok(Some(OutputFile { n, mime, body }))
    }

    async fn unfinished_runs(&self) -> StoreResult<Vec<Run>> {
        // One query per shard, once a sweep (a minute on AWS): sequential is plenty.
        let mut runs = Vec::new();
        for i in 0..UNFINISHED_SHARDS {
            runs.extend(self.unfinished_in(format!("u{i:02}")).await?);
        }
        runs.sort_by_key(|r| r.created_at);
        Ok(runs)
    }
}

#[async_trait]
impl InvoiceStore for DynamoStore {
    async fn idempotency(
        &self,
        user_id: &UserId,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        let record: Option<IdempotencyRecord> = self.get_as(format!("IDEM#{user_id}"), key).await?;
        Ok(record.filter(|r| r.expires_at > Utc::now()))
    }

    async fn issue_invoice(
        &self,
        invoice: InvoiceRecord,
        idempotency: Option<IdempotencyRecord>,
    ) -> StoreResult<IssueOutcome> {
        // An invoice is kept for the retention after it expires (a retried cast still finds
        // the run it paid for), then DynamoDB deletes it; a cast after that is refused as expired.
        let mut invoice_item = item(
            &invoice,
            format!("INVOICE#{}", invoice.invoice_id),
            "INVOICE",
        )?;
        invoice_item.insert("ttl".into(), self.ttl(invoice.expires_at));
        for attempt in 1..=ATTEMPTS {
            let mut items = vec![put(
                invoice_item.clone(),
                &self.table,
                Some("attribute_not_exists(pk)"),
            )?];
            if let Some(record) = &idempotency {
                let mut idem = item(
                    record,
                    format!("IDEM#{}", record.user_id),
                    record.key.clone(),
                )?;
                idem.insert("ttl".into(), n(record.expires_at.timestamp()));
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(idem))
                    .condition_expression("attribute_not_exists(pk) OR #ttl < :now")
                    .expression_attribute_names("#ttl", "ttl")
                    .expression_attribute_values(":now", n(record.created_at.timestamp()))
                    .build()
                    .map_err(err)?;
                items.push(TransactWriteItem::builder().put(put).build());
            }
            match self.transact(items).await? {
                Ok(()) => return Ok(IssueOutcome::Issued),
                Err(Cancelled::Retry) => backoff(attempt).await,
                Err(Cancelled::Conditions(failed)) if failed.contains(&1) => {
                    let Some(record) = &idempotency else { break };
                    match self.idempotency(&record.user_id, &record.key).await? {
                        Some(seen) if seen.request_hash == record.request_hash => {
                            return Ok(IssueOutcome::Replayed(seen))
                        }
                        Some(_) => return Ok(IssueOutcome::KeyConflict),
                        None => backoff(attempt).await, // expired meanwhile: try again
                    }
                }
                Err(Cancelled::Conditions(_)) => {
                    return Err(StoreError::new(format!(
                        "invoice {} exists",
                        invoice.invoice_id
                    )));
                }
            }
        }
        Err(StoreError::unavailable("issue_invoice: too many conflicts"))
    }

    async fn cast(&self, cast: NewCast) -> StoreResult<CastOutcome> {
        for attempt in 1..=ATTEMPTS {
            let invoice: Option<InvoiceRecord> = self
                .get_as(format!("INVOICE#{}", cast.invoice_id), "INVOICE")
                .await?;
            let (run, debit) = match cast.check(invoice.as_ref()) {
                CastCheck::Answer(outcome) => return Ok(outcome),
                CastCheck::Replay { run_id } => {
                    return match self.run(&run_id).await? {
                        Some(run) => Ok(CastOutcome::Replayed(run)),
                        None => Err(StoreError::new(format!(
                            "invoice {} names a missing run",
                            cast.invoice_id
                        ))),
                    };
                }
                CastCheck::Pay { run, debit } => (run, debit),
            };
            let cost = run.cost_pts;
            let consume = Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(format!("INVOICE#{}", cast.invoice_id), "INVOICE")))
                .update_expression(
                    "SET #state = :consumed, runId = :run, creditTxId = :tx, contextHash = :hash",
                )
                .condition_expression("#state = :open")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":consumed", s("consumed"))
                .expression_attribute_values(":open", s("open"))
                .expression_attribute_values(":run", s(run.run_id.as_str()))
                .expression_attribute_values(":tx", s(run.credit_tx_id.as_str()))
                .expression_attribute_values(":hash", s(&cast.context_hash))
                .build()
                .map_err(err)?;
            // A user who was never granted anything has no balance item: a free spell is
            // still theirs to cast (found by the ledger model test).
            let covered = if cost == 0 {
                "attribute_not_exists(balance) OR balance >= :cost"
            } else {
                "balance >= :cost"
            };
            let debit_balance = Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(format!("USER#{}", cast.user_id), "BALANCE")))
                .update_expression("SET balance = if_not_exists(balance, :zero) - :cost")
                .condition_expression(covered)
                .expression_attribute_values(":cost", n(cost))
                .expression_attribute_values(":zero", n(0))
                .build()
                .map_err(err)?;
            let mut items = vec![
                TransactWriteItem::builder().update(consume).build(),
                TransactWriteItem::builder().update(debit_balance).build(),
                ledger_put(&debit, &self.table)?,
            ];
            let (head, body) = self.run_items(&run)?;
            items.push(put(head, &self.table, None)?);
            items.push(put(body, &self.table, None)?);
            let mut link = key(format!("TX#{}", run.credit_tx_id), "TX");
            link.insert("runId".into(), s(run.run_id.as_str()));
            items.push(put(link, &self.table, Some("attribute_not_exists(pk)"))?);
            // The user's runs, newest first by id (run ids sort by time): keys only, the run
            // is read from its own item.
            let listed = key(format!("USERRUNS#{}", run.user_id), run.run_id.as_str());
            items.push(put(listed, &self.table, None)?);

            match self.transact(items).await? {
                Ok(()) => return Ok(CastOutcome::Created(run)),
                Err(Cancelled::Retry) => backoff(attempt).await,
                // The invoice was consumed meanwhile: the next read tells by whom.
                Err(Cancelled::Conditions(failed)) if failed.contains(&0) => {}
                Err(Cancelled::Conditions(failed)) if failed.contains(&1) => {
                    return Ok(CastOutcome::InsufficientBalance {
                        balance: self.balance(&cast.user_id).await?,
                    });
                }
                Err(Cancelled::Conditions(failed)) => {
                    return Err(StoreError::new(format!(
                        "cast: unexpected condition failure {failed:?}"
                    )));
                }
            }
        }
        Err(StoreError::unavailable("cast: too many conflicts"))
    }
}

#[async_trait]
impl LedgerStore for DynamoStore {
    async fn grant(&self, entry: LedgerEntry) -> StoreResult<i64> {
        for attempt in 1..=ATTEMPTS {
            let items = vec![
                balance_add(&entry.user_id, entry.pts, &self.table)?,
                ledger_put(&entry, &self.table)?,
            ];
            match self.transact(items).await? {
                Ok(()) => return self.balance(&entry.user_id).await,
                Err(Cancelled::Retry) => backoff(attempt).await,
                Err(Cancelled::Conditions(_)) => {
                    return Err(StoreError::new(format!(
                        "ledger entry {} exists",
                        entry.tx_id
                    )))
                }
            }
        }
        Err(StoreError::unavailable("grant: too many conflicts"))
    }

    async fn grant_once(&self, entry: LedgerEntry, key: &GrantKey) -> StoreResult<GrantOutcome> {
        let key_pk = format!("GRANT#{}", key.key);
        let mut record = HashMap::from([
            ("fingerprint".to_owned(), s(&key.fingerprint)),
            (
                "entry".to_owned(),
                Av::M(serde_dynamo::to_item(&entry).map_err(err)?),
            ),
        ]);
        record.extend(self::key(&key_pk, "GRANT"));
        let mut credit = Update::builder()
            .table_name(&self.table)
            .set_key(Some(self::key(
                format!("USER#{}", entry.user_id),
                "BALANCE",
            )))
            .update_expression("ADD balance :pts")
            .expression_attribute_values(":pts", n(entry.pts));
        if entry.pts < 0 {
            // Never below zero: the balance must cover what is taken.
            credit = credit
                .condition_expression("balance >= :need")
                .expression_attribute_values(":need", n(-entry.pts));
        }
        let credit = TransactWriteItem::builder()
            .update(credit.build().map_err(err)?)
            .build();
        for attempt in 1..=ATTEMPTS {
            let items = vec![
                put(
                    record.clone(),
                    &self.table,
                    Some("attribute_not_exists(pk)"),
                )?,
                credit.clone(),
                ledger_put(&entry, &self.table)?,
            ];
            match self.transact(items).await? {
                Ok(()) => {
                    let balance = self.balance(&entry.user_id).await?;
                    return Ok(GrantOutcome::Granted { entry, balance });
                }
                Err(Cancelled::Retry) => backoff(attempt).await,
                Err(Cancelled::Conditions(failed)) if failed.contains(&0) => {
                    let first = self
                        .get(key_pk.clone(), "GRANT")
                        .await?
                        .ok_or_else(|| StoreError::new("a grant key vanished"))?;
                    let fingerprint = first
                        .get("fingerprint")
                        .and_then(|v| v.as_s().ok())
                        .cloned()
                        .unwrap_or_default();
                    let entry = match first.get("entry") {
                        Some(Av::M(m)) => from_item(m.clone())?,
                        _ => return Err(StoreError::new("a grant key without its entry")),
                    };
                    return Ok(GrantOutcome::Repeated { entry, fingerprint });
                }
                Err(Cancelled::Conditions(failed)) if failed.contains(&1) => {
                    let balance = self.balance(&entry.user_id).await?;
                    return Ok(GrantOutcome::Insufficient { balance });
                }
                Err(Cancelled::Conditions(_)) => {
                    return Err(StoreError::new(format!(
                        "ledger entry {} exists",
                        entry.tx_id
                    )))
                }
            }
        }
        Err(StoreError::unavailable("grant: too many conflicts"))
    }

    async fn balance(&self, user_id: &UserId) -> StoreResult<i64> {
        Ok(self
            .get(format!("USER#{user_id}"), "BALANCE")
            .await?
            .map_or(0, |item| number(&item, "balance")))
    }

    async fn ledger(
        &self,
        user_id: &UserId,
        limit: usize,
        before: Option<&CreditTxId>,
    ) -> StoreResult<Vec<LedgerEntry>> {
        let before = before.map(CreditTxId::as_str);
        self.page_down(format!("LEDGER#{user_id}"), limit, before)
            .await?
            .into_iter()
            .map(from_item)
            .collect()
    }
}

#[async_trait]
impl ShareStore for DynamoStore {
    async fn share_run(&self, share: Share) -> StoreResult<Share> {
        for attempt in 1..=ATTEMPTS {
            if let Some(kept) = self.run_share(&share.run_id).await? {
                // Shared already: the same id, with the inputs shown or not as asked now.
                let updated = Share {
                    include_inputs: share.include_inputs,
                    ..kept
                };
                let it = item(&updated, format!("SHARE#{}", updated.share_id), "SHARE")?;
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(it))
                    .condition_expression("attribute_exists(pk)")
                    .send()
                    .await
                    .map_err(store_error)?;
                return Ok(updated);
            }
            let mut link = key(format!("RUNSHARE#{}", share.run_id), "SHARE");
            link.insert("shareId".into(), s(share.share_id.as_str()));
            let items = vec![
                put(link, &self.table, Some("attribute_not_exists(pk)"))?,
                put(
                    item(&share, format!("SHARE#{}", share.share_id), "SHARE")?,
                    &self.table,
                    None,
                )?,
            ];
            match self.transact(items).await? {
                Ok(()) => return Ok(share),
                // Shared meanwhile by another request: read that one.
                Err(_) => backoff(attempt).await,
            }
        }
        Err(StoreError::unavailable("share: too many conflicts"))
    }

    async fn unshare_run(&self, run_id: &RunId) -> StoreResult<bool> {
        let Some(share_id) = self
            .link(format!("RUNSHARE#{run_id}"), "SHARE", "shareId")
            .await?
        else {
            return Ok(false);
        };
        let delete = |pk: String| {
            Delete::builder()
                .table_name(&self.table)
                .set_key(Some(key(pk, "SHARE")))
                .build()
                .map(|d| TransactWriteItem::builder().delete(d).build())
                .map_err(err)
        };
        let items = vec![
            delete(format!("RUNSHARE#{run_id}"))?,
            delete(format!("SHARE#{share_id}"))?,
        ];
        match self.transact(items).await? {
            Ok(()) => Ok(true),
            Err(_) => Err(StoreError::unavailable("unshare: a conflict; try again")),
        }
    }

    async fn share(&self, share_id: &ShareId) -> StoreResult<Option<Share>> {
        self.get_as(format!("SHARE#{share_id}"), "SHARE").await
    }

    async fn run_share(&self, run_id: &RunId) -> StoreResult<Option<Share>> {
        match self
            .link(format!("RUNSHARE#{run_id}"), "SHARE", "shareId")
            .await?
        {
            Some(id) => self.share(&ShareId::from(id.as_str())).await,
            None => Ok(None),
        }
    }
}

#[async_trait]
impl DeliveryStore for DynamoStore {
    async fn webhook_secret(&self, user_id: &UserId) -> StoreResult<Option<WebhookSecret>> {
        let item = self.get(format!("SECRET#{user_id}"), "WEBHOOK").await?;
        Ok(item
            .as_ref()
            .and_then(|i| i.get("secret"))
            .and_then(|v| v.as_s().ok())
            .and_then(|raw| WebhookSecret::parse(raw)))
    }

    async fn put_webhook_secret(
        &self,
        user_id: &UserId,
        secret: WebhookSecret,
        replace: bool,
    ) -> StoreResult<WebhookSecret> {
        let mut item = key(format!("SECRET#{user_id}"), "WEBHOOK");
        item.insert("secret".into(), s(secret.as_str()));
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        if !replace {
            put = put.condition_expression("attribute_not_exists(pk)");
        }
        if conditional(put.send().await)? {
            return Ok(secret);
        }
        // Another first read made one meanwhile: that one is the user's.
        self.webhook_secret(user_id)
            .await?
            .ok_or_else(|| StoreError::new("a webhook secret vanished while made"))
    }

    async fn deliveries(&self, run_id: &RunId) -> StoreResult<Vec<Delivery>> {
        let mut out = self
            .query_all(&format!("HOOKS#{run_id}"))
            .await?
            .into_iter()
            .map(delivery_from_item)
            .collect::<StoreResult<Vec<_>>>()?;
        out.sort_by_key(|d| d.created_at);
        Ok(out)
    }

    async fn delivery(&self, run_id: &RunId, webhook_id: &str) -> StoreResult<Option<Delivery>> {
        self.get(format!("HOOKS#{run_id}"), webhook_id)
            .await?
            .map(delivery_from_item)
            .transpose()
    }

    async fn record_attempt(
        &self,
        run_id: &RunId,
        webhook_id: &str,
        attempt: Attempt,
    ) -> StoreResult<bool> {
        let Some(mut delivery) = self.delivery(run_id, webhook_id).await? else {
            return Ok(false);
        };
        let before = delivery.attempts.len();
        if before as u32 + 1 != attempt.attempt || !delivery.is_pending() {
            return Ok(false);
        }
        delivery.next_at = attempt.next_at;
        delivery.attempts.push(attempt);
        // Only over the delivery as it was read: one record per attempt number.
        let sent = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.delivery_item(&delivery)?))
            .condition_expression("attemptCount = :before")
            .expression_attribute_values(":before", n(before))
            .send()
            .await;
        conditional(sent)
    }

    async fn due_deliveries(&self, at: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Delivery>> {
        // Pending deliveries are few (each is done within a day): read every shard, keep the due.
        let mut due = Vec::new();
        for i in 0..UNFINISHED_SHARDS {
            let named = self.index_shard(format!("h{i:02}")).await?;
            for it in self.items_named(named).await? {
                if !it.contains_key("unfinished") {
                    continue; // delivered since the index was read
                }
                let delivery = delivery_from_item(it)?;
                if delivery.next_at.is_some_and(|next| next <= at) {
                    due.push(delivery);
                }
            }
        }
        due.sort_by_key(|d| d.next_at);
        due.truncate(limit);
        Ok(due)
    }
}

#[async_trait]
impl CostStore for DynamoStore {
    async fn record_tool_cost(&self, tool: &str, pts: i64) -> StoreResult<()> {
        // A shard picked at random: every step of a busy spell adds to the same counter, and
        // one key takes about 1,000 writes a second; 16 shards take 16 times that.
        let shard = rand::random::<u32>() % TOOLCOST_SHARDS;
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("TOOLCOST#{shard:02}"), tool)))
            .update_expression("ADD calls :one, pts :pts SET tool = :tool")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":pts", n(pts))
            .expression_attribute_values(":tool", s(tool))
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn tool_costs(&self) -> StoreResult<Vec<ToolCostTotal>> {
        // Every shard, and the single key counters were kept under before they were sharded.
        let mut totals: std::collections::BTreeMap<String, ToolCostTotal> = Default::default();
        let keys = (0..TOOLCOST_SHARDS)
            .map(|i| format!("TOOLCOST#{i:02}"))
            .chain(["TOOLCOST".to_owned()]);
        for pk in keys {
            for item in self.query_all(&pk).await? {
                let part: ToolCostTotal = from_item(item)?;
                let total = totals
                    .entry(part.tool.clone())
                    .or_insert_with(|| ToolCostTotal {
                        tool: part.tool.clone(),
                        calls: 0,
                        pts: 0,
                    });
                total.calls += part.calls;
                total.pts += part.pts;
            }
        }
        Ok(totals.into_values().collect())
    }

    async fn save_spell_stats(&self, stats: &[SpellStats]) -> StoreResult<()> {
        for s in stats {
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item(s, "STATS", s.slug.clone())?))
                .send()
                .await
                .map_err(store_error)?;
        }
        Ok(())
    }

    async fn spell_stats(&self) -> StoreResult<Vec<SpellStats>> {
        self.query_all("STATS")
            .await?
            .into_iter()
            .map(from_item)
            .collect()
    }
}

#[async_trait]
impl UploadStore for DynamoStore {
    async fn put_upload(&self, upload: &Upload) -> StoreResult<()> {
        let mut it = item(upload, format!("UPLOAD#{}", upload.upload_id), "UPLOAD")?;
        // DynamoDB deletes it after it expires (within a day or two: the cast judges by
        // `expiresAt`, not by whether the item is still there).
        it.insert("ttl".into(), n(upload.expires_at.timestamp()));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(it))
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn upload(&self, upload_id: &UploadId) -> StoreResult<Option<Upload>> {
        self.get_as(format!("UPLOAD#{upload_id}"), "UPLOAD").await
    }
}

#[async_trait]
impl RateLimiter for DynamoStore {
    /// One atomic `ADD` per hit on the window's counter, so every instance counts the same
    /// window; DynamoDB deletes the counter after its window (`ttl`).
    async fn hit(&self, limit: &Limit, subject: &str, now: DateTime<Utc>) -> StoreResult<Verdict> {
        let (start, end) = limit.window_of(now);
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(
                format!("RATE#{}#{subject}", limit.name),
                start.to_string(),
            )))
            .update_expression("ADD hits :one SET #ttl = if_not_exists(#ttl, :ttl)")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":ttl", n(end.timestamp() + 60))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(store_error)?;
        let hits = out
            .attributes
            .as_ref()
            .map_or(0, |item| number(item, "hits"));
        Ok(limit.verdict(hits.max(0) as u64, end, now))
    }
}

impl DynamoStore {
    /// One more open stream on counter `pk`, if it is under `cap`; the lease moves to `until`.
    /// Counts one more open stream on counter `pk` if it is below `cap`: `false` when full.
    async fn stream_slot_take(
        &self,
        pk: String,
        cap: u32,
        until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let sent = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, "OPEN")))
            .update_expression(
                "SET #open = if_not_exists(#open, :zero) + :one, leaseUntil = :until, #ttl = :ttl",
            )
            .condition_expression("attribute_not_exists(#open) OR #open < :cap")
            .expression_attribute_names("#open", "open")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":cap", n(cap))
            .expression_attribute_values(":until", n(until.timestamp()))
            .expression_attribute_values(":ttl", n(until.timestamp() + 3600))
            .send()
            .await;
        conditional(sent)
    }

    /// Takes a slot on counter `pk`, once more after zeroing it if its lease ended (slots of
    /// crashed streams): `false` when full.
    async fn stream_slot_take_or_heal(
        &self,
        pk: &str,
        cap: u32,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        if self.stream_slot_take(pk.to_owned(), cap, until).await? {
            return Ok(true);
        }
        self.stream_slots_expire(pk.to_owned(), now).await?;
        self.stream_slot_take(pk.to_owned(), cap, until).await
    }

    /// Counts one open stream less on counter `pk` (never below zero).
    async fn stream_slot_give_back(&self, pk: String) -> StoreResult<()> {
        let given = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, "OPEN")))
            .update_expression("SET #open = #open - :one")
            .condition_expression("#open > :zero")
            .expression_attribute_names("#open", "open")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        // Already zero: the counter expired and was reset meanwhile.
        unless_condition_failed(given)
    }

    /// Zeroes counter `pk` if its lease ended before `now`: every stream counted there took its
    /// slot over a lease ago and has ended, so slots its crashed streams never gave back are
    /// free again. Conditional, so a take racing with it is not lost.
    async fn stream_slots_expire(&self, pk: String, now: DateTime<Utc>) -> StoreResult<()> {
        let reset = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, "OPEN")))
            .update_expression("SET #open = :zero")
            .condition_expression("leaseUntil < :now")
            .expression_attribute_names("#open", "open")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", n(now.timestamp()))
            .send()
            .await;
        unless_condition_failed(reset)
    }
}

/// The keys of the open-stream counters of a user and of a run.
fn stream_counters(user: &UserId, run: &RunId) -> [String; 2] {
    [format!("STREAMS#USER#{user}"), format!("STREAMS#RUN#{run}")]
}

#[async_trait]
impl StreamSlots for DynamoStore {
    /// Two conditional counters, each one plain write (a transaction of both cost twice, and
    /// a slot is taken and given back by every stream): the run's first — the narrower, where
    /// watchers of one run race —, then the user's; a user who is full gives the run's slot
    /// back. Neither counter ever passes its cap.
    async fn take(
        &self,
        user: &UserId,
        run: &RunId,
        caps: &StreamCaps,
        now: DateTime<Utc>,
    ) -> StoreResult<Slot> {
        let until = now + chrono::Duration::from_std(caps.lease).map_err(StoreError::from_err)?;
        let [user_pk, run_pk] = stream_counters(user, run);
        if !self
            .stream_slot_take_or_heal(&run_pk, caps.per_run, until, now)
            .await?
        {
            return Ok(Slot::RunFull);
        }
        match self
            .stream_slot_take_or_heal(&user_pk, caps.per_user, until, now)
            .await
        {
            Ok(true) => Ok(Slot::Taken),
            Ok(false) => {
                self.stream_slot_give_back(run_pk).await?;
                Ok(Slot::UserFull)
            }
            Err(e) => {
                self.stream_slot_give_back(run_pk).await?;
                Err(e)
            }
        }
    }

    async fn give_back(&self, user: &UserId, run: &RunId) -> StoreResult<()> {
        for pk in stream_counters(user, run) {
            self.stream_slot_give_back(pk).await?;
        }
        Ok(())
    }
}
