//! The store's part that keeps runs, their events and output files.

use async_trait::async_trait;

use spellcast_domain::ids::{CreditTxId, RunId, UserId};
use spellcast_domain::run::{Applied, OutputFile, Run, RunEvent, RunVersion};

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
    /// Commits what [`Run::apply`] made of a change: `run` as it now is, with what `applied`
    /// says to write beside it (its new event, output files, a refund with its ledger entry, a
    /// webhook delivery), atomically — only if the stored run is still at `read`. `false`, with
    /// nothing written, when it moved on: the caller reads it again and decides afresh. The
    /// store decides nothing else (`crate::advancing` holds the loop).
    async fn commit_run(
        &self,
        run: &Run,
        applied: &Applied,
        read: &RunVersion,
    ) -> StoreResult<bool>;
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
