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

    /// Grants `pts` to a user seen for the first time (SPEC §9.2): once per user, however many
    /// first requests race. Nothing when `pts` is not positive.
    pub async fn welcome(
        &self,
        user: &UserId,
        pts: i64,
        now: DateTime<Utc>,
    ) -> crate::ports::StoreResult<()> {
        if pts <= 0 {
            return Ok(());
        }
        let key = GrantKey {
            key: format!("welcome:{user}"),
            fingerprint: "welcome".into(),
        };
        let entry = grant_entry(user, pts, "welcome", "spellcast", now);
        self.store.grant_once(entry, &key).await.map(|_| ())
    }

    /// An administrator's grant (SPEC §9.2): idempotent under `idempotency_key` (a replay of the
    /// same request answers the first entry; another request under it is a conflict), never
    /// taking the balance below zero.
    pub async fn admin_grant(
        &self,
        grant: AdminGrant,
        now: DateTime<Utc>,
    ) -> Result<LedgerEntry, AdminGrantError> {
        let fingerprint = {
            use sha2::{Digest, Sha256};
            let asked = serde_json::json!([grant.user, grant.pts, grant.reason]);
            hex::encode(Sha256::digest(asked.to_string().as_bytes()))
        };
        let key = GrantKey {
            key: format!(
                "admin:{}",
                grant
                    .idempotency_key
                    .unwrap_or_else(|| CreditTxId::new().to_string())
            ),
            fingerprint,
        };
        let entry = grant_entry(
            &grant.user,
            grant.pts,
            &grant.reason,
            &grant.granted_by,
            now,
        );
        match self.store.grant_once(entry, &key).await? {
            GrantOutcome::Granted { entry, .. } => Ok(entry),
            GrantOutcome::Repeated { entry, fingerprint } if fingerprint == key.fingerprint => {
                Ok(entry)
            }
            GrantOutcome::Repeated { .. } => Err(AdminGrantError::KeyReused),
            GrantOutcome::Insufficient { balance } => {
                Err(AdminGrantError::Insufficient { balance })
            }
        }
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

fn grant_entry(
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

/// An administrator's grant, as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminGrant {
    /// To whom.
    pub user: UserId,
    /// How many points; negative takes points back.
    pub pts: i64,
    /// Why, shown to the user in their ledger.
    pub reason: String,
    /// Who asked (an IAM principal's ARN, or `admin-token` locally).
    pub granted_by: String,
    /// The client's `Idempotency-Key`, if it sent one.
    pub idempotency_key: Option<String>,
}

/// Why an administrator's grant was not posted.
#[derive(Debug, thiserror::Error)]
pub enum AdminGrantError {
    /// The idempotency key was used for another request.
    #[error("this Idempotency-Key was used for another grant")]
    KeyReused,
    /// Taking the points would leave less than zero.
    #[error("the balance is {balance}: it cannot go below zero")]
    Insufficient {
        /// The balance as it is.
        balance: i64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::ports::StoreError),
}
