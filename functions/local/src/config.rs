//! Command-line flags and environment of the local server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use spellcast_application::tool_config::ToolsConfig;
use spellcast_application::Config;
use spellcast_domain::limits::{Limit, Limits, StreamCaps};

/// Spellcast as one local process: API, page, runner and stats on an embedded store.
#[derive(Debug, Parser)]
#[command(name = "spellcast-local", version)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,
    /// Where state lives: `embedded` (redb under --data-dir) or `dynamodb` (DynamoDB and
    /// EventBridge; `AWS_ENDPOINT_URL` points at a compatible server such as moto).
    #[arg(long, value_enum, default_value_t = StoreKind::Embedded)]
    pub store: StoreKind,
    /// The DynamoDB table (with `--store dynamodb`).
    #[arg(long, default_value = "spellcast", env = "SPELLCAST_TABLE")]
    pub table: String,
    /// The EventBridge bus (with `--store dynamodb`).
    #[arg(long, default_value = "spellcast", env = "SPELLCAST_EVENT_BUS")]
    pub event_bus: String,
    /// For a slow DynamoDB-compatible engine (moto in tests): the timeout of one AWS call in
    /// seconds, with stalled-stream protection off (default: AWS timeouts of 3 s to connect,
    /// 5 s per attempt, 15 s in all).
    #[arg(long)]
    pub aws_timeout_secs: Option<u64>,
    /// With `--store dynamodb`: the S3 bucket for large output files (else they go under
    /// `--data-dir`).
    #[arg(long, env = "SPELLCAST_OUTPUTS_BUCKET")]
    pub outputs_bucket: Option<String>,
    /// Create the table, the event bus and the outputs bucket if they do not exist (with
    /// `--store dynamodb`).
    #[arg(long)]
    pub create_tables: bool,
    /// Where the database lives.
    #[arg(long, default_value = "./.spellcast")]
    pub data_dir: PathBuf,
    /// Keep everything in memory; nothing is persisted.
    #[arg(long)]
    pub memory: bool,
    /// How much of the database file to keep in memory, in MiB: the bound on how far the
    /// process grows with the data (with `--memory` the data itself is in memory).
    #[arg(long, default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65536))]
    pub cache_mib: usize,
    /// The spell catalog directory.
    #[arg(long, default_value = "infra/spells")]
    pub catalog: PathBuf,
    /// The static page directory.
    #[arg(long, default_value = "static")]
    pub static_dir: PathBuf,
    /// Write the static site as served (content-hashed names, one folder per cache class) to
    /// this directory and exit: what scripts/upload-static puts in the bucket.
    #[arg(long, value_name = "DIR")]
    pub write_site: Option<PathBuf>,
    /// The public origin used in share links (default: the listening address).
    #[arg(long, env = "SPELLCAST_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Token signing secret (at least 32 bytes); default: a random one kept in the data dir.
    #[arg(long, env = "SPELLCAST_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// Secret of the stats refresh webhook; without it the webhook refuses every call.
    #[arg(long, env = "SPELLCAST_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// An OpenID provider whose tokens sign users in (SPEC §9.1), exactly as its tokens' `iss`;
    /// `http://` only on a loopback address.
    #[arg(long, env = "SPELLCAST_OIDC_ISSUER", requires = "oidc_audience")]
    pub oidc_issuer: Option<String>,
    /// The provider's client id for Spellcast: tokens must name it (`aud` or `client_id`).
    #[arg(long, env = "SPELLCAST_OIDC_AUDIENCE", requires = "oidc_issuer")]
    pub oidc_audience: Option<String>,
    /// The least time between refetches of the provider's keys for an unknown `kid`, in seconds.
    #[arg(long, default_value_t = spellcast_application::oidc::OidcSettings::REFETCH_AFTER_SECS)]
    pub oidc_refetch_secs: u64,
    /// Points granted once to each user on their first signed-in request (SPEC §9.2).
    #[arg(long, env = "SPELLCAST_WELCOME_PTS", default_value_t = 0)]
    pub welcome_pts: u32,
    /// The bearer token of `POST /api/v1/admin/grants`; without it that endpoint refuses every
    /// call.
    #[arg(long, env = "SPELLCAST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The tool configuration document (SPEC §7.4): the `http` endpoints and `llm` models
    /// spells may name, and an extra CA file. A spell naming an endpoint that is not there is
    /// left out with a warning.
    #[arg(long, value_name = "FILE", env = "SPELLCAST_TOOLS_FILE")]
    pub tools: Option<PathBuf>,
    /// The same document inline, as JSON (what `SPELLCAST_TOOLS` holds on AWS); `--tools` wins.
    #[arg(long, env = "SPELLCAST_TOOLS", hide = true)]
    pub tools_json: Option<String>,
    /// Shorthand for `http` endpoints with the default timeout (30 s) and answer size (1 MiB):
    /// `name=https://...,name2=https://...`, added to the `--tools` document.
    #[arg(long, env = "SPELLCAST_HTTP_ENDPOINTS")]
    pub http_endpoints: Option<String>,
    /// Serve `POST /api/v1/dev/session`, which grants demo points to anyone who asks, also when
    /// listening beyond loopback or on DynamoDB. Without it the demo endpoint exists only on a
    /// loopback address with the embedded store. Never on a real deployment.
    #[arg(long)]
    pub unsafe_demo_sessions: bool,
    /// Let runs send webhooks to loopback addresses, over plain http too (for tests of a
    /// receiver on this machine). Without it, deliveries go to public https addresses only.
    #[arg(long)]
    pub unsafe_webhook_loopback: bool,
    /// Divide the webhook retry delays by this (1: the real schedule of over a day; tests use
    /// 1000 to see retries within seconds).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub webhook_retry_divisor: u32,
    /// Do not execute runs (they stay queued until a process with a runner picks them up).
    #[arg(long)]
    pub no_runner: bool,
    /// Do not deliver run webhooks (they stay pending in the store for a process that does).
    #[arg(long)]
    pub no_webhooks: bool,
    /// How often recovery looks for lost or stuck runs, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub sweep_interval_ms: u64,
    /// How long a runner holds a run without writing, in milliseconds: a run whose runner was
    /// lost (the process killed) is resumed by the sweep once this ran out.
    #[arg(long, default_value_t = Config::LEASE_MS, value_parser = clap::value_parser!(u64).range(100..))]
    pub lease_ms: u64,
    /// A `time.delay` at least this long, in milliseconds, is a durable wait: the run is let go
    /// and taken up again when due (a timer here, set again from the store after a restart).
    #[arg(long, default_value_t = Config::DURABLE_WAIT_AFTER_MS)]
    pub durable_wait_after_ms: u64,
    /// After how long a queued run's start event counts as lost, in milliseconds.
    #[arg(long, default_value_t = Config::REPUBLISH_AFTER_MS)]
    pub republish_after_ms: u64,
    /// How long an upload stays usable by a cast, in seconds; one no cast used is deleted then.
    #[arg(long, default_value_t = spellcast_domain::uploads::UNUSED_TTL_SECS as u64)]
    pub upload_ttl_secs: u64,
    /// How often spell prices are recomputed, in seconds.
    #[arg(long, default_value_t = 900)]
    pub stats_interval_secs: u64,
    /// How often an idle stream sends a heartbeat, in milliseconds.
    #[arg(long, default_value_t = spellcast_http::Api::HEARTBEAT_MS)]
    pub heartbeat_ms: u64,
    /// After how long a stream closes by itself (the client resumes), in seconds.
    #[arg(long, default_value_t = Config::STREAM_LIMIT_SECS)]
    pub stream_limit_secs: u64,
    /// Quotes one user may ask for per minute (then 429 `rate_limited`).
    #[arg(long, default_value_t = Limits::INVOICES_PER_MINUTE)]
    pub invoices_per_minute: u32,
    /// Casts one user may make per minute (then 429 `rate_limited`).
    #[arg(long, default_value_t = Limits::CASTS_PER_MINUTE)]
    pub casts_per_minute: u32,
    /// Demo sessions one client address may make per minute (then 429 `rate_limited`).
    #[arg(long, default_value_t = Limits::SESSIONS_PER_MINUTE)]
    pub sessions_per_minute: u32,
    /// Open streams one user may hold (then 429 `rate_limited`).
    #[arg(long, default_value_t = StreamCaps::PER_USER)]
    pub streams_per_user: u32,
    /// Open streams one run may have (then 429 `rate_limited`).
    #[arg(long, default_value_t = StreamCaps::PER_RUN)]
    pub streams_per_run: u32,
    /// How long a quote stays payable, in seconds.
    #[arg(long, default_value_t = Config::INVOICE_TTL_SECS)]
    pub invoice_ttl_secs: u64,
    /// Open connections at most (an open stream holds one); past it, new connections wait.
    #[arg(long, default_value_t = 16_384)]
    pub max_connections: usize,
    /// A connection that has not sent a whole request head within this is closed, an idle
    /// keep-alive connection included, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// A request whose body has not arrived within this gets 408, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub body_read_timeout_ms: u64,
}

