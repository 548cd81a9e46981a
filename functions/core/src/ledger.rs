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
}

/// The only asset the product knows.
pub const PTS: &str = "PTS";
