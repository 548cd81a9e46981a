//! `POST /api/v1/admin/grants` (SPEC §9.2): an administrator gives (or takes back) points. Who
//! the administrator is comes from the entry point: on AWS the IAM principal that signed the call
//! to the admin function's Function URL ([`AdminCaller`]), locally the `--admin-token`.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;

use super::{bearer, json, parse_object, str_field, whole_number, Handled, Problem};
use crate::Api;
use spellcast_application::accounts::{AdminGrant, AdminGrantError};
use spellcast_domain::ids::UserId;

/// The administrator an entry point has authenticated (an IAM principal's ARN), put in the
/// request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminCaller(pub String);

/// The most points one grant may move either way.
const MOST_PTS: i64 = 1_000_000_000;

/// Who is asking, or 401: the entry point's [`AdminCaller`], else the configured admin token.
fn admin(app: &Api, req: &http::request::Parts) -> Result<String, Problem> {
    if let Some(AdminCaller(who)) = req.extensions.get() {
        return Ok(who.clone());
    }
    let expected = app.config().admin_token.as_deref().unwrap_or_default();
    let given = bearer(req).unwrap_or_default();
    let same = !expected.is_empty()
        && subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), given.as_bytes()).into();
    if same {
        Ok("admin-token".into())
    } else {
        Err(Problem::unauthorized(
            "Admin grants need the administrator's credentials",
        ))
    }
}

/// `POST /api/v1/admin/grants` `{"userId", "pts", "reason"}` with an optional `Idempotency-Key`:
/// 201 with the ledger entry (the same entry again for a replay).
pub async fn grant(app: &Arc<Api>, req: &http::request::Parts, body: &Bytes) -> Handled {
    let granted_by = admin(app, req)?;
    let idempotency_key = super::payments::idempotency_key(req)?;
    let fields = parse_object(body)?;
    let user = str_field(&fields, "userId")?;
    let user = UserId::parse(user)
        .ok_or_else(|| Problem::bad_field("/userId", "must be a user id this API gave"))?;
    let pts = match fields.get("pts") {
        Some(v) => whole_number(v)
            .filter(|n| *n != 0 && n.abs() <= MOST_PTS)
            .ok_or_else(|| {
                Problem::bad_field(
                    "/pts",
                    "must be a whole number from -1000000000 to 1000000000, not 0",
                )
            })?,
        None => return Err(Problem::bad_field("/pts", "is required")),
    };
    let reason = str_field(&fields, "reason")?.trim();
    if reason.is_empty() || reason.chars().count() > 200 || reason.chars().any(char::is_control) {
        return Err(Problem::bad_field(
            "/reason",
            "must be 1-200 characters, no control characters",
        ));
    }
    if let Some(extra) = fields
        .keys()
        .find(|k| !matches!(k.as_str(), "userId" | "pts" | "reason"))
    {
        return Err(Problem::bad_field(
            &format!("/{extra}"),
            "is not a field of a grant",
        ));
    }
    let asked = AdminGrant {
        user,
        pts,
        reason: reason.to_owned(),
        granted_by,
        idempotency_key,
    };
    match app.accounts().admin_grant(asked, app.now()).await {
        Ok(entry) => {
            tracing::info!(user = %entry.user_id, pts = entry.pts, tx = %entry.tx_id, "admin grant");
            Ok(json(StatusCode::CREATED, &entry))
        }
        Err(AdminGrantError::KeyReused) => Err(Problem::new(
            StatusCode::CONFLICT,
            "idempotency_conflict",
            "This Idempotency-Key was used with a different grant",
        )),
        Err(AdminGrantError::Insufficient { balance }) => Err(Problem::new(
            StatusCode::CONFLICT,
            "insufficient_balance",
            format!("The balance is {balance} points: a grant cannot take it below zero"),
        )),
        Err(AdminGrantError::Store(e)) => Err(e.into()),
    }
}
