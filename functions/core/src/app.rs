//! The application: configuration plus the adapters behind each port, assembled once by an entry
//! point's `main` and shared by every handler, the runner and the recovery sweeper.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::TokenKeys;
use crate::catalog::Catalog;
use crate::ports::{Clock, EventBus, RunSignal, Store};
use crate::stats::PriceBook;
use crate::tools::Toolbox;

/// Settings that differ between deployments.
#[derive(Debug, Clone)]
pub struct Config {
    /// The public origin, for absolute URLs in og tags (`https://spellcast.example`).
    pub public_url: String,
    /// The site name shown in shares.
    pub site_name: String,
    /// How long a quote stays payable.
    pub invoice_ttl: chrono::Duration,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl: chrono::Duration,
    /// How long a demo session lasts.
    pub session_ttl: chrono::Duration,
    /// How often an idle stream sends `: ping`.
    pub heartbeat: Duration,
    /// When a stream closes by itself so the client resumes (below the platform's limit).
    pub stream_limit: Duration,
    /// After this, a queued run's start event is presumed lost and published again.
    pub republish_after: chrono::Duration,
    /// The stats webhook's HMAC secret; without one the webhook refuses every call.
    pub webhook_secret: Option<Vec<u8>>,
}

impl Config {
    /// Defaults for a deployment at `public_url`.
    pub fn new(public_url: impl Into<String>) -> Self {
        Config {
            public_url: public_url.into().trim_end_matches('/').to_owned(),
            site_name: "Spellcast".into(),
            invoice_ttl: chrono::Duration::minutes(10),
            idempotency_ttl: chrono::Duration::hours(24),
            session_ttl: chrono::Duration::hours(24),
            heartbeat: Duration::from_secs(15),
            stream_limit: Duration::from_secs(14 * 60),
            republish_after: chrono::Duration::seconds(10),
            webhook_secret: None,
        }
    }
}

/// Renders the process's metrics in Prometheus text format (the local server has one).
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Everything a handler needs.
pub struct App {
    /// Settings.
    pub config: Config,
    /// The spells.
    pub catalog: Catalog,
    /// The tools their steps call.
    pub tools: Toolbox,
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// Execution events.
    pub bus: Arc<dyn EventBus>,
    /// Live run changes, for streams.
    pub signal: Arc<dyn RunSignal>,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// Token signing and verification.
    pub keys: TokenKeys,
    /// Cached spell prices.
    pub prices: PriceBook,
    /// `/metrics`, where the entry point serves it.
    pub metrics: Option<MetricsRender>,
}
