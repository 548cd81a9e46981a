//! `POST /api/v1/payments/invoice` (a binding quote as a signed JWT) and the removed two-step
//! payment endpoints.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use serde_json::{json, Value};

use super::{json, parse_object, session, slug, str_field, Handled, Problem, Response};
use spellcast_core::auth::InvoiceClaims;
use spellcast_core::ids::InvoiceId;
use spellcast_core::invoice::{
    json_hash, IdempotencyRecord, InvoiceRecord, InvoiceState, IssueOutcome,
};
use spellcast_core::ledger::PTS;
use spellcast_core::App;

fn idempotency_key(req: &http::request::Parts) -> Result<Option<String>, Problem> {
    let Some(raw) = req.headers.get("idempotency-key") else {
        return Ok(None);
    };
    match raw.to_str() {
        Ok(k) if (1..=255).contains(&k.len()) => Ok(Some(k.to_owned())),
        _ => Err(Problem::bad_json(
            "Idempotency-Key must be 1-255 visible ASCII characters",
        )),
    }
}

fn key_conflict() -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "idempotency_conflict",
        "This Idempotency-Key was used with a different request",
    )
}

/// `POST /api/v1/payments/invoice`.
pub async fn invoice(app: &Arc<App>, req: &http::request::Parts, body: &Bytes) -> Handled {
    let user = session(app, req)?;
    let key = idempotency_key(req)?;
    let fields = parse_object(body)?;
    let raw_slug = str_field(&fields, "spellSlug")?;
    let asset = str_field(&fields, "asset")?;
    let request_hash = json_hash(&Value::Object(fields.clone()));

    // A retry gets the first answer, whatever happened since (Stripe semantics).
    if let Some(key) = &key {
        if let Some(seen) = app.store.idempotency(&user.sub, key).await? {
            return if seen.request_hash == request_hash {
                Ok(json(StatusCode::CREATED, &seen.response))
            } else {
                Err(key_conflict())
            };
        }
    }

    let slug =
        slug(raw_slug).map_err(|p| p.with_errors(vec![field("/spellSlug", "invalid slug")]))?;
    if asset != PTS {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "unknown_asset",
            format!("Unknown asset `{asset}`; use PTS"),
        )
        .with_errors(vec![field("/asset", "must be PTS")]));
    }
    let spell = app
        .catalog
        .get(&slug)
        .ok_or_else(|| Problem::spell_not_found(raw_slug))?;
    let price = app.prices.price(&spell, app.store.as_ref()).await?;
    let balance = app.store.balance(&user.sub).await?;
    if balance < price.pts {
        return Err(insufficient(balance, price.pts));
    }

    let now = app.clock.now();
    let expires_at = now + app.config.invoice_ttl;
    let invoice_id = InvoiceId::new();
    let token = app.keys.invoice(InvoiceClaims {
        jti: invoice_id.clone(),
        sub: user.sub.clone(),
        spell: slug.clone(),
        ver: spell.def.version,
        cost: price.pts,
        asset: PTS.into(),
        iat: now.timestamp(),
        exp: expires_at.timestamp(),
        aud: String::new(),
        iss: String::new(),
    });
    let response = json!({
        "invoiceId": token,
        "costPts": price.pts,
        "asset": PTS,
        "amount": price.pts.to_string(),
        "expiry": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    let record = InvoiceRecord {
        invoice_id,
        user_id: user.sub.clone(),
        slug,
        version: spell.def.version,
        cost_pts: price.pts,
        asset: PTS.into(),
        issued_at: now,
        expires_at,
        state: InvoiceState::Open,
    };
    let idempotency = key.map(|key| IdempotencyRecord {
        user_id: user.sub.clone(),
        key,
        request_hash,
        response: response.clone(),
        created_at: now,
        expires_at: now + app.config.idempotency_ttl,
    });
    match app.store.issue_invoice(record, idempotency).await? {
        IssueOutcome::Issued => Ok(json(StatusCode::CREATED, &response)),
        IssueOutcome::Replayed(seen) => Ok(json(StatusCode::CREATED, &seen.response)),
        IssueOutcome::KeyConflict => Err(key_conflict()),
    }
}

fn field(pointer: &str, message: &str) -> spellcast_core::catalog::FieldError {
    spellcast_core::catalog::FieldError {
        pointer: pointer.into(),
        message: message.into(),
    }
}

/// 402 `insufficient_balance`.
pub(crate) fn insufficient(balance: i64, cost: i64) -> Problem {
    Problem::new(
        StatusCode::PAYMENT_REQUIRED,
        "insufficient_balance",
        format!("This spell costs {cost} points and the balance is {balance}"),
    )
}

/// `POST /api/v1/payments/prepare-spell` and `/confirm`: gone, with a pointer to the successor.
pub fn removed() -> Response {
    let mut r = Problem::new(
        StatusCode::GONE,
        "endpoint_removed",
        "The two-step payment flow was replaced by POST /api/v1/payments/invoice",
    )
    .into_response();
    let headers = r.headers_mut();
    // RFC 9745: the deprecation date as a structured-field date (2025-08-26, the ADR's date).
    headers.insert("deprecation", HeaderValue::from_static("@1756166400"));
    headers.insert(
        "sunset",
        HeaderValue::from_static("Mon, 01 Dec 2025 00:00:00 GMT"),
    );
    headers.insert(
        header::LINK,
        HeaderValue::from_static("</api/v1/payments/invoice>; rel=\"successor-version\""),
    );
    r
}
