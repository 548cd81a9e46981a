//! The HTTP API as plain functions of `http::Request<Bytes>` to `http::Response<Body>`: the local
//! server (axum) and the Lambda functions (`lambda_http`) both call [`handle`].

mod cast;
mod me;
mod payments;
pub mod problem;
mod runs;
mod spells;
mod stats;
mod stream;

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use http::{header, HeaderValue, Method, StatusCode};
use serde_json::Value;
use tracing::Instrument;

use crate::auth::SessionClaims;
use crate::ids::Slug;
use crate::App;
pub use problem::Problem;

/// Request bodies over this many bytes get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A response body: whole, or streamed chunk by chunk (SSE).
pub enum Body {
    /// The whole body.
    Full(Bytes),
    /// A body written as it is produced; each item is flushed.
    Stream(BoxStream<'static, Bytes>),
}

/// A request as every entry point hands it over.
pub type Request = http::Request<Bytes>;
/// A response.
pub type Response = http::Response<Body>;

/// What a handler returns.
type Handled = Result<Response, Problem>;

/// The request id: the client's `x-request-id` if it sent a sane one, else a new one.
pub fn request_id(req: &http::request::Parts) -> String {
    req.headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| ulid::Ulid::new().to_string())
}

/// Which endpoint a path names, with its path parameters. Lambda entry points use it to serve
/// only their own endpoints; [`handle`] dispatches on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// `GET /api/v1/spells/{slug}/meta`
    Meta(&'a str),
    /// `GET /api/v1/spells/{slug}/stream`
    Stream(&'a str),
    /// `POST /api/v1/spells/cast`
    Cast,
    /// `POST /api/v1/payments/invoice`
    Invoice,
    /// `POST /api/v1/payments/{prepare-spell,confirm}` (gone)
    Removed,
    /// `GET /api/v1/runs/{runId}`
    RunSnapshot(&'a str),
    /// `GET /api/v1/runs/{runId}/outputs/{n}`
    RunOutput(&'a str, &'a str),
    /// `GET /api/v1/me/balance`
    Balance,
    /// `GET /api/v1/me/ledger`
    Ledger,
    /// `POST /api/v1/internal/stats/refresh`
    StatsRefresh,
    /// `POST /api/v1/dev/session` (local server only)
    DevSession,
    /// `GET /spells/{slug}/og`
    Og(&'a str),
    /// `GET /metrics` (local server only)
    Metrics,
}

/// The kinds of [`Endpoint`], without parameters, for naming what an entry point serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    /// See [`Endpoint::Meta`].
    Meta,
    /// See [`Endpoint::Stream`].
    Stream,
    /// See [`Endpoint::Cast`].
    Cast,
    /// See [`Endpoint::Invoice`].
    Invoice,
    /// See [`Endpoint::Removed`].
    Removed,
    /// See [`Endpoint::RunSnapshot`].
    RunSnapshot,
    /// See [`Endpoint::RunOutput`].
    RunOutput,
    /// See [`Endpoint::Balance`].
    Balance,
    /// See [`Endpoint::Ledger`].
    Ledger,
    /// See [`Endpoint::StatsRefresh`].
    StatsRefresh,
    /// See [`Endpoint::DevSession`].
    DevSession,
    /// See [`Endpoint::Og`].
    Og,
    /// See [`Endpoint::Metrics`].
    Metrics,
}

impl<'a> Endpoint<'a> {
    /// The endpoint at `path`, if any.
    pub fn of(path: &'a str) -> Option<Endpoint<'a>> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        Some(match segments.as_slice() {
            ["api", "v1", "spells", "cast"] => Endpoint::Cast,
            ["api", "v1", "spells", slug, "meta"] => Endpoint::Meta(slug),
            ["api", "v1", "spells", slug, "stream"] => Endpoint::Stream(slug),
            ["api", "v1", "payments", "invoice"] => Endpoint::Invoice,
            ["api", "v1", "payments", "prepare-spell" | "confirm"] => Endpoint::Removed,
            ["api", "v1", "runs", run_id] => Endpoint::RunSnapshot(run_id),
            ["api", "v1", "runs", run_id, "outputs", n] => Endpoint::RunOutput(run_id, n),
            ["api", "v1", "me", "balance"] => Endpoint::Balance,
            ["api", "v1", "me", "ledger"] => Endpoint::Ledger,
            ["api", "v1", "internal", "stats", "refresh"] => Endpoint::StatsRefresh,
            ["api", "v1", "dev", "session"] => Endpoint::DevSession,
            ["spells", slug, "og"] => Endpoint::Og(slug),
            ["metrics"] => Endpoint::Metrics,
            _ => return None,
        })
    }

    /// Its kind.
    pub fn kind(&self) -> EndpointKind {
        match self {
            Endpoint::Meta(_) => EndpointKind::Meta,
            Endpoint::Stream(_) => EndpointKind::Stream,
            Endpoint::Cast => EndpointKind::Cast,
            Endpoint::Invoice => EndpointKind::Invoice,
            Endpoint::Removed => EndpointKind::Removed,
            Endpoint::RunSnapshot(_) => EndpointKind::RunSnapshot,
            Endpoint::RunOutput(..) => EndpointKind::RunOutput,
            Endpoint::Balance => EndpointKind::Balance,
            Endpoint::Ledger => EndpointKind::Ledger,
            Endpoint::StatsRefresh => EndpointKind::StatsRefresh,
            Endpoint::DevSession => EndpointKind::DevSession,
            Endpoint::Og(_) => EndpointKind::Og,
            Endpoint::Metrics => EndpointKind::Metrics,
        }
    }
}

/// Handles one request.
pub async fn handle(app: Arc<App>, req: Request) -> Response {
    handle_only(app, req, None).await
}

/// Handles one request if it is for one of `serves` (every endpoint when `None`), else 404:
/// a Lambda answers only for the endpoints its permissions were granted for.
pub async fn handle_only(app: Arc<App>, req: Request, serves: Option<&[EndpointKind]>) -> Response {
    let (parts, body) = req.into_parts();
    let id = request_id(&parts);
    let span = tracing::info_span!("request", request_id = %id, method = %parts.method, path = %parts.uri.path());
    async move {
        let response = if body.len() > MAX_BODY_BYTES {
            Problem::payload_too_large().into_response()
        } else {
            let path = parts.uri.path();
            let endpoint =
                Endpoint::of(path).filter(|e| serves.is_none_or(|kinds| kinds.contains(&e.kind())));
            let handled = match endpoint {
                Some(endpoint) => route(&app, &parts, endpoint, body).await,
                None => Err(not_found(path)),
            };
            handled.unwrap_or_else(Problem::into_response)
        };
        finish(response, &id)
    }
    .instrument(span)
    .await
}

/// The answer to a request whose body was over [`MAX_BODY_BYTES`], for entry points that stop
/// reading at the limit.
pub fn payload_too_large(parts: &http::request::Parts) -> Response {
    finish(
        Problem::payload_too_large().into_response(),
        &request_id(parts),
    )
}

fn finish(mut response: Response, request_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    tracing::info!(status = response.status().as_u16(), "answered");
    response
}

fn not_found(path: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("Nothing at {path}"),
    )
}

async fn route(
    app: &Arc<App>,
    req: &http::request::Parts,
    endpoint: Endpoint<'_>,
    body: Bytes,
) -> Handled {
    let method = &req.method;
    let get = method == Method::GET;
    let post = method == Method::POST;
    let allow = |methods: &'static str| -> Handled {
        let mut r = Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("Use {methods}"),
        )
        .into_response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(methods));
        Ok(r)
    };
    let get_or_head = get || method == Method::HEAD;
    match endpoint {
        Endpoint::Meta(slug) if get_or_head => spells::meta(app, req, slug).await,
        Endpoint::Og(slug) if get_or_head => spells::og(app, req, slug),
        Endpoint::Meta(_) | Endpoint::Og(_) => allow("GET, HEAD"),
        Endpoint::Stream(slug) if get => stream::stream(app, req, slug).await,
        Endpoint::Cast if post => cast::cast(app, req, &body).await,
        Endpoint::Invoice if post => payments::invoice(app, req, &body).await,
        Endpoint::Removed => Ok(payments::removed()),
        Endpoint::RunSnapshot(run_id) if get => runs::snapshot(app, req, run_id).await,
        Endpoint::RunOutput(run_id, n) if get => runs::output(app, req, run_id, n).await,
        Endpoint::Balance if get => me::balance(app, req).await,
        Endpoint::Ledger if get => me::ledger(app, req).await,
        Endpoint::StatsRefresh if post => stats::refresh(app, req, &body).await,
        #[cfg(feature = "dev-session")]
        Endpoint::DevSession if post => me::dev_session(app, &body).await,
        #[cfg(not(feature = "dev-session"))]
        Endpoint::DevSession => Err(not_found(req.uri.path())),
        Endpoint::Metrics => match app.metrics.as_ref() {
            Some(render) if get => Ok(respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                render(),
            )),
            Some(_) => allow("GET"),
            None => Err(not_found(req.uri.path())),
        },
        Endpoint::Stream(_)
        | Endpoint::RunSnapshot(_)
        | Endpoint::RunOutput(..)
        | Endpoint::Balance
        | Endpoint::Ledger => allow("GET"),
        Endpoint::Cast | Endpoint::Invoice | Endpoint::StatsRefresh | Endpoint::DevSession => {
            allow("POST")
        }
    }
}

