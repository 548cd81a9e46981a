//! Run access (shared by the stream, the snapshot and the outputs), `GET /api/v1/runs/{runId}`
//! and `GET /api/v1/runs/{runId}/outputs/{n}`.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use serde_json::json;

use super::{bearer, json, Body, Handled, Problem};
use spellcast_core::auth::{InvoiceClaims, TokenError};
use spellcast_core::ids::{RunId, UserId};
use spellcast_core::run::Run;
use spellcast_core::App;

/// Who is asking about a run.
pub(crate) enum Caller {
    /// A signed-in user (session token).
    User(UserId),
    /// The holder of the invoice that paid for a run.
    Invoice(InvoiceClaims),
}

/// How long after a run ends its invoice still opens it.
fn invoice_grace() -> chrono::Duration {
    chrono::Duration::hours(1)
}

/// Reads the caller's token: a session or an invoice (expiry is judged per run, later).
pub(crate) fn caller(
    app: &App,
    req: &http::request::Parts,
    invalid_code: &'static str,
) -> Result<Caller, Problem> {
    let token = bearer(req)
        .ok_or_else(|| Problem::unauthorized("A Bearer token (session or invoice) is required"))?;
    if let Ok(session) = app.keys.verify_session(&token) {
        return Ok(Caller::User(session.sub));
    }
    app.keys
        .verify_invoice_ignoring_expiry(&token)
        .map(Caller::Invoice)
        .map_err(|_: TokenError| {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                invalid_code,
                "The token is not valid",
            )
        })
}

/// Whether the caller may see `run`: its owner, or its own invoice until an hour after the run
/// ended (so a run cast just before the quote expired can still be watched and resumed).
pub(crate) fn authorize(app: &App, caller: &Caller, run: &Run) -> Result<(), Problem> {
    let forbidden = || {
        Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "This run belongs to someone else",
        )
    };
    match caller {
        Caller::User(user) if *user == run.user_id => Ok(()),
        Caller::User(_) => Err(forbidden()),
        Caller::Invoice(claims) if claims.jti != run.invoice_id => Err(forbidden()),
        Caller::Invoice(claims) => {
            let now = app.clock.now();
            let quote_valid = now.timestamp() < claims.exp;
            let run_recent = run.finished_at.is_none_or(|f| now < f + invoice_grace());
            if quote_valid || run_recent {
                Ok(())
            } else {
                Err(Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "invoice_expired",
                    "This invoice no longer opens its run",
                ))
            }
        }
    }
}

/// The run snapshot as the API shows it.
pub(crate) fn snapshot_json(run: &Run) -> serde_json::Value {
    json!({
        "runId": run.run_id,
        "creditTxId": run.credit_tx_id,
        "slug": run.slug,
        "status": run.status,
        "steps": run.steps,
        "outputs": run.outputs,
        "costPts": run.cost_pts,
        "refundedPts": run.refunded_pts,
        "createdAt": run.created_at,
        "startedAt": run.started_at,
        "finishedAt": run.finished_at,
        "durationMs": run.duration_ms(),
        "error": run.error,
        "lastEventId": run.last_seq,
    })
}

async fn load(app: &App, req: &http::request::Parts, raw_run_id: &str) -> Result<Run, Problem> {
    let run_id = RunId::from(raw_run_id);
    let caller = caller(app, req, "unauthorized")?;
    let run = app
        .store
        .run(&run_id)
        .await?
        .ok_or_else(Problem::run_not_found)?;
    authorize(app, &caller, &run)?;
    Ok(run)
}

/// `GET /api/v1/runs/{runId}`.
pub async fn snapshot(app: &Arc<App>, req: &http::request::Parts, raw_run_id: &str) -> Handled {
    let run = load(app, req, raw_run_id).await?;
    Ok(json(StatusCode::OK, &snapshot_json(&run)))
}

/// `GET /api/v1/runs/{runId}/outputs/{n}`.
pub async fn output(
    app: &Arc<App>,
    req: &http::request::Parts,
    raw_run_id: &str,
    n: &str,
) -> Handled {
    let run = load(app, req, raw_run_id).await?;
    let missing = || {
        Problem::new(
            StatusCode::NOT_FOUND,
            "run_not_found",
            "This run has no such output file",
        )
    };
    let n: usize = n.parse().map_err(|_| missing())?;
    let file = app
        .store
        .output_file(&run.run_id, n)
        .await?
        .ok_or_else(missing)?;
    let mut r = http::Response::new(Body::Full(Bytes::from(file.bytes)));
    let headers = r.headers_mut();
    let mime = HeaderValue::from_str(&file.mime)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, mime);
    // Outputs never change; only their owner may fetch them.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    Ok(r)
}
