//! The HTTP layer: requests mapped to the core's use cases, outcomes mapped to responses and
//! problem+json, as plain functions of `http::Request<Bytes>` to `http::Response<Body>`. The
//! local server (hyper) serves [`ALL`] endpoints; each Lambda (`lambda_http`) serves its own,
//! named at compile time, so it links only their handlers. Also the og page and the crawler list.

mod admin;
#[cfg(feature = "cards")]
mod cards;
mod cast;
pub mod crawlers;
mod me;
pub mod memo;
pub mod og;
mod payments;
pub mod problem;
mod runs;
pub mod shares;
mod sign_in;
mod spells;
mod stats;
mod stream;
mod uploads;
pub use stream::frame as sse_frame;

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use http::{header, HeaderValue, Method, StatusCode};
use serde_json::Value;
use tracing::Instrument;

pub use admin::AdminCaller;
pub use problem::Problem;
use spellcast_application::App;
use spellcast_domain::limits::{Limit, Verdict};

use crate::memo::Memo;
use spellcast_domain::ids::Slug;

/// Request bodies over this many bytes get 413 (but an upload's bytes: [`body_limit`]).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The largest body a request to `path` may carry: an upload's bytes may be as large as a
/// file input takes; everything else is JSON of at most [`MAX_BODY_BYTES`].
pub fn body_limit(path: &str) -> usize {
    if UPLOAD_CONTENT.matches(path).is_some() {
        spellcast_domain::uploads::MAX_UPLOAD_BYTES as usize
    } else {
        MAX_BODY_BYTES
    }
}

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
pub type Handled = Result<Response, Problem>;

/// The request id: the client's `x-request-id` if it sent a sane one, else a new one.
pub fn request_id(req: &http::request::Parts) -> String {
    req.headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| ulid::Ulid::new().to_string())
}

/// Renders the process's metrics in Prometheus text format (the local server has one).
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// What the HTTP layer serves: the application, and what only the HTTP layer uses. Derefs to
/// the [`App`], whose use cases the handlers call.
pub struct Api {
    /// The application.
    pub app: Arc<App>,
    /// Rendered public answers (meta, og pages, cards), kept while what they show is unchanged.
    pub memo: Memo,
    /// The site name shown in shared links and cards.
    pub site_name: String,
    /// How often an idle stream sends `: ping`.
    pub heartbeat: std::time::Duration,
    /// `/metrics`, where the entry point serves it.
    pub metrics: Option<MetricsRender>,
}

impl Api {
    /// How often an idle stream sends `: ping` unless configured otherwise (inside CloudFront's
    /// 30 s default origin read timeout).
    pub const HEARTBEAT_MS: u64 = 15_000;

    /// Serves `app` as "Spellcast", with the default heartbeat and no metrics.
    pub fn new(app: Arc<App>) -> Api {
        Api {
            app,
            memo: Memo::default(),
            site_name: "Spellcast".into(),
            heartbeat: std::time::Duration::from_millis(Self::HEARTBEAT_MS),
            metrics: None,
        }
    }
}

impl std::ops::Deref for Api {
    type Target = App;

    fn deref(&self) -> &App {
        &self.app
    }
}

/// The handler of an endpoint: the app, the request's head, its path parameters, its body.
pub type Handler = for<'a> fn(
    &'a Arc<Api>,
    &'a http::request::Parts,
    &'a [&'a str],
    Bytes,
) -> BoxFuture<'a, Handled>;

/// One endpoint: the path it answers, the methods it takes, and its handler. Each Lambda names
/// its own endpoints at compile time, so it links only their handlers; the local server serves
/// [`ALL`].
pub struct Endpoint {
    /// The path, with `{}` for each parameter (`/api/v1/spells/{}/meta`).
    pub path: &'static str,
    /// The methods it takes.
    pub methods: &'static [Method],
    /// What answers it.
    pub handler: Handler,
}

