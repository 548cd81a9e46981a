//! Spellcast on AWS services: [`DynamoStore`] (the store port on DynamoDB), [`EventBridgeBus`]
//! (execution events on EventBridge), [`S3Blobs`] (large output files in S3), [`DelayQueue`] (webhook retries and durable waits' wake-ups on SQS, [`WakeUpBus`]), [`PollingSignal`] (streams in another process than the
//! runner learn of new events by reading the store), and the `SdkConfig` every client of a process
//! shares: [`sdk_config_from_environment`] in Lambda functions, [`load_sdk_config`] elsewhere.

mod blobs;
mod config;
mod dynamo;
mod eventbridge;
mod json_fetcher;
mod sdk_error;
mod signal;
mod sqs;

pub use blobs::S3Blobs;
pub use config::{load_sdk_config, sdk_config_from_environment, sdk_defaults, Timeouts};
pub use dynamo::DynamoStore;
pub use eventbridge::{Entry, EventBridgeBus, PutEvents, SOURCE};
pub use json_fetcher::HttpsJson;
pub use signal::PollingSignal;
pub use sqs::{DelayQueue, WakeUp, WakeUpBus, MAX_DELAY};
