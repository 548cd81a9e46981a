//! The test engines the AWS suites run on: the `SdkConfig` for an engine named by an environment
//! variable (scripts/test starts moto and DynamoDB Local and sets them), and test data
//! ([`fixtures`]).

pub mod fixtures;

use std::time::Duration;

use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::config::{Credentials, Region};

/// The config for the engine at `$variable`, or `None` (the test then passes by skipping, and
/// says so) — unless `SPELLCAST_REQUIRE_AWS_BACKENDS=1`, where a missing engine fails the test.
/// The value `aws` means a real AWS account: credentials and region come the usual way.
pub async fn engine(variable: &str) -> Option<SdkConfig> {
    if std::env::var(variable).as_deref() == Ok("aws") {
        return Some(spellcast_aws::sdk_defaults().load().await);
    }
    let Ok(endpoint) = std::env::var(variable) else {
        if std::env::var("SPELLCAST_REQUIRE_AWS_BACKENDS").as_deref() == Ok("1") {
            panic!("{variable} is not set, and scripts/test requires every engine");
        }
        eprintln!("skipped: {variable} is not set (scripts/test starts this engine)");
        return None;
    };
    Some(
        spellcast_aws::sdk_defaults()
            .endpoint_url(endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "test"))
            // A test engine under hundreds of concurrent requests answers slowly; slowness is
            // not what these tests are about.
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(60))
                    .operation_timeout(Duration::from_secs(180))
                    .build(),
            )
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .load()
            .await,
    )
}
