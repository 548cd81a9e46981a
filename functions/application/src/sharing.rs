//! Shareable runs (SPEC §3.14): the owner of a finished run makes it public under an unguessable
//! id, and takes it back; anyone with the id sees the run's spell and outputs (its inputs only if
//! the owner said so).

use spellcast_domain::ids::{RunId, ShareId, UserId};
use spellcast_domain::run::{FileBody, OutputFile, OutputKind, Run};
use spellcast_domain::sharing::Share;

use crate::ports::{Clock, RunStore, ShareStore, StoreError};
use crate::viewing::{ViewError, Viewer};

/// Why a share was refused.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// No such run, or not the asker's.
    #[error(transparent)]
    View(#[from] ViewError),
    /// The run has not ended: there is nothing to show yet.
    #[error("the run has not ended")]
    NotFinished,
    /// No such share (never made, or taken back).
    #[error("no such shared run")]
    NotFound,
}

impl From<StoreError> for ShareError {
    fn from(e: StoreError) -> Self {
        ShareError::View(e.into())
    }
}

/// What sharing needs: the store and the time.
pub struct Sharing<'a> {
    /// Runs and shares.
    pub runs: &'a dyn RunStore,
    /// Shares.
    pub shares: &'a dyn ShareStore,
    /// The time.
    pub clock: &'a dyn Clock,
}

impl Sharing<'_> {
    /// The bytes of a shared run's first image output, when they are kept beside the run (a
    /// large one in the blob store is left out: its card shows the text instead).
    pub async fn first_inline_image(&self, run: &Run) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(n) = run.outputs.iter().position(|o| o.kind == OutputKind::Image) else {
            return Ok(None);
        };
        Ok(match self.runs.output_file(&run.run_id, n).await? {
            Some(OutputFile {
                body: FileBody::Inline(bytes),
                ..
            }) => Some(bytes),
            _ => None,
        })
    }

    /// The owner's run, or why not.
    async fn owned(&self, user: &UserId, run_id: &RunId) -> Result<Run, ShareError> {
        let run = self.runs.run(run_id).await?.ok_or(ViewError::NotFound)?;
        Viewer::User(user.clone()).may_see(&run, self.clock.now())?;
        Ok(run)
    }

    /// Makes `user`'s finished run public: its share (the same id when shared already; the
    /// inputs shown or not as asked now).
    pub async fn share(
        &self,
        user: &UserId,
        run_id: &RunId,
        include_inputs: bool,
    ) -> Result<Share, ShareError> {
        let run = self.owned(user, run_id).await?;
        if !run.status.is_terminal() {
            return Err(ShareError::NotFinished);
        }
        let share = Share {
            share_id: ShareId::unguessable(),
            run_id: run.run_id,
            user_id: run.user_id,
            include_inputs,
            created_at: self.clock.now(),
        };
        Ok(self.shares.share_run(share).await?)
    }

    /// Takes `user`'s run back from the public (nothing to do when it was not shared).
    pub async fn unshare(&self, user: &UserId, run_id: &RunId) -> Result<(), ShareError> {
        self.owned(user, run_id).await?;
        self.shares.unshare_run(run_id).await?;
        Ok(())
    }

    /// The share of `user`'s run, if it is shared.
    pub async fn of_run(&self, user: &UserId, run_id: &RunId) -> Result<Option<Share>, ShareError> {
        self.owned(user, run_id).await?;
        Ok(self.shares.run_share(run_id).await?)
    }

    /// A shared run, for anyone: the share and the run.
    pub async fn shared(&self, share_id: &ShareId) -> Result<(Share, Run), ShareError> {
        let share = self
            .shares
            .share(share_id)
            .await?
            .ok_or(ShareError::NotFound)?;
        let run = self
            .runs
            .run(&share.run_id)
            .await?
            .ok_or(ShareError::NotFound)?;
        Ok((share, run))
    }
}
