//! Delivering run webhooks (SPEC §3.13): one attempt at a stored delivery, signed with its owner's
//! secret, recorded with when the next is due. Whoever drives it — the local worker polling the
//! store, or the `webhooks` Lambda fed by SQS — only says when to come back.

use chrono::{DateTime, Utc};

use crate::ports::WebhookSender;
use crate::ports::{Clock, DeliveryStore, StoreResult};
use spellcast_domain::ids::{RunId, UserId};
use spellcast_domain::webhooks::{retry_after, Attempt, Delivery, Outgoing, WebhookSecret};

/// What delivering needs: the store (deliveries, secrets), the outbound client, the time.
pub struct Delivering<'a> {
    /// Deliveries and signing secrets.
    pub store: &'a dyn DeliveryStore,
    /// The outbound HTTP client.
    pub sender: &'a dyn WebhookSender,
    /// The time.
    pub clock: &'a dyn Clock,
    /// Divides the retry delays: 1 on AWS; the local server's tests may shorten them.
    pub retry_divisor: u32,
}

/// What is next for a delivery after [`Delivering::attempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing: delivered, given up, or unknown.
    Done,
    /// Come back at this time (a retry, or an attempt not due yet).
    At(DateTime<Utc>),
}

impl Delivering<'_> {
    /// Makes the attempt delivery `webhook_id` of `run_id` is due for, if it is due.
    pub async fn attempt(&self, run_id: &RunId, webhook_id: &str) -> StoreResult<Next> {
        let Some(delivery) = self.store.delivery(run_id, webhook_id).await? else {
            tracing::warn!(%run_id, webhook_id, "no such delivery");
            return Ok(Next::Done);
        };
        let Some(due) = delivery.next_at else {
            return Ok(Next::Done);
        };
        let now = self.clock.now();
        if due > now {
            return Ok(Next::At(due));
        }
        let secret = self.secret(&delivery.user_id).await?;
        let timestamp = now.timestamp();
        let outgoing = Outgoing {
            url: delivery.url.clone(),
            id: delivery.webhook_id.clone(),
            timestamp,
            signature: secret.sign(&delivery.webhook_id, timestamp, delivery.body.as_bytes()),
            body: delivery.body.clone().into_bytes(),
        };
        let attempted = self.sender.send(&outgoing).await;
        let number = delivery.attempts.len() as u32 + 1;
        let next_at = if attempted.delivered() {
            None
        } else {
            retry_after(number).map(|d| now + d / self.retry_divisor.max(1))
        };
        let attempt = Attempt {
            webhook_id: delivery.webhook_id.clone(),
            kind: delivery.kind.clone(),
            attempt: number,
            status: attempted.status,
            error: attempted.error.clone(),
            at: now,
            next_at,
        };
        let recorded = self
            .store
            .record_attempt(run_id, webhook_id, attempt)
            .await?;
        if !recorded {
            // Another worker made this attempt too (a duplicate queue message): its record
            // stands, and it decides what comes next.
            tracing::info!(%run_id, webhook_id, number, "attempt recorded by another worker");
            return Ok(Next::Done);
        }
        match (&attempted.error, next_at) {
            (None, None) => tracing::info!(%run_id, webhook_id, number, "webhook delivered"),
            (error, Some(next)) => {
                tracing::info!(%run_id, webhook_id, number, ?error, %next, "webhook not taken; will retry")
            }
            (error, None) => {
                tracing::warn!(%run_id, webhook_id, number, ?error, "webhook given up")
            }
        }
        Ok(next_at.map_or(Next::Done, Next::At))
    }

    /// The user's secret, made now if they never asked for one (racing makers keep one).
    async fn secret(&self, user: &UserId) -> StoreResult<WebhookSecret> {
        match self.store.webhook_secret(user).await? {
            Some(secret) => Ok(secret),
            None => {
                self.store
                    .put_webhook_secret(user, WebhookSecret::generate(), false)
                    .await
            }
        }
    }

    /// Pending deliveries due now, soonest first, at most `limit`.
    pub async fn due(&self, limit: usize) -> StoreResult<Vec<Delivery>> {
        self.store.due_deliveries(self.clock.now(), limit).await
    }
}