/// A whole response with a content type.
pub(crate) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response {
    let mut r = http::Response::new(Body::Full(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A JSON response, not cached.
pub(crate) fn json(status: StatusCode, value: &Value) -> Response {
    let mut r = respond(status, "application/json", value.to_string());
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Parses a JSON object body.
pub(crate) fn parse_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, Problem> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Problem::bad_field("", "the body must be a JSON object")),
        Err(e) => Err(Problem::bad_json(format!(
            "The body is not valid JSON: {e}"
        ))),
    }
}

/// A required string field of a body.
pub(crate) fn str_field<'a>(
    body: &'a serde_json::Map<String, Value>,
    name: &str,
) -> Result<&'a str, Problem> {
    match body.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Problem::bad_field(&format!("/{name}"), "must be a string")),
        None => Err(Problem::bad_field(&format!("/{name}"), "is required")),
    }
}

/// A slug from a path or a body.
pub(crate) fn slug(raw: &str) -> Result<Slug, Problem> {
    Slug::parse(raw).ok_or_else(Problem::invalid_slug)
}

/// The site's origin for absolute URLs: the configured public URL, else (on AWS, where the
/// functions cannot know the CloudFront domain at deploy time) the host CloudFront's viewer
/// function copied into `x-spellcast-host`, else the request's `Host`.
pub(crate) fn public_origin(app: &App, req: &http::request::Parts) -> String {
    origin_of(&app.config.public_url, &req.headers)
}

