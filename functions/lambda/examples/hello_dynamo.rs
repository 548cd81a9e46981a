//! The baseline `scripts/bench-lambda` measures the functions whose first answer needs one
//! DynamoDB read (meta reads the prices, the runner reads the run) against: the smallest
//! `lambda_runtime` function that reads one item with the same SDK configuration, same profile.
//! The difference to hello world is the SDK's client and the round trip, not our code.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use spellcast_aws::{sdk_config_from_environment, Timeouts};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let table = std::env::var("SPELLCAST_TABLE")?;
    let client = aws_sdk_dynamodb::Client::new(&sdk_config_from_environment(Timeouts::Aws));
    let client = &client;
    let table = &table;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let key = aws_sdk_dynamodb::types::AttributeValue::S("hello".into());
            let item = client
                .get_item()
                .table_name(table)
                .key("pk", key.clone())
                .key("sk", key)
                .send()
                .await?;
            Ok::<_, Error>(
                serde_json::json!({"found": item.item.is_some(), "event": event.payload}),
            )
        },
    ))
    .await
}
