//! The store's part that keeps invoices and idempotency keys, and the cast transaction that consumes an invoice.

use async_trait::async_trait;

use spellcast_domain::cast::{CastOutcome, NewCast};
use spellcast_domain::ids::UserId;
use spellcast_domain::invoice::{IdempotencyRecord, InvoiceRecord, IssueOutcome};

use super::StoreResult;

/// Invoices and idempotency keys, and the cast transaction that consumes an invoice.
#[async_trait]
pub trait InvoiceStore: Send + Sync {
    /// A remembered idempotency key of a user, unless it has expired.
    async fn idempotency(
        &self,
        user_id: &UserId,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>>;
    /// Stores a new invoice, honouring an idempotency key if there is one.
    async fn issue_invoice(
        &self,
        invoice: InvoiceRecord,
        idempotency: Option<IdempotencyRecord>,
    ) -> StoreResult<IssueOutcome>;
    /// The cast transaction: invoice open→consumed, debit, ledger entry, queued run.
    async fn cast(&self, cast: NewCast) -> StoreResult<CastOutcome>;
}
