//! The application: its configuration and the adapters behind each port, assembled once by an
//! entry point's `main` ([`App::new`]) and shared by every handler, the runner and the recovery
//! sweeper, which reach the ports only through the use cases [`App`] hands out.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::auth::TokenKeys;
use crate::oidc::{JsonFetcher, OidcSettings, OidcVerifier};
use crate::ports::Limiter;
use crate::ports::{Blobs, Clock, EventBus, RunSignal, Store};
use crate::pricing::PriceBook;
use crate::sign_in::WelcomeBook;
use crate::tools::Toolbox;
use spellcast_domain::catalog::Catalog;
use spellcast_domain::limits::{Limits, StreamCaps};

/// Settings that differ between deployments.
#[derive(Debug, Clone)]
pub struct Config {
    /// The public origin, for absolute URLs in og tags (`https://spellcast.example`).
    pub public_url: String,
    /// How long a quote stays payable.
    pub invoice_ttl: chrono::Duration,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl: chrono::Duration,
    /// How long a demo session lasts.
    pub session_ttl: chrono::Duration,
    /// When a stream closes by itself so the client resumes (below the platform's limit).
    pub stream_limit: Duration,
    /// After this, a queued run's start event is presumed lost and published again.
    pub republish_after: chrono::Duration,
    /// How long a runner holds a run without writing (SPEC §8.1): one lost for longer loses it
    /// to the next runner recovery sends.
    pub lease: chrono::Duration,
    /// A `time.delay` at least this long is a durable wait (SPEC §8.2): nothing stays alive to
    /// wait it out.
    pub durable_wait_after: chrono::Duration,
    /// A step's progress is written at most this often (its first report always is): every tick
    /// is a write of the run, which on DynamoDB is its costliest part (issue 25,
    /// `scripts/bench-cost`). Zero writes every tick.
    pub progress_every: Duration,
    /// The stats webhook's HMAC secret; without one the webhook refuses every call.
    pub webhook_secret: Option<Vec<u8>>,
    /// Rate limits per user.
    pub limits: Limits,
    /// Open streams one user may hold.
    pub streams_per_user: u32,
    /// Open streams one run may have.
    pub streams_per_run: u32,
    /// Whether a run's webhook may be plain http to a loopback address (the local server's
    /// `--unsafe-webhook-loopback`, for tests; never on AWS).
    pub webhook_loopback: bool,
    /// Divides the webhook retry delays (1: the real schedule; the local server's tests shorten
    /// it).
    pub webhook_retry_divisor: u32,
    /// How long an upload stays usable by a cast; one no cast used is deleted after it.
    pub upload_ttl: chrono::Duration,
    /// Points granted once to each user on their first signed-in request (0: none).
    pub welcome_pts: i64,
    /// The bearer token of `POST /api/v1/admin/grants` where no entry point vouches for the
    /// caller (the local server's `--admin-token`); none: only such an entry point's callers.
    pub admin_token: Option<String>,
    /// The OpenID provider whose tokens sign users in, if one is configured.
    pub oidc: Option<OidcSettings>,
    /// The value CloudFront puts in every request to the API (`x-spellcast-origin`); with one,
    /// a request without it is refused (SPEC §9.3). None: no such check (the local server).
    pub origin_secret: Option<Vec<u8>>,
}

impl Config {
    /// How long a quote stays payable unless configured otherwise.
    pub const INVOICE_TTL_SECS: u64 = 10 * 60;
    /// When a stream closes by itself unless configured otherwise: below Lambda's 15-minute
    /// limit, so the client resumes before the platform cuts it (the same locally, so both
    /// behave alike).
    pub const STREAM_LIMIT_SECS: u64 = 14 * 60;
    /// After how long a queued run's start event counts as lost unless configured otherwise.
    pub const REPUBLISH_AFTER_MS: u64 = 60_000;
    /// How long a runner holds a run without writing unless configured otherwise.
    pub const LEASE_MS: u64 = 30_000;
    /// How long a wait must be to be durable unless configured otherwise.
    pub const DURABLE_WAIT_AFTER_MS: u64 = 60_000;

