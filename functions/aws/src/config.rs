//! One `SdkConfig` per process, with timeouts, so a slow AWS call fails instead of hanging a run.

use std::time::Duration;

use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

/// Loads the AWS configuration from the environment (region, credentials, `AWS_ENDPOINT_URL` for
/// DynamoDB-compatible servers in tests) with timeouts fit for AWS: 3 s to connect, 5 s per
/// attempt, 15 s per operation.
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

/// The configuration for a slow engine (a test server answering one request at a time): every
/// timeout is `timeout`, and stalled-stream protection, whose grace period suits AWS, is off.
pub async fn load_sdk_config_for_slow_engine(timeout: Duration) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(timeout)
                .operation_attempt_timeout(timeout)
                .operation_timeout(timeout * 2)
                .build(),
        )
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .load()
        .await
}
