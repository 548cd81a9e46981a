//! The signed-in user's balance and ledger, and (local server only) demo sessions.

use std::sync::Arc;

use http::StatusCode;
use serde_json::json;

use super::{json, query, session, Handled, Problem};
use crate::Api;
use spellcast_domain::ids::{CreditTxId, RunId};

/// `GET /api/v1/me/balance`.
pub async fn balance(app: &Arc<Api>, req: &http::request::Parts) -> Handled {
    let user = session(app, req).await?;
    let balance = app.accounts().balance(&user.sub).await?;
    Ok(json(
        StatusCode::OK,
        &json!({"userId": user.sub, "balances": {spellcast_domain::ledger::PTS: balance}}),
    ))
}

/// `GET /api/v1/me/ledger?limit=50&cursor=...`, newest first.
pub async fn ledger(app: &Arc<Api>, req: &http::request::Parts) -> Handled {
    let user = session(app, req).await?;
    let limit = limit(req, 50, 200)?;
    let cursor =
        match query(req, "cursor") {
            None => None,
            Some(raw) => Some(CreditTxId::parse(&raw).ok_or_else(|| {
                Problem::bad_json("cursor must be a nextCursor this API returned")
            })?),
        };
    let page = app
        .accounts()
        .ledger_page(&user.sub, limit, cursor.as_ref())
        .await?;
    let mut body = json!({ "entries": page.entries });
    if let Some(next) = page.next {
        body["nextCursor"] = json!(next);
    }
    Ok(json(StatusCode::OK, &body))
}

/// A `limit` query parameter from 1 to `max`, `default` when absent.
fn limit(req: &http::request::Parts, default: usize, max: usize) -> Result<usize, Problem> {
    match query(req, "limit") {
        None => Ok(default),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(Problem::bad_json(format!(
                "limit must be a number from 1 to {max}"
            ))),
        },
    }
}

/// `GET /api/v1/me/runs?limit=20&cursor=...`: the caller's runs, newest first (SPEC §3.11a).
pub async fn runs(app: &Arc<Api>, req: &http::request::Parts) -> Handled {
    let user = session(app, req).await?;
    let limit = limit(req, 20, 100)?;
    let cursor =
        match query(req, "cursor") {
            None => None,
            Some(raw) => Some(RunId::parse(&raw).ok_or_else(|| {
                Problem::bad_json("cursor must be a nextCursor this API returned")
            })?),
        };
    let (runs, next) = app
        .viewing()
        .runs_of(&user.sub, limit, cursor.as_ref())
        .await?;
    let runs: Vec<_> = runs
        .iter()
        .map(|run| {
            let title = app
                .catalog()
                .get(&run.slug)
                .map_or_else(|| run.slug.to_string(), |s| s.def.title.clone());
            json!({
                "runId": run.run_id,
                "creditTxId": run.credit_tx_id,
                "slug": run.slug,
                "title": title,
                "status": run.status,
                "costPts": run.cost_pts,
                "refundedPts": run.refunded_pts,
                "createdAt": run.created_at,
                "finishedAt": run.finished_at,
            })
        })
        .collect();
    let mut body = json!({ "runs": runs });
    if let Some(next) = next {
        body["nextCursor"] = json!(next);
    }
    Ok(json(StatusCode::OK, &body))
}

/// `GET /api/v1/me/webhook-secret` (made on first use) and `POST` (a new one): the secret that
/// signs the user's run webhooks (SPEC §3.13). Never cached.
pub async fn webhook_secret(app: &Arc<Api>, req: &http::request::Parts) -> Handled {
    let user = session(app, req).await?;
    let accounts = app.accounts();
    let secret = if req.method == http::Method::POST {
        accounts.rotate_webhook_secret(&user.sub).await?
    } else {
        accounts.webhook_secret(&user.sub).await?
    };
    Ok(json(StatusCode::OK, &json!({ "secret": secret.as_str() })))
}

/// `POST /api/v1/dev/session`: a session for a demo user, with demo points. Local server only.
#[cfg(feature = "dev-session")]
pub async fn dev_session(
    app: &Arc<Api>,
    req: &http::request::Parts,
    body: &bytes::Bytes,
) -> Handled {
    use serde_json::Value;
    use spellcast_domain::ids::UserId;

    // Each session is a user with points: so many per client address (an entry point that
    // cannot tell the address has no such endpoint).
    if let Some(super::ClientAddr(ip)) = req.extensions.get() {
        super::rate_limit(app, &app.config().limits.sessions, &format!("addr:{ip}")).await?;
    }

    let fields = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Map::new()
    } else {
        super::parse_object(body)?
    };
    let user_id = match fields.get("userId") {
        None | Some(Value::Null) => UserId::new(),
        Some(Value::String(id))
            if (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            UserId::from(id.as_str())
        }
        Some(_) => {
            return Err(Problem::bad_field(
                "/userId",
                "must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'",
            ))
        }
    };
    let grant = match fields.get("grantPts") {
        None | Some(Value::Null) => 1000,
        Some(v) => match super::whole_number(v) {
            Some(n) if (0..=1_000_000).contains(&n) => n,
            _ => {
                return Err(Problem::bad_field(
                    "/grantPts",
                    "must be an integer from 0 to 1000000",
                ))
            }
        },
    };
    let session = app.sign_in().demo_session(&user_id, grant).await?;
    Ok(json(
        StatusCode::CREATED,
        &json!({"token": session.token, "userId": user_id, "balancePts": session.balance}),
    ))
}
