//! The points ledger: every change of a balance is one entry, so `sum(entries) == balance`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{CreditTxId, InvoiceId, RunId, UserId};

/// Why points moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedgerKind {
    /// Points given to the user (demo grant, purchase).
    Grant,
    /// Points paid for a run.
    Debit,
    /// Points returned for a failed run.
    Refund,
}

/// One ledger entry. `pts` is signed: debits are negative.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    /// The transaction id (a debit's id is the run's `creditTxId`).
    pub tx_id: CreditTxId,
    /// Whose balance moved.
    pub user_id: UserId,
    /// Why it moved.
    pub kind: LedgerKind,
    /// The asset; only `PTS` exists.
    pub asset: String,
    /// The signed amount in points.
    pub pts: i64,
    /// The run this entry belongs to, for debits and refunds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<RunId>,
    /// The invoice paid, for debits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoice_id: Option<InvoiceId>,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Why points were granted (`welcome`, or an admin's words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who granted them (an IAM principal, `admin-token`, or `spellcast` for the welcome grant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_by: Option<String>,
}

/// A key under which a grant happens at most once, with a fingerprint of the request that made
/// it (a replay with another request is a conflict, not a second grant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantKey {
    /// Unique across the store (`welcome:USER`, `admin:IDEMPOTENCY-KEY`).
    pub key: String,
    /// What was asked under it.
    pub fingerprint: String,
}

/// What happened to a grant made under a [`GrantKey`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantOutcome {
    /// Posted now: the entry and the new balance.
    Granted {
        /// The entry.
        entry: LedgerEntry,
        /// The balance after it.
        balance: i64,
    },
    /// The key was used before: its entry and fingerprint, nothing posted.
    Repeated {
        /// The first grant's entry.
        entry: LedgerEntry,
        /// The first grant's fingerprint.
        fingerprint: String,
    },
    /// A negative grant larger than the balance: nothing posted.
    Insufficient {
        /// The balance as it is.
        balance: i64,
    },
}

/// The only asset the product knows.
pub const PTS: &str = "PTS";

impl LedgerEntry {
    /// A grant (or a take-back, negative) made by `granted_by` for `reason`.
    pub fn grant(
        user: &UserId,
        pts: i64,
        reason: &str,
        granted_by: &str,
        now: DateTime<Utc>,
    ) -> LedgerEntry {
        LedgerEntry {
            tx_id: CreditTxId::new(),
            user_id: user.clone(),
            kind: LedgerKind::Grant,
            asset: PTS.into(),
            pts,
            run_id: None,
            invoice_id: None,
            at: now,
            reason: Some(reason.to_owned()),
            granted_by: Some(granted_by.to_owned()),
        }
    }
}
