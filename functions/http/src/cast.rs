//! `POST /api/v1/spells/cast`: pays an invoice and queues a run, atomically and idempotently.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Value};

use super::{json, parse_object, session, slug, str_field, Handled, Problem};
use spellcast_core::auth::TokenError;
use spellcast_core::invoice::json_hash;
use spellcast_core::ports::{CastOutcome, ExecutionStarted, NewCast};
use spellcast_core::run::Run;
use spellcast_core::App;

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

/// `POST /api/v1/spells/cast`.
pub async fn cast(app: &Arc<App>, req: &http::request::Parts, body: &Bytes) -> Handled {
    let user = session(app, req)?;
    let fields = parse_object(body)?;
    let raw_slug = str_field(&fields, "slug")?;
    let token = str_field(&fields, "invoiceId")?;
    let context = match fields.get("context") {
        Some(Value::Object(c)) => Value::Object(c.clone()),
        Some(_) => return Err(Problem::bad_field("/context", "must be an object")),
        None => return Err(Problem::bad_field("/context", "is required")),
    };
    let slug = slug(raw_slug)?;

    // Expiry is judged by the store against the invoice's state, so a retry of a cast that
    // already consumed the invoice still gets its ids back after the quote expired.
    let claims = app
        .keys
        .verify_invoice_ignoring_expiry(token)
        .map_err(|_: TokenError| {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "invoice_invalid",
                "The invoice is not valid",
            )
        })?;
    if claims.sub != user.sub {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "This invoice belongs to someone else",
        ));
    }
    if claims.spell != slug.as_str() {
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "invoice_invalid",
            "The invoice is for another spell",
        ));
    }
    let spell = app
        .catalog
        .get(&slug)
        .ok_or_else(|| Problem::spell_not_found(raw_slug))?;
    let errors = spell.validate_context(&context);
    if !errors.is_empty() {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_context",
            format!("{} input(s) do not fit the spell", errors.len()),
        )
        .with_errors(errors));
    }

    let now = app.clock.now();
    let run = Run::queued(
        &spell,
        &claims.jti,
        &user.sub,
        claims.cost,
        context.clone(),
        now,
    );
    let debit = run.debit_entry();
    let outcome = app
        .store
        .cast(NewCast {
            invoice_id: claims.jti,
            user_id: user.sub,
            context_hash: json_hash(&context),
            now,
            run,
            debit,
        })
        .await?;
    match outcome {
        CastOutcome::Created(run) => {
            let event = ExecutionStarted {
                run_id: run.run_id.clone(),
                slug: run.slug.clone(),
            };
            if let Err(e) = app.bus.execution_started(event).await {
                // The run is paid and queued; the sweeper publishes it again.
                tracing::warn!(run_id = %run.run_id, error = %e, "executionStarted not published");
            }
            tracing::info!(run_id = %run.run_id, cost_pts = run.cost_pts, "run cast");
            Ok(accepted(&run, StatusCode::ACCEPTED))
        }
        CastOutcome::Replayed(run) => Ok(accepted(&run, StatusCode::OK)),
        CastOutcome::ContextMismatch => Err(Problem::new(
            StatusCode::CONFLICT,
            "invoice_consumed",
            "This invoice already paid for a cast with other inputs",
        )),
        CastOutcome::InsufficientBalance { balance } => {
            Err(super::payments::insufficient(balance, claims.cost))
        }
        CastOutcome::Expired => Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "invoice_expired",
            "The quote has expired: ask for a new one",
        )),
        CastOutcome::UnknownInvoice => Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "invoice_invalid",
            "The invoice is not known",
        )),
    }
}