impl Endpoint {
    /// The path parameters, if `path` is this endpoint's.
    pub fn matches<'p>(&self, path: &'p str) -> Option<Vec<&'p str>> {
        let mut pattern = self.path.trim_start_matches('/').split('/');
        let mut given = path.trim_start_matches('/').split('/');
        let mut params = Vec::new();
        loop {
            match (pattern.next(), given.next()) {
                (None, None) => return Some(params),
                (Some("{}"), Some(value)) if !value.is_empty() => params.push(value),
                (Some(p), Some(value)) if p == value => {}
                _ => return None,
            }
        }
    }

    fn allows(&self, method: &Method) -> bool {
        self.methods.contains(method)
    }

    fn allow_header(&self) -> String {
        self.methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

const GET: &[Method] = &[Method::GET];
const GET_OR_HEAD: &[Method] = &[Method::GET, Method::HEAD];
const POST: &[Method] = &[Method::POST];
const PUT: &[Method] = &[Method::PUT];

/// `POST /api/v1/uploads`
pub const UPLOADS: Endpoint = Endpoint {
    path: "/api/v1/uploads",
    methods: POST,
    handler: |app, req, _, body| Box::pin(async move { uploads::request(app, req, &body).await }),
};
/// `PUT /api/v1/uploads/{uploadId}/content`: the local server's upload target (AWS hands out
/// S3 presigned URLs instead, so no Lambda serves it).
pub const UPLOAD_CONTENT: Endpoint = Endpoint {
    path: "/api/v1/uploads/{}/content",
    methods: PUT,
    handler: |app, req, p, body| Box::pin(uploads::content(app, req, p[0], body)),
};

/// `GET /api/v1/spells/{slug}/meta`
pub const META: Endpoint = Endpoint {
    path: "/api/v1/spells/{}/meta",
    methods: GET_OR_HEAD,
    handler: |app, req, p, _| Box::pin(spells::meta(app, req, p[0])),
};
/// `GET /api/v1/spells`
pub const CATALOG: Endpoint = Endpoint {
    path: "/api/v1/spells",
    methods: GET_OR_HEAD,
    handler: |app, req, _, _| Box::pin(spells::catalog(app, req)),
};
/// `GET /spells/{slug}/og`
pub const OG: Endpoint = Endpoint {
    path: "/spells/{}/og",
    methods: GET_OR_HEAD,
    handler: |app, req, p, _| Box::pin(async move { spells::og(app, req, p[0]) }),
};
/// `GET|HEAD /spells/{slug}/og.png`: the card of a spell without a picture of its own
#[cfg(feature = "cards")]
pub const SPELL_CARD: Endpoint = Endpoint {
    path: "/spells/{}/og.png",
    methods: GET_OR_HEAD,
    handler: |app, req, p, _| Box::pin(spells::card(app, req, p[0])),
};
/// `POST /api/v1/payments/invoice`
pub const INVOICE: Endpoint = Endpoint {
    path: "/api/v1/payments/invoice",
    methods: POST,
    handler: |app, req, _, body| Box::pin(async move { payments::invoice(app, req, &body).await }),
};
/// `POST /api/v1/spells/cast`
pub const CAST: Endpoint = Endpoint {
    path: "/api/v1/spells/cast",
    methods: POST,
    handler: |app, req, _, body| Box::pin(async move { cast::cast(app, req, &body).await }),
};
/// `GET /api/v1/spells/{slug}/stream`
pub const STREAM: Endpoint = Endpoint {
    path: "/api/v1/spells/{}/stream",
    methods: GET,
    handler: |app, req, p, _| Box::pin(stream::stream(app, req, p[0])),
};
/// `GET /api/v1/runs/{runId}`
pub const RUN_SNAPSHOT: Endpoint = Endpoint {
    path: "/api/v1/runs/{}",
    methods: GET,
    handler: |app, req, p, _| Box::pin(runs::snapshot(app, req, p[0])),
};
/// `GET /api/v1/runs/{runId}/outputs/{n}`
pub const RUN_OUTPUT: Endpoint = Endpoint {
    path: "/api/v1/runs/{}/outputs/{}",
    methods: GET,
    handler: |app, req, p, _| Box::pin(runs::output(app, req, p[0], p[1])),
};
/// `POST /api/v1/runs/{runId}/cancel`
pub const RUN_CANCEL: Endpoint = Endpoint {
    path: "/api/v1/runs/{}/cancel",
    methods: POST,
    handler: |app, req, p, _| Box::pin(runs::cancel(app, req, p[0])),
};
/// `GET /api/v1/runs/{runId}/webhooks`
pub const RUN_WEBHOOKS: Endpoint = Endpoint {
    path: "/api/v1/runs/{}/webhooks",
    methods: GET,
    handler: |app, req, p, _| Box::pin(runs::webhooks(app, req, p[0])),
};
/// `GET|POST|DELETE /api/v1/runs/{runId}/share`
pub const RUN_SHARE: Endpoint = Endpoint {
    path: "/api/v1/runs/{}/share",
    methods: &[Method::GET, Method::POST, Method::DELETE],
    handler: |app, req, p, body| {
        Box::pin(async move { shares::share(app, req, p[0], &body).await })
    },
};
/// `GET /api/v1/shares/{shareId}`
pub const SHARED_RUN: Endpoint = Endpoint {
    path: "/api/v1/shares/{}",
    methods: GET,
    handler: |app, _, p, _| Box::pin(shares::shared(app, p[0])),
};
/// `GET /api/v1/shares/{shareId}/outputs/{n}`
pub const SHARED_OUTPUT: Endpoint = Endpoint {
    path: "/api/v1/shares/{}/outputs/{}",
    methods: GET,
    handler: |app, _, p, _| Box::pin(shares::shared_output(app, p[0], p[1])),
};
/// `GET|HEAD /r/{shareId}/og`: a shared run's og page (crawlers are sent here)
pub const SHARE_OG: Endpoint = Endpoint {
    path: "/r/{}/og",
    methods: GET_OR_HEAD,
    handler: |app, req, p, _| Box::pin(shares::og(app, req, p[0])),
};
/// `GET|HEAD /r/{shareId}/og.png`: a shared run's card
#[cfg(feature = "cards")]
pub const SHARE_CARD: Endpoint = Endpoint {
    path: "/r/{}/og.png",
    methods: GET_OR_HEAD,
    handler: |app, req, p, _| Box::pin(shares::card(app, req, p[0])),
};
/// `GET /api/v1/me/balance`
pub const BALANCE: Endpoint = Endpoint {
    path: "/api/v1/me/balance",
    methods: GET,
    handler: |app, req, _, _| Box::pin(me::balance(app, req)),
};
/// `GET /api/v1/me/runs`
pub const MY_RUNS: Endpoint = Endpoint {
    path: "/api/v1/me/runs",
    methods: GET,
    handler: |app, req, _, _| Box::pin(me::runs(app, req)),
};
/// `GET|POST /api/v1/me/webhook-secret`
pub const WEBHOOK_SECRET: Endpoint = Endpoint {
    path: "/api/v1/me/webhook-secret",
    methods: &[Method::GET, Method::POST],
    handler: |app, req, _, _| Box::pin(me::webhook_secret(app, req)),
};
/// `GET /api/v1/me/ledger`
pub const LEDGER: Endpoint = Endpoint {
    path: "/api/v1/me/ledger",
    methods: GET,
    handler: |app, req, _, _| Box::pin(me::ledger(app, req)),
};
/// `POST /api/v1/internal/stats/refresh`
pub const STATS_REFRESH: Endpoint = Endpoint {
    path: "/api/v1/internal/stats/refresh",
    methods: POST,
    handler: |app, req, _, body| Box::pin(async move { stats::refresh(app, req, &body).await }),
};
/// `POST /api/v1/payments/prepare-spell` (gone)
pub const REMOVED_PREPARE: Endpoint = Endpoint {
    path: "/api/v1/payments/prepare-spell",
    methods: POST,
    handler: |_, _, _, _| Box::pin(async { Ok(payments::removed()) }),
};
/// `POST /api/v1/payments/confirm` (gone)
pub const REMOVED_CONFIRM: Endpoint = Endpoint {
    path: "/api/v1/payments/confirm",
    ..REMOVED_PREPARE
};
/// `POST /api/v1/dev/session`: demo sessions, in the local server only.
#[cfg(feature = "dev-session")]
pub const DEV_SESSION: Endpoint = Endpoint {
    path: "/api/v1/dev/session",
    methods: POST,
    handler: |app, req, _, body| Box::pin(async move { me::dev_session(app, req, &body).await }),
};
/// `GET /api/v1/auth/config`: which OpenID provider the page signs in with (SPEC §9.1).
pub const AUTH_CONFIG: Endpoint = Endpoint {
    path: "/api/v1/auth/config",
    methods: GET,
    handler: |app, _, _, _| Box::pin(async move { sign_in::config(app).await }),
};
/// `POST /api/v1/auth/token`: the page's sign-in code traded for the user's ID token.
pub const AUTH_TOKEN: Endpoint = Endpoint {
    path: "/api/v1/auth/token",
    methods: POST,
    handler: |app, req, _, body| Box::pin(async move { sign_in::token(app, req, &body).await }),
};
/// `POST /api/v1/admin/grants`: an administrator's grant (SPEC §9.2).
pub const ADMIN_GRANTS: Endpoint = Endpoint {
    path: "/api/v1/admin/grants",
    methods: POST,
    handler: |app, req, _, body| Box::pin(async move { admin::grant(app, req, &body).await }),
};
/// `GET /metrics`, where the entry point renders metrics (the local server).
pub const METRICS: Endpoint = Endpoint {
    path: "/metrics",
    methods: GET,
    handler: |app, req, _, _| {
        Box::pin(async move {
            match app.metrics.as_ref() {
                Some(render) => Ok(respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    render(),
                )),
                None => Err(not_found(req.uri.path())),
            }
        })
    },
};