/// Where the local server keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// redb, in `--data-dir` (or memory with `--memory`).
    Embedded,
    /// DynamoDB and EventBridge.
    Dynamodb,
}

impl Args {
    /// Whether the demo session endpoint is served on `bound`: on a loopback address with the
    /// embedded store, or when asked for with `--unsafe-demo-sessions`.
    pub fn demo_sessions(&self, bound: std::net::SocketAddr) -> bool {
        self.unsafe_demo_sessions || (bound.ip().is_loopback() && self.store == StoreKind::Embedded)
    }

    /// The core's configuration.
    pub fn app_config(&self, public_url: &str) -> Config {
        let mut config = Config::new(public_url);
        config.stream_limit = Duration::from_secs(self.stream_limit_secs.max(1));
        config.republish_after = chrono::Duration::milliseconds(self.republish_after_ms as i64);
        config.lease = chrono::Duration::milliseconds(self.lease_ms as i64);
        config.durable_wait_after =
            chrono::Duration::milliseconds(self.durable_wait_after_ms as i64);
        config.invoice_ttl = chrono::Duration::seconds(self.invoice_ttl_secs.max(1) as i64);
        config.webhook_secret = self.webhook_secret.clone().map(String::into_bytes);
        config.limits = Limits::per_minute(self.invoices_per_minute, self.casts_per_minute);
        config.limits.sessions = Limit::per_minute("sessions", self.sessions_per_minute);
        config.streams_per_user = self.streams_per_user;
        config.streams_per_run = self.streams_per_run;
        config.webhook_loopback = self.unsafe_webhook_loopback;
        config.webhook_retry_divisor = self.webhook_retry_divisor;
        config.welcome_pts = i64::from(self.welcome_pts);
        config.admin_token = self.admin_token.clone().filter(|t| !t.is_empty());
        config.upload_ttl = chrono::Duration::seconds(self.upload_ttl_secs.max(1) as i64);
        config
    }

