//! The baseline `scripts/bench-lambda` measures the functions against: the smallest
//! `lambda_runtime` function (it echoes its event), built with the same profile.

use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(
        |event: LambdaEvent<serde_json::Value>| async move { Ok::<_, Error>(event.payload) },
    ))
    .await
}
