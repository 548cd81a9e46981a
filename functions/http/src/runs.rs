//! The viewer's token (shared by the stream, the snapshot and the outputs), `GET /api/v1/runs/{runId}`
//! and `GET /api/v1/runs/{runId}/outputs/{n}`.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};

use super::{bearer, json, query, Body, Handled, Problem};
use crate::Api;
use spellcast_application::auth::TokenError;
use spellcast_application::viewing::{FileAnswer, ViewError, Viewer};
use spellcast_domain::ids::RunId;

/// Reads the viewer's token: a session (only as `Authorization: Bearer`) or an invoice (there, or
/// as `?token=` for `EventSource` and `<img>`, which cannot send headers); an invoice's expiry is
/// judged per run, later.
pub(crate) async fn viewer(
    app: &Api,
    req: &http::request::Parts,
    invalid_code: &'static str,
) -> Result<Viewer, Problem> {
    let invalid = || {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            invalid_code,
            "The token is not valid",
        )
    };
    if let Some(token) = bearer(req) {
        if let Ok(invoice) = app.keys().verify_invoice_ignoring_expiry(&token) {
            return Ok(Viewer::Invoice(invoice));
        }
        return match super::signed_in(app, &token).await {
            Ok(user) => Ok(Viewer::User(user.sub)),
            Err(p) if p.status == StatusCode::UNAUTHORIZED => Err(invalid()),
            Err(p) => Err(p),
        };
    }
    let token = query(req, "token")
        .ok_or_else(|| Problem::unauthorized("A Bearer token (session or invoice) is required"))?;
    app.keys()
        .verify_invoice_ignoring_expiry(&token)
        .map(Viewer::Invoice)
        .map_err(|_: TokenError| invalid())
}

/// `GET /api/v1/runs/{runId}`.
pub async fn snapshot(app: &Arc<Api>, req: &http::request::Parts, raw_run_id: &str) -> Handled {
    let viewer = viewer(app, req, "unauthorized").await?;
    let run_id = RunId::parse(raw_run_id).ok_or_else(Problem::run_not_found)?;
    let run = app.viewing().run(&viewer, &run_id).await?;
    let mut body = run.snapshot();
    if matches!(viewer, Viewer::User(_)) {
        // The owner's page watches the stream and shows the files, where only a token in the
        // query can go: the run's invoice token, signed again, never the session.
        body["watchToken"] = app.quotes().watch_token(&run).into();
    }
    Ok(json(StatusCode::OK, &body))
}

/// `POST /api/v1/runs/{runId}/cancel`: the owner's session only (an invoice token opens a run for
/// watching, not for changing it). 202 with the run as it is now.
pub async fn cancel(app: &Arc<Api>, req: &http::request::Parts, raw_run_id: &str) -> Handled {
    let session = super::session(app, req).await?;
    let run_id = RunId::parse(raw_run_id).ok_or_else(Problem::run_not_found)?;
    let run = app.canceling().cancel(&session.sub, &run_id).await?;
    Ok(json(StatusCode::ACCEPTED, &run.snapshot()))
}

/// `GET /api/v1/runs/{runId}/webhooks`: every delivery attempt, oldest first (whoever may see
/// the run).
pub async fn webhooks(app: &Arc<Api>, req: &http::request::Parts, raw_run_id: &str) -> Handled {
    let viewer = viewer(app, req, "unauthorized").await?;
    let run_id = RunId::parse(raw_run_id).ok_or_else(Problem::run_not_found)?;
    let attempts = app.viewing().webhook_attempts(&viewer, &run_id).await?;
    Ok(json(StatusCode::OK, &attempts))
}

/// `GET /api/v1/runs/{runId}/outputs/{n}`.
pub async fn output(
    app: &Arc<Api>,
    req: &http::request::Parts,
    raw_run_id: &str,
    n: &str,
) -> Handled {
    let viewer = viewer(app, req, "unauthorized").await?;
    let run_id = RunId::parse(raw_run_id).ok_or_else(Problem::run_not_found)?;
    let viewing = app.viewing();
    let file = match n.parse::<usize>() {
        Ok(n) => viewing.output(&viewer, &run_id, n).await?,
        // Not a number: no such file, once the run is known to be the viewer's.
        Err(_) => {
            viewing.run(&viewer, &run_id).await?;
            return Err(ViewError::NoSuchOutput.into());
        }
    };
    // Outputs never change; only their owner may fetch them.
    file_answer(file, "private, max-age=31536000, immutable")
}

/// An output file as the answer: its bytes with their media type, sandboxed if opened directly,
/// cached as `cache_control` says; or, for a large file in the blob store, a 302 to a URL that
/// works for a few minutes.
pub(crate) fn file_answer(file: FileAnswer, cache_control: &'static str) -> Handled {
    let (mime, bytes) = match file {
        FileAnswer::Bytes { mime, bytes } => (mime, bytes),
        // A large file: from the blob store directly, by a URL that works for a few minutes.
        FileAnswer::Elsewhere(url) => {
            let location = HeaderValue::from_str(&url)
                .map_err(|_| Problem::internal("a signed URL is not a header value"))?;
            let mut r = http::Response::new(Body::Full(Bytes::new()));
            *r.status_mut() = StatusCode::FOUND;
            r.headers_mut().insert(header::LOCATION, location);
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return Ok(r);
        }
    };
    let mut r = http::Response::new(Body::Full(Bytes::from(bytes)));
    let headers = r.headers_mut();
    let mime_text = mime.as_str();
    let mime = HeaderValue::from_str(mime_text)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, mime);
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    // A tool's file is content, never a page of this site: opened directly, it runs nothing,
    // and anything but a plain image is a download (as the blob store's URLs answer).
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; img-src 'self'; sandbox"),
    );
    if !spellcast_application::ports::drawn_only(mime_text) {
        headers.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
    Ok(r)
}
