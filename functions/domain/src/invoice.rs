//! Invoices (binding quotes) and the idempotency records that make issuing them safe to retry.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::ids::{CreditTxId, InvoiceId, RunId, Slug, UserId};

/// Whether an invoice can still be paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum InvoiceState {
    /// Issued, not yet used.
    Open,
    /// Paid by a cast; a cast with the same context gets these ids back.
    #[serde(rename_all = "camelCase")]
    Consumed {
        /// The run it paid for.
        run_id: RunId,
        /// The debit's transaction id.
        credit_tx_id: CreditTxId,
        /// The hash of the context it was cast with.
        context_hash: String,
    },
}

/// The stored side of an invoice; its id is the JWT's `jti`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvoiceRecord {
    /// The `jti` of the invoice JWT.
    pub invoice_id: InvoiceId,
    /// Who may pay it.
    pub user_id: UserId,
    /// The spell it pays for.
    pub slug: Slug,
    /// The spell version quoted.
    pub version: u32,
    /// The binding price.
    pub cost_pts: i64,
    /// The asset (`PTS`).
    pub asset: String,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// When it stops being payable.
    pub expires_at: DateTime<Utc>,
    /// Open or consumed.
    #[serde(flatten)]
    pub state: InvoiceState,
}

/// A remembered `Idempotency-Key`: the request it came with and the answer it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdempotencyRecord {
    /// The user the key belongs to (keys are per user).
    pub user_id: UserId,
    /// The client's key.
    pub key: String,
    /// Hash of the request body, to tell a retry from a different request.
    pub request_hash: String,
    /// The response body first returned.
    pub response: Value,
    /// When the key was first used.
    pub created_at: DateTime<Utc>,
    /// When it may be forgotten.
    pub expires_at: DateTime<Utc>,
}

/// What issuing an invoice did.
#[derive(Debug, Clone, PartialEq)]
pub enum IssueOutcome {
    /// A new invoice was stored.
    Issued,
    /// The key was used before with the same request: here is the first answer.
    Replayed(IdempotencyRecord),
    /// The key was used before with a different request.
    KeyConflict,
}

/// A stable hash of a JSON value: object keys are sorted first, so equal values hash equal
/// whatever order a client wrote them in.
pub fn json_hash(value: &Value) -> String {
    fn canonical(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.clone(), canonical(v)))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
            other => other.clone(),
        }
    }
    hex::encode(Sha256::digest(canonical(value).to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hash_ignores_key_order_but_not_values() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":[1,{"y":1,"x":2}]}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b":[1,{"x":2,"y":1}],"a":1}"#).unwrap();
        assert_eq!(json_hash(&a), json_hash(&b));
        assert_ne!(
            json_hash(&a),
            json_hash(&json!({"a":2,"b":[1,{"x":2,"y":1}]}))
        );
    }
}