/// The OpenAPI 3.1 document of the endpoints (`functions/http/openapi.json`; a test keeps its
/// paths and methods those of [`ALL`], and Schemathesis checks the answers against it).
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// The OpenAPI document as this process serves it: [`OPENAPI_JSON`], with what a cast's
/// `context` must be for each spell of `catalog` (its own input schema, by slug), so the document
/// says exactly what a cast accepts.
pub fn openapi_document(catalog: &spellcast_domain::catalog::Catalog) -> String {
    let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(OPENAPI_JSON) else {
        return OPENAPI_JSON.to_owned();
    };
    let variants: Vec<serde_json::Value> = catalog
        .iter()
        .map(|spell| {
            let mut inputs = spell.def.inputs.clone();
            if let Some(map) = inputs.as_object_mut() {
                // A subschema is no resource of its own: the document's dialect applies.
                map.remove("$schema");
            }
            serde_json::json!({
                "properties": {"slug": {"const": spell.slug.as_str()}, "context": inputs}
            })
        })
        .collect();
    if let Some(cast) = doc.pointer_mut("/components/schemas/CastRequest") {
        cast["oneOf"] = serde_json::Value::Array(variants);
    }
    doc.to_string()
}

/// `GET /api/v1/openapi.json`
pub const OPENAPI: Endpoint = Endpoint {
    path: "/api/v1/openapi.json",
    methods: GET_OR_HEAD,
    handler: |app, _, _, _| {
        Box::pin(async move {
            let mut r = respond(
                StatusCode::OK,
                "application/json",
                openapi_document(app.catalog()),
            );
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            Ok(r)
        })
    },
};

