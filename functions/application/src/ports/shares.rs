//! The store's part that keeps runs made public.

use async_trait::async_trait;

use spellcast_domain::ids::{RunId, ShareId};
use spellcast_domain::sharing::Share;

use super::StoreResult;

/// Runs made public.
#[async_trait]
pub trait ShareStore: Send + Sync {
    /// Makes a run public: stores `share` unless the run has one already, in which case that one
    /// is kept (its id) with `include_inputs` as `share` says. Returns the share stored.
    async fn share_run(&self, share: Share) -> StoreResult<Share>;
    /// Takes a run back from the public: its share goes. Whether there was one.
    async fn unshare_run(&self, run_id: &RunId) -> StoreResult<bool>;
    /// A share by its id.
    async fn share(&self, share_id: &ShareId) -> StoreResult<Option<Share>>;
    /// A run's share, if it is shared.
    async fn run_share(&self, run_id: &RunId) -> StoreResult<Option<Share>>;
}
