//! Changing a run: read it, let [`Run::apply`] decide, commit only if it is still as read —
//! else read it again and decide afresh. The one place this loop lives; the stores only read
//! and commit-if-unchanged.

use std::time::Duration;

use crate::ports::{RunStore, StoreError, StoreResult};
use spellcast_domain::ids::RunId;
use spellcast_domain::run::{Lease, Run, RunChange, RunEvent, RunVersion};

/// How often a change is decided again after another writer moved the run on.
const ATTEMPTS: u32 = 12;

/// Applies `change` to the stored run and commits it with what it makes (event, files, refund,
/// delivery). `None` when there is no such run or it refused the change (it moved on without
/// us); the run as committed and its new event otherwise.
pub async fn advance(
    runs: &dyn RunStore,
    run_id: &RunId,
    change: RunChange,
) -> StoreResult<Option<(Run, Option<RunEvent>)>> {
    decide(runs, run_id, None, None, change).await
}

/// [`advance`] for the runner holding `lease`: refused once another runner took the run over;
/// it renews the lease. `known` is the run as this holder last committed it: the change is
/// first decided over it, without reading the run (the store's condition still refuses it if
/// someone else changed the run meanwhile; then it is read and decided afresh).
pub async fn advance_held(
    runs: &dyn RunStore,
    run_id: &RunId,
    lease: Lease,
    known: Option<Run>,
    change: RunChange,
) -> StoreResult<Option<(Run, Option<RunEvent>)>> {
    decide(runs, run_id, Some(lease), known, change).await
}

async fn decide(
    runs: &dyn RunStore,
    run_id: &RunId,
    lease: Option<Lease>,
    mut known: Option<Run>,
    change: RunChange,
) -> StoreResult<Option<(Run, Option<RunEvent>)>> {
    for attempt in 1..=ATTEMPTS {
        let (run, as_known) = match known.take() {
            Some(run) if &run.run_id == run_id => (Some(run), true),
            _ => (runs.run(run_id).await?, false),
        };
        let Some(mut run) = run else {
            return Ok(None);
        };
        let read = RunVersion {
            held: lease.is_some(),
            ..run.version()
        };
        let decided = match lease {
            Some(lease) => run.apply_held(lease, change.clone()),
            None => run.apply(change.clone()),
        };
        let applied = match decided {
            Ok(applied) => applied,
            // The run as known may be behind the stored one (a cancel): read it and decide
            // again; only the stored run's refusal stands.
            Err(_) if as_known => continue,
            Err(refused) => {
                tracing::debug!(%refused, "change refused");
                return Ok(None);
            }
        };
        if runs.commit_run(&run, &applied, &read).await? {
            return Ok(Some((run, applied.event)));
        }
        backoff(attempt).await;
    }
    Err(StoreError::new(format!(
        "changing run {run_id}: too many conflicts"
    )))
}

/// A jittered wait that doubles with each attempt (capped), so racing writers spread out.
async fn backoff(attempt: u32) {
    let cap = 10u64 << attempt.min(6);
    let ms = rand::random::<u64>() % cap + 5;
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use spellcast_domain::run::RunStatus;

    use super::*;
    use crate::ports::Clock;
    use crate::testing::Fixture;

    /// A fixture whose one spell has one step.
    fn one_step() -> Fixture {
        Fixture::new(spellcast_domain::testing::catalog_of(json!([
            {"id": "a", "title": "A", "tool": "text.render", "with": {"template": "a"}}
        ])))
    }

    #[tokio::test]
    async fn a_change_that_lost_a_race_is_decided_again_over_the_run_as_it_became() {
        let f = one_step();
        let run = f.cast_run("u", json!({})).await;
        let now = f.clock.now();
        // The start is decided over a queued run; a cancel ends it before the start commits.
        // Decided again, the start is refused: nothing is written over the cancel, and the
        // refund stands alone.
        f.store
            .with(|s| s.race = Some(RunChange::Cancel { at: now }));
        let start = RunChange::Start {
            at: now,
            deadline: now + chrono::Duration::minutes(1),
            lease_until: now + chrono::Duration::minutes(1),
        };
        assert!(advance(f.store.as_ref(), &run.run_id, start)
            .await
            .unwrap()
            .is_none());
        let stored = f.store.with(|s| s.runs[&run.run_id].clone());
        assert_eq!((stored.status, stored.last_seq), (RunStatus::Canceled, 1));
        assert_eq!(f.store.with(|s| s.conflicts), 1);
        assert_eq!(f.balance("u"), 1);
    }

    #[tokio::test]
    async fn a_holder_whose_known_run_is_behind_decides_over_the_stored_one() {
        let f = one_step();
        let run = f.cast_run("u", json!({})).await;
        let now = f.clock.now();
        let minute = chrono::Duration::minutes(1);
        let start = RunChange::Start {
            at: now,
            deadline: now + minute,
            lease_until: now + minute,
        };
        let (running, _) = advance(f.store.as_ref(), &run.run_id, start)
            .await
            .unwrap()
            .unwrap();
        // Its owner cancels: the stored run is canceling, the holder still knows it running.
        advance(f.store.as_ref(), &run.run_id, RunChange::Cancel { at: now })
            .await
            .unwrap()
            .unwrap();
        let lease = Lease {
            fence: running.lease_fence,
            until: now + minute,
        };
        // A stop is refused by a running run; decided again over the stored one, it stops it.
        let (stopped, _) = advance_held(
            f.store.as_ref(),
            &run.run_id,
            lease,
            Some(running),
            RunChange::Stop { at: now },
        )
        .await
        .unwrap()
        .expect("stopped over the run as stored");
        assert_eq!(stopped.status, RunStatus::Canceled);
        assert_eq!(
            f.store.with(|s| s.runs[&run.run_id].status),
            RunStatus::Canceled
        );
    }
}