/// Every endpoint, for the local server.
pub const ALL: &[&Endpoint] = &[
    &CATALOG,
    &META,
    &OG,
    #[cfg(feature = "cards")]
    &SPELL_CARD,
    &INVOICE,
    &UPLOADS,
    &UPLOAD_CONTENT,
    &CAST,
    &STREAM,
    &RUN_SNAPSHOT,
    &RUN_OUTPUT,
    &RUN_CANCEL,
    &RUN_WEBHOOKS,
    &RUN_SHARE,
    &SHARED_RUN,
    &SHARED_OUTPUT,
    &SHARE_OG,
    #[cfg(feature = "cards")]
    &SHARE_CARD,
    &BALANCE,
    &LEDGER,
    &MY_RUNS,
    &WEBHOOK_SECRET,
    &STATS_REFRESH,
    &REMOVED_PREPARE,
    &REMOVED_CONFIRM,
    #[cfg(feature = "dev-session")]
    &DEV_SESSION,
    &AUTH_CONFIG,
    &AUTH_TOKEN,
    &ADMIN_GRANTS,
    &METRICS,
    &OPENAPI,
];

/// The header CloudFront adds to every request it sends the API (SPEC §9.3): its value is a
/// secret, so a request straight to API Gateway's own address, around CloudFront's headers and
/// any web ACL, is refused.
pub const ORIGIN_HEADER: &str = "x-spellcast-origin";

