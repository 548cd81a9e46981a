//! Recovery: nothing paid for is ever lost. A queued run whose start event went missing is
//! published again; a run stuck past its deadline (its runner died) is failed and refunded once.

use crate::ids::RunId;
use crate::ports::{ExecutionStarted, StoreResult};
use crate::run::{RunChange, RunError, RunStatus};
use crate::runner::advance;
use crate::App;

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// Runs whose start event was published again.
    pub republished: Vec<RunId>,
    /// Runs failed and refunded for being stuck.
    pub timed_out: Vec<RunId>,
}

/// Looks at every unfinished run once.
pub async fn sweep(app: &App) -> StoreResult<Sweep> {
    let now = app.clock.now();
    let mut report = Sweep::default();
    for run in app.store.unfinished_runs().await? {
        let timeout = app
            .catalog
            .get(&run.slug)
            .map(|s| s.timeout())
            .unwrap_or_else(|| chrono::Duration::minutes(15));
        let stuck = match run.status {
            RunStatus::Running => run.deadline_at.is_some_and(|d| d < now),
            // A run that never started within a whole timeout after several republications is
            // refunded rather than left waiting for ever.
            RunStatus::Queued => run.created_at + timeout + app.config.republish_after < now,
            _ => false,
        };
        if stuck {
            let change = RunChange::Fail {
                at: now,
                error: RunError {
                    code: "timed_out".into(),
                    message: "The run did not finish in time and was refunded".into(),
                    step_id: run
                        .steps
                        .iter()
                        .find(|s| s.status == crate::run::StepStatus::Running)
                        .map(|s| s.id.clone()),
                },
            };
            if advance(app, &run.run_id, change).await?.is_some() {
                tracing::warn!(run_id = %run.run_id, "stuck run failed and refunded");
                report.timed_out.push(run.run_id);
            }
        } else if run.status == RunStatus::Queued
            && run.created_at + app.config.republish_after < now
        {
            let event = ExecutionStarted {
                run_id: run.run_id.clone(),
                slug: run.slug.clone(),
            };
            match app.bus.execution_started(event).await {
                Ok(()) => {
                    tracing::warn!(run_id = %run.run_id, "queued run published again");
                    report.republished.push(run.run_id);
                }
                Err(e) => tracing::warn!(run_id = %run.run_id, error = %e, "republish failed"),
            }
        }
    }
    Ok(report)
}
