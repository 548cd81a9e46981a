//! One `SdkConfig` per process, with timeouts, so a slow AWS call fails instead of hanging a run,
//! and one HTTP client: hyper 1 + rustls 0.23 on ring (the SDK's default features, which would
//! add aws-lc and the legacy hyper 0.14 + rustls 0.21 client, are off).

use std::time::Duration;

use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

/// The loader every `SdkConfig` of the project starts from: the latest behaviour version and
/// the one HTTP client. Region and credentials come from the environment (on Lambda, its
/// variables), or from the caller.
pub fn sdk_defaults() -> ConfigLoader {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest()).http_client(http)
}

/// Loads the AWS configuration from the environment (region, credentials, `AWS_ENDPOINT_URL` for
/// DynamoDB-compatible servers in tests) with timeouts fit for AWS: 3 s to connect, 5 s per
/// attempt, 15 s per operation.
pub async fn load_sdk_config() -> SdkConfig {
    sdk_defaults()
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
    sdk_defaults()
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
