//! The runner: executes a queued run step by step, appending an event for every change. It is
//! idempotent under duplicate delivery: only the delivery that moves the run from queued to
//! running executes anything.

use std::sync::Mutex;

use async_trait::async_trait;
use tracing::Instrument;

use crate::catalog::Catalog;
use crate::ids::RunId;
use crate::ports::{Clock, EventBus, RunSignal, Store, StoreResult};
use crate::run::{Run, RunChange, RunError, RunEvent, StepStatus};
use crate::stats::cost_key;
use crate::tools::{Progress, ToolCall, Toolbox};

/// What a delivery of `executionStarted` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Execution {
    /// This delivery ran the spell; the run ended with this status.
    Ran(crate::run::RunStatus),
    /// The run was not queued (a duplicate delivery, or already swept): nothing was done.
    Skipped,
}

/// Where run changes go: the store (the truth), the signal (wakes this process's streams) and
/// the bus (other consumers). Shared by the runner and recovery.
#[derive(Clone, Copy)]
pub struct RunLog<'a> {
    /// Runs and their events.
    pub store: &'a dyn Store,
    /// Wakes streams.
    pub signal: &'a dyn RunSignal,
    /// Announces run events.
    pub bus: &'a dyn EventBus,
}

impl RunLog<'_> {
    /// Applies a change through the store, then announces the event and records metrics. `None`
    /// when the run refused the change (it moved on without us).
    pub async fn advance(
        &self,
        run_id: &RunId,
        change: RunChange,
    ) -> StoreResult<Option<(Run, RunEvent)>> {
        let Some((run, event)) = self.store.advance_run(run_id, change).await? else {
            return Ok(None);
        };
        self.signal.notify(run_id);
        crate::metrics::record(&run.slug, &event.body, run.duration_ms());
        if let Err(e) = self.bus.run_event(&run, &event).await {
            // The store holds the truth and streams read it; the bus copy is for other consumers.
            tracing::warn!(error = %e, seq = event.seq, "run event not announced");
        }
        Ok(Some((run, event)))
    }
}

/// What executing a run needs: the spells, the tools, where changes go, and the time.
pub struct Runner<'a> {
    /// The spells.
    pub catalog: &'a Catalog,
    /// The tools their steps call.
    pub tools: &'a Toolbox,
    /// Where changes go.
    pub log: RunLog<'a>,
    /// The time.
    pub clock: &'a dyn Clock,
}

/// Reports a tool's progress as `stepUpdate` events, skipping reports that change nothing.
struct StepProgress<'a> {
    log: RunLog<'a>,
    run_id: &'a RunId,
    index: usize,
    last: Mutex<f64>,
}

#[async_trait]
impl Progress for StepProgress<'_> {
    async fn report(&self, fraction: f64, message: Option<String>) {
        let fraction = fraction.clamp(0.0, 1.0);
        {
            let Ok(mut last) = self.last.lock() else {
                return;
            };
            if fraction <= *last && message.is_none() {
                return;
            }
            *last = fraction;
        }
        let change = RunChange::Step {
            index: self.index,
            status: StepStatus::Running,
            progress: fraction,
            message,
            outputs: vec![],
        };
        if let Err(e) = self.log.advance(self.run_id, change).await {
            tracing::warn!(error = %e, "progress not recorded");
        }
    }
}

impl Runner<'_> {
    /// Executes run `run_id` if it is still queued.
    pub async fn execute(&self, run_id: &RunId) -> StoreResult<Execution> {
        let span = tracing::info_span!("run", run_id = %run_id);
        self.execute_inner(run_id).instrument(span).await
    }

    async fn execute_inner(&self, run_id: &RunId) -> StoreResult<Execution> {
        let Some(run) = self.log.store.run(run_id).await? else {
            tracing::warn!("execution asked for an unknown run");
            return Ok(Execution::Skipped);
        };
        let fail = |code: &str, message: String, step_id: Option<String>| RunChange::Fail {
            at: self.clock.now(),
            error: RunError {
                code: code.to_owned(),
                message,
                step_id,
            },
        };
        let Some(spell) = self.catalog.get(&run.slug) else {
            let change = fail(
                "internal",
                format!("spell `{}` is no longer in the catalog", run.slug),
                None,
            );
            return Ok(match self.log.advance(run_id, change).await? {
                Some((run, _)) => Execution::Ran(run.status),
                None => Execution::Skipped,
            });
        };
        let now = self.clock.now();
        let deadline = now + spell.timeout();
        let Some((run, _)) = self
            .log
            .advance(run_id, RunChange::Start { at: now, deadline })
            .await?
        else {
            tracing::info!("run is not queued any more; duplicate delivery skipped");
            return Ok(Execution::Skipped);
        };
        tracing::info!(slug = %run.slug, steps = run.steps.len(), "run started");

        for (index, step) in spell.def.steps.iter().enumerate() {
            let started = RunChange::Step {
                index,
                status: StepStatus::Running,
                progress: 0.0,
                message: None,
                outputs: vec![],
            };
            if self.log.advance(run_id, started).await?.is_none() {
                return Ok(Execution::Skipped);
            }
            let Some(tool) = self.tools.get(&step.tool) else {
                let change = fail(
                    "internal",
                    format!("tool `{}` is missing", step.tool),
                    Some(step.id.clone()),
                );
                self.log.advance(run_id, change).await?;
                return Ok(Execution::Ran(crate::run::RunStatus::Failed));
            };
            let progress = StepProgress {
                log: self.log,
                run_id,
                index,
                last: Mutex::new(0.0),
            };
            let call = ToolCall {
                params: &step.with,
                context: &run.context,
                run_id,
            };
            let left = (deadline - self.clock.now()).to_std().unwrap_or_default();
            let result = tokio::time::timeout(left, tool.call(call, &progress)).await;
            let change = match result {
                Ok(Ok(result)) => {
                    self.log
                        .store
                        .record_tool_cost(&cost_key(&spell, step), result.cost_pts)
                        .await?;
                    RunChange::Step {
                        index,
                        status: StepStatus::Succeeded,
                        progress: 1.0,
                        message: None,
                        outputs: result.outputs,
                    }
                }
                Ok(Err(e)) => {
                    tracing::info!(step = %step.id, error = %e, "step failed");
                    fail(
                        "step_failed",
                        format!("{}: {e}", step.title),
                        Some(step.id.clone()),
                    )
                }
                Err(_) => fail(
                    "timed_out",
                    format!("{} did not finish before the run's deadline", step.title),
                    Some(step.id.clone()),
                ),
            };
            let failed = matches!(change, RunChange::Fail { .. });
            match self.log.advance(run_id, change).await? {
                None => return Ok(Execution::Skipped),
                Some((run, _)) if failed => return Ok(Execution::Ran(run.status)),
                Some(_) => {}
            }
        }
        let finished = self
            .log
            .advance(
                run_id,
                RunChange::Finish {
                    at: self.clock.now(),
                },
            )
            .await?;
        Ok(match finished {
            Some((run, _)) => {
                tracing::info!(duration_ms = run.duration_ms(), "run succeeded");
                Execution::Ran(run.status)
            }
            None => Execution::Skipped,
        })
    }
}