fn origin_of(configured: &str, headers: &http::HeaderMap) -> String {
    if !configured.is_empty() {
        return configured.to_owned();
    }
    let host = ["x-spellcast-host", "host"]
        .iter()
        .filter_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
        .map(|v| v.split(',').next().unwrap_or_default().trim())
        .find(|h| {
            !h.is_empty()
                && h.len() <= 253
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':')
        });
    match host {
        Some(host) => format!("https://{host}"),
        None => String::new(),
    }
}

/// The bearer token of a request, or its `token` query parameter (for `EventSource` and `<img>`).
pub(crate) fn bearer(req: &http::request::Parts) -> Option<String> {
    let header = req
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_owned());
    header.or_else(|| query(req, "token"))
}

/// A query parameter.
pub(crate) fn query(req: &http::request::Parts, name: &str) -> Option<String> {
    let q = req.uri.query()?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The signed-in user, or 401.
pub(crate) fn session(app: &App, req: &http::request::Parts) -> Result<SessionClaims, Problem> {
    let token = bearer(req)
        .ok_or_else(|| Problem::unauthorized("Sign in: a Bearer session token is required"))?;
    app.keys.verify_session(&token).map_err(|e| match e {
        crate::auth::TokenError::Expired => Problem::unauthorized("The session has expired"),
        crate::auth::TokenError::Invalid => Problem::unauthorized("The session token is not valid"),
    })
}

/// Whether `If-None-Match` matches `etag`.
pub(crate) fn not_modified(req: &http::request::Parts, etag: &str) -> bool {
    req.headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

/// A strong ETag for a body.
pub(crate) fn etag(body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("\"{}\"", hex::encode(&Sha256::digest(body)[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_is_the_configured_one_else_the_forwarded_host_else_the_host() {
        let mut headers = http::HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("abc.lambda-url.aws"));
        assert_eq!(
            origin_of("https://s.example", &headers),
            "https://s.example"
        );
        assert_eq!(origin_of("", &headers), "https://abc.lambda-url.aws");
        headers.insert(
            "x-spellcast-host",
            HeaderValue::from_static("d1.cloudfront.net"),
        );
        assert_eq!(origin_of("", &headers), "https://d1.cloudfront.net");
        headers.insert("x-spellcast-host", HeaderValue::from_static("x\"><script>"));
        assert_eq!(
            origin_of("", &headers),
            "https://abc.lambda-url.aws",
            "markup is no host"
        );
    }

    #[test]
    fn endpoints_are_classified_with_their_parameters() {
        assert_eq!(Endpoint::of("/api/v1/spells/cast"), Some(Endpoint::Cast));
        assert_eq!(
            Endpoint::of("/api/v1/spells/a-b/meta"),
            Some(Endpoint::Meta("a-b"))
        );
        assert_eq!(
            Endpoint::of("/api/v1/runs/r1/outputs/2"),
            Some(Endpoint::RunOutput("r1", "2"))
        );
        assert_eq!(
            Endpoint::of("/spells/x/og").map(|e| e.kind()),
            Some(EndpointKind::Og)
        );
        assert_eq!(Endpoint::of("/api/v1/spells/x/meta/extra"), None);
        assert_eq!(Endpoint::of("/static/js/spell-execute.js"), None);
    }
}
