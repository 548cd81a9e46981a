//! Nothing grows without bound on DynamoDB (SPEC §5.7): the items that belong to no run and no
//! ledger (invoices, rate counters) carry a `ttl` that the table's TTL setting acts on. Read back
//! raw, over the wire, from moto and Amazon's DynamoDB Local. Also: rate counters count exactly
//! and open-stream caps hold under concurrency (SPEC §2: limits hold across instances).

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use spellcast_application::ports::InvoiceStore;
use spellcast_application::ports::{RateLimiter, StreamSlots};
use spellcast_domain::ids::{InvoiceId, Slug};
use spellcast_domain::invoice::{InvoiceRecord, InvoiceState, IssueOutcome};
use spellcast_domain::limits::{Limit, Slot, StreamCaps, Verdict};

mod engines;

use engines::fixtures::{fresh_table, RETENTION_DAYS};

async fn invoices_expire_after_the_retention(variable: &str) {
    let Some((client, table, store)) = fresh_table(variable, "expiry").await else {
        return;
    };

    let ttl = client
        .describe_time_to_live()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    let description = ttl.time_to_live_description().unwrap();
    assert_eq!(description.attribute_name(), Some("ttl"));

    let now = Utc::now();
    let invoice = InvoiceRecord {
        invoice_id: InvoiceId::new(),
        user_id: "u".into(),
        slug: Slug::parse("hello-sigil").unwrap(),
        version: 1,
        cost_pts: 3,
        asset: "PTS".into(),
        issued_at: now,
        expires_at: now + chrono::Duration::minutes(10),
        state: InvoiceState::Open,
    };
    let expires_at = invoice.expires_at;
    let id = invoice.invoice_id.clone();
    assert_eq!(
        store.issue_invoice(invoice, None).await.unwrap(),
        IssueOutcome::Issued
    );
    let item = client
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S(format!("INVOICE#{id}")))
        .key("sk", AttributeValue::S("INVOICE".into()))
        .send()
        .await
        .unwrap()
        .item
        .expect("the invoice is stored");
    let ttl: i64 = item
        .get("ttl")
        .and_then(|v| v.as_n().ok())
        .expect("the invoice carries a ttl")
        .parse()
        .unwrap();
    assert_eq!(
        ttl,
        (expires_at + chrono::Duration::days(RETENTION_DAYS)).timestamp()
    );
}

async fn rate_counters_count_exactly_and_expire(variable: &str) {
    let Some((client, table, store)) = fresh_table(variable, "rate").await else {
        return;
    };
    let limit = Limit::per_minute("casts", 10);
    let now = Utc::now();
    // Hits from many "instances" at once: each is one atomic ADD, so exactly `max` pass.
    let hits = (0..40).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.hit(&limit, "user_a", now).await.unwrap() })
    });
    let verdicts = futures::future::join_all(hits).await;
    let allowed = verdicts
        .iter()
        .filter(|v| *v.as_ref().unwrap() == Verdict::Allowed)
        .count();
    assert_eq!(allowed, 10);
    assert_eq!(
        store.hit(&limit, "user_b", now).await.unwrap(),
        Verdict::Allowed
    );
    let (start, end) = limit.window_of(now);
    let item = client
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("RATE#casts#user_a".into()))
        .key("sk", AttributeValue::S(start.to_string()))
        .send()
        .await
        .unwrap()
        .item
        .expect("the counter is stored");
    let ttl: i64 = item["ttl"].as_n().unwrap().parse().unwrap();
    assert!(
        ttl > end.timestamp() && ttl <= end.timestamp() + 120,
        "{ttl}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_moto_rate_counters_count_exactly_and_expire() {
    rate_counters_count_exactly_and_expire("SPELLCAST_MOTO_ENDPOINT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_dynamodb_local_rate_counters_count_exactly_and_expire() {
    rate_counters_count_exactly_and_expire("SPELLCAST_DYNAMODB_LOCAL_ENDPOINT").await;
}

async fn stream_slots_hold_their_caps_and_heal_after_the_lease(variable: &str) {
    let Some((_, _, store)) = fresh_table(variable, "slots").await else {
        return;
    };
    let caps = StreamCaps::new(3, 2, std::time::Duration::from_secs(60));
    let now = Utc::now();
    // Many instances opening streams of one run at once: exactly the run's cap get a slot.
    let takes = (0..12).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .take(&"u".into(), &"run_1".into(), &caps, now)
                .await
                .unwrap()
        })
    });
    let slots = futures::future::join_all(takes).await;
    let taken = slots
        .iter()
        .filter(|s| *s.as_ref().unwrap() == Slot::Taken)
        .count();
    assert_eq!(taken, 2);
    assert_eq!(
        store
            .take(&"u".into(), &"run_2".into(), &caps, now)
            .await
            .unwrap(),
        Slot::Taken
    );
    assert_eq!(
        store
            .take(&"u".into(), &"run_3".into(), &caps, now)
            .await
            .unwrap(),
        Slot::UserFull
    );
    store.give_back(&"u".into(), &"run_1".into()).await.unwrap();
    assert_eq!(
        store
            .take(&"u".into(), &"run_3".into(), &caps, now)
            .await
            .unwrap(),
        Slot::Taken
    );
    // Streams that died without giving back: after the lease their slots are free again.
    let later =
        now + chrono::Duration::from_std(caps.lease).unwrap() + chrono::Duration::seconds(1);
    assert_eq!(
        store
            .take(&"u".into(), &"run_1".into(), &caps, later)
            .await
            .unwrap(),
        Slot::Taken
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_moto_stream_slots_hold_their_caps_and_heal_after_the_lease() {
    stream_slots_hold_their_caps_and_heal_after_the_lease("SPELLCAST_MOTO_ENDPOINT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_dynamodb_local_stream_slots_hold_their_caps_and_heal_after_the_lease() {
    stream_slots_hold_their_caps_and_heal_after_the_lease("SPELLCAST_DYNAMODB_LOCAL_ENDPOINT")
        .await;
}

#[tokio::test]
async fn on_moto_invoices_expire_after_the_retention() {
    invoices_expire_after_the_retention("SPELLCAST_MOTO_ENDPOINT").await;
}

#[tokio::test]
async fn on_dynamodb_local_invoices_expire_after_the_retention() {
    invoices_expire_after_the_retention("SPELLCAST_DYNAMODB_LOCAL_ENDPOINT").await;
}
