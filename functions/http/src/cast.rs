//! `POST /api/v1/spells/cast`: pays an invoice and queues a run, atomically and idempotently.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Value};

use super::{json, parse_object, rate_limit, session, slug, str_field, Handled, Problem};
use crate::Api;
use spellcast_application::cast::{Cast, CastRequest};
use spellcast_domain::run::Run;
use spellcast_domain::webhooks::WebhookTarget;

fn accepted(run: &Run, status: StatusCode) -> http::Response<super::Body> {
    json(
        status,
        &json!({
            "creditTxId": run.credit_tx_id,
            "runId": run.run_id,
            "streamUrl": format!("/api/v1/spells/{}/stream?creditTxId={}", run.slug, run.credit_tx_id),
        }),
    )
}

/// The cast's `webhook` and `webhookEvents`, checked (422 `invalid_webhook`).
fn webhook(
    app: &Api,
    fields: &serde_json::Map<String, Value>,
) -> Result<Option<WebhookTarget>, Problem> {
    let invalid =
        |detail: String| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_webhook", detail);
    let events: Vec<String> = match fields.get("webhookEvents") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|e| e.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                invalid("webhookEvents must be a list of \"start\" and \"completed\"".into())
            })?,
        Some(_) => return Err(invalid("webhookEvents must be a list".into())),
    };
    let url = match fields.get("webhook") {
        None | Some(Value::Null) if events.is_empty() => return Ok(None),
        None | Some(Value::Null) => return Err(invalid("webhookEvents needs a webhook".into())),
        Some(Value::String(url)) => url,
        Some(_) => return Err(invalid("webhook must be an https URL".into())),
    };
    WebhookTarget::parse(url, &events, app.config().webhook_loopback)
        .map(Some)
        .map_err(|e| invalid(format!("webhook: {e}")))
}

/// `POST /api/v1/spells/cast`.
pub async fn cast(app: &Arc<Api>, req: &http::request::Parts, body: &Bytes) -> Handled {
    let user = session(app, req).await?;
    rate_limit(app, &app.config().limits.casts, user.sub.as_str()).await?;
    let fields = parse_object(body)?;
    let raw_slug = str_field(&fields, "slug")?;
    let token = str_field(&fields, "invoiceId")?;
    let context = match fields.get("context") {
        Some(Value::Object(c)) => Value::Object(c.clone()),
        Some(_) => return Err(Problem::bad_field("/context", "must be an object")),
        None => return Err(Problem::bad_field("/context", "is required")),
    };
    let webhook = webhook(app, &fields)?;
    let slug = slug(raw_slug)?;
    let cast = app
        .casting()
        .cast(CastRequest {
            user: user.sub,
            slug,
            invoice: token,
            context,
            webhook,
        })
        .await?;
    Ok(match cast {
        Cast::Created(run) => accepted(&run, StatusCode::ACCEPTED),
        Cast::Replayed(run) => accepted(&run, StatusCode::OK),
    })
}
