//! The runner: executes a queued run step by step, appending an event for every change. It is
//! idempotent under duplicate delivery: only the delivery that moves the run from queued to
//! running executes anything.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::ports::{Blobs, Clock, CostStore, StoreResult};
use crate::run_log::RunLog;
use crate::tools::{Progress, ToolCall, ToolResult, Toolbox};
use spellcast_domain::catalog::Catalog;
use spellcast_domain::ids::RunId;
use spellcast_domain::prices::cost_key;
use spellcast_domain::run::{
    FileBody, Lease, Metered, NewOutput, OutputKind, Run, RunChange, RunError, RunStatus,
    StepStatus,
};

/// What a delivery of `executionStarted` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Execution {
    /// This delivery ran the spell; the run ended with this status.
    Ran(spellcast_domain::run::RunStatus),
    /// The run was not queued (a duplicate delivery, or already swept): nothing was done.
    Skipped,
    /// This delivery ran steps until its time was up, then let the run go and asked for the
    /// next runner (SPEC §8.2).
    HandedOver,
    /// A step waits (a durable wait): the run was let go, to be taken up when the wait is due.
    Waiting,
}

/// How often a step in progress looks whether its run was canceled (one strongly consistent
/// read of the run each time): how long a cancel may wait for a tool that is waiting.
pub const CANCEL_POLL: Duration = Duration::from_millis(500);

/// What executing a run needs: the spells, the tools, where changes go, and the time.
pub struct Runner<'a> {
    /// The spells.
    pub catalog: &'a Catalog,
    /// The tools their steps call.
    pub tools: &'a Toolbox,
    /// Where large outputs go.
    pub blobs: &'a dyn Blobs,
    /// Where changes go.
    pub log: RunLog<'a>,
    /// Where what each step cost is totalled.
    pub costs: &'a dyn CostStore,
    /// The time.
    pub clock: &'a dyn Clock,
    /// How long a run is held without a write (SPEC §8.1): a runner lost for longer loses it.
    pub lease: chrono::Duration,
    /// A wait at least this long is durable (SPEC §8.2): the runner lets the run go meanwhile.
    pub durable_wait_after: chrono::Duration,
    /// A step's progress is written at most this often (its first report always is).
    pub progress_every: Duration,
}

/// A runner's hold on one run: every change it makes goes through here, fenced by the lease it
/// took the run with, and renews it.
#[derive(Clone, Copy)]
struct Holding<'a> {
    log: RunLog<'a>,
    run_id: &'a RunId,
    fence: u64,
    lease: chrono::Duration,
    clock: &'a dyn Clock,
    /// The run as this holder last committed it: its next change is decided over it without a
    /// read (taken while in use, so concurrent changes read the run instead).
    known: &'a Mutex<Option<Run>>,
}

impl Holding<'_> {
    /// Applies the holder's change; `None` when the run refused it or another runner holds it.
    async fn advance(&self, change: RunChange) -> StoreResult<Option<Run>> {
        let lease = Lease {
            fence: self.fence,
            until: self.clock.now() + self.lease,
        };
        let known = self.known.lock().ok().and_then(|mut k| k.take());
        let done = self
            .log
            .advance_held(self.run_id, lease, known, change)
            .await?
            .map(|(run, _)| run);
        if let (Some(run), Ok(mut known)) = (&done, self.known.lock()) {
            // Keep the newest (a concurrent change may have committed a later one).
            if known.as_ref().is_none_or(|k| k.last_seq <= run.last_seq) {
                *known = Some(run.clone());
            }
        }
        Ok(done)
    }
}

/// Why a step in progress was dropped.
enum Interruption {
    /// Its owner canceled the run: stop it at this safe point.
    Canceled,
    /// Another runner took the run over (this one was presumed lost): touch nothing more.
    Lost,
}

/// Reports a tool's progress as `stepUpdate` events, skipping reports that change nothing and,
/// after the step's first, any within `every` of the last one written (the step's next real
/// change shows where it got to).
struct StepProgress<'a> {
    holding: Holding<'a>,
    index: usize,
    every: Duration,
    /// The last fraction written, and when.
    last: Mutex<(f64, Option<std::time::Instant>)>,
}

#[async_trait]
impl Progress for StepProgress<'_> {
    async fn report(&self, fraction: f64, message: Option<String>) {
        let fraction = fraction.clamp(0.0, 1.0);
        {
            let Ok(mut last) = self.last.lock() else {
                return;
            };
            let (written, at) = *last;
            let now = std::time::Instant::now();
            let too_soon = at.is_some_and(|at| now.duration_since(at) < self.every);
            if too_soon || (message.is_none() && fraction <= written) {
                return;
            }
            *last = (fraction, Some(now));
        }
        let change = RunChange::Step {
            index: self.index,
            status: StepStatus::Running,
            progress: fraction,
            message,
            at: self.holding.clock.now(),
            outputs: vec![],
            metered: None,
            attempt: None,
        };
        if let Err(e) = self.holding.advance(change).await {
            tracing::warn!(error = %e, "progress not recorded");
        }
    }

    async fn append(&self, text: String, progress: f64) {
        let change = RunChange::Delta {
            index: self.index,
            text,
            progress: progress.clamp(0.0, 1.0),
        };
        if let Err(e) = self.holding.advance(change).await {
            tracing::warn!(error = %e, "answer text not recorded");
        }
    }
}

/// The wait before attempt `attempt + 1`: `first` seconds doubled per attempt, with jitter
/// (between half and all of it), so retries of many runs do not arrive together.
fn backoff(first: f64, attempt: u32) -> Duration {
    let full = first * f64::from(1u32 << attempt.saturating_sub(1).min(16));
    let jitter = 0.5 + rand::random::<f64>() * 0.5;
    Duration::from_secs_f64((full * jitter).min(3600.0))
}

