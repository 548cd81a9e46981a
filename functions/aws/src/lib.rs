//! Spellcast on AWS services: [`DynamoStore`] (the store port on DynamoDB), [`EventBridgeBus`]
//! (execution events on EventBridge), [`PollingSignal`] (streams in another process than the
//! runner learn of new events by reading the store), and [`load_sdk_config`], called once per
//! process so every client shares one `SdkConfig`.

mod config;
mod dynamo;
mod eventbridge;
mod signal;

pub use config::{load_sdk_config, load_sdk_config_for_slow_engine, sdk_defaults};
pub use dynamo::DynamoStore;
pub use eventbridge::{Entry, EventBridgeBus, PutEvents, SOURCE};
pub use signal::PollingSignal;
