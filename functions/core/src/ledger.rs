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

/// One page of a user's ledger, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerPage {
    /// The entries.
    pub entries: Vec<LedgerEntry>,
    /// Where the next page starts, if there is one.
    pub next: Option<CreditTxId>,
}

/// What reading balances and ledgers needs: the store.
pub struct Accounts<'a> {
    /// Balances and ledger entries.
    pub store: &'a dyn crate::ports::Store,
}

impl Accounts<'_> {
    /// The user's balance in points (0 for a stranger).
    pub async fn balance(&self, user: &UserId) -> crate::ports::StoreResult<i64> {
        self.store.balance(user).await
    }

    /// The user's webhook signing secret, made on first use.
    pub async fn webhook_secret(
        &self,
        user: &UserId,
    ) -> crate::ports::StoreResult<crate::webhooks::WebhookSecret> {
        match self.store.webhook_secret(user).await? {
            Some(secret) => Ok(secret),
            None => {
                let fresh = crate::webhooks::WebhookSecret::generate();
                self.store.put_webhook_secret(user, fresh, false).await
            }
        }
    }

    /// A new webhook signing secret for the user; the old one stops signing at once.
    pub async fn rotate_webhook_secret(
        &self,
        user: &UserId,
    ) -> crate::ports::StoreResult<crate::webhooks::WebhookSecret> {
        let fresh = crate::webhooks::WebhookSecret::generate();
        self.store.put_webhook_secret(user, fresh, true).await
    }

    /// Up to `limit` entries strictly older than `before` (a page's `next`), newest first.
    pub async fn ledger_page(
        &self,
        user: &UserId,
        limit: usize,
        before: Option<&CreditTxId>,
    ) -> crate::ports::StoreResult<LedgerPage> {
        // One more than asked tells whether another page follows.
        let mut entries = self.store.ledger(user, limit + 1, before).await?;
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next = more
            .then(|| entries.last().map(|e| e.tx_id.clone()))
            .flatten();
        Ok(LedgerPage { entries, next })
    }
}
