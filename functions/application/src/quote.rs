//! Quoting: a binding price for one spell, signed as an invoice token and stored so that exactly
//! one cast can pay it. Retries with the same `Idempotency-Key` get the first quote back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::{InvoiceClaims, TokenKeys};
use crate::ports::{Clock, CostStore, InvoiceStore, LedgerStore, StoreError};
use crate::pricing::PriceBook;
use spellcast_domain::catalog::Catalog;
use spellcast_domain::ids::{InvoiceId, Slug, UserId};
use spellcast_domain::invoice::{IdempotencyRecord, InvoiceRecord, InvoiceState, IssueOutcome};
use spellcast_domain::ledger::PTS;

/// What quoting needs: the catalog and its prices, the store, the signing keys and the time.
pub struct Quotes<'a> {
    /// The spells.
    pub catalog: &'a Catalog,
    /// Their prices.
    pub prices: &'a PriceBook,
    /// Invoices and idempotency keys.
    pub invoices: &'a dyn InvoiceStore,
    /// Balances.
    pub ledger: &'a dyn LedgerStore,
    /// Saved prices.
    pub costs: &'a dyn CostStore,
    /// Signs the invoice token.
    pub keys: &'a TokenKeys,
    /// The time.
    pub clock: &'a dyn Clock,
    /// How long a quote stays payable.
    pub invoice_ttl: chrono::Duration,
    /// How long an idempotency key is remembered.
    pub idempotency_ttl: chrono::Duration,
}

/// A request for a quote.
#[derive(Debug, Clone)]
pub struct QuoteRequest {
    /// Who will pay.
    pub user: UserId,
    /// The spell.
    pub slug: Slug,
    /// The asset asked for (only `PTS` exists).
    pub asset: String,
    /// The client's `Idempotency-Key` and the hash of its request, if it sent one.
    pub idempotency: Option<(String, String)>,
}

/// A binding quote, exactly as the client receives it (and as a retry receives it again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quote {
    /// The signed invoice token the cast pays with.
    pub invoice_id: String,
    /// The price in points.
    pub cost_pts: i64,
    /// The asset (`PTS`).
    pub asset: String,
    /// The price as a decimal string.
    pub amount: String,
    /// When it stops being payable (RFC 3339, seconds).
    pub expiry: String,
}

