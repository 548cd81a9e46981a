//! Casting: pays an invoice and queues a run in one atomic store change, then asks for the run to
//! be executed. Casting again with the same invoice and inputs answers with the same run.

use serde_json::Value;

use crate::auth::TokenKeys;
use crate::ports::{Clock, EventBus, InvoiceStore, StoreError, UploadStore};
use spellcast_domain::cast::{CastOutcome, NewCast};
use spellcast_domain::catalog::Catalog;
use spellcast_domain::errors::FieldError;
use spellcast_domain::events::ExecutionStarted;
use spellcast_domain::ids::{Slug, UserId};
use spellcast_domain::invoice::json_hash;
use spellcast_domain::run::Run;

/// What casting needs: the catalog, the store, the bus, the keys that check invoices, the time.
pub struct Casting<'a> {
    /// The spells.
    pub catalog: &'a Catalog,
    /// Invoices, and the cast transaction (invoice, balance, ledger, run).
    pub invoices: &'a dyn InvoiceStore,
    /// Uploads, for file inputs.
    pub uploads: &'a dyn UploadStore,
    /// Where execution is asked for.
    pub bus: &'a dyn EventBus,
    /// Verifies invoice tokens.
    pub keys: &'a TokenKeys,
    /// The time.
    pub clock: &'a dyn Clock,
    /// Where uploaded files are (file inputs: SPEC §7.3).
    pub blobs: &'a dyn crate::ports::Blobs,
}

/// A cast as the client asks for it.
#[derive(Debug, Clone)]
pub struct CastRequest<'r> {
    /// Who pays.
    pub user: UserId,
    /// The spell.
    pub slug: Slug,
    /// The invoice token from the quote.
    pub invoice: &'r str,
    /// The inputs.
    pub context: Value,
    /// Where to send its webhook deliveries, if anywhere (already checked).
    pub webhook: Option<spellcast_domain::webhooks::WebhookTarget>,
}

/// A cast that was paid for.
#[derive(Debug, Clone)]
pub enum Cast {
    /// Paid now: the run is queued.
    Created(Run),
    /// Paid before by this very cast: the same run.
    Replayed(Run),
}

/// Why a cast was refused; nothing was paid.
#[derive(Debug, thiserror::Error)]
pub enum CastError {
    /// The invoice token is not one of ours.
    #[error("the invoice is not valid")]
    InvoiceInvalid,
    /// The token is ours but the store knows no such invoice of this user.
    #[error("the invoice is not known")]
    InvoiceUnknown,
    /// The invoice is for another spell.
    #[error("the invoice is for another spell")]
    InvoiceForAnotherSpell,
    /// The invoice belongs to another user.
    #[error("the invoice belongs to someone else")]
    InvoiceOfAnotherUser,
    /// The quote expired before it was paid.
    #[error("the quote has expired")]
    InvoiceExpired,
    /// The invoice already paid for a cast with other inputs.
    #[error("the invoice already paid for other inputs")]
    InvoiceConsumed,
    /// No such spell.
    #[error("no spell `{0}`")]
    UnknownSpell(Slug),
    /// The inputs do not fit the spell's schema.
    #[error("{} input(s) do not fit the spell", .0.len())]
    InvalidContext(Vec<FieldError>),
    /// The balance does not cover the price.
    #[error("the spell costs {cost_pts} and the balance is {balance}")]
    InsufficientBalance {
        /// The balance.
        balance: i64,
        /// The quoted price.
        cost_pts: i64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Casting<'_> {
    /// Casts: checks the invoice and the inputs, pays and queues atomically, then publishes the
    /// start event (a lost one is published again by recovery).
    pub async fn cast(&self, request: CastRequest<'_>) -> Result<Cast, CastError> {
        // Expiry is judged by the store against the invoice's state, so a retry of a cast that
        // already consumed the invoice still gets its ids back after the quote expired.
        let claims = self
            .keys
            .verify_invoice_ignoring_expiry(request.invoice)
            .map_err(|_| CastError::InvoiceInvalid)?;
        if claims.sub != request.user {
            return Err(CastError::InvoiceOfAnotherUser);
        }
        if claims.spell != request.slug {
            return Err(CastError::InvoiceForAnotherSpell);
        }
        let spell = self
            .catalog
            .get(&request.slug)
            .ok_or_else(|| CastError::UnknownSpell(request.slug.clone()))?;
        let errors = spell.validate_context(&request.context);
        if !errors.is_empty() {
            return Err(CastError::InvalidContext(errors));
        }

        let now = self.clock.now();
        let uploads = crate::uploading::check_inputs(
            &spell.files,
            &request.context,
            &request.user,
            now,
            self.uploads,
            self.blobs,
        )
        .await
        .map_err(|e| match e {
            crate::uploading::InputError::Invalid(errors) => CastError::InvalidContext(errors),
            crate::uploading::InputError::Store(e) => CastError::Store(e),
        })?;
        let context_hash = json_hash(&request.context);
        let mut run = Run::queued(
            &spell,
            &claims.jti,
            &request.user,
            claims.cost,
            request.context,
            now,
        );
        run.webhook = request.webhook;
        run.uploads = uploads;
        let debit = run.debit_entry();
        let outcome = self
            .invoices
            .cast(NewCast {
                invoice_id: claims.jti,
                user_id: request.user,
                context_hash,
                now,
                run,
                debit,
            })
            .await?;
        match outcome {
            CastOutcome::Created(run) => {
                // Out of the prefix that expires; the runner copies again if this is cut short.
                if let Err(e) = crate::uploading::keep(self.blobs, &run.uploads).await {
                    tracing::warn!(run_id = %run.run_id, error = %e, "uploads not kept yet");
                }
                let event = ExecutionStarted {
                    run_id: run.run_id.clone(),
                    slug: run.slug.clone(),
                };
                if let Err(e) = self.bus.execution_started(event).await {
                    // The run is paid and queued; recovery publishes it again.
                    tracing::warn!(run_id = %run.run_id, error = %e, "executionStarted not published");
                }
                tracing::info!(run_id = %run.run_id, cost_pts = run.cost_pts, "run cast");
                Ok(Cast::Created(run))
            }
            CastOutcome::Replayed(run) => Ok(Cast::Replayed(run)),
            CastOutcome::ContextMismatch => Err(CastError::InvoiceConsumed),
            CastOutcome::InsufficientBalance { balance } => Err(CastError::InsufficientBalance {
                balance,
                cost_pts: claims.cost,
            }),
            CastOutcome::Expired => Err(CastError::InvoiceExpired),
            // A store forgets invoices some time after they expire (DynamoDB's TTL): a signed
            // one it no longer knows has expired.
            CastOutcome::UnknownInvoice if claims.exp <= now.timestamp() => {
                Err(CastError::InvoiceExpired)
            }
            CastOutcome::UnknownInvoice => Err(CastError::InvoiceUnknown),
        }
    }
}
