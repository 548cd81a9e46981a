//! The cast rule (SPEC §5.2): what a stored invoice says a cast must do — pay at the binding
//! price, answer with the run it already paid for, or refuse — decided before anything is written.

use chrono::{DateTime, Utc};

use crate::ids::{InvoiceId, RunId, UserId};
use crate::invoice::{InvoiceRecord, InvoiceState};
use crate::ledger::LedgerEntry;
use crate::run::Run;

/// Everything a cast writes, in one atomic change.
#[derive(Debug, Clone)]
pub struct NewCast {
    /// The invoice paid (`jti`).
    pub invoice_id: InvoiceId,
    /// Who pays.
    pub user_id: UserId,
    /// Hash of the context, to recognise a retry.
    pub context_hash: String,
    /// Now: an open invoice past its expiry can no longer be consumed.
    pub now: DateTime<Utc>,
    /// The queued run (its `cost_pts` is the amount debited).
    pub run: Run,
    /// The debit entry.
    pub debit: LedgerEntry,
}

/// What the stored invoice says a cast must do: the one rule every store applies before writing.
#[derive(Debug, Clone)]
pub enum CastCheck {
    /// Answer this without writing anything.
    Answer(CastOutcome),
    /// The invoice already paid for this very cast: answer with that run.
    Replay {
        /// The run it paid for.
        run_id: RunId,
    },
    /// Pay: the run and the debit, priced at the invoice's binding cost.
    Pay {
        /// The queued run.
        run: Run,
        /// The debit entry.
        debit: LedgerEntry,
    },
}

impl NewCast {
    /// Decides the cast from the stored invoice (if any): unknown or someone else's, consumed by
    /// this cast or another, expired, or payable at its price.
    pub fn check(&self, invoice: Option<&InvoiceRecord>) -> CastCheck {
        let Some(invoice) = invoice.filter(|i| i.user_id == self.user_id) else {
            return CastCheck::Answer(CastOutcome::UnknownInvoice);
        };
        if let InvoiceState::Consumed {
            run_id,
            context_hash,
            ..
        } = &invoice.state
        {
            return if *context_hash == self.context_hash {
                CastCheck::Replay {
                    run_id: run_id.clone(),
                }
            } else {
                CastCheck::Answer(CastOutcome::ContextMismatch)
            };
        }
        if self.now >= invoice.expires_at {
            return CastCheck::Answer(CastOutcome::Expired);
        }
        let mut run = self.run.clone();
        run.cost_pts = invoice.cost_pts;
        CastCheck::Pay {
            debit: run.debit_entry(),
            run,
        }
    }
}

/// What a cast did.
#[derive(Debug, Clone)]
pub enum CastOutcome {
    /// The invoice was consumed, the balance debited, the run queued.
    Created(Run),
    /// The invoice was already consumed by the same cast: the same run.
    Replayed(Run),
    /// The invoice was already consumed with another context.
    ContextMismatch,
    /// The balance does not cover the price; nothing changed.
    InsufficientBalance {
        /// The balance as it is.
        balance: i64,
    },
    /// The invoice is still open but has expired.
    Expired,
    /// No such invoice, or it belongs to someone else.
    UnknownInvoice,
}
