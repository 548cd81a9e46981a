//! A Lambda's settings, from its environment (set by `infra/template.yaml`). Secrets are not in
//! it: it names them (`SPELLCAST_*_ARN`) and [`crate::start`] reads them from Secrets Manager, so
//! `lambda:GetFunctionConfiguration` reveals no key. (A test may hand a key over directly.)

use std::time::Duration;

use spellcast_application::tool_config::ToolsConfig;
use spellcast_application::Config;
use spellcast_domain::limits::{Limits, StreamCaps};

/// Everything a function reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The DynamoDB table (`SPELLCAST_TABLE`).
    pub table: String,
    /// The EventBridge bus (`SPELLCAST_EVENT_BUS`).
    pub event_bus: String,
    /// The S3 bucket of large output files (`SPELLCAST_OUTPUTS_BUCKET`; the runner and `runs`).
    pub outputs_bucket: Option<String>,
    /// The webhooks queue (`SPELLCAST_WEBHOOKS_QUEUE_URL`; the webhooks function).
    pub webhooks_queue_url: Option<String>,
    /// The wake-ups queue of durable waits (`SPELLCAST_WAKE_UPS_QUEUE_URL`; the runner). Without
    /// it a due wait is sent on by the every-minute recovery tick.
    pub wake_ups_queue_url: Option<String>,
    /// A PEM file of certificate authorities trusted for webhook receivers besides the public
    /// ones (`SPELLCAST_WEBHOOK_CA_FILE`; the webhooks function).
    pub webhook_ca_file: Option<String>,
    /// The public origin, for absolute URLs (`SPELLCAST_PUBLIC_URL`; when empty, each request's
    /// forwarded host is used, as CloudFront's viewer function sets it).
    pub public_url: String,
    /// The session signing key, at least 32 bytes: the secret `SPELLCAST_SESSION_KEY_ARN`, or (tests)
    /// `SPELLCAST_TOKEN_SECRET`. None: the function verifies and signs no tokens.
    pub token_secret: Option<Vec<u8>>,
    /// The invoice signing key, another one (the secret `SPELLCAST_INVOICE_KEY_ARN`); without it
    /// one is derived from the session key (the tests' single secret).
    pub invoice_secret: Option<Vec<u8>>,
    /// The value CloudFront sends in `x-spellcast-origin` (the secret `SPELLCAST_ORIGIN_SECRET_ARN`):
    /// requests without it are refused. None: no check (the emulator tests, the admin function).
    pub origin_secret: Option<Vec<u8>>,
    /// Secrets Manager secrets to read at start: (ARN, which setting it fills).
    pub secret_arns: Vec<(String, SecretSlot)>,
    /// The issuer named in tokens (`SPELLCAST_TOKEN_ISSUER`, default `spellcast`).
    pub token_issuer: String,
    /// The stats webhook's HMAC secret (`SPELLCAST_WEBHOOK_SECRET`).
    pub webhook_secret: Option<Vec<u8>>,
    /// The OpenID provider whose tokens sign users in (`SPELLCAST_OIDC_ISSUER` and
    /// `SPELLCAST_OIDC_AUDIENCE`, its client id), if one is configured.
    pub oidc: Option<spellcast_application::oidc::OidcSettings>,
    /// Points granted once to each new user (`SPELLCAST_WELCOME_PTS`, default 0).
    pub welcome_pts: i64,
    /// How often an idle stream sends a heartbeat (`SPELLCAST_HEARTBEAT_MS`, default
    /// [`spellcast_http::Api::HEARTBEAT_MS`]).
    pub heartbeat: Duration,
    /// When a stream closes by itself (`SPELLCAST_STREAM_LIMIT_SECS`, default
    /// [`Config::STREAM_LIMIT_SECS`]).
    pub stream_limit: Duration,
    /// The stream's fastest and slowest store poll (`SPELLCAST_POLL_MS`, `SPELLCAST_POLL_MAX_MS`).
    pub poll: (Duration, Duration),
    /// After this, a queued run's start event counts as lost (`SPELLCAST_REPUBLISH_AFTER_SECS`).
    pub republish_after: chrono::Duration,
    /// How long a runner holds a run without writing (`SPELLCAST_LEASE_MS`).
    pub lease: chrono::Duration,
    /// A `time.delay` at least this long is durable (`SPELLCAST_DURABLE_WAIT_AFTER_MS`).
    pub durable_wait_after: chrono::Duration,
    /// A step's progress is written at most this often (`SPELLCAST_PROGRESS_EVERY_MS`; 0, every
    /// tick, by default: measured, 1000 ms takes slow-scroll's writes from $89 to $64 per
    /// million runs, but the stream's poll slows down in the quiet gaps it leaves, and the step
    /// → client p99 went from 226 to 770 ms; README, "What a run costs").
    pub progress_every: Duration,
    /// How long one runner invocation executes steps before it hands its run over
    /// (`SPELLCAST_HANDOVER_BUDGET_MS`; unset: until shortly before its timeout).
    pub handover_budget: Option<Duration>,
    /// Generous SDK timeouts for a slow local engine (`SPELLCAST_AWS_TIMEOUT_SECS`; unset on AWS).
    pub aws_timeout: Option<Duration>,
    /// The tool configuration (SPEC §7.4): the JSON document `SPELLCAST_TOOLS`, with the `http`
    /// shorthand `SPELLCAST_HTTP_ENDPOINTS` (`name=https://...,...`) added. Every function reads
    /// it, so all leave out the same spells; only the runner calls the endpoints.
    pub tools: ToolsConfig,
    /// Rate limits per user.
    pub limits: Limits,
    /// Open streams per user and per run.
    pub streams: (u32, u32),
}