    /// The tool configuration: the `--tools` document (or `SPELLCAST_TOOLS`), with the
    /// `--http-endpoints` shorthand added.
    pub fn tools_config(&self) -> Result<ToolsConfig, String> {
        let shorthand = self.http_endpoints.as_deref();
        match &self.tools {
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                ToolsConfig::from_parts(Some(&text), shorthand)
                    .map_err(|e| format!("{}: {e}", file.display()))
            }
            None => ToolsConfig::from_parts(self.tools_json.as_deref(), shorthand),
        }
    }

    /// The OpenID provider whose tokens sign users in, if one is configured.
    pub fn oidc(&self) -> Result<Option<spellcast_application::oidc::OidcSettings>, String> {
        let (Some(issuer), Some(audience)) = (&self.oidc_issuer, &self.oidc_audience) else {
            return Ok(None);
        };
        let mut settings = spellcast_application::oidc::OidcSettings::new(issuer, audience)?;
        settings.refetch_after = Duration::from_secs(self.oidc_refetch_secs);
        Ok(Some(settings))
    }

    /// How often an idle stream sends a heartbeat.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.max(10))
    }

    /// The sweeper's period.
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms.max(50))
    }

    /// What one client may hold of the server.
    pub fn connection_limits(&self) -> crate::serve::ConnectionLimits {
        crate::serve::ConnectionLimits {
            max_connections: self.max_connections.max(1),
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms.max(1)),
        }
    }

    /// How long a request body may take to arrive.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms.max(1))
    }

    /// The stats ticker's period.
    pub fn stats_interval(&self) -> Duration {
        Duration::from_secs(self.stats_interval_secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> Args {
        Args::parse_from(["spellcast-local"].iter().chain(extra))
    }

    #[test]
    fn demo_sessions_only_on_loopback_with_the_embedded_store_unless_asked_for() {
        let loopback = "127.0.0.1:8080".parse().unwrap();
        let anywhere = "0.0.0.0:8080".parse().unwrap();
        assert!(args(&[]).demo_sessions(loopback));
        assert!(args(&[]).demo_sessions("[::1]:8080".parse().unwrap()));
        assert!(!args(&[]).demo_sessions(anywhere));
        assert!(!args(&["--store", "dynamodb"]).demo_sessions(loopback));
        assert!(args(&["--unsafe-demo-sessions"]).demo_sessions(anywhere));
        assert!(args(&["--store", "dynamodb", "--unsafe-demo-sessions"]).demo_sessions(loopback));
    }
}