/// Whether a request came through the front door: there is no origin secret (the local server),
/// or the request carries it.
fn through_the_front_door(app: &Api, req: &http::request::Parts) -> bool {
    let Some(secret) = &app.config().origin_secret else {
        return true;
    };
    let given = req
        .headers
        .get(ORIGIN_HEADER)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    subtle::ConstantTimeEq::ct_eq(secret.as_slice(), given).into()
}

/// Answers one request with the first of `endpoints` whose path it names, else 404.
pub async fn handle(app: Arc<Api>, req: Request, endpoints: &[&Endpoint]) -> Response {
    let (parts, body) = req.into_parts();
    let id = request_id(&parts);
    let span = tracing::info_span!("request", request_id = %id, method = %parts.method, path = %parts.uri.path());
    async move {
        let response = if !through_the_front_door(&app, &parts) {
            Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Requests reach this API through its site's address only",
            )
            .into_response()
        } else if body.len() > body_limit(parts.uri.path()) {
            Problem::payload_too_large().into_response()
        } else {
            let path = parts.uri.path();
            let found = endpoints
                .iter()
                .find_map(|e| e.matches(path).map(|params| (e, params)));
            let handled = match found {
                Some((endpoint, _)) if !endpoint.allows(&parts.method) => {
                    Ok(method_not_allowed(&endpoint.allow_header()))
                }
                Some((endpoint, params)) => (endpoint.handler)(&app, &parts, &params, body).await,
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

/// The answer to a request whose body did not arrive in time, for entry points that read it
/// with a deadline.
pub fn request_timeout(parts: &http::request::Parts) -> Response {
    finish(
        Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "The request body did not arrive in time",
        )
        .into_response(),
        &request_id(parts),
    )
}

/// The Content-Security-Policy of every HTML page: scripts, styles, images and connections
/// from the site itself only (the pages have no inline script or style: keep it so), no
/// plugins, no `<base>`, and no framing (a framed page with a prefilled form could spend points
/// in one click). `blob:` images are the preview of a file the user picked, still on their
/// machine. `infra/template.yaml` sends the same from CloudFront.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self' blob:; connect-src 'self'; manifest-src 'self'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'";

/// The Referrer-Policy of every HTML page.
pub const REFERRER_POLICY: &str = "strict-origin-when-cross-origin";

/// Adds the headers every response carries (`X-Content-Type-Options: nosniff`) and, to an HTML
/// page, its Content-Security-Policy and Referrer-Policy. For every entry point: the local
/// server applies it to its static files too.
pub fn add_security_headers(headers: &mut http::HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if html {
        // A handler's own, stricter policy (an output file's sandbox) stays.
        headers
            .entry(header::CONTENT_SECURITY_POLICY)
            .or_insert(HeaderValue::from_static(CONTENT_SECURITY_POLICY));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static(REFERRER_POLICY),
        );
    }
}

fn finish(mut response: Response, request_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    add_security_headers(response.headers_mut());
    tracing::info!(status = response.status().as_u16(), "answered");
    response
}

/// The 404 problem for a path nothing answers.
pub fn not_found(path: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("Nothing at {path}"),
    )
}

