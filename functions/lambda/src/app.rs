//! Builds the application once per execution environment (in `main`, before the first event):
//! one `SdkConfig`, the DynamoDB store, the polling run signal, the catalog compiled into the
//! binary, and the event bus and tools only where the function publishes or executes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use spellcast_application::auth::TokenKeys;
use spellcast_application::ports::{
    BlobHead, Blobs, BusError, EventBus, StoreError, StoreResult, SystemClock,
};

use spellcast_application::app::Ports;
use spellcast_application::tools::Toolbox;
use spellcast_application::{App, Config};
use spellcast_aws::{
    sdk_config_from_environment, DelayQueue, DynamoStore, EventBridgeBus, PollingSignal, S3Blobs,
    Timeouts, WakeUpBus,
};
use spellcast_domain::catalog::Catalog;
use spellcast_domain::events::ExecutionStarted;
use spellcast_domain::ids::RunId;
use spellcast_http::Api;
use tracing_subscriber::filter::LevelFilter;

use crate::settings::Settings;

include!(concat!(env!("OUT_DIR"), "/spells.rs"));

/// How long ledger entries, events and runs are kept (the table's TTL).
const RETENTION_DAYS: i64 = 30;

/// The catalog compiled into this binary (its input schemas compile on first use; the test
/// below compiles them all, so a broken one fails the build's tests, not a cast).
pub fn catalog() -> Result<Catalog, String> {
    Catalog::from_sources(SPELLS.iter().map(|(name, text)| (Path::new(name), *text)))
        .map_err(|e| e.to_string())
}

/// A function's environment, read once: its settings and the AWS configuration.
pub struct Start {
    /// The settings.
    pub settings: Settings,
    sdk: SdkConfig,
}

/// Logging (JSON lines, level from `RUST_LOG`: `error` … `trace`, `off`), EMF metrics, the settings, one `SdkConfig`.
pub async fn start() -> Result<Start, crate::Error> {
    // A level, not a per-target filter: `EnvFilter` would link a regex engine into every
    // function for a setting Lambda users set as one word.
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    tracing_subscriber::fmt()
        .json()
        .with_max_level(level)
        .with_current_span(false)
        .without_time() // CloudWatch stamps each line
        .with_writer(std::io::stderr)
        .init();
    crate::emf::install();
    let mut settings = Settings::from_env()?;
    let sdk = sdk_config_from_environment(match settings.aws_timeout {
        Some(timeout) => Timeouts::SlowEngine(timeout),
        None => Timeouts::Aws,
    });
    read_secrets(&sdk, &mut settings).await?;
    Ok(Start { settings, sdk })
}

/// Reads the secrets the environment names from Secrets Manager, all at once, once per execution
/// environment (SPEC §9.3: keys never in environment variables).
async fn read_secrets(sdk: &SdkConfig, settings: &mut Settings) -> Result<(), String> {
    if settings.secret_arns.is_empty() {
        return Ok(());
    }
    let client = aws_sdk_secretsmanager::Client::new(sdk);
    let reads = settings.secret_arns.iter().map(|(arn, slot)| {
        let client = client.clone();
        async move {
            let value = client
                .get_secret_value()
                .secret_id(arn)
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "cannot read the secret {arn}: {}",
                        aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                    )
                })?
                .secret_string
                .ok_or_else(|| format!("the secret {arn} holds no string"))?;
            Ok::<_, String>((*slot, value))
        }
    });
    for read in futures::future::join_all(reads).await {
        let (slot, value) = read?;
        settings.fill(slot, value)?;
    }
    Ok(())
}

impl Start {
    /// The EventBridge bus, for functions that publish (cast, the runner, the stats sweep).
    pub fn events(&self) -> Arc<dyn EventBus> {
        Arc::new(EventBridgeBus::new(
            aws_sdk_eventbridge::Client::new(&self.sdk),
            &self.settings.event_bus,
        ))
    }

    /// The outputs bucket, for functions that write or serve large output files (the runner,
    /// `runs`).
    pub fn blobs(&self) -> Result<Arc<dyn Blobs>, String> {
        let bucket = self
            .settings
            .outputs_bucket
            .as_deref()
            .ok_or("SPELLCAST_OUTPUTS_BUCKET is not set")?;
        Ok(Arc::new(S3Blobs::new(&self.sdk, bucket)))
    }

    /// The webhooks queue, for the function that delivers webhooks.
    pub fn webhook_queue(&self) -> Result<DelayQueue, String> {
        let url = self
            .settings
            .webhooks_queue_url
            .as_deref()
            .ok_or("SPELLCAST_WEBHOOKS_QUEUE_URL is not set")?;
        Ok(DelayQueue::new(aws_sdk_sqs::Client::new(&self.sdk), url))
    }

    /// The runner's bus: EventBridge, with durable waits woken through the wake-ups queue when
    /// one is configured (else the recovery tick sends a due wait on).
    pub fn runner_events(&self) -> Arc<dyn EventBus> {
        let events = EventBridgeBus::new(
            aws_sdk_eventbridge::Client::new(&self.sdk),
            &self.settings.event_bus,
        );
        match self.settings.wake_ups_queue_url.as_deref() {
            Some(url) => Arc::new(WakeUpBus::new(
                events,
                DelayQueue::new(aws_sdk_sqs::Client::new(&self.sdk), url),
            )),
            None => Arc::new(events),
        }
    }

