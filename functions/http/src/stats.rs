//! `POST /api/v1/internal/stats/refresh`: the signed webhook that recomputes spell prices now.

use std::sync::Arc;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::StatusCode;
use serde_json::json;
use sha2::Sha256;

use super::{json, Handled, Problem};
use crate::Api;

/// How far a signature's timestamp may be from now.
const TOLERANCE_SECS: i64 = 300;

/// Checks `X-Spellcast-Signature: sha256=<hex>` over `timestamp + "." + body`, in constant time.
pub fn verify_signature(
    secret: &[u8],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: i64,
) -> bool {
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    // Checked: the timestamp is the client's, any i64 (i64::MIN would overflow a subtraction).
    let fresh = now
        .checked_sub(ts)
        .is_some_and(|age| age.unsigned_abs() <= TOLERANCE_SECS.unsigned_abs());
    if !fresh {
        return false;
    }
    let Some(hex_sig) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// `POST /api/v1/internal/stats/refresh`.
pub async fn refresh(app: &Arc<Api>, req: &http::request::Parts, body: &Bytes) -> Handled {
    let header = |name: &str| {
        req.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let signed = app
        .config()
        .webhook_secret
        .as_deref()
        .is_some_and(|secret| {
            verify_signature(
                secret,
                header("x-spellcast-timestamp"),
                header("x-spellcast-signature"),
                body,
                app.now().timestamp(),
            )
        });
    if !signed {
        return Err(Problem::unauthorized(
            "The webhook signature is missing, wrong or too old",
        ));
    }
    let stats = app.pricing().recompute().await?;
    Ok(json(StatusCode::OK, &json!({ "spells": stats })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], ts: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("{ts}.").as_bytes());
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn only_a_fresh_signature_over_this_body_passes() {
        let secret = b"s3cret";
        let sig = sign(secret, "1000", b"{}");
        assert!(verify_signature(secret, "1000", &sig, b"{}", 1100));
        assert!(
            !verify_signature(secret, "1000", &sig, b"{ }", 1100),
            "other body"
        );
        assert!(
            !verify_signature(b"other", "1000", &sig, b"{}", 1100),
            "other key"
        );
        assert!(
            !verify_signature(secret, "1000", &sig, b"{}", 1000 + 301),
            "too old"
        );
        assert!(
            !verify_signature(secret, "1000", "sha256=zz", b"{}", 1100),
            "not hex"
        );
        assert!(
            !verify_signature(secret, "x", &sig, b"{}", 1100),
            "bad timestamp"
        );
        for extreme in [i64::MIN, i64::MAX] {
            assert!(
                !verify_signature(secret, &extreme.to_string(), &sig, b"{}", 1100),
                "{extreme}"
            );
        }
    }
}
