//! Canceling a run (SPEC §3.12): the owner asks, the run's state machine decides. A queued run
//! ends at once with a full refund; a running one is marked `canceling` and its runner stops at
//! the next safe point. Asking again changes nothing; a run that already ended stays as it is.

use crate::ports::{Clock, StoreError};
use crate::runner::RunLog;
use crate::viewing::{ViewError, Viewer};
use spellcast_domain::ids::{RunId, UserId};
use spellcast_domain::run::{Run, RunChange, RunStatus};

/// Why a run was not canceled.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// No such run, or not the asker's (as for viewing it).
    #[error(transparent)]
    View(#[from] ViewError),
    /// The run had already succeeded or failed: it stays as it ended.
    #[error("the run already ended")]
    Finished(Box<Run>),
}

impl From<StoreError> for CancelError {
    fn from(e: StoreError) -> Self {
        CancelError::View(e.into())
    }
}

/// What canceling needs: where run changes go, and the time.
pub struct Canceling<'a> {
    /// Runs and their changes.
    pub log: RunLog<'a>,
    /// The time.
    pub clock: &'a dyn Clock,
}

/// A change can lose a race only to another change of the same run, and a run changes a bounded
/// number of times: this many reads are enough for the cancel to see the run settle.
const ATTEMPTS: usize = 8;

impl Canceling<'_> {
    /// Cancels run `run_id` of `user`: the run as it is afterwards (`canceled`, or `canceling`
    /// while its runner winds down).
    pub async fn cancel(&self, user: &UserId, run_id: &RunId) -> Result<Run, CancelError> {
        let owner = Viewer::User(user.clone());
        for _ in 0..ATTEMPTS {
            let run = self
                .log
                .runs
                .run(run_id)
                .await?
                .ok_or(ViewError::NotFound)?;
            owner.may_see(&run, self.clock.now())?;
            match run.status {
                RunStatus::Canceling | RunStatus::Canceled => return Ok(run),
                RunStatus::Succeeded | RunStatus::Failed => {
                    return Err(CancelError::Finished(Box::new(run)))
                }
                RunStatus::Queued | RunStatus::Running => {}
            }
            let change = RunChange::Cancel {
                at: self.clock.now(),
            };
            if let Some((run, _)) = self.log.advance(run_id, change).await? {
                tracing::info!(run_id = %run_id, status = run.status.as_str(), "cancel asked");
                return Ok(run);
            }
            // Refused: the run moved on between the read and the change (it started, ended, or
            // another cancel won). Look again.
        }
        Err(StoreError::new(format!("cancel {run_id}: the run kept changing")).into())
    }
}
