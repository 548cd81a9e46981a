//! The store's part that keeps webhook secrets and deliveries.

use async_trait::async_trait;

use chrono::{DateTime, Utc};

use spellcast_domain::ids::{RunId, UserId};
use spellcast_domain::webhooks::{Attempt, Attempted, Delivery, Outgoing, WebhookSecret};

use super::StoreResult;

/// Webhook secrets and deliveries.
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// The user's webhook signing secret, if one was made.
    async fn webhook_secret(&self, user_id: &UserId) -> StoreResult<Option<WebhookSecret>>;
    /// Stores `secret` as the user's: always when `replace` (a rotation), else only if the user
    /// has none (two first reads racing keep one secret). Returns the secret stored.
    async fn put_webhook_secret(
        &self,
        user_id: &UserId,
        secret: WebhookSecret,
        replace: bool,
    ) -> StoreResult<WebhookSecret>;
    /// A run's webhook deliveries, oldest first (each with its attempts).
    async fn deliveries(&self, run_id: &RunId) -> StoreResult<Vec<Delivery>>;
    /// One webhook delivery of a run.
    async fn delivery(&self, run_id: &RunId, webhook_id: &str) -> StoreResult<Option<Delivery>>;
    /// Records an attempt of a delivery and when the next one is due (its `next_at`; `None`:
    /// delivered or given up) — only if it is the delivery's next attempt (number
    /// `attempts + 1`); `false` when another worker recorded that attempt first.
    async fn record_attempt(
        &self,
        run_id: &RunId,
        webhook_id: &str,
        attempt: Attempt,
    ) -> StoreResult<bool>;
    /// Pending deliveries due at or before `at`, soonest first, at most `limit`.
    async fn due_deliveries(&self, at: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Delivery>>;
}

/// Sends webhook deliveries (the outbound HTTP client).
#[async_trait::async_trait]
pub trait WebhookSender: Send + Sync {
    /// Makes one attempt; never follows a redirect, and connects only where [`spellcast_domain::webhooks::is_public`] allows.
    async fn send(&self, outgoing: &Outgoing) -> Attempted;
}