    /// The app on DynamoDB, publishing to `bus`, keeping large files in `blobs` and executing
    /// with `tools` (which must cover every step of the catalog when there are any).
    pub fn app(
        self,
        bus: Arc<dyn EventBus>,
        blobs: Arc<dyn Blobs>,
        tools: Toolbox,
    ) -> Result<Arc<Api>, String> {
        let settings = self.settings;
        let (catalog, left_out) = settings.tools.available(catalog()?);
        for warning in &left_out {
            tracing::warn!("{warning}");
        }
        if !tools.is_empty() {
            tools.check(&catalog)?;
        }
        let store = Arc::new(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&self.sdk),
            &settings.table,
            chrono::Duration::days(RETENTION_DAYS),
        ));
        let mut config = Config::new(settings.public_url.as_str());
        config.stream_limit = settings.stream_limit;
        config.republish_after = settings.republish_after;
        config.lease = settings.lease;
        config.durable_wait_after = settings.durable_wait_after;
        config.progress_every = settings.progress_every;
        config.webhook_secret = settings.webhook_secret.clone();
        config.limits = settings.limits;
        (config.streams_per_user, config.streams_per_run) = settings.streams;
        config.welcome_pts = settings.welcome_pts;
        config.origin_secret = settings.origin_secret.clone();
        config.oidc = settings.oidc.clone();
        let ports = Ports {
            // Rate limits are counted in the table, so they hold across instances.
            limiter: store.clone(),
            store,
            blobs,
            bus,
            signal: Arc::new(PollingSignal::new(settings.poll.0, settings.poll.1)),
            clock: Arc::new(SystemClock),
            tools,
            // The provider's HTTPS client only where there is a provider.
            provider_documents: settings.oidc.is_some().then(|| {
                Arc::new(spellcast_aws::HttpsJson::default())
                    as Arc<dyn spellcast_application::oidc::JsonFetcher>
            }),
        };
        let app = App::new(config, catalog, token_keys(&settings)?, ports);
        let mut api = Api::new(Arc::new(app));
        api.heartbeat = settings.heartbeat;
        Ok(Arc::new(api))
    }
}

/// The function's token keys: the session and invoice keys read at start; one key the invoice
/// key is derived from (tests hand one over); or, for a function that verifies and signs no
/// tokens, random keys nothing can use.
fn token_keys(settings: &Settings) -> Result<TokenKeys, String> {
    let issuer = &settings.token_issuer;
    match (&settings.token_secret, &settings.invoice_secret) {
        (Some(session), Some(invoice)) => TokenKeys::new(session, invoice, issuer),
        (Some(secret), None) => TokenKeys::hs256(secret, issuer),
        (None, _) => {
            let unused: [u8; 32] = rand::random();
            TokenKeys::hs256(&unused, issuer)
        }
    }
}

/// The bus of a function that publishes nothing: it links no EventBridge client, and a publish
/// (a wiring mistake) fails loudly instead of going nowhere.
pub struct NoEvents;

#[async_trait]
impl EventBus for NoEvents {
    async fn execution_started(&self, _event: ExecutionStarted) -> Result<(), BusError> {
        Err(BusError("this function publishes no events".into()))
    }

    async fn webhook_due(&self, _run_id: &RunId, _webhook_id: &str) -> Result<(), BusError> {
        Err(BusError("this function publishes no events".into()))
    }
}

/// What every use of [`NoBlobs`] answers.
fn no_blobs<T>() -> StoreResult<T> {
    Err(StoreError::new("this function keeps no large files"))
}

/// The large files of a function that keeps none: it links no S3 client, and a use (a wiring
/// mistake) fails loudly.
pub struct NoBlobs;

#[async_trait]
impl Blobs for NoBlobs {
    async fn put(&self, _key: &str, _mime: &str, _bytes: Vec<u8>) -> StoreResult<()> {
        no_blobs()
    }

    async fn get(&self, _key: &str) -> StoreResult<Option<Vec<u8>>> {
        no_blobs()
    }

    async fn signed_url(
        &self,
        _key: &str,
        _ttl: Duration,
        _served: &spellcast_application::ports::Served,
    ) -> StoreResult<Option<String>> {
        no_blobs()
    }

    async fn head(&self, _key: &str, _first: usize) -> StoreResult<Option<BlobHead>> {
        no_blobs()
    }

    async fn signed_put(
        &self,
        _key: &str,
        _mime: &str,
        _bytes: u64,
        _ttl: Duration,
    ) -> StoreResult<Option<spellcast_domain::uploads::SignedPut>> {
        no_blobs()
    }

    async fn copy(&self, _from: &str, _to: &str, _mime: &str) -> StoreResult<()> {
        no_blobs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_catalog_has_the_sample_spells_and_sound_schemas() {
        let catalog = catalog().unwrap();
        catalog.compile_schemas().unwrap();
        let slugs: Vec<&str> = catalog.iter().map(|s| s.slug.as_str()).collect();
        for slug in ["hello-sigil", "slow-scroll", "fizzle"] {
            assert!(slugs.contains(&slug), "{slug} missing from {slugs:?}");
        }
    }
}
