//! Nothing grows without bound on DynamoDB (SPEC §5.7): the items that belong to no run and no
//! ledger carry a `ttl` that the table's TTL setting acts on. Read back raw, over the wire, from
//! moto and Amazon's DynamoDB Local.

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use spellcast_aws::DynamoStore;
use spellcast_core::ids::{new_id, InvoiceId, Slug};
use spellcast_core::invoice::{InvoiceRecord, InvoiceState, IssueOutcome};
use spellcast_core::ports::Store;

mod common;

const RETENTION_DAYS: i64 = 7;

async fn invoices_expire_after_the_retention(variable: &str) {
    let Some(config) = common::engine(variable).await else {
        return;
    };
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = format!("expiry-{}", new_id("t").replace('_', "-"));
    let store = DynamoStore::new(
        client.clone(),
        table.clone(),
        chrono::Duration::days(RETENTION_DAYS),
    );
    store.create_table().await.unwrap();

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

#[tokio::test]
async fn on_moto_invoices_expire_after_the_retention() {
    invoices_expire_after_the_retention("SPELLCAST_MOTO_ENDPOINT").await;
}

#[tokio::test]
async fn on_dynamodb_local_invoices_expire_after_the_retention() {
    invoices_expire_after_the_retention("SPELLCAST_DYNAMODB_LOCAL_ENDPOINT").await;
}