/// Which setting a secret read at start fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSlot {
    /// [`Settings::token_secret`].
    SessionKey,
    /// [`Settings::invoice_secret`].
    InvoiceKey,
    /// [`Settings::webhook_secret`] (the stats webhook's HMAC key).
    StatsWebhookKey,
    /// [`Settings::origin_secret`].
    OriginSecret,
}

impl Settings {
    /// Puts a secret read at start where it belongs.
    pub fn fill(&mut self, slot: SecretSlot, value: String) -> Result<(), String> {
        let value = value.into_bytes();
        match slot {
            SecretSlot::SessionKey | SecretSlot::InvoiceKey if value.len() < 32 => {
                return Err(format!("the {slot:?} secret must be at least 32 bytes"))
            }
            SecretSlot::SessionKey => self.token_secret = Some(value),
            SecretSlot::InvoiceKey => self.invoice_secret = Some(value),
            SecretSlot::StatsWebhookKey => self.webhook_secret = Some(value),
            SecretSlot::OriginSecret if value.len() < 32 => {
                return Err("the origin secret must be at least 32 bytes".into())
            }
            SecretSlot::OriginSecret => self.origin_secret = Some(value),
        }
        Ok(())
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Settings, String> {
        Settings::from_vars(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// Reads settings through `var` (the environment, or a map in tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let required = |name: &str| var(name).ok_or_else(|| format!("{name} is not set"));
        let number = |name: &str, default: u64| -> Result<u64, String> {
            var(name).map_or(Ok(default), |v| {
                v.parse()
                    .map_err(|_| format!("{name} must be a whole number, not `{v}`"))
            })
        };
        let token_secret = var("SPELLCAST_TOKEN_SECRET").map(String::into_bytes);
        if token_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return Err("SPELLCAST_TOKEN_SECRET must be at least 32 bytes".into());
        }
        let secret_arns = [
            ("SPELLCAST_SESSION_KEY_ARN", SecretSlot::SessionKey),
            ("SPELLCAST_INVOICE_KEY_ARN", SecretSlot::InvoiceKey),
            ("SPELLCAST_WEBHOOK_SECRET_ARN", SecretSlot::StatsWebhookKey),
            ("SPELLCAST_ORIGIN_SECRET_ARN", SecretSlot::OriginSecret),
        ]
        .into_iter()
        .filter_map(|(name, slot)| var(name).map(|arn| (arn, slot)))
        .collect();
        let oidc = match (var("SPELLCAST_OIDC_ISSUER"), var("SPELLCAST_OIDC_AUDIENCE")) {
            (None, None) => None,
            (Some(issuer), Some(audience)) => Some(spellcast_application::oidc::OidcSettings::new(
                &issuer, &audience,
            )?),
            _ => {
                return Err("SPELLCAST_OIDC_ISSUER and SPELLCAST_OIDC_AUDIENCE go together".into())
            }
        };
        let fastest = Duration::from_millis(number("SPELLCAST_POLL_MS", 50)?.max(10));
        let slowest = Duration::from_millis(number("SPELLCAST_POLL_MAX_MS", 1000)?);
        Ok(Settings {
            table: required("SPELLCAST_TABLE")?,
            event_bus: required("SPELLCAST_EVENT_BUS")?,
            outputs_bucket: var("SPELLCAST_OUTPUTS_BUCKET"),
            webhooks_queue_url: var("SPELLCAST_WEBHOOKS_QUEUE_URL"),
            wake_ups_queue_url: var("SPELLCAST_WAKE_UPS_QUEUE_URL"),
            webhook_ca_file: var("SPELLCAST_WEBHOOK_CA_FILE"),
            public_url: var("SPELLCAST_PUBLIC_URL").unwrap_or_default(),
            token_secret,
            invoice_secret: None,
            origin_secret: None,
            secret_arns,
            token_issuer: var("SPELLCAST_TOKEN_ISSUER").unwrap_or_else(|| "spellcast".into()),
            webhook_secret: var("SPELLCAST_WEBHOOK_SECRET").map(String::into_bytes),
            oidc,
            welcome_pts: number("SPELLCAST_WELCOME_PTS", 0)? as i64,
            heartbeat: Duration::from_millis(
                number("SPELLCAST_HEARTBEAT_MS", spellcast_http::Api::HEARTBEAT_MS)?.max(10),
            ),
            stream_limit: Duration::from_secs(
                number("SPELLCAST_STREAM_LIMIT_SECS", Config::STREAM_LIMIT_SECS)?.max(1),
            ),
            poll: (fastest, slowest.max(fastest)),
            durable_wait_after: chrono::Duration::milliseconds(number(
                "SPELLCAST_DURABLE_WAIT_AFTER_MS",
                Config::DURABLE_WAIT_AFTER_MS,
            )? as i64),
            progress_every: Duration::from_millis(number("SPELLCAST_PROGRESS_EVERY_MS", 0)?),
            handover_budget: var("SPELLCAST_HANDOVER_BUDGET_MS")
                .map(|v| v.parse::<u64>().map(Duration::from_millis))
                .transpose()
                .map_err(|_| "SPELLCAST_HANDOVER_BUDGET_MS must be a whole number".to_owned())?,
            lease: chrono::Duration::milliseconds(
                number("SPELLCAST_LEASE_MS", Config::LEASE_MS)?.max(100) as i64,
            ),
            republish_after: chrono::Duration::seconds(number(
                "SPELLCAST_REPUBLISH_AFTER_SECS",
                Config::REPUBLISH_AFTER_MS / 1000,
            )? as i64),
            aws_timeout: var("SPELLCAST_AWS_TIMEOUT_SECS")
                .map(|v| v.parse::<u64>().map(Duration::from_secs))
                .transpose()
                .map_err(|_| "SPELLCAST_AWS_TIMEOUT_SECS must be a whole number".to_owned())?,
            tools: ToolsConfig::from_parts(
                var("SPELLCAST_TOOLS").as_deref(),
                var("SPELLCAST_HTTP_ENDPOINTS").as_deref(),
            )?,
            limits: Limits::per_minute(
                number(
                    "SPELLCAST_INVOICES_PER_MINUTE",
                    Limits::INVOICES_PER_MINUTE.into(),
                )? as u32,
                number(
                    "SPELLCAST_CASTS_PER_MINUTE",
                    Limits::CASTS_PER_MINUTE.into(),
                )? as u32,
            ),
            streams: (
                number("SPELLCAST_STREAMS_PER_USER", StreamCaps::PER_USER.into())? as u32,
                number("SPELLCAST_STREAMS_PER_RUN", StreamCaps::PER_RUN.into())? as u32,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const BASE: &[(&str, &str)] = &[
        ("SPELLCAST_TABLE", "t"),
        ("SPELLCAST_EVENT_BUS", "b"),
        ("SPELLCAST_PUBLIC_URL", "https://x.example"),
        ("SPELLCAST_TOKEN_SECRET", "0123456789abcdef0123456789abcdef"),
    ];

    #[test]
    fn defaults_keep_the_stream_under_the_lambda_limit() {
        let s = Settings::from_vars(vars(BASE)).unwrap();
        assert!(s.stream_limit < Duration::from_secs(15 * 60));
        assert!(
            s.heartbeat < Duration::from_secs(30),
            "inside CloudFront's read timeout"
        );
        assert_eq!(s.token_issuer, "spellcast");
        assert!(s.webhook_secret.is_none() && s.aws_timeout.is_none());
    }

    #[test]
    fn a_short_secret_is_refused_by_name() {
        let mut short = BASE[..3].to_vec();
        short.push(("SPELLCAST_TOKEN_SECRET", "short"));
        let e = Settings::from_vars(vars(&short)).unwrap_err();
        assert!(e.contains("SPELLCAST_TOKEN_SECRET"), "{e}");
        let mut s = Settings::from_vars(vars(&BASE[..3])).unwrap();
        assert!(s.fill(SecretSlot::InvoiceKey, "short".into()).is_err());
    }

    #[test]
    fn keys_are_named_by_their_secrets_not_given_in_the_environment() {
        let mut v = BASE[..3].to_vec();
        v.push((
            "SPELLCAST_SESSION_KEY_ARN",
            "arn:aws:secretsmanager:us-east-1:1:secret:s",
        ));
        v.push((
            "SPELLCAST_INVOICE_KEY_ARN",
            "arn:aws:secretsmanager:us-east-1:1:secret:i",
        ));
        let mut s = Settings::from_vars(vars(&v)).unwrap();
        assert_eq!(s.token_secret, None);
        assert_eq!(
            s.secret_arns
                .iter()
                .map(|(_, slot)| *slot)
                .collect::<Vec<_>>(),
            vec![SecretSlot::SessionKey, SecretSlot::InvoiceKey]
        );
        s.fill(SecretSlot::SessionKey, "s".repeat(40)).unwrap();
        s.fill(SecretSlot::InvoiceKey, "i".repeat(40)).unwrap();
        assert_eq!(s.token_secret.as_deref(), Some("s".repeat(40).as_bytes()));
        assert_eq!(s.invoice_secret.as_deref(), Some("i".repeat(40).as_bytes()));
    }

    #[test]
    fn a_bad_number_names_its_variable() {
        let mut v = BASE.to_vec();
        v.push(("SPELLCAST_HEARTBEAT_MS", "soon"));
        let e = Settings::from_vars(vars(&v)).unwrap_err();
        assert!(e.contains("SPELLCAST_HEARTBEAT_MS"), "{e}");
    }
}
