//! RFC 9457 problem details with the product's stable error codes: the one place where the use
//! cases' refusals become statuses and codes.

use bytes::Bytes;
use http::{header, StatusCode};
use serde_json::json;

use super::{Body, Response};
use spellcast_application::cancel::CancelError;
use spellcast_application::cast::CastError;
use spellcast_application::ports::StoreError;
use spellcast_application::quote::QuoteError;
use spellcast_application::sharing::ShareError;
use spellcast_application::viewing::ViewError;
use spellcast_domain::errors::FieldError;

/// An error answer: status, stable code, a readable detail and, for validation, field errors.
#[derive(Debug, Clone)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// The stable machine code (`invoice_expired`, ...).
    pub code: &'static str,
    /// What went wrong, for people.
    pub detail: String,
    /// Per-field errors, each a JSON Pointer into the request body.
    pub errors: Vec<FieldError>,
    /// Seconds to wait before trying again (`Retry-After`), for 429 and 503.
    pub retry_after_secs: Option<u64>,
}

impl Problem {
    /// A problem without field errors.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Problem {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after_secs: None,
        }
    }

    /// 429 `rate_limited`, with `Retry-After`.
    pub fn rate_limited(what: &str, retry_after_secs: u64) -> Self {
        let mut p = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("Too many {what}: try again in {retry_after_secs} s"),
        );
        p.retry_after_secs = Some(retry_after_secs);
        p
    }

    /// Adds field errors.
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    /// 400 `bad_json`.
    pub fn bad_json(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "bad_json", detail)
    }

    /// 400 `bad_json` for one field.
    pub fn bad_field(pointer: &str, message: &str) -> Self {
        Problem::bad_json(format!("{pointer}: {message}")).with_errors(vec![FieldError {
            pointer: pointer.to_owned(),
            message: message.to_owned(),
        }])
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 400 `invalid_slug`.
    pub fn invalid_slug() -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_slug",
            "A spell slug is 1-64 characters of a-z, 0-9 and '-', starting with a letter or digit",
        )
    }

    /// 404 `spell_not_found`.
    pub fn spell_not_found(slug: &str) -> Self {
        Problem::new(
            StatusCode::NOT_FOUND,
            "spell_not_found",
            format!("No spell is called `{slug}`"),
        )
    }

    /// 404 `run_not_found`.
    pub fn run_not_found() -> Self {
        Problem::new(StatusCode::NOT_FOUND, "run_not_found", "No such run")
    }

    /// 404 `share_not_found`: never shared, or taken back.
    pub fn share_not_found() -> Self {
        Problem::new(
            StatusCode::NOT_FOUND,
            "share_not_found",
            "No such shared run (it may have been unshared)",
        )
    }

    /// 413 `payload_too_large`.
    pub fn payload_too_large() -> Self {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "Request bodies are limited to {} bytes",
                super::MAX_BODY_BYTES
            ),
        )
    }

    /// 500 `internal`, logging the cause (which the client does not see).
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Something went wrong on our side",
        )
    }

    /// 503 `unavailable`, with `Retry-After`: a dependency timed out or throttled; the request
    /// may be sent again as it is (a cast's retry is answered with the same run). The cause is
    /// logged, not shown.
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "a dependency is unavailable");
        let mut p = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "A service behind this one is busy or slow: send the same request again shortly",
        );
        p.retry_after_secs = Some(1);
        p
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }

    /// The problem as an `application/problem+json` response.
    pub fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("/problems/{}", self.code),
            "title": self.title(),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.code,
        });
        if !self.errors.is_empty() {
            body["errors"] = json!(self.errors);
        }
        let mut r = http::Response::builder()
            .status(self.status)
            .header(header::CONTENT_TYPE, "application/problem+json")
            .header(header::CACHE_CONTROL, "no-store");
        if let Some(secs) = self.retry_after_secs {
            r = r.header(header::RETRY_AFTER, secs);
        }
        r.body(Body::Full(Bytes::from(body.to_string())))
            .unwrap_or_else(|_| http::Response::new(Body::Full(Bytes::new())))
    }
}

/// 402 `insufficient_balance`.
fn insufficient(balance: i64, cost_pts: i64) -> Problem {
    Problem::new(
        StatusCode::PAYMENT_REQUIRED,
        "insufficient_balance",
        format!("This spell costs {cost_pts} points and the balance is {balance}"),
    )
}

fn invoice_invalid(detail: &str) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "invoice_invalid", detail)
}

impl From<QuoteError> for Problem {
    fn from(e: QuoteError) -> Self {
        match e {
            QuoteError::KeyConflict => Problem::new(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                "This Idempotency-Key was used with a different request",
            ),
            QuoteError::UnknownAsset(asset) => Problem::new(
                StatusCode::BAD_REQUEST,
                "unknown_asset",
                format!("Unknown asset `{asset}`; use PTS"),
            )
            .with_errors(vec![FieldError {
                pointer: "/asset".into(),
                message: "must be PTS".into(),
            }]),
            QuoteError::UnknownSpell(slug) => Problem::spell_not_found(slug.as_str()),
            QuoteError::InsufficientBalance { balance, cost_pts } => {
                insufficient(balance, cost_pts)
            }
            QuoteError::Store(e) => e.into(),
        }
    }
}

