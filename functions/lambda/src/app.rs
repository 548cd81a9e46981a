//! Builds the application once per execution environment (in `main`, before the first event):
//! one `SdkConfig`, the DynamoDB store, the EventBridge bus, the polling run signal, the
//! catalog compiled into the binary.

use std::path::Path;
use std::sync::Arc;

use spellcast_aws::{
    load_sdk_config, load_sdk_config_for_slow_engine, DynamoStore, EventBridgeBus, PollingSignal,
};
use spellcast_core::auth::TokenKeys;
use spellcast_core::catalog::Catalog;
use spellcast_core::ports::SystemClock;
use spellcast_core::stats::PriceBook;
use spellcast_core::tools::{HttpTool, Toolbox};
use spellcast_core::{App, Config};

use crate::settings::Settings;

include!(concat!(env!("OUT_DIR"), "/spells.rs"));

/// How long ledger entries, events and runs are kept (the table's TTL).
const RETENTION_DAYS: i64 = 30;

/// The catalog compiled into this binary, checked against `tools`.
pub fn catalog(tools: &Toolbox) -> Result<Catalog, String> {
    Catalog::from_sources(
        SPELLS.iter().map(|(name, text)| (Path::new(name), *text)),
        tools,
    )
    .map_err(|e| e.to_string())
}

/// The app for `settings`.
pub async fn build(settings: Settings) -> Result<Arc<App>, String> {
    let sdk = match settings.aws_timeout {
        Some(timeout) => load_sdk_config_for_slow_engine(timeout).await,
        None => load_sdk_config().await,
    };
    let http_tool = settings
        .http_endpoints
        .clone()
        .map(|e| HttpTool::new(e, HttpTool::DEFAULT_TIMEOUT, HttpTool::DEFAULT_MAX_BYTES));
    let tools = Toolbox::builtin(http_tool);
    let catalog = catalog(&tools)?;
    let store = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        &settings.table,
        chrono::Duration::days(RETENTION_DAYS),
    );
    let bus = EventBridgeBus::new(aws_sdk_eventbridge::Client::new(&sdk), &settings.event_bus);
    let mut config = Config::new(settings.public_url.as_str());
    config.heartbeat = settings.heartbeat;
    config.stream_limit = settings.stream_limit;
    config.republish_after = settings.republish_after;
    config.webhook_secret = settings.webhook_secret.clone();
    Ok(Arc::new(App {
        config,
        catalog,
        tools,
        store: Arc::new(store),
        bus: Arc::new(bus),
        signal: Arc::new(PollingSignal::new(settings.poll.0, settings.poll.1)),
        clock: Arc::new(SystemClock),
        keys: TokenKeys::hs256(&settings.token_secret, &settings.token_issuer)?,
        prices: PriceBook::default(),
        metrics: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_catalog_has_the_sample_spells() {
        let catalog = catalog(&Toolbox::builtin(None)).unwrap();
        let slugs: Vec<&str> = catalog.iter().map(|s| s.slug.as_str()).collect();
        for slug in ["hello-sigil", "slow-scroll", "fizzle"] {
            assert!(slugs.contains(&slug), "{slug} missing from {slugs:?}");
        }
    }
}