/// The 405 problem with its `Allow` header (`methods`, as in `GET, HEAD`).
pub fn method_not_allowed(methods: &str) -> Response {
    let mut r = Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("Use {methods}"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(methods) {
        r.headers_mut().insert(header::ALLOW, v);
    }
    r
}

/// Room for the headers of a cacheable answer (type, caching, validator, request id and the
/// security headers): a header map made with less grows and rehashes on the way (measured: 7 %
/// of the og page's time under load).
pub const RESPONSE_HEADERS: usize = 12;

/// An empty response with room for its headers.
pub(crate) fn response(status: StatusCode, body: Body) -> Response {
    let mut r = http::Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = http::HeaderMap::with_capacity(RESPONSE_HEADERS);
    r
}

/// A whole response with a content type.
pub(crate) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response {
    let mut r = response(status, Body::Full(body.into()));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A JSON response, not cached.
pub(crate) fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    let body = match serde_json::to_string(value) {
        Ok(body) => body,
        Err(e) => return Problem::internal(e).into_response(),
    };
    let mut r = respond(status, "application/json", body);
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

/// A JSON number with no fraction, however it is written (`1080` or `1080.0`): what a document
/// calls an integer.
pub(crate) fn whole_number(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
            .map(|f| f as i64)
    })
}

/// A slug from a path or a body.
pub(crate) fn slug(raw: &str) -> Result<Slug, Problem> {
    Slug::parse(raw).ok_or_else(Problem::invalid_slug)
}

/// The site's origin for absolute URLs: the configured public URL, else (on AWS, where the
/// functions cannot know the CloudFront domain at deploy time) the host CloudFront's viewer
/// function copied into `x-spellcast-host`, else the request's `Host`.
pub(crate) fn public_origin(app: &Api, req: &http::request::Parts) -> String {
    origin_of(&app.config().public_url, &req.headers)
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

/// The bearer token of a request's `Authorization` header: the only place a session is read from
/// (SPEC §2).
pub(crate) fn bearer(req: &http::request::Parts) -> Option<String> {
    req.headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_owned())
}

