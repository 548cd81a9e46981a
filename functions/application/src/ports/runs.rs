//! The store's part that keeps runs, their events and output files.

use async_trait::async_trait;

use spellcast_domain::ids::{CreditTxId, RunId, UserId};
use spellcast_domain::run::{OutputFile, Run, RunChange, RunEvent};

use super::StoreResult;

/// Runs, their events and output files.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// A run by id.
    async fn run(&self, run_id: &RunId) -> StoreResult<Option<Run>>;
    /// A user's runs, newest first, strictly older than `before` (a run id) when given. For a
    /// listing: a store may leave out their inputs and outputs (`context`, `outputs`).
    async fn user_runs(
        &self,
        user_id: &UserId,
        limit: usize,
        before: Option<&RunId>,
    ) -> StoreResult<Vec<Run>>;
    /// A run by its debit's transaction id.
    async fn run_by_credit_tx(&self, credit_tx_id: &CreditTxId) -> StoreResult<Option<Run>>;
    /// Applies `change` with [`Run::apply`] and writes the run, its new event (if the change
    /// makes one), any output files and any refund, atomically: only over the run as it was read
    /// (its `last_seq` and status). `None` when the run refused the change.
    async fn advance_run(
        &self,
        run_id: &RunId,
        change: RunChange,
    ) -> StoreResult<Option<(Run, Option<RunEvent>)>>;
    /// Events with seq greater than `after`, in order, at most `limit`.
    async fn run_events(
        &self,
        run_id: &RunId,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<RunEvent>>;
    /// Output file `n` of a run.
    async fn output_file(&self, run_id: &RunId, n: usize) -> StoreResult<Option<OutputFile>>;
    /// Runs that are queued or running (for recovery).
    async fn unfinished_runs(&self) -> StoreResult<Vec<Run>>;
}
