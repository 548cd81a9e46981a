//! Casting: pays an invoice and queues a run in one atomic store change, then asks for the run to
//! be executed. Casting again with the same invoice and inputs answers with the same run.

use serde_json::Value;

use crate::auth::TokenKeys;
use crate::ports::{Clock, EventBus, InvoiceStore, StoreError, UploadStore};
use spellcast_domain::cast::{CastOutcome, NewCast};
use spellcast_domain::catalog::Catalog;
use spellcast_domain::errors::FieldError;
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
                let event = run.execution();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quote::QuoteRequest;
    use crate::testing::Fixture;
    use serde_json::json;
    use spellcast_domain::ledger::LedgerKind;

    /// A spell `t` of two `text.render` steps: 2 points nominally.
    fn fixture() -> Fixture {
        Fixture::new(spellcast_domain::testing::catalog_of(json!([
            {"id": "a", "title": "A", "tool": "text.render", "with": {"template": "a"}},
            {"id": "b", "title": "B", "tool": "text.render", "with": {"template": "b"}}
        ])))
    }

    async fn quote(f: &Fixture, user: &str) -> String {
        f.quotes()
            .quote(QuoteRequest {
                user: user.into(),
                slug: Slug::parse("t").unwrap(),
                asset: "PTS".into(),
                idempotency: None,
            })
            .await
            .unwrap()
            .invoice_id
    }

    fn request<'r>(user: &str, invoice: &'r str, context: Value) -> CastRequest<'r> {
        CastRequest {
            user: user.into(),
            slug: Slug::parse("t").unwrap(),
            invoice,
            context,
            webhook: None,
        }
    }

    #[tokio::test]
    async fn a_quote_is_paid_once_whatever_the_retries() {
        let f = fixture();
        f.fund("u", 10).await;
        let invoice = quote(&f, "u").await;
        let casting = f.casting();
        let Cast::Created(run) = casting
            .cast(request("u", &invoice, json!({"n": 1})))
            .await
            .unwrap()
        else {
            panic!("the first cast creates the run")
        };
        assert_eq!((run.cost_pts, f.balance("u")), (2, 8));
        // A retry of the same cast answers with the same run and pays nothing.
        let Cast::Replayed(again) = casting
            .cast(request("u", &invoice, json!({"n": 1})))
            .await
            .unwrap()
        else {
            panic!("a retry replays")
        };
        assert_eq!(again.run_id, run.run_id);
        // The invoice cannot pay for other inputs.
        let other = casting.cast(request("u", &invoice, json!({"n": 2}))).await;
        assert!(
            matches!(other, Err(CastError::InvoiceConsumed)),
            "{other:?}"
        );
        assert_eq!(f.balance("u"), 8);
        let debits = f.store.with(|s| {
            s.ledger
                .iter()
                .filter(|e| e.kind == LedgerKind::Debit)
                .count()
        });
        assert_eq!(debits, 1);
        assert_eq!(*f.bus.started.lock().unwrap(), vec![run.run_id]);
    }

    #[tokio::test]
    async fn a_refused_cast_pays_nothing_and_queues_nothing() {
        let f = fixture();
        f.fund("u", 2).await;
        let invoice = quote(&f, "u").await;
        // Someone else's invoice, and inputs that break the spell's schema (not an object).
        let stolen = f.casting().cast(request("v", &invoice, json!({}))).await;
        assert!(matches!(stolen, Err(CastError::InvoiceOfAnotherUser)));
        let invalid = f.casting().cast(request("u", &invoice, json!([1]))).await;
        assert!(matches!(invalid, Err(CastError::InvalidContext(_))));
        // The balance dropped below the quote since: refused, the invoice still open.
        f.fund("u", -1).await;
        let poor = f.casting().cast(request("u", &invoice, json!({}))).await;
        assert!(
            matches!(
                poor,
                Err(CastError::InsufficientBalance {
                    balance: 1,
                    cost_pts: 2
                })
            ),
            "{poor:?}"
        );
        // Paid in time, it would have gone through; paid late, it is expired.
        f.fund("u", 1).await;
        f.clock
            .advance(chrono::Duration::minutes(Fixture::INVOICE_TTL_MINUTES + 1));
        let late = f.casting().cast(request("u", &invoice, json!({}))).await;
        assert!(matches!(late, Err(CastError::InvoiceExpired)), "{late:?}");
        assert_eq!(f.balance("u"), 2);
        assert!(f.store.with(|s| s.runs.is_empty()));
        assert!(f.bus.started.lock().unwrap().is_empty());
    }
}
