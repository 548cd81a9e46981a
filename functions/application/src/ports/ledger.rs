//! The store's part that keeps balances and the ledger: every change of a balance is one entry, in one transaction.

use async_trait::async_trait;

use spellcast_domain::ids::{CreditTxId, UserId};
use spellcast_domain::ledger::{GrantKey, GrantOutcome, LedgerEntry};

use super::StoreResult;

/// Balances and the ledger: every change of a balance is one entry, in one transaction.
#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// Adds a grant entry and credits the balance; returns the new balance.
    async fn grant(&self, entry: LedgerEntry) -> StoreResult<i64>;
    /// Posts a grant at most once under `key`: the key's record, the entry and the balance
    /// change in one transaction. A negative grant never takes the balance below zero.
    async fn grant_once(&self, entry: LedgerEntry, key: &GrantKey) -> StoreResult<GrantOutcome>;
    /// The user's balance (0 for a stranger).
    async fn balance(&self, user_id: &UserId) -> StoreResult<i64>;
    /// Ledger entries newest first, strictly older than `before` (a tx id) when given.
    async fn ledger(
        &self,
        user_id: &UserId,
        limit: usize,
        before: Option<&CreditTxId>,
    ) -> StoreResult<Vec<LedgerEntry>>;
}
