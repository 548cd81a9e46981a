//! The application: configuration plus the adapters behind each port, assembled once by an entry
//! point's `main` and shared by every handler, the runner and the recovery sweeper.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::TokenKeys;
use crate::ports::{Clock, EventBus, RunSignal, Store};
use crate::pricing::PriceBook;
use crate::tools::Toolbox;
use spellcast_domain::catalog::Catalog;

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
    /// Rate limits per user.
    pub limits: crate::limits::Limits,
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
    /// The value CloudFront puts in every request to the API (`x-spellcast-origin`); with one,
    /// a request without it is refused (SPEC §9.3). None: no such check (the local server).
    pub origin_secret: Option<Vec<u8>>,
}

impl Config {
    /// How long a quote stays payable unless configured otherwise.
    pub const INVOICE_TTL_SECS: u64 = 10 * 60;
    /// How often an idle stream sends `: ping` unless configured otherwise (inside CloudFront's
    /// 30 s default origin read timeout).
    pub const HEARTBEAT_MS: u64 = 15_000;
    /// When a stream closes by itself unless configured otherwise: below Lambda's 15-minute
    /// limit, so the client resumes before the platform cuts it (the same locally, so both
    /// behave alike).
    pub const STREAM_LIMIT_SECS: u64 = 14 * 60;
    /// After how long a queued run's start event counts as lost unless configured otherwise.
    pub const REPUBLISH_AFTER_MS: u64 = 60_000;

    /// Defaults for a deployment at `public_url`.
    pub fn new(public_url: impl Into<String>) -> Self {
        Config {
            public_url: public_url.into().trim_end_matches('/').to_owned(),
            site_name: "Spellcast".into(),
            invoice_ttl: chrono::Duration::seconds(Self::INVOICE_TTL_SECS as i64),
            idempotency_ttl: chrono::Duration::hours(24),
            session_ttl: chrono::Duration::hours(24),
            heartbeat: Duration::from_millis(Self::HEARTBEAT_MS),
            stream_limit: Duration::from_secs(Self::STREAM_LIMIT_SECS),
            republish_after: chrono::Duration::milliseconds(Self::REPUBLISH_AFTER_MS as i64),
            webhook_secret: None,
            limits: crate::limits::Limits::default(),
            streams_per_user: crate::limits::StreamCaps::PER_USER,
            streams_per_run: crate::limits::StreamCaps::PER_RUN,
            webhook_loopback: false,
            webhook_retry_divisor: 1,
            upload_ttl: chrono::Duration::seconds(spellcast_domain::uploads::UNUSED_TTL_SECS),
            welcome_pts: 0,
            admin_token: None,
            origin_secret: None,
        }
    }

    /// The caps on open streams.
    pub fn stream_caps(&self) -> crate::limits::StreamCaps {
        crate::limits::StreamCaps::new(
            self.streams_per_user,
            self.streams_per_run,
            self.stream_limit,
        )
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
    /// Large output files.
    pub blobs: Arc<dyn crate::ports::Blobs>,
    /// Execution events.
    pub bus: Arc<dyn EventBus>,
    /// Live run changes, for streams.
    pub signal: Arc<dyn RunSignal>,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// Token signing and verification.
    pub keys: TokenKeys,
    /// The OpenID provider whose tokens sign users in, if one is configured.
    pub oidc: Option<Arc<crate::oidc::OidcVerifier>>,
    /// Users known to have had their welcome grant.
    pub welcomed: WelcomeBook,
    /// Cached spell prices.
    pub prices: PriceBook,
    /// Rendered public answers (meta, og pages), kept while what they show is unchanged.
    pub rendered: crate::memo::Memo,
    /// Rate limit counters and open-stream counts.
    pub limiter: Arc<dyn crate::limits::Limiter>,
    /// `/metrics`, where the entry point serves it.
    pub metrics: Option<MetricsRender>,
}

impl App {
    /// The user a session token (ours, or the OpenID provider's) names: the one place sessions
    /// are verified. Their welcome grant is made on the first request this process sees.
    pub async fn signed_in(
        &self,
        token: &str,
    ) -> Result<spellcast_domain::ids::UserId, SignInError> {
        use crate::auth::TokenError;
        let user = match self.keys.verify_session(token) {
            Ok(claims) => claims.sub,
            Err(TokenError::Expired) => return Err(SignInError::Token(TokenError::Expired)),
            Err(TokenError::Invalid) => match &self.oidc {
                Some(provider) => provider.verify(token).await?,
                None => return Err(SignInError::Token(TokenError::Invalid)),
            },
        };
        if self.config.welcome_pts > 0 && !self.welcomed.knows(&user) {
            self.accounts()
                .welcome(&user, self.config.welcome_pts, self.clock.now())
                .await?;
            self.welcomed.remember(&user);
        }
        Ok(user)
    }

    /// The quoting use case, with the ports it needs.
    pub fn quotes(&self) -> crate::quote::Quotes<'_> {
        crate::quote::Quotes {
            catalog: &self.catalog,
            prices: &self.prices,
            store: self.store.as_ref(),
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
            store: self.store.as_ref(),
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

    /// Balances and ledgers, with the port they need.
    pub fn accounts(&self) -> crate::accounts::Accounts<'_> {
        crate::accounts::Accounts {
            store: self.store.as_ref(),
        }
    }

    /// Viewing runs, with the ports it needs.
    pub fn viewing(&self) -> crate::viewing::Viewing<'_> {
        crate::viewing::Viewing {
            store: self.store.as_ref(),
            blobs: self.blobs.as_ref(),
            clock: self.clock.as_ref(),
        }
    }

    /// Watching a run, with the ports it needs (owned: a watch outlives its request).
    pub fn watching(&self) -> crate::watching::Watching {
        crate::watching::Watching {
            store: self.store.clone(),
            signal: self.signal.clone(),
            heartbeat: self.config.heartbeat,
            limit: self.config.stream_limit,
        }
    }

    /// Where run changes go.
    pub fn run_log(&self) -> crate::runner::RunLog<'_> {
        crate::runner::RunLog {
            store: self.store.as_ref(),
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
            clock: self.clock.as_ref(),
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
            store: self.store.as_ref(),
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
            clock: self.clock.as_ref(),
            republish_after: self.config.republish_after,
        }
    }

    /// Price recomputation, with the ports it needs.
    pub fn pricing(&self) -> crate::pricing::Pricing<'_> {
        crate::pricing::Pricing {
            catalog: &self.catalog,
            store: self.store.as_ref(),
            clock: self.clock.as_ref(),
            book: &self.prices,
        }
    }
}

/// Why a request is not signed in.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The token is not good.
    #[error(transparent)]
    Token(#[from] crate::auth::TokenError),
    /// The welcome grant could not be recorded.
    #[error(transparent)]
    Store(#[from] crate::ports::StoreError),
}

/// The users this process has seen welcomed, so a signed-in request costs no store write. Bounded:
/// forgetting only costs one more (idempotent) write.
#[derive(Default)]
pub struct WelcomeBook(std::sync::Mutex<std::collections::HashSet<spellcast_domain::ids::UserId>>);

impl WelcomeBook {
    const MOST: usize = 100_000;

    fn knows(&self, user: &spellcast_domain::ids::UserId) -> bool {
        self.0.lock().is_ok_and(|set| set.contains(user))
    }

    fn remember(&self, user: &spellcast_domain::ids::UserId) {
        if let Ok(mut set) = self.0.lock() {
            if set.len() >= Self::MOST {
                set.clear();
            }
            set.insert(user.clone());
        }
    }
}