/// A query parameter.
pub(crate) fn query(req: &http::request::Parts, name: &str) -> Option<String> {
    let q = req.uri.query()?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Who a request is signed in as.
pub(crate) struct SignedIn {
    /// The user.
    pub sub: spellcast_domain::ids::UserId,
}

/// The signed-in user (a Bearer session, ours or the OpenID provider's), or 401.
pub(crate) async fn session(app: &Api, req: &http::request::Parts) -> Result<SignedIn, Problem> {
    let token = bearer(req)
        .ok_or_else(|| Problem::unauthorized("Sign in: a Bearer session token is required"))?;
    signed_in(app, &token).await
}

/// The user `token` signs in, or 401.
pub(crate) async fn signed_in(app: &Api, token: &str) -> Result<SignedIn, Problem> {
    use spellcast_application::auth::TokenError;
    use spellcast_application::sign_in::SignInError;
    match app.sign_in().verify(token).await {
        Ok(sub) => Ok(SignedIn { sub }),
        Err(SignInError::Token(TokenError::Expired)) => {
            Err(Problem::unauthorized("The session has expired"))
        }
        Err(SignInError::Token(TokenError::Invalid)) => {
            Err(Problem::unauthorized("The session token is not valid"))
        }
        Err(SignInError::Store(e)) => Err(e.into()),
    }
}

/// The address of the client a request came from, as the entry point knows it (the TCP peer
/// locally), in the request's extensions: the subject of the limits on requests without a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::IpAddr);

/// Counts one hit of `subject` against `limit`: 429 `rate_limited` over it.
pub(crate) async fn rate_limit(app: &Api, limit: &Limit, subject: &str) -> Result<(), Problem> {
    match app.limiting().hit(limit, subject).await? {
        Verdict::Allowed => Ok(()),
        Verdict::Limited { retry_after_secs } => {
            tracing::info!(limit = limit.name, "rate limited");
            Err(Problem::rate_limited(limit.name, retry_after_secs))
        }
    }
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
    fn endpoints_match_their_paths_with_parameters() {
        assert_eq!(CAST.matches("/api/v1/spells/cast"), Some(vec![]));
        assert_eq!(META.matches("/api/v1/spells/a-b/meta"), Some(vec!["a-b"]));
        assert_eq!(
            RUN_OUTPUT.matches("/api/v1/runs/r1/outputs/2"),
            Some(vec!["r1", "2"])
        );
        assert_eq!(META.matches("/api/v1/spells/x/meta/extra"), None);
        assert_eq!(META.matches("/api/v1/spells//meta"), None);
        assert_eq!(RUN_SNAPSHOT.matches("/api/v1/runs/r1/outputs/2"), None);
        assert!(ALL
            .iter()
            .all(|e| e.matches("/static/js/spell-execute.js").is_none()));
    }

    /// The served document says what a cast's context must be for each spell, by slug.
    #[test]
    fn the_served_document_carries_each_spells_inputs_for_a_cast() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/spells");
        let catalog = spellcast_application::catalog_files::load_catalog(&dir).unwrap();
        let doc: Value = serde_json::from_str(&openapi_document(&catalog)).unwrap();
        let variants = doc["components"]["schemas"]["CastRequest"]["oneOf"]
            .as_array()
            .unwrap();
        assert_eq!(variants.len(), catalog.iter().count());
        let oracle = variants
            .iter()
            .find(|v| v["properties"]["slug"]["const"] == "oracle")
            .unwrap();
        let context = &oracle["properties"]["context"];
        assert_eq!(context["required"], serde_json::json!(["question"]));
        assert!(
            context.get("$schema").is_none(),
            "no dialect of its own inside the document"
        );
    }

    /// The document names exactly the endpoints there are, with their methods: it cannot drift
    /// from the routes (the bodies are checked by Schemathesis against the running server).
    #[test]
    fn the_openapi_document_names_every_endpoint_and_no_other() {
        let doc: Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            // `{slug}` and `{runId}` are this crate's `{}`.
            let pattern: String = path
                .split('/')
                .map(|s| if s.starts_with('{') { "{}" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            for method in item.as_object().unwrap().keys() {
                documented.insert((pattern.clone(), method.to_uppercase()));
            }
        }
        let mut served: std::collections::BTreeSet<(String, String)> = ALL
            .iter()
            .flat_map(|e| {
                e.methods
                    .iter()
                    .filter(|m| **m != Method::HEAD)
                    .map(move |m| (e.path.to_owned(), m.as_str().to_owned()))
            })
            .collect();
        // The demo sessions are documented (as the local server's only) whether or not this
        // build has them.
        served.insert(("/api/v1/dev/session".into(), "POST".into()));
        // The share cards too (drawn where the `cards` feature is: the og function, locally).
        served.insert(("/r/{}/og.png".into(), "GET".into()));
        served.insert(("/spells/{}/og.png".into(), "GET".into()));
        assert_eq!(documented, served);
        // Every problem response points at the one Problem schema.
        for (code, response) in doc["components"]["responses"].as_object().unwrap() {
            assert_eq!(
                response["content"]["application/problem+json"]["schema"]["$ref"],
                "#/components/schemas/Problem",
                "{code}"
            );
        }
    }

    #[test]
    fn no_two_endpoints_answer_one_path() {
        let samples = ALL.iter().map(|e| e.path.replace("{}", "x"));
        for path in samples {
            let answering = ALL.iter().filter(|e| e.matches(&path).is_some()).count();
            assert_eq!(answering, 1, "{path}");
        }
    }
}
