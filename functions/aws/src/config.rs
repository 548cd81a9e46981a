//! One `SdkConfig` per process, with timeouts, so a slow AWS call fails instead of hanging a run.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

/// Loads the AWS configuration from the environment (region, credentials, `AWS_ENDPOINT_URL` for
/// DynamoDB-compatible servers in tests) with operation and attempt timeouts.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(15))
                .build(),
        )
        .load()
        .await
}
