//! `POST /api/v1/payments/invoice` (a binding quote as a signed JWT) and the removed two-step
//! payment endpoints.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use serde_json::Value;

use super::{json, parse_object, rate_limit, session, slug, str_field, Handled, Problem, Response};
use crate::Api;
use spellcast_application::quote::QuoteRequest;
use spellcast_domain::errors::FieldError;
use spellcast_domain::invoice::json_hash;

pub(crate) fn idempotency_key(req: &http::request::Parts) -> Result<Option<String>, Problem> {
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

/// `POST /api/v1/payments/invoice`.
pub async fn invoice(app: &Arc<Api>, req: &http::request::Parts, body: &Bytes) -> Handled {
    let user = session(app, req).await?;
    rate_limit(app, &app.config().limits.invoices, user.sub.as_str()).await?;
    let key = idempotency_key(req)?;
    let fields = parse_object(body)?;
    let raw_slug = str_field(&fields, "spellSlug")?;
    let asset = str_field(&fields, "asset")?.to_owned();
    let request_hash = json_hash(&Value::Object(fields.clone()));
    let slug = slug(raw_slug).map_err(|p| {
        p.with_errors(vec![FieldError {
            pointer: "/spellSlug".into(),
            message: "invalid slug".into(),
        }])
    })?;
    let quote = app
        .quotes()
        .quote(QuoteRequest {
            user: user.sub,
            slug,
            asset,
            idempotency: key.map(|key| (key, request_hash)),
        })
        .await?;
    Ok(json(StatusCode::CREATED, &quote))
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