/// Why no quote was given.
#[derive(Debug, thiserror::Error)]
pub enum QuoteError {
    /// The idempotency key was used before with a different request.
    #[error("the idempotency key was used with a different request")]
    KeyConflict,
    /// Only `PTS` exists.
    #[error("unknown asset `{0}`")]
    UnknownAsset(String),
    /// No such spell.
    #[error("no spell `{0}`")]
    UnknownSpell(Slug),
    /// The balance does not cover the price.
    #[error("the spell costs {cost_pts} and the balance is {balance}")]
    InsufficientBalance {
        /// The balance.
        balance: i64,
        /// The price.
        cost_pts: i64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Quotes<'_> {
    /// The token that lets `run`'s page watch it and fetch its files (SPEC §2: in a query only an
    /// invoice token may go): the run's paid invoice, signed again with a fresh expiry. It cannot
    /// pay for anything: that invoice is consumed.
    pub fn watch_token(&self, run: &spellcast_domain::run::Run) -> String {
        let now = self.clock.now();
        self.keys.invoice(InvoiceClaims {
            jti: run.invoice_id.clone(),
            sub: run.user_id.clone(),
            spell: run.slug.clone(),
            ver: run.spell_version,
            cost: run.cost_pts,
            asset: PTS.into(),
            iat: now.timestamp(),
            exp: (now + self.invoice_ttl).timestamp(),
            aud: String::new(),
            iss: String::new(),
        })
    }

    /// Quotes a spell: the same answer again for a retried key, else a new invoice at the
    /// spell's current price if the balance covers it.
    pub async fn quote(&self, request: QuoteRequest) -> Result<Quote, QuoteError> {
        let QuoteRequest {
            user,
            slug,
            asset,
            idempotency,
        } = request;
        // A retry gets the first answer, whatever happened since (Stripe semantics).
        if let Some((key, request_hash)) = &idempotency {
            if let Some(seen) = self.invoices.idempotency(&user, key).await? {
                return if seen.request_hash == *request_hash {
                    remembered(seen)
                } else {
                    Err(QuoteError::KeyConflict)
                };
            }
        }
        if asset != PTS {
            return Err(QuoteError::UnknownAsset(asset));
        }
        let spell = self
            .catalog
            .get(&slug)
            .ok_or_else(|| QuoteError::UnknownSpell(slug.clone()))?;
        let price = self.prices.price(&spell, self.costs).await?;
        let balance = self.ledger.balance(&user).await?;
        if balance < price.pts {
            return Err(QuoteError::InsufficientBalance {
                balance,
                cost_pts: price.pts,
            });
        }

        let now = self.clock.now();
        let expires_at = now + self.invoice_ttl;
        let invoice_id = InvoiceId::new();
        let token = self.keys.invoice(InvoiceClaims {
            jti: invoice_id.clone(),
            sub: user.clone(),
            spell: slug.clone(),
            ver: spell.def.version,
            cost: price.pts,
            asset: PTS.into(),
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            aud: String::new(),
            iss: String::new(),
        });
        let quote = Quote {
            invoice_id: token,
            cost_pts: price.pts,
            asset: PTS.into(),
            amount: price.pts.to_string(),
            expiry: rfc3339(expires_at),
        };
        let record = InvoiceRecord {
            invoice_id,
            user_id: user.clone(),
            slug,
            version: spell.def.version,
            cost_pts: price.pts,
            asset: PTS.into(),
            issued_at: now,
            expires_at,
            state: InvoiceState::Open,
        };
        let idempotency = idempotency
            .map(|(key, request_hash)| {
                Ok::<_, StoreError>(IdempotencyRecord {
                    user_id: user,
                    key,
                    request_hash,
                    response: serde_json::to_value(&quote).map_err(StoreError::from_err)?,
                    created_at: now,
                    expires_at: now + self.idempotency_ttl,
                })
            })
            .transpose()?;
        match self.invoices.issue_invoice(record, idempotency).await? {
            IssueOutcome::Issued => Ok(quote),
            IssueOutcome::Replayed(seen) => remembered(seen),
            IssueOutcome::KeyConflict => Err(QuoteError::KeyConflict),
        }
    }
}

/// The quote a key's first request got.
fn remembered(seen: IdempotencyRecord) -> Result<Quote, QuoteError> {
    serde_json::from_value(seen.response)
        .map_err(|e| QuoteError::Store(StoreError::new(format!("remembered quote: {e}"))))
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Fixture;
    use serde_json::json;
    use spellcast_domain::prices::SpellStats;

    /// A spell `t` of a 3-second delay (3 points nominally) and a sigil (5).
    fn fixture() -> Fixture {
        Fixture::new(spellcast_domain::testing::catalog_of(json!([
            {"id": "a", "title": "A", "tool": "time.delay", "with": {"seconds": 3}},
            {"id": "b", "title": "B", "tool": "image.sigil", "with": {"seed": "x"}}
        ])))
    }

    fn ask(user: &str, key: Option<(&str, &str)>) -> QuoteRequest {
        QuoteRequest {
            user: user.into(),
            slug: Slug::parse("t").unwrap(),
            asset: PTS.into(),
            idempotency: key.map(|(k, h)| (k.to_owned(), h.to_owned())),
        }
    }

    #[tokio::test]
    async fn a_quote_is_the_nominal_price_until_an_average_is_saved() {
        let f = fixture();
        f.fund("u", 100).await;
        let quote = f.quotes().quote(ask("u", None)).await.unwrap();
        assert_eq!((quote.cost_pts, quote.amount.as_str()), (8, "8"));
        // The claims the cast will check say the same price.
        let claims = f
            .keys
            .verify_invoice_ignoring_expiry(&quote.invoice_id)
            .unwrap();
        assert_eq!(claims.cost, 8);

        let measured = fixture();
        measured.fund("u", 100).await;
        measured.store.with(|s| {
            s.stats = vec![SpellStats {
                slug: Slug::parse("t").unwrap(),
                avg_cost_pts: 4,
                updated_at: measured.clock.now(),
            }]
        });
        let quote = measured.quotes().quote(ask("u", None)).await.unwrap();
        assert_eq!(quote.cost_pts, 4);
    }

    #[tokio::test]
    async fn a_balance_below_the_price_gets_no_invoice() {
        let f = fixture();
        f.fund("u", 7).await;
        let refused = f.quotes().quote(ask("u", None)).await;
        assert!(
            matches!(
                refused,
                Err(QuoteError::InsufficientBalance {
                    balance: 7,
                    cost_pts: 8
                })
            ),
            "{refused:?}"
        );
        assert!(f.store.with(|s| s.invoices.is_empty()));
    }

    #[tokio::test]
    async fn a_retried_key_gets_the_first_quote_and_another_request_a_conflict() {
        let f = fixture();
        f.fund("u", 100).await;
        let first = f.quotes().quote(ask("u", Some(("k", "h1")))).await.unwrap();
        f.clock.advance(chrono::Duration::minutes(1));
        let again = f.quotes().quote(ask("u", Some(("k", "h1")))).await.unwrap();
        assert_eq!(again, first);
        let other = f.quotes().quote(ask("u", Some(("k", "h2")))).await;
        assert!(matches!(other, Err(QuoteError::KeyConflict)), "{other:?}");
        // Keys are per user.
        f.fund("v", 100).await;
        assert!(f.quotes().quote(ask("v", Some(("k", "h2")))).await.is_ok());
        assert_eq!(f.store.with(|s| s.invoices.len()), 2);
    }
}