impl From<CastError> for Problem {
    fn from(e: CastError) -> Self {
        match e {
            CastError::InvoiceInvalid => invoice_invalid("The invoice is not valid"),
            CastError::InvoiceUnknown => invoice_invalid("The invoice is not known"),
            CastError::InvoiceForAnotherSpell => {
                invoice_invalid("The invoice is for another spell")
            }
            CastError::InvoiceOfAnotherUser => Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "This invoice belongs to someone else",
            ),
            CastError::InvoiceExpired => Problem::new(
                StatusCode::UNAUTHORIZED,
                "invoice_expired",
                "The quote has expired: ask for a new one",
            ),
            CastError::InvoiceConsumed => Problem::new(
                StatusCode::CONFLICT,
                "invoice_consumed",
                "This invoice already paid for a cast with other inputs",
            ),
            CastError::UnknownSpell(slug) => Problem::spell_not_found(slug.as_str()),
            CastError::InvalidContext(errors) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_context",
                format!("{} input(s) do not fit the spell", errors.len()),
            )
            .with_errors(errors),
            CastError::InsufficientBalance { balance, cost_pts } => insufficient(balance, cost_pts),
            CastError::Store(e) => e.into(),
        }
    }
}

impl From<ViewError> for Problem {
    fn from(e: ViewError) -> Self {
        match e {
            ViewError::NotFound => Problem::run_not_found(),
            ViewError::NoSuchOutput => Problem::new(
                StatusCode::NOT_FOUND,
                "run_not_found",
                "This run has no such output file",
            ),
            ViewError::Forbidden => Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "This run belongs to someone else",
            ),
            ViewError::InvoiceExpired => Problem::new(
                StatusCode::UNAUTHORIZED,
                "invoice_expired",
                "This invoice no longer opens its run",
            ),
            ViewError::Store(e) => e.into(),
        }
    }
}

impl From<CancelError> for Problem {
    fn from(e: CancelError) -> Self {
        match e {
            CancelError::View(e) => e.into(),
            CancelError::Finished(run) => Problem::new(
                StatusCode::CONFLICT,
                "run_finished",
                format!("The run already ended ({})", run.status.as_str()),
            ),
        }
    }
}

impl From<ShareError> for Problem {
    fn from(e: ShareError) -> Self {
        match e {
            ShareError::View(e) => e.into(),
            ShareError::NotFinished => Problem::new(
                StatusCode::CONFLICT,
                "run_not_finished",
                "Only a run that has ended can be shared",
            ),
            ShareError::NotFound => Problem::share_not_found(),
        }
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            Problem::unavailable(e)
        } else {
            Problem::internal(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_dependency_is_503_with_retry_after_and_a_failure_500() {
        let busy = Problem::from(StoreError::unavailable("throttled")).into_response();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
        let Body::Full(body) = busy.into_body() else {
            panic!("a problem is a full body")
        };
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "unavailable");
        assert!(!body["detail"].as_str().unwrap().contains("throttled"));

        let broken = Problem::from(CastError::Store(StoreError::new("corrupt"))).into_response();
        assert_eq!(broken.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(broken.headers().get(header::RETRY_AFTER).is_none());
    }

    /// Every code the crate answers with is one the document's `Problem.code` lists: a client
    /// generated from the document must not reject a real answer (Schemathesis found one).
    #[test]
    fn every_code_answered_is_in_the_document() {
        let doc: serde_json::Value = serde_json::from_str(crate::OPENAPI_JSON).unwrap();
        let listed: Vec<&str> = doc["components"]["schemas"]["Problem"]["properties"]["code"]
            ["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let sources = [
            include_str!("problem.rs"),
            include_str!("lib.rs"),
            include_str!("cast.rs"),
            include_str!("payments.rs"),
            include_str!("runs.rs"),
        ];
        let mut answered = Vec::new();
        for source in sources {
            // Spelled in two halves so this test's own text is not a call it finds.
            for call in source.split(concat!("Problem", "::new(")).skip(1) {
                // Arguments are `status, code, detail`; a code that is a variable is some other
                // call's literal, checked there.
                let code = call.split_once(',').unwrap().1.trim_start();
                if let Some(literal) = code.strip_prefix('"') {
                    answered.push(literal.split('"').next().unwrap());
                }
            }
        }
        assert!(
            answered.len() > 20,
            "the scan found the calls: {answered:?}"
        );
        for code in answered {
            assert!(
                listed.contains(&code),
                "`{code}` is answered but not documented"
            );
        }
    }
}
