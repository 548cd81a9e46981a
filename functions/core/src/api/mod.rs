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

/// Handles one request.
pub async fn handle(app: Arc<App>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let id = request_id(&parts);
    let span = tracing::info_span!("request", request_id = %id, method = %parts.method, path = %parts.uri.path());
    async move {
        let response = if body.len() > MAX_BODY_BYTES {
            Problem::payload_too_large().into_response()
        } else {
            match route(&app, &parts, body).await {
                Ok(r) => r,
                Err(p) => p.into_response(),
            }
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

async fn route(app: &Arc<App>, req: &http::request::Parts, body: Bytes) -> Handled {
    let path = req.uri.path();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
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
    match segments.as_slice() {
        ["api", "v1", "spells", slug, "meta"] => {
            if get || method == Method::HEAD {
                spells::meta(app, req, slug).await
            } else {
                allow("GET, HEAD")
            }
        }
        ["api", "v1", "spells", slug, "stream"] => {
            if get {
                stream::stream(app, req, slug).await
            } else {
                allow("GET")
            }
        }
        ["api", "v1", "spells", "cast"] => {
            if post {
                cast::cast(app, req, &body).await
            } else {
                allow("POST")
            }
        }
        ["api", "v1", "payments", "invoice"] => {
            if post {
                payments::invoice(app, req, &body).await
            } else {
                allow("POST")
            }
        }
        ["api", "v1", "payments", "prepare-spell" | "confirm"] => Ok(payments::removed()),
        ["api", "v1", "runs", run_id] => {
            if get {
                runs::snapshot(app, req, run_id).await
            } else {
                allow("GET")
            }
        }
        ["api", "v1", "runs", run_id, "outputs", n] => {
            if get {
                runs::output(app, req, run_id, n).await
            } else {
                allow("GET")
            }
        }
        ["api", "v1", "me", "balance"] => {
            if get {
                me::balance(app, req).await
            } else {
                allow("GET")
            }
        }
        ["api", "v1", "me", "ledger"] => {
            if get {
                me::ledger(app, req).await
            } else {
                allow("GET")
            }
        }
        ["api", "v1", "internal", "stats", "refresh"] => {
            if post {
                stats::refresh(app, req, &body).await
            } else {
                allow("POST")
            }
        }
        #[cfg(feature = "dev-session")]
        ["api", "v1", "dev", "session"] => {
            if post {
                me::dev_session(app, &body).await
            } else {
                allow("POST")
            }
        }
        ["spells", slug, "og"] => {
            if get || method == Method::HEAD {
                spells::og(app, req, slug)
            } else {
                allow("GET, HEAD")
            }
        }
        ["metrics"] if app.metrics.is_some() => {
            let text = app
                .metrics
                .as_ref()
                .map(|render| render())
                .unwrap_or_default();
            Ok(respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                text,
            ))
        }
        _ => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("Nothing at {path}"),
        )),
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