impl Runner<'_> {
    /// Executes run `run_id` if it is still queued, or takes it over at its first step not
    /// succeeded if its runner was lost (its lease ran out before its deadline).
    pub async fn execute(&self, run_id: &RunId) -> StoreResult<Execution> {
        self.execute_until(run_id, None).await
    }

    /// [`Runner::execute`] within a time limit (a Lambda invocation's): once `hand_over_at` has
    /// passed, the run is let go before its next step and sent to the next runner, so no run is
    /// bounded by one invocation. At least one step is executed each time.
    pub async fn execute_until(
        &self,
        run_id: &RunId,
        hand_over_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> StoreResult<Execution> {
        let span = tracing::info_span!("run", run_id = %run_id);
        self.execute_inner(run_id, hand_over_at)
            .instrument(span)
            .await
    }

    /// A wake-up for a run whose wait is due at `due_at` (SPEC §8.2): executed if it is due, or,
    /// if the timer fired early (one hop of a wait longer than the bus's longest delay), the
    /// wake-up is set again (answered [`Execution::Waiting`]).
    pub async fn wake_up(
        &self,
        event: spellcast_domain::events::ExecutionStarted,
        due_at: chrono::DateTime<chrono::Utc>,
        hand_over_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> StoreResult<Execution> {
        if due_at <= self.clock.now() {
            return self.execute_until(&event.run_id, hand_over_at).await;
        }
        let run_id = event.run_id.clone();
        if let Err(e) = self.log.bus.execution_due(event, due_at).await {
            tracing::warn!(%run_id, error = %e, "wake-up not set again; recovery will send the run when due");
        }
        Ok(Execution::Waiting)
    }

    async fn execute_inner(
        &self,
        run_id: &RunId,
        hand_over_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> StoreResult<Execution> {
        let Some(run) = self.log.runs.run(run_id).await? else {
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
        let take = match run.status {
            RunStatus::Queued => Some(RunChange::Start {
                at: now,
                deadline: now + spell.timeout(),
                lease_until: now + self.lease,
            }),
            // Past its deadline it is recovery's to fail and refund, not to resume.
            RunStatus::Running
                if run.lease_expired(now) && run.deadline_at.is_some_and(|d| d > now) =>
            {
                Some(RunChange::Resume {
                    at: now,
                    lease_until: now + self.lease,
                    repeatable: spell.repeatable_steps(),
                })
            }
            _ => None,
        };
        let taken = match take {
            Some(change) => self.log.advance(run_id, change).await?,
            None => None,
        };
        let Some((run, _)) = taken else {
            tracing::info!("run is neither queued nor lost by its runner; delivery skipped");
            return Ok(Execution::Skipped);
        };
        if run.status.is_terminal() {
            // Taken over with a step cut off that is not safe to repeat: failed and refunded.
            tracing::warn!(error = ?run.error, "run interrupted");
            return Ok(Execution::Ran(run.status));
        }
        // A start takes the first lease; any later one is a takeover (a lost runner, a hand-over
        // or a wait's end).
        let taken_over = run.lease_fence > 1;
        tracing::info!(slug = %run.slug, steps = run.steps.len(), taken_over, "run taken");
        let deadline = run.deadline_at.unwrap_or(now + spell.timeout());
        let known = Mutex::new(Some(run.clone()));
        let holding = Holding {
            log: self.log,
            run_id,
            fence: run.lease_fence,
            lease: self.lease,
            clock: self.clock,
            known: &known,
        };
        // The cast kept the run's uploads unless it was cut short; make sure (harmless twice).
        if let Err(e) = crate::uploading::keep(self.blobs, &run.uploads).await {
            tracing::warn!(error = %e, "uploads not kept");
        }

        let mut status = run.status;
        let mut executed = 0;
        for (index, step) in spell.def.steps.iter().enumerate() {
            // A step that succeeded before a takeover is never executed again.
            if run.steps[index].status == StepStatus::Succeeded {
                continue;
            }
            // Between steps: a safe point to stop at, or to hand over at.
            if status == RunStatus::Canceling {
                return self.stop(holding).await;
            }
            if executed > 0 && hand_over_at.is_some_and(|at| self.clock.now() >= at) {
                return self.hand_over(holding).await;
            }
            executed += 1;
            if let Some(wait) = step.durable_wait(self.durable_wait_after) {
                let now = self.clock.now();
                let change = match run.steps[index].until {
                    // Taken up when the wait was due: the step is done.
                    Some(until) if until <= now => RunChange::Step {
                        index,
                        status: StepStatus::Succeeded,
                        progress: 1.0,
                        message: None,
                        outputs: vec![],
                        at: now,
                        metered: Some(Metered {
                            cost_pts: step.kind().map_or(0, |k| k.nominal_cost(&step.with)),
                            ..Metered::default()
                        }),
                        attempt: None,
                    },
                    _ if now + wait > deadline => fail(
                        "timed_out",
                        "The wait would end after the run's deadline".to_owned(),
                        Some(step.id.clone()),
                    ),
                    _ => {
                        return self.wait(holding, &run, index, now + wait, None).await;
                    }
                };
                let failed = matches!(change, RunChange::Fail { .. });
                match holding.advance(change).await? {
                    None => return Ok(Execution::Skipped),
                    Some(run) if failed => return Ok(Execution::Ran(run.status)),
                    Some(run) => status = run.status,
                }
                continue;
            }
            let Some(tool) = self.tools.get(&step.tool) else {
                let change = fail(
                    "internal",
                    format!("tool `{}` is missing", step.tool),
                    Some(step.id.clone()),
                );
                return Self::end(holding, change).await;
            };
            let retry = step.retry();
            // Points consumed by attempts that failed on the way (a cut stream's tokens).
            let mut spent = 0i64;
            let mut attempt = 1u32;
            let outcome = loop {
                let started = RunChange::Step {
                    index,
                    status: StepStatus::Running,
                    progress: 0.0,
                    message: None,
                    outputs: vec![],
                    at: self.clock.now(),
                    metered: None,
                    attempt: Some(attempt),
                };
                let run = match holding.advance(started).await? {
                    None => return Ok(Execution::Skipped),
                    Some(run) if run.status == RunStatus::Canceling => {
                        return self.stop(holding).await
                    }
                    Some(run) => run,
                };
                let progress = StepProgress {
                    holding,
                    index,
                    every: self.progress_every,
                    last: Mutex::new((0.0, None)),
                };
                // The references are read from the run as stored (SPEC §7.1).
                let files = self.stored_texts(&run, index).await?;
                let context = spellcast_domain::references::scope(&run, index, &files);
                let call = ToolCall {
                    params: &step.with,
                    context: &context,
                    run_id,
                    uploads: &run.uploads,
                    blobs: self.blobs,
                    // Kept with the run: a runner that took the run over calls back too.
                    call_back: run
                        .call_back
                        .as_ref()
                        .filter(|c| c.index == index)
                        .map(|c| &c.state),
                };
                let left = (deadline - self.clock.now()).to_std().unwrap_or_default();
                // Inside the step: a tool that waits (a delay, a slow HTTP call, a model's
                // stream) is dropped when the run is canceled or taken over, and the step does
                // not count as done.
                let result = tokio::select! {
                    result = tokio::time::timeout(left, tool.call(call, &progress)) => result,
                    why = self.interrupted(holding) => return self.interrupt(holding, why).await,
                };
                match result {
                    Ok(Ok(ToolResult {
                        call_back: Some(call_back),
                        cost_pts,
                        ..
                    })) => {
                        // Not done: called back after its wait, which is durable if long.
                        spent += cost_pts;
                        let now = self.clock.now();
                        let after = chrono::Duration::from_std(call_back.after)
                            .unwrap_or(chrono::Duration::MAX);
                        let until = now.checked_add_signed(after).unwrap_or(deadline);
                        if until >= deadline {
                            let change = fail(
                                "timed_out",
                                "The step's tool asked to be called back after the run's deadline"
                                    .to_owned(),
                                Some(step.id.clone()),
                            );
                            return Self::end(holding, change).await;
                        }
                        if after >= self.durable_wait_after {
                            return self
                                .wait(holding, &run, index, until, Some(call_back.state))
                                .await;
                        }
                        let change = RunChange::Wait {
                            index,
                            at: now,
                            until,
                            hold: true,
                            call_back: Some(call_back.state),
                        };
                        match holding.advance(change).await? {
                            None => return Ok(Execution::Skipped),
                            Some(run) if run.status == RunStatus::Canceling => {
                                return self.stop(holding).await
                            }
                            Some(_) => {}
                        }
                        tokio::select! {
                            () = tokio::time::sleep(call_back.after) => {}
                            why = self.interrupted(holding) => return self.interrupt(holding, why).await,
                        }
                    }
                    Ok(Ok(result)) => break Ok(result),
                    Ok(Err(e)) if e.is_transient() && attempt < retry.attempts => {
                        spent += e.cost_pts();
                        let wait = backoff(retry.backoff_secs, attempt);
                        let due =
                            self.clock.now() + chrono::Duration::from_std(wait).unwrap_or_default();
                        if due >= deadline {
                            break Err(e);
                        }
                        tracing::info!(step = %step.id, attempt, error = %e, ?wait, "attempt failed; trying again");
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            why = self.interrupted(holding) => return self.interrupt(holding, why).await,
                        }
                        attempt += 1;
                    }
                    Ok(Err(e)) => {
                        spent += e.cost_pts();
                        break Err(e);
                    }
                    Err(_) => {
                        let change = fail(
                            "timed_out",
                            "The step did not finish before the run's deadline".to_owned(),
                            Some(step.id.clone()),
                        );
                        return Self::end(holding, change).await;
                    }
                }
            };
            let change = match outcome {
                Ok(result) => {
                    let cost_pts = spent.saturating_add(result.cost_pts);
                    // The price statistics may miss a step; the run never fails for it.
                    if let Err(e) = self
                        .costs
                        .record_tool_cost(&cost_key(&spell, step), cost_pts)
                        .await
                    {
                        tracing::warn!(step = %step.id, error = %e, "step cost not recorded");
                    }
                    RunChange::Step {
                        index,
                        status: StepStatus::Succeeded,
                        progress: 1.0,
                        message: None,
                        outputs: offload(self.blobs, run_id, result.outputs).await?,
                        at: self.clock.now(),
                        metered: Some(Metered {
                            cost_pts,
                            usage_estimated: result.usage.is_some_and(|u| u.estimated),
                            usage: result.usage,
                        }),
                        attempt: None,
                    }
                }
                Err(e) => {
                    tracing::info!(step = %step.id, error = %e, attempt, "step failed");
                    // The error names its step by `stepId`: whoever shows it names the step
                    // once (the page: "failed at “Strike the spark”: The spark fizzled…").
                    fail("step_failed", e.to_string(), Some(step.id.clone()))
                }
            };
            let failed = matches!(change, RunChange::Fail { .. });
            match holding.advance(change).await? {
                None => return Ok(Execution::Skipped),
                Some(run) if failed => return Ok(Execution::Ran(run.status)),
                Some(run) => status = run.status,
            }
        }
        // Every step succeeded: the run is done, even if a cancel came after its last step began.
        let finished = holding
            .advance(RunChange::Finish {
                at: self.clock.now(),
            })
            .await?;
        Ok(match finished {
            Some(run) => {
                tracing::info!(duration_ms = run.duration_ms(), "run succeeded");
                Execution::Ran(run.status)
            }
            None => Execution::Skipped,
        })
    }

    /// The texts earlier steps made that were stored as files (too long to travel with the
    /// run), for their references.
    async fn stored_texts(
        &self,
        run: &Run,
        index: usize,
    ) -> StoreResult<std::collections::BTreeMap<usize, String>> {
        let mut texts = std::collections::BTreeMap::new();
        for n in spellcast_domain::references::texts_to_read(run, index) {
            let bytes = match self.log.runs.output_file(&run.run_id, n).await? {
                Some(file) => match file.body {
                    FileBody::Inline(bytes) => Some(bytes),
                    FileBody::Blob(key) => self.blobs.get(&key).await?,
                },
                None => None,
            };
            if let Some(bytes) = bytes {
                texts.insert(n, String::from_utf8_lossy(&bytes).into_owned());
            }
        }
        Ok(texts)
    }

    /// Ends a canceling run at a safe point, refunded by the cancel rule.
    async fn stop(&self, holding: Holding<'_>) -> StoreResult<Execution> {
        let stop = RunChange::Stop {
            at: self.clock.now(),
        };
        Ok(match holding.advance(stop).await? {
            Some(run) => {
                tracing::info!(refunded_pts = run.refunded_pts, "run canceled");
                Execution::Ran(run.status)
            }
            // The sweeper ended it first, or another runner holds it.
            None => Execution::Skipped,
        })
    }

    /// Applies a change that ends the held run (a failure): what this delivery did.
    async fn end(holding: Holding<'_>, change: RunChange) -> StoreResult<Execution> {
        Ok(match holding.advance(change).await? {
            Some(run) => Execution::Ran(run.status),
            None => Execution::Skipped,
        })
    }

    /// Lets the held run go while step `index` waits until `until` (a durable wait, with what
    /// its tool is to be called back with), and asks for a runner then.
    async fn wait(
        &self,
        holding: Holding<'_>,
        run: &Run,
        index: usize,
        until: chrono::DateTime<chrono::Utc>,
        call_back: Option<Value>,
    ) -> StoreResult<Execution> {
        let change = RunChange::Wait {
            index,
            at: self.clock.now(),
            until,
            hold: false,
            call_back,
        };
        if holding.advance(change).await?.is_none() {
            return Ok(Execution::Skipped);
        }
        let due = run.execution();
        if let Err(e) = self.log.bus.execution_due(due, until).await {
            tracing::warn!(error = %e, "wake-up not scheduled; recovery will send the run when due");
        }
        tracing::info!(%until, "run waits");
        Ok(Execution::Waiting)
    }

    /// Lets the held run go and sends it to the next runner. Should the event be lost, the run's
    /// lease has ended, so recovery sends it again.
    async fn hand_over(&self, holding: Holding<'_>) -> StoreResult<Execution> {
        let release = RunChange::Release {
            at: self.clock.now(),
        };
        let Some(run) = holding.advance(release).await? else {
            return Ok(Execution::Skipped);
        };
        let next = run.execution();
        if let Err(e) = self.log.bus.execution_started(next).await {
            tracing::warn!(error = %e, "hand-over not published; recovery will send the run on");
        }
        tracing::info!("run handed over to the next runner");
        Ok(Execution::HandedOver)
    }

    /// What a runner does when its step was dropped: stop a canceled run; leave a run taken
    /// over to its new runner.
    async fn interrupt(&self, holding: Holding<'_>, why: Interruption) -> StoreResult<Execution> {
        match why {
            Interruption::Canceled => self.stop(holding).await,
            Interruption::Lost => {
                tracing::warn!("another runner took the run over; this one stops");
                Ok(Execution::Skipped)
            }
        }
    }

    /// Returns once the held run is canceling or held by another runner, looked at every
    /// [`CANCEL_POLL`] (a failed read is looked at again next time). It keeps the lease while
    /// a step runs quietly: renewed once half of it is gone.
    async fn interrupted(&self, holding: Holding<'_>) -> Interruption {
        loop {
            tokio::time::sleep(CANCEL_POLL).await;
            match self.log.runs.run(holding.run_id).await {
                Ok(Some(run)) if run.lease_fence != holding.fence => return Interruption::Lost,
                Ok(Some(run)) if run.status == RunStatus::Canceling => {
                    return Interruption::Canceled
                }
                Ok(Some(run)) => {
                    let now = self.clock.now();
                    if run
                        .lease_until
                        .is_none_or(|until| until - now < self.lease / 2)
                    {
                        match holding.advance(RunChange::Renew).await {
                            Ok(Some(_)) => {}
                            // Refused: the run moved on without us (it is looked at again).
                            Ok(None) => {}
                            Err(e) => tracing::warn!(error = %e, "lease not renewed"),
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "could not look at the run"),
            }
        }
    }
}

/// Files over this many bytes go to the blob store; smaller ones stay beside the run (a DynamoDB
/// item holds at most 400 KB).
pub const INLINE_FILE_MAX: usize = 256 * 1024;
/// Inline values (text, JSON) whose JSON is over this many bytes become files: they would be
/// copied into the run, its step event and its final event.
pub const INLINE_VALUE_MAX: usize = 16 * 1024;

/// Moves what is too large to travel with the run into the blob store: big files, and big inline
/// values (which become files: text as `text/plain`, JSON as `application/json`). The key is the
/// run and the content's hash, so a repeated delivery writes the same object.
pub async fn offload(
    blobs: &dyn Blobs,
    run_id: &RunId,
    outputs: Vec<NewOutput>,
) -> StoreResult<Vec<NewOutput>> {
    let mut kept = Vec::with_capacity(outputs.len());
    for mut out in outputs {
        if out.file.is_none() {
            let large = out.value.as_ref().and_then(|value| {
                let (bytes, mime) = match value {
                    Value::String(text) => (text.clone().into_bytes(), "text/plain; charset=utf-8"),
                    other => (other.to_string().into_bytes(), "application/json"),
                };
                (bytes.len() > INLINE_VALUE_MAX).then_some((bytes, mime))
            });
            if let Some((bytes, mime)) = large {
                out.kind = OutputKind::File;
                out.mime = mime.to_owned();
                out.value = None;
                out.file = Some(FileBody::Inline(bytes));
            }
        }
        if let Some(FileBody::Inline(bytes)) = out.file.take_if(|f| match f {
            FileBody::Inline(bytes) => bytes.len() > INLINE_FILE_MAX,
            FileBody::Blob(_) => false,
        }) {
            let key = format!("runs/{run_id}/{}", hex::encode(Sha256::digest(&bytes)));
            blobs.put(&key, &out.mime, bytes).await?;
            out.file = Some(FileBody::Blob(key));
        }
        kept.push(out);
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Fixture;
    use crate::tools::{ToolError, ToolResult};
    use serde_json::json;
    use spellcast_domain::run::EventBody;
    use spellcast_domain::tool_kinds::ToolKind;
    use std::sync::Arc;

    /// A tool that answers its `template` as it is and remembers each call: the template and
    /// the context it was called with.
    #[derive(Default)]
    struct Counting(Mutex<Vec<(String, Value)>>);

    impl Counting {
        fn calls(&self) -> Vec<String> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .map(|(t, _)| t.clone())
                .collect()
        }
    }

    #[async_trait]
    impl crate::tools::Tool for Counting {
        async fn call(
            &self,
            call: ToolCall<'_>,
            _progress: &dyn Progress,
        ) -> Result<ToolResult, ToolError> {
            let template = call.params["template"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            self.0
                .lock()
                .unwrap()
                .push((template.clone(), call.context.clone()));
            Ok(ToolResult::done(
                vec![NewOutput {
                    kind: OutputKind::Text,
                    mime: "text/plain".into(),
                    title: None,
                    value: Some(Value::String(template)),
                    file: None,
                }],
                1,
            ))
        }
    }

    fn three_steps() -> Fixture {
        Fixture::new(spellcast_domain::testing::catalog_of(json!([
            {"id": "a", "title": "A", "tool": "text.render", "with": {"template": "a"}},
            {"id": "b", "title": "B", "tool": "text.render", "with": {"template": "b"}},
            {"id": "c", "title": "C", "tool": "text.render", "with": {"template": "c"}}
        ])))
    }

    fn step(index: usize, status: StepStatus, text: Option<&str>) -> RunChange {
        RunChange::Step {
            index,
            status,
            progress: 0.0,
            message: None,
            outputs: text
                .map(|t| NewOutput {
                    kind: OutputKind::Text,
                    mime: "text/plain".into(),
                    title: None,
                    value: Some(Value::String(t.into())),
                    file: None,
                })
                .into_iter()
                .collect(),
            at: Utc::now(),
            metered: None,
            attempt: None,
        }
    }

    /// What a first runner did before it was lost: started the run, finished step `a` with
    /// `text`, and started step `b`.
    async fn lost_in_step_b(f: &Fixture, run_id: &RunId) {
        let now = f.clock.now();
        let log = f.run_log();
        let start = RunChange::Start {
            at: now,
            deadline: now + chrono::Duration::minutes(2),
            lease_until: now + chrono::Duration::seconds(Fixture::LEASE_SECS),
        };
        log.advance(run_id, start).await.unwrap().unwrap();
        let held = Lease {
            fence: 1,
            until: now + chrono::Duration::seconds(Fixture::LEASE_SECS),
        };
        let done = step(0, StepStatus::Succeeded, Some("what the first runner made"));
        log.advance_held(run_id, held, None, done)
            .await
            .unwrap()
            .unwrap();
        let running = step(1, StepStatus::Running, None);
        log.advance_held(run_id, held, None, running)
            .await
            .unwrap()
            .unwrap();
    }

    use chrono::Utc;

    #[tokio::test]
    async fn a_run_whose_runner_was_lost_goes_on_from_its_first_step_not_succeeded() {
        let f = three_steps();
        let run = f.cast_run("u", json!({})).await;
        lost_in_step_b(&f, &run.run_id).await;
        let counting = Arc::new(Counting::default());
        let tools = Toolbox::default().with(ToolKind::TextRender, counting.clone());

        // Before the lease ran out, the run is its first runner's.
        let runner = f.runner(&tools);
        assert_eq!(
            runner.execute(&run.run_id).await.unwrap(),
            Execution::Skipped
        );
        f.clock
            .advance(chrono::Duration::seconds(Fixture::LEASE_SECS + 1));
        assert_eq!(
            runner.execute(&run.run_id).await.unwrap(),
            Execution::Ran(RunStatus::Succeeded)
        );

        assert_eq!(
            counting.calls(),
            ["b", "c"],
            "step a is never executed again"
        );
        // Later steps read what the first runner made, as stored.
        let context = counting.0.lock().unwrap()[1].1.clone();
        assert_eq!(context["steps"]["a"]["text"], "what the first runner made");
        let stored = f.store.with(|s| s.runs[&run.run_id].clone());
        assert_eq!(stored.lease_fence, 2);
        assert_eq!(stored.outputs.len(), 3);
        assert_eq!(f.balance("u"), 0, "paid once, nothing refunded");
        let resumed: Vec<usize> = f.store.with(|s| {
            s.events[&run.run_id]
                .iter()
                .filter_map(|e| match e.body {
                    EventBody::StepUpdate {
                        index,
                        resumed: true,
                        ..
                    } => Some(index),
                    _ => None,
                })
                .collect()
        });
        assert_eq!(resumed, [1], "the stream shows the step taken up again");
        // A second delivery finds nothing to take.
        assert_eq!(
            runner.execute(&run.run_id).await.unwrap(),
            Execution::Skipped
        );
    }

    #[tokio::test]
    async fn a_runner_that_lost_its_run_changes_nothing() {
        let f = three_steps();
        let run = f.cast_run("u", json!({})).await;
        lost_in_step_b(&f, &run.run_id).await;
        f.clock
            .advance(chrono::Duration::seconds(Fixture::LEASE_SECS + 1));
        let now = f.clock.now();
        let resume = RunChange::Resume {
            at: now,
            lease_until: now + chrono::Duration::seconds(Fixture::LEASE_SECS),
            repeatable: vec![true; 3],
        };
        f.run_log()
            .advance(&run.run_id, resume)
            .await
            .unwrap()
            .unwrap();
        let before = f.store.with(|s| s.runs[&run.run_id].clone());

        // The first runner wakes up and finishes its step: refused, whatever its change.
        let stale = Lease {
            fence: 1,
            until: now + chrono::Duration::seconds(Fixture::LEASE_SECS),
        };
        let log = f.run_log();
        for change in [
            step(1, StepStatus::Succeeded, Some("late")),
            RunChange::Renew,
            RunChange::Fail {
                at: now,
                error: RunError {
                    code: "step_failed".into(),
                    message: "late".into(),
                    step_id: None,
                },
            },
        ] {
            assert!(log
                .advance_held(&run.run_id, stale, None, change)
                .await
                .unwrap()
                .is_none());
        }
        assert_eq!(f.store.with(|s| s.runs[&run.run_id].clone()), before);
        assert_eq!(f.balance("u"), 0);
    }

    #[tokio::test]
    async fn a_step_cut_off_that_is_not_safe_to_repeat_fails_the_run_refunded_once() {
        let f = Fixture::new(spellcast_domain::testing::catalog_of(json!([
            {"id": "a", "title": "A", "tool": "text.render", "with": {"template": "a"}},
            {"id": "b", "title": "B", "tool": "http", "with": {"endpoint": "orders"}},
            {"id": "c", "title": "C", "tool": "text.render", "with": {"template": "c"}}
        ])));
        let run = f.cast_run("u", json!({})).await;
        lost_in_step_b(&f, &run.run_id).await;
        f.clock
            .advance(chrono::Duration::seconds(Fixture::LEASE_SECS + 1));
        let counting = Arc::new(Counting::default());
        let tools = Toolbox::default()
            .with(ToolKind::TextRender, counting.clone())
            .with(ToolKind::Http, counting.clone());
        let runner = f.runner(&tools);
        assert_eq!(
            runner.execute(&run.run_id).await.unwrap(),
            Execution::Ran(RunStatus::Failed)
        );
        assert_eq!(
            runner.execute(&run.run_id).await.unwrap(),
            Execution::Skipped
        );
        assert!(
            counting.calls().is_empty(),
            "the cut-off call is not made again"
        );
        let stored = f.store.with(|s| s.runs[&run.run_id].clone());
        let error = stored.error.unwrap();
        assert_eq!(
            (error.code.as_str(), error.step_id.as_deref()),
            ("interrupted", Some("b"))
        );
        assert_eq!(stored.refunded_pts, stored.cost_pts);
        assert_eq!(f.balance("u"), stored.cost_pts, "refunded in full, once");
    }

    #[tokio::test]
    async fn a_runner_out_of_time_hands_the_run_over_between_steps() {
        let f = three_steps();
        let run = f.cast_run("u", json!({})).await;
        let counting = Arc::new(Counting::default());
        let tools = Toolbox::default().with(ToolKind::TextRender, counting.clone());
        let runner = f.runner(&tools);
        // Out of time from the start: one step, then the run goes to the next runner.
        let now = Some(f.clock.now());
        assert_eq!(
            runner.execute_until(&run.run_id, now).await.unwrap(),
            Execution::HandedOver
        );
        assert_eq!(counting.calls(), ["a"]);
        assert_eq!(
            f.bus.started.lock().unwrap().len(),
            2,
            "the cast's event and the hand-over's"
        );
        let released = f.store.with(|s| s.runs[&run.run_id].clone());
        assert_eq!(
            (released.status, released.lease_until),
            (RunStatus::Running, now)
        );
        // The next runner takes it over at once (no lease to wait out), at the next step.
        assert_eq!(
            runner.execute_until(&run.run_id, now).await.unwrap(),
            Execution::HandedOver
        );
        assert_eq!(
            runner.execute(&run.run_id).await.unwrap(),
            Execution::Ran(RunStatus::Succeeded)
        );
        assert_eq!(counting.calls(), ["a", "b", "c"], "each step once");
        let events = f.store.with(|s| s.events[&run.run_id].clone());
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=events.len() as u64).collect::<Vec<_>>()
        );
        assert!(
            !events
                .iter()
                .any(|e| matches!(e.body, EventBody::StepUpdate { resumed: true, .. })),
            "nothing was cut off, so nothing is taken up again"
        );
        assert_eq!(f.balance("u"), 0);
    }

    /// A text, a wait of 90 s (durable: at least a minute here), a text; due in 120 s.
    fn with_a_long_wait() -> Fixture {
        Fixture::new(spellcast_domain::testing::catalog_of(json!([
            {"id": "a", "title": "A", "tool": "text.render", "with": {"template": "a"}},
            {"id": "w", "title": "W", "tool": "time.delay", "with": {"seconds": 90, "ticks": 1}},
            {"id": "c", "title": "C", "tool": "text.render", "with": {"template": "c"}}
        ])))
    }

    /// Checks that run `run_id` was let go while its step `index` waits until `until`: the step
    /// shows it, no runner holds the run, and a runner is asked for then (the only one asked).
    fn assert_let_go(
        f: &Fixture,
        run_id: &RunId,
        index: usize,
        until: chrono::DateTime<chrono::Utc>,
    ) {
        assert_eq!(*f.bus.later.lock().unwrap(), [(run_id.clone(), until)]);
        let waiting = f.store.with(|s| s.runs[run_id].clone());
        let step = &waiting.steps[index];
        assert_eq!(
            (step.status, step.until),
            (StepStatus::Waiting, Some(until))
        );
        assert!(
            waiting.lease_expired(f.clock.now()),
            "no runner holds a waiting run"
        );
    }

    #[tokio::test]
    async fn a_long_wait_lets_the_run_go_until_it_is_due() {
        let f = with_a_long_wait();
        let run = f.cast_run("u", json!({})).await;
        let counting = Arc::new(Counting::default());
        let tools = Toolbox::default().with(ToolKind::TextRender, counting.clone());
        let runner = f.runner(&tools);
        assert_eq!(
            runner.execute(&run.run_id).await.unwrap(),
            Execution::Waiting
        );
        let until = f.clock.now() + chrono::Duration::seconds(90);
        assert_let_go(&f, &run.run_id, 1, until);
        let shown = f
            .store
            .with(|s| s.events[&run.run_id].last().cloned().unwrap());
        assert!(matches!(
            shown.body,
            EventBody::StepUpdate { status: StepStatus::Waiting, until: Some(u), .. } if u == until
        ));

        // Before it is due, nobody takes it: not a runner, not the sweep. A wake-up that comes
        // early (one hop of a long wait) is set again for the same time; a process starting
        // anew sets the timers of waiting runs again.
        f.clock.advance(chrono::Duration::seconds(60));
        assert_eq!(
            runner.execute(&run.run_id).await.unwrap(),
            Execution::Skipped
        );
        let recovery = f.recovery(chrono::Duration::minutes(1));
        let sweep = recovery.sweep().await.unwrap();
        assert!(
            sweep.resumed.is_empty() && sweep.timed_out.is_empty(),
            "{sweep:?}"
        );
        assert_eq!(
            f.bus.later.lock().unwrap().len(),
            1,
            "a sweep sets no timer"
        );
        assert_eq!(recovery.wake_waiting().await.unwrap(), 1);
        assert_eq!(
            runner.wake_up(run.execution(), until, None).await.unwrap(),
            Execution::Waiting
        );
        assert_eq!(
            f.bus.later.lock().unwrap()[1..],
            [(run.run_id.clone(), until), (run.run_id.clone(), until)]
        );

        f.clock.advance(chrono::Duration::seconds(31));
        assert_eq!(
            runner.wake_up(run.execution(), until, None).await.unwrap(),
            Execution::Ran(RunStatus::Succeeded)
        );
        assert_eq!(counting.calls(), ["a", "c"]);
        let done = f.store.with(|s| s.runs[&run.run_id].clone());
        assert_eq!(
            (done.steps[1].status, done.steps[1].until),
            (StepStatus::Succeeded, None)
        );
        assert_eq!(f.balance("u"), 0);
    }

    /// A tool that asks to be called back after each of `afters` in turn, then answers, and
    /// records what it was called with.
    #[derive(Default)]
    struct CallsBack {
        afters: Vec<Duration>,
        seen: Mutex<Vec<Option<Value>>>,
    }

    #[async_trait]
    impl crate::tools::Tool for CallsBack {
        async fn call(
            &self,
            call: ToolCall<'_>,
            _progress: &dyn Progress,
        ) -> Result<ToolResult, ToolError> {
            let mut seen = self.seen.lock().unwrap();
            seen.push(call.call_back.cloned());
            let n = seen.len() - 1;
            let call_back = self.afters.get(n).map(|after| crate::tools::CallBack {
                after: *after,
                state: json!({ "poll": n }),
            });
            Ok(ToolResult {
                outputs: vec![],
                cost_pts: 0,
                usage: None,
                call_back,
            })
        }
    }

    #[tokio::test]
    async fn a_tool_that_asks_to_be_called_back_is_called_back_with_its_state() {
        let f = Fixture::new(spellcast_domain::testing::catalog_of(json!([
            {"id": "job", "title": "Job", "tool": "text.render", "with": {"template": "j"}}
        ])));
        let run = f.cast_run("u", json!({})).await;
        // A short wait (held, in the runner), then one long enough to be durable.
        let tool = Arc::new(CallsBack {
            afters: vec![Duration::from_millis(10), Duration::from_secs(90)],
            ..CallsBack::default()
        });
        let tools = Toolbox::default().with(ToolKind::TextRender, tool.clone());
        let runner = f.runner(&tools);
        assert_eq!(
            runner.execute(&run.run_id).await.unwrap(),
            Execution::Waiting
        );
        let until = f.clock.now() + chrono::Duration::seconds(90);
        assert_let_go(&f, &run.run_id, 0, until);

        f.clock.advance(chrono::Duration::seconds(91));
        assert_eq!(
            runner.wake_up(run.execution(), until, None).await.unwrap(),
            Execution::Ran(RunStatus::Succeeded)
        );
        assert_eq!(
            *tool.seen.lock().unwrap(),
            [None, Some(json!({"poll": 0})), Some(json!({"poll": 1}))],
            "each call gets what the one before left, across the durable wait"
        );
        let done = f.store.with(|s| s.runs[&run.run_id].clone());
        assert_eq!((done.status, done.call_back), (RunStatus::Succeeded, None));
        let waits: Vec<bool> = f.store.with(|s| {
            s.events[&run.run_id]
                .iter()
                .filter_map(|e| match &e.body {
                    EventBody::StepUpdate {
                        status: StepStatus::Waiting,
                        until,
                        ..
                    } => Some(until.is_some()),
                    _ => None,
                })
                .collect()
        });
        assert_eq!(waits, [true, true], "both waits shown with their end");
    }

    /// A tool that reports progress: a message, then `ticks` fractions, then a message.
    struct Ticks(usize);

    #[async_trait]
    impl crate::tools::Tool for Ticks {
        async fn call(
            &self,
            _call: ToolCall<'_>,
            progress: &dyn Progress,
        ) -> Result<ToolResult, ToolError> {
            progress.report(0.0, Some("begun".into())).await;
            for tick in 1..=self.0 {
                progress
                    .report(tick as f64 / (self.0 + 1) as f64, None)
                    .await;
            }
            progress.report(0.99, Some("nearly".into())).await;
            Ok(ToolResult::done(vec![], 0))
        }
    }

    #[tokio::test]
    async fn progress_is_written_at_most_once_per_period() {
        let f = Fixture::new(spellcast_domain::testing::catalog_of(json!([
            {"id": "t", "title": "T", "tool": "text.render", "with": {"template": "t"}}
        ])));
        let tools = Toolbox::default().with(ToolKind::TextRender, Arc::new(Ticks(10)));
        let (f, tools) = (&f, &tools);
        let ticks = |every: Duration| async move {
            let run = f.cast_run("u", json!({})).await;
            let mut runner = f.runner(tools);
            runner.progress_every = every;
            runner.execute(&run.run_id).await.unwrap();
            f.store.with(|s| {
                s.events[&run.run_id]
                    .iter()
                    .filter_map(|e| match &e.body {
                        EventBody::StepUpdate {
                            status: StepStatus::Running,
                            message,
                            ..
                        } => Some(message.clone()),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            })
        };
        // Every tick locally; on Lambda (a period) the first report and nothing more within the
        // period: the step's success shows where it got to.
        assert_eq!(ticks(Duration::ZERO).await.len(), 1 + 1 + 10 + 1);
        let quiet = ticks(Duration::from_secs(3600)).await;
        assert_eq!(
            quiet,
            [None, Some("begun".into())],
            "the step's start, then its first report only"
        );
    }

    #[tokio::test]
    async fn a_run_canceled_while_it_waits_stops_at_once_by_the_cancel_rule() {
        let f = with_a_long_wait();
        let run = f.cast_run("u", json!({})).await;
        let counting = Arc::new(Counting::default());
        let tools = Toolbox::default().with(ToolKind::TextRender, counting.clone());
        assert_eq!(
            f.runner(&tools).execute(&run.run_id).await.unwrap(),
            Execution::Waiting
        );
        let canceled = f
            .canceling()
            .cancel(&"u".into(), &run.run_id)
            .await
            .unwrap();
        assert_eq!(canceled.status, RunStatus::Canceled);
        // One step of three succeeded: two thirds back, rounded down.
        let expected = spellcast_domain::run::cancel_refund(canceled.cost_pts, 2, 3);
        assert_eq!(canceled.refunded_pts, expected);
        assert_eq!(f.balance("u"), expected);
        // The wake-up finds nothing to do.
        f.clock.advance(chrono::Duration::seconds(91));
        assert_eq!(
            f.runner(&tools).execute(&run.run_id).await.unwrap(),
            Execution::Skipped
        );
        assert_eq!(counting.calls(), ["a"]);
    }

    #[tokio::test]
    async fn a_step_whose_cost_is_not_recorded_still_succeeds() {
        let f = three_steps();
        let run = f.cast_run("u", json!({})).await;
        f.store.with(|s| s.costs_fail = true);
        let counting = Arc::new(Counting::default());
        let tools = Toolbox::default().with(ToolKind::TextRender, counting.clone());
        assert_eq!(
            f.runner(&tools).execute(&run.run_id).await.unwrap(),
            Execution::Ran(RunStatus::Succeeded)
        );
        assert_eq!(counting.calls(), ["a", "b", "c"]);
    }

    fn output(kind: OutputKind, value: Option<Value>, file: Option<Vec<u8>>) -> NewOutput {
        NewOutput {
            kind,
            mime: "application/octet-stream".into(),
            title: Some("t".into()),
            value,
            file: file.map(FileBody::Inline),
        }
    }

    #[tokio::test]
    async fn what_is_too_large_to_travel_with_the_run_goes_to_the_blob_store() {
        let blobs = crate::testing::MemoryBlobs::default();
        let run: RunId = "run_1".into();
        let big_file = vec![7u8; INLINE_FILE_MAX + 1];
        let small_file = vec![1u8; INLINE_FILE_MAX];
        let big_text = "x".repeat(INLINE_VALUE_MAX + 1);
        let outputs = vec![
            output(OutputKind::File, None, Some(big_file.clone())),
            output(OutputKind::Image, None, Some(small_file.clone())),
            output(
                OutputKind::Text,
                Some(Value::String(big_text.clone())),
                None,
            ),
            output(OutputKind::Json, Some(serde_json::json!({"n": 1})), None),
        ];
        let kept = offload(&blobs, &run, outputs.clone()).await.unwrap();

        let Some(FileBody::Blob(key)) = &kept[0].file else {
            panic!("a large file is a reference: {:?}", kept[0].file)
        };
        assert!(key.starts_with("runs/run_1/") && key.len() == "runs/run_1/".len() + 64);
        assert_eq!(blobs.get(key).await.unwrap(), Some(big_file));
        assert_eq!(kept[1], outputs[1], "a file at the limit stays inline");
        // A large text becomes a file, kept beside the run while under the file limit.
        assert_eq!(kept[2].kind, OutputKind::File);
        assert_eq!(kept[2].mime, "text/plain; charset=utf-8");
        assert_eq!(kept[2].value, None);
        assert_eq!(kept[2].file, Some(FileBody::Inline(big_text.into_bytes())));
        assert_eq!(kept[3], outputs[3], "a small value stays inline");
        assert_eq!(blobs.len(), 1);

        // A repeated delivery writes the same key.
        let again = offload(&blobs, &run, outputs).await.unwrap();
        assert_eq!(again, kept);
        assert_eq!(blobs.len(), 1);
    }
}
