//! Canceling a run (SPEC §3.12): the owner asks, the run's state machine decides. A queued run
//! ends at once with a full refund; a running one is marked `canceling` and its runner stops at
//! the next safe point. Asking again changes nothing; a run that already ended stays as it is.

use crate::ports::{Clock, StoreError};
use crate::run_log::RunLog;
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
                // No runner holds it (it waits, or its runner was lost): nobody else will stop
                // it at a safe point, so it stops now.
                if run.status == RunStatus::Canceling && run.lease_expired(self.clock.now()) {
                    let stop = RunChange::Stop {
                        at: self.clock.now(),
                    };
                    if let Some((stopped, _)) = self.log.advance(run_id, stop).await? {
                        return Ok(stopped);
                    }
                }
                return Ok(run);
            }
            // Refused: the run moved on between the read and the change (it started, ended, or
            // another cancel won). Look again.
        }
        Err(StoreError::new(format!("cancel {run_id}: the run kept changing")).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Fixture;
    use serde_json::json;
    use spellcast_domain::run::StepStatus;

    /// A spell `t` of four steps: 4 points.
    fn fixture() -> Fixture {
        let step = |id: &str| json!({"id": id, "title": id, "tool": "text.render", "with": {"template": "x"}});
        Fixture::new(spellcast_domain::testing::catalog_of(json!([
            step("a"),
            step("b"),
            step("c"),
            step("d")
        ])))
    }

    #[tokio::test]
    async fn a_queued_run_canceled_is_refunded_in_full_once() {
        let f = fixture();
        let run = f.cast_run("u", json!({})).await;
        assert_eq!(f.balance("u"), 0);
        let canceled = f
            .canceling()
            .cancel(&"u".into(), &run.run_id)
            .await
            .unwrap();
        assert_eq!(
            (canceled.status, canceled.refunded_pts),
            (RunStatus::Canceled, 4)
        );
        assert_eq!(f.balance("u"), 4);
        // Again: the same answer, no second refund.
        let again = f
            .canceling()
            .cancel(&"u".into(), &run.run_id)
            .await
            .unwrap();
        assert_eq!(again.status, RunStatus::Canceled);
        assert_eq!(f.balance("u"), 4);
    }

    #[tokio::test]
    async fn a_running_run_is_refunded_for_the_steps_it_did_not_do_when_it_stops() {
        let f = fixture();
        let run = f.cast_run("u", json!({})).await;
        let log = f.run_log();
        let now = f.clock.now();
        log.advance(
            &run.run_id,
            RunChange::Start {
                at: now,
                deadline: now + chrono::Duration::minutes(1),
                lease_until: now + chrono::Duration::minutes(1),
            },
        )
        .await
        .unwrap()
        .unwrap();
        log.advance(
            &run.run_id,
            RunChange::Step {
                index: 0,
                status: StepStatus::Succeeded,
                progress: 1.0,
                message: None,
                outputs: vec![],
                attempt: None,
                metered: None,
                at: now,
            },
        )
        .await
        .unwrap()
        .unwrap();
        // Running: marked canceling, nothing refunded while its runner winds down.
        let canceling = f
            .canceling()
            .cancel(&"u".into(), &run.run_id)
            .await
            .unwrap();
        assert_eq!(canceling.status, RunStatus::Canceling);
        assert_eq!(f.balance("u"), 0);
        let (stopped, _) = log
            .advance(&run.run_id, RunChange::Stop { at: now })
            .await
            .unwrap()
            .unwrap();
        // One step of four done: three of four points back.
        assert_eq!(
            (stopped.status, stopped.refunded_pts),
            (RunStatus::Canceled, 3)
        );
        assert_eq!(f.balance("u"), 3);
    }

    #[tokio::test]
    async fn only_the_owner_cancels_and_an_ended_run_stays_as_it_ended() {
        let f = fixture();
        let run = f.cast_run("u", json!({})).await;
        let stranger = f.canceling().cancel(&"v".into(), &run.run_id).await;
        assert!(
            matches!(stranger, Err(CancelError::View(_))),
            "{stranger:?}"
        );
        let now = f.clock.now();
        let log = f.run_log();
        log.advance(
            &run.run_id,
            RunChange::Start {
                at: now,
                deadline: now + chrono::Duration::minutes(1),
                lease_until: now + chrono::Duration::minutes(1),
            },
        )
        .await
        .unwrap();
        let fail = RunChange::Fail {
            at: now,
            error: spellcast_domain::run::RunError {
                code: "x".into(),
                message: "x".into(),
                step_id: None,
            },
        };
        log.advance(&run.run_id, fail).await.unwrap().unwrap();
        let balance = f.balance("u");
        let late = f.canceling().cancel(&"u".into(), &run.run_id).await;
        assert!(matches!(late, Err(CancelError::Finished(_))), "{late:?}");
        assert_eq!(f.balance("u"), balance);
    }
}
