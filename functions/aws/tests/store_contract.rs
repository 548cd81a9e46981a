//! The store contract (`spellcast-store-contract`) on DynamoDB: moto, and Amazon's DynamoDB Local
//! (which models transaction conflicts).
//!
//! The engines are reached through `SPELLCAST_MOTO_ENDPOINT` and
//! `SPELLCAST_DYNAMODB_LOCAL_ENDPOINT` (scripts/test starts both). Without an endpoint that
//! backend's tests pass by skipping, saying so — unless `SPELLCAST_REQUIRE_AWS_BACKENDS=1`
//! (set by scripts/test), where a missing endpoint fails them.

use std::sync::Arc;

use spellcast_application::ports::Store;
use spellcast_aws::DynamoStore;
use spellcast_domain::ids::new_id;

mod engines;

async fn dynamo(variable: &str) -> Option<Arc<dyn Store>> {
    let config = engines::engine(variable).await?;
    let table = format!("contract-{}", new_id("t").replace('_', "-"));
    let store = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&config),
        table,
        chrono::Duration::days(7),
    );
    store.create_table().await.unwrap();
    Some(Arc::new(store))
}

async fn moto() -> Option<Arc<dyn Store>> {
    dynamo("SPELLCAST_MOTO_ENDPOINT").await
}

async fn dynamodb_local() -> Option<Arc<dyn Store>> {
    dynamo("SPELLCAST_DYNAMODB_LOCAL_ENDPOINT").await
}

mod on_moto {
    spellcast_store_contract::store_contract!(super::moto);
}

mod on_dynamodb_local {
    spellcast_store_contract::store_contract!(super::dynamodb_local);
}
