//! Test data shared by the store suites (the store contract's, and a fresh DynamoDB table on a
//! test engine).
// Each test crate that includes `common` uses a part of these.
#![allow(dead_code)]

use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use spellcast_aws::DynamoStore;
use spellcast_domain::ids::new_id;

#[allow(unused_imports)]
pub use spellcast_store_contract::fixtures::*;

/// How long the test tables keep events and idempotency keys.
pub const RETENTION_DAYS: i64 = 7;

/// A new table on the engine at `$variable` (none without one): its raw client, its name, and
/// the store on it.
pub async fn fresh_table(
    variable: &str,
    prefix: &str,
) -> Option<(Client, String, Arc<DynamoStore>)> {
    let config = super::engine(variable).await?;
    let client = Client::new(&config);
    let table = format!("{prefix}-{}", new_id("t").replace('_', "-"));
    let store = Arc::new(DynamoStore::new(
        client.clone(),
        table.clone(),
        chrono::Duration::days(RETENTION_DAYS),
    ));
    store.create_table().await.unwrap();
    Some((client, table, store))
}
