//! Balances and ledgers: reading them, a user's welcome grant and an administrator's grants.

use chrono::{DateTime, Utc};

use spellcast_domain::ids::{CreditTxId, UserId};
use spellcast_domain::ledger::{GrantKey, GrantOutcome, LedgerEntry};

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
    pub ledger: &'a dyn crate::ports::LedgerStore,
    /// Webhook signing secrets.
    pub secrets: &'a dyn crate::ports::DeliveryStore,
}

impl Accounts<'_> {
    /// The user's balance in points (0 for a stranger).
    pub async fn balance(&self, user: &UserId) -> crate::ports::StoreResult<i64> {
        self.ledger.balance(user).await
    }

    /// The user's webhook signing secret, made on first use.
    pub async fn webhook_secret(
        &self,
        user: &UserId,
    ) -> crate::ports::StoreResult<spellcast_domain::webhooks::WebhookSecret> {
        match self.secrets.webhook_secret(user).await? {
            Some(secret) => Ok(secret),
            None => {
                let fresh = spellcast_domain::webhooks::WebhookSecret::generate();
                self.secrets.put_webhook_secret(user, fresh, false).await
            }
        }
    }

    /// A new webhook signing secret for the user; the old one stops signing at once.
    pub async fn rotate_webhook_secret(
        &self,
        user: &UserId,
    ) -> crate::ports::StoreResult<spellcast_domain::webhooks::WebhookSecret> {
        let fresh = spellcast_domain::webhooks::WebhookSecret::generate();
        self.secrets.put_webhook_secret(user, fresh, true).await
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
        let entry = LedgerEntry::grant(user, pts, "welcome", "spellcast", now);
        self.ledger.grant_once(entry, &key).await.map(|_| ())
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
        let entry = LedgerEntry::grant(
            &grant.user,
            grant.pts,
            &grant.reason,
            &grant.granted_by,
            now,
        );
        match self.ledger.grant_once(entry, &key).await? {
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
        let mut entries = self.ledger.ledger(user, limit + 1, before).await?;
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next = more
            .then(|| entries.last().map(|e| e.tx_id.clone()))
            .flatten();
        Ok(LedgerPage { entries, next })
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