    /// Defaults for a deployment at `public_url`.
    pub fn new(public_url: impl Into<String>) -> Self {
        Config {
            public_url: public_url.into().trim_end_matches('/').to_owned(),
            invoice_ttl: chrono::Duration::seconds(Self::INVOICE_TTL_SECS as i64),
            idempotency_ttl: chrono::Duration::hours(24),
            session_ttl: chrono::Duration::hours(24),
            stream_limit: Duration::from_secs(Self::STREAM_LIMIT_SECS),
            republish_after: chrono::Duration::milliseconds(Self::REPUBLISH_AFTER_MS as i64),
            lease: chrono::Duration::milliseconds(Self::LEASE_MS as i64),
            durable_wait_after: chrono::Duration::milliseconds(Self::DURABLE_WAIT_AFTER_MS as i64),
            progress_every: Duration::ZERO,
            webhook_secret: None,
            limits: Limits::default(),
            streams_per_user: StreamCaps::PER_USER,
            streams_per_run: StreamCaps::PER_RUN,
            webhook_loopback: false,
            webhook_retry_divisor: 1,
            upload_ttl: chrono::Duration::seconds(spellcast_domain::uploads::UNUSED_TTL_SECS),
            welcome_pts: 0,
            admin_token: None,
            oidc: None,
            origin_secret: None,
        }
    }

    /// The caps on open streams.
    pub fn stream_caps(&self) -> StreamCaps {
        StreamCaps::new(
            self.streams_per_user,
            self.streams_per_run,
            self.stream_limit,
        )
    }
}

/// The adapters behind the ports, as an entry point wires them.
pub struct Ports {
    /// Durable state (a function that touches only some of it still hands over the whole store).
    pub store: Arc<dyn Store>,
    /// Files: large outputs, uploads, inputs.
    pub blobs: Arc<dyn Blobs>,
    /// Execution events.
    pub bus: Arc<dyn EventBus>,
    /// Live run changes, for streams.
    pub signal: Arc<dyn RunSignal>,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// Rate limit counters and open-stream counts.
    pub limiter: Arc<dyn Limiter>,
    /// The tools steps call (none in a process that executes no runs).
    pub tools: Toolbox,
    /// Fetches the OpenID provider's documents, where one is configured (`Config::oidc`);
    /// without it the provider's tokens are refused.
    pub provider_documents: Option<Arc<dyn JsonFetcher>>,
}

/// The application, as every entry point serves it: settings, the spells, the token keys, and
/// the ports, which only the use cases it hands out reach.
pub struct App {
    config: Config,
    catalog: Catalog,
    keys: TokenKeys,
    oidc: Option<OidcVerifier>,
    store: Arc<dyn Store>,
    blobs: Arc<dyn Blobs>,
    bus: Arc<dyn EventBus>,
    signal: Arc<dyn RunSignal>,
    clock: Arc<dyn Clock>,
    limiter: Arc<dyn Limiter>,
    tools: Toolbox,
    welcomed: WelcomeBook,
    prices: PriceBook,
}

impl App {
    /// The application over `ports`: the one constructor every entry point calls.
    pub fn new(config: Config, catalog: Catalog, keys: TokenKeys, ports: Ports) -> App {
        let oidc = match (config.oidc.clone(), ports.provider_documents) {
            (Some(settings), Some(fetcher)) => Some(OidcVerifier::new(settings, fetcher)),
            (Some(_), None) => {
                tracing::error!("an OpenID provider is configured but nothing fetches its keys: its tokens are refused");
                None
            }
            (None, _) => None,
        };
        App {
            config,
            catalog,
            keys,
            oidc,
            store: ports.store,
            blobs: ports.blobs,
            bus: ports.bus,
            signal: ports.signal,
            clock: ports.clock,
            limiter: ports.limiter,
            tools: ports.tools,
            welcomed: WelcomeBook::default(),
            prices: PriceBook::default(),
        }
    }

    /// Settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The spells.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Token signing and verification.
    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    /// The OpenID provider whose tokens sign users in, if one is configured.
    pub fn oidc(&self) -> Option<&OidcVerifier> {
        self.oidc.as_ref()
    }

    /// Now, by the application's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Signing in: sessions verified, welcome grants, demo sessions.
    pub fn sign_in(&self) -> crate::sign_in::SignIn<'_> {
        crate::sign_in::SignIn {
            keys: &self.keys,
            oidc: self.oidc.as_ref(),
            welcomed: &self.welcomed,
            accounts: self.accounts(),
            clock: self.clock.as_ref(),
            welcome_pts: self.config.welcome_pts,
            session_ttl: self.config.session_ttl,
        }
    }

    /// The quoting use case, with the ports it needs.
    pub fn quotes(&self) -> crate::quote::Quotes<'_> {
        crate::quote::Quotes {
            catalog: &self.catalog,
            prices: &self.prices,
            invoices: self.store.as_ref(),
            ledger: self.store.as_ref(),
            costs: self.store.as_ref(),
            keys: &self.keys,
            clock: self.clock.as_ref(),
            invoice_ttl: self.config.invoice_ttl,
            idempotency_ttl: self.config.idempotency_ttl,
        }
    }

    /// The casting use case, with the ports it needs.
    pub fn casting(&self) -> crate::cast::Casting<'_> {
        crate::cast::Casting {
            catalog: &self.catalog,
            invoices: self.store.as_ref(),
            uploads: self.store.as_ref(),
            bus: self.bus.as_ref(),
            keys: &self.keys,
            clock: self.clock.as_ref(),
            blobs: self.blobs.as_ref(),
        }
    }

    /// Uploads (file inputs), with the ports they need.
    pub fn uploading(&self) -> crate::uploading::Uploading<'_> {
        crate::uploading::Uploading {
            store: self.store.as_ref(),
            blobs: self.blobs.as_ref(),
            keys: &self.keys,
            clock: self.clock.as_ref(),
            public_url: &self.config.public_url,
            ttl: self.config.upload_ttl,
        }
    }

    /// Balances and ledgers, with the ports they need.
    pub fn accounts(&self) -> crate::accounts::Accounts<'_> {
        crate::accounts::Accounts {
            ledger: self.store.as_ref(),
            secrets: self.store.as_ref(),
        }
    }

    /// Viewing runs, with the ports it needs.
    pub fn viewing(&self) -> crate::viewing::Viewing<'_> {
        crate::viewing::Viewing {
            runs: self.store.as_ref(),
            deliveries: self.store.as_ref(),
            blobs: self.blobs.as_ref(),
            clock: self.clock.as_ref(),
        }
    }

    /// Watching a run with a ping after `heartbeat` without a write, with the ports it needs
    /// (owned: a watch outlives its request).
    pub fn watching(&self, heartbeat: Duration) -> crate::watching::Watching {
        crate::watching::Watching {
            runs: self.store.clone(),
            signal: self.signal.clone(),
            heartbeat,
            limit: self.config.stream_limit,
        }
    }

    /// Rate limits and open-stream caps, with the ports they need.
    pub fn limiting(&self) -> crate::limiting::Limiting {
        crate::limiting::Limiting {
            limiter: self.limiter.clone(),
            clock: self.clock.clone(),
            caps: self.config.stream_caps(),
        }
    }

    /// Where run changes go.
    pub fn run_log(&self) -> crate::run_log::RunLog<'_> {
        crate::run_log::RunLog {
            runs: self.store.as_ref(),
            signal: self.signal.as_ref(),
            bus: self.bus.as_ref(),
        }
    }

    /// The runner, with the ports it needs.
    pub fn runner(&self) -> crate::runner::Runner<'_> {
        crate::runner::Runner {
            catalog: &self.catalog,
            tools: &self.tools,
            blobs: self.blobs.as_ref(),
            log: self.run_log(),
            costs: self.store.as_ref(),
            clock: self.clock.as_ref(),
            lease: self.config.lease,
            durable_wait_after: self.config.durable_wait_after,
            progress_every: self.config.progress_every,
        }
    }

    /// Canceling runs, with the ports it needs.
    pub fn canceling(&self) -> crate::cancel::Canceling<'_> {
        crate::cancel::Canceling {
            log: self.run_log(),
            clock: self.clock.as_ref(),
        }
    }

    /// Sharing runs, with the ports it needs.
    pub fn sharing(&self) -> crate::sharing::Sharing<'_> {
        crate::sharing::Sharing {
            runs: self.store.as_ref(),
            shares: self.store.as_ref(),
            clock: self.clock.as_ref(),
        }
    }

    /// Delivering webhooks through `sender`, with the ports it needs.
    pub fn delivering<'a>(
        &'a self,
        sender: &'a dyn crate::ports::WebhookSender,
    ) -> crate::delivering::Delivering<'a> {
        crate::delivering::Delivering {
            store: self.store.as_ref(),
            sender,
            clock: self.clock.as_ref(),
            retry_divisor: self.config.webhook_retry_divisor,
        }
    }

    /// Recovery, with the ports it needs.
    pub fn recovery(&self) -> crate::recovery::Recovery<'_> {
        crate::recovery::Recovery {
            catalog: &self.catalog,
            log: self.run_log(),
            deliveries: self.store.as_ref(),
            clock: self.clock.as_ref(),
            republish_after: self.config.republish_after,
        }
    }

    /// Prices: looked up, and recomputed, with the ports they need.
    pub fn pricing(&self) -> crate::pricing::Pricing<'_> {
        crate::pricing::Pricing {
            catalog: &self.catalog,
            store: self.store.as_ref(),
            clock: self.clock.as_ref(),
            book: &self.prices,
        }
    }
}
