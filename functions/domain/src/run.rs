//! Runs and their events. A run changes only through [`Run::apply`], which checks the transition
//! and yields the event to append, so every store applies the same rules.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{CreditTxId, InvoiceId, RunId, Slug, UserId};
pub use crate::tool_kinds::Usage;
use crate::webhooks::{Delivery, WebhookEvent};

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Paid for, waiting for the runner.
    Queued,
    /// The runner is executing its steps.
    Running,
    /// Every step succeeded.
    Succeeded,
    /// A step failed or the run timed out; the debit was refunded.
    Failed,
    /// Its owner canceled it while it ran: the runner stops at the next safe point.
    Canceling,
    /// Canceled by its owner; the share of the price for the steps that had not succeeded was
    /// refunded (all of it for a run that never started).
    Canceled,
}

impl RunStatus {
    /// Whether the run can no longer change.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Canceled
        )
    }

    /// The status as text, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Canceling => "canceling",
            RunStatus::Canceled => "canceled",
        }
    }
}

/// Where one step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// Started, with progress.
    Running,
    /// Waiting until its `until` (a durable wait, SPEC §8.2): no runner holds the run meanwhile.
    Waiting,
    /// Done.
    Succeeded,
    /// Failed; the run fails with it.
    Failed,
}

/// A step of a run as the snapshot shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepState {
    /// The step id from the spell.
    pub id: String,
    /// The step title from the spell.
    pub title: String,
    /// Where it is.
    pub status: StepStatus,
    /// 0..=1.
    pub progress: f64,
    /// The last progress message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The answer so far, while a streaming step runs (SPEC §7.2); gone once it succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<String>,
    /// Which attempt is running or ran last (SPEC §8.3), once the step started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// When its wait ends, while it is `waiting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// What it actually cost, every attempt included, once it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_pts: Option<i64>,
    /// The tokens a model read and wrote, for a step that calls one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The usage was counted from the text (the stream ended without a usage chunk).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub usage_estimated: bool,
    /// Which of the run's outputs this step made (indexes into `outputs`): what later steps
    /// read by reference.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        rename = "outputIndexes"
    )]
    pub outputs: Vec<usize>,
}

impl StepState {
    /// A step not started yet.
    pub fn pending(id: &str, title: &str) -> StepState {
        StepState {
            id: id.to_owned(),
            title: title.to_owned(),
            status: StepStatus::Pending,
            progress: 0.0,
            message: None,
            partial: None,
            attempt: None,
            until: None,
            cost_pts: None,
            usage: None,
            usage_estimated: false,
            outputs: vec![],
        }
    }
}

/// What a step's tool used, recorded with its success.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metered {
    /// Points, every attempt included.
    pub cost_pts: i64,
    /// A model's tokens.
    pub usage: Option<Usage>,
    /// Counted from the text rather than reported.
    pub usage_estimated: bool,
}

/// What an output is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// A picture, served as a file.
    Image,
    /// Text, inline.
    Text,
    /// JSON, inline.
    Json,
    /// Any other file.
    File,
}

/// One output of a run, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// Image, text, json or file.
    pub kind: OutputKind,
    /// Its media type.
    pub mime: String,
    /// A caption.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Where its bytes are served, for files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Its value, for inline outputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// An output a tool produced, before it has a place in the run.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutput {
    /// Image, text, json or file.
    pub kind: OutputKind,
    /// Its media type.
    pub mime: String,
    /// A caption.
    pub title: Option<String>,
    /// Inline value (text, json).
    pub value: Option<Value>,
    /// A file (image, file), served at `/api/v1/runs/{runId}/outputs/{n}`.
    pub file: Option<FileBody>,
}

/// Where a file output's bytes are.
#[derive(Debug, Clone, PartialEq)]
pub enum FileBody {
    /// The bytes, kept by the store beside the run (small files).
    Inline(Vec<u8>),
    /// In the blob store under this key (large files: SPEC §5.7, no store item nears its limit).
    Blob(String),
}

/// A file output, stored beside the run.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputFile {
    /// Its index in the run's outputs.
    pub n: usize,
    /// Its media type.
    pub mime: String,
    /// Its bytes, or where they are.
    pub body: FileBody,
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunError {
    /// `step_failed`, `timed_out` or `internal`.
    pub code: String,
    /// A readable reason.
    pub message: String,
    /// The step that failed, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
}

/// A run: one paid execution of a spell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// The run id.
    pub run_id: RunId,
    /// The debit's transaction id.
    pub credit_tx_id: CreditTxId,
    /// The invoice's `jti`.
    pub invoice_id: InvoiceId,
    /// Who paid.
    pub user_id: UserId,
    /// The spell.
    pub slug: Slug,
    /// The spell version it runs.
    pub spell_version: u32,
    /// Where it is.
    pub status: RunStatus,
    /// Each step.
    pub steps: Vec<StepState>,
    /// Outputs so far.
    pub outputs: Vec<Output>,
    /// What was paid.
    pub cost_pts: i64,
    /// What was given back.
    pub refunded_pts: i64,
    /// The inputs it was cast with.
    pub context: Value,
    /// When it was paid for.
    pub created_at: DateTime<Utc>,
    /// When the runner took it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// After this, a sweeper fails it: the runner is presumed dead.
    pub deadline_at: Option<DateTime<Utc>>,
    /// The fencing number of the lease its runner holds: raised by every start and takeover, so
    /// a runner that lost the run can change nothing (SPEC §8.1). 0: never held.
    #[serde(default)]
    pub lease_fence: u64,
    /// Until when its runner holds it; past this, another runner may take it over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<DateTime<Utc>>,
    /// Why it failed.
    pub error: Option<RunError>,
    /// The seq of its last event (events are numbered 1, 2, 3, ...).
    pub last_seq: u64,
    /// Where its webhook deliveries go, if the cast named a receiver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<crate::webhooks::WebhookTarget>,
    /// The files it took as inputs, checked by the cast (SPEC §7.3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uploads: Vec<crate::uploads::RunUpload>,
    /// What a step that asked to be called back left for its next call (SPEC §8.2): kept with
    /// the run, so whichever runner makes that call has it; never shown (it may name a URL of
    /// the deployer's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_back: Option<CallBackState>,
}

/// The data of a run event, tagged by its SSE event type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum EventBody {
    /// The runner took the run.
    #[serde(rename = "executionStarted", rename_all = "camelCase")]
    ExecutionStarted {
        /// The run.
        run_id: RunId,
        /// Its debit.
        credit_tx_id: CreditTxId,
        /// The spell.
        slug: Slug,
        /// Each step's id and title.
        steps: Vec<StepRef>,
        /// When it started.
        started_at: DateTime<Utc>,
    },
    /// A step started, progressed, succeeded or failed.
    #[serde(rename = "stepUpdate", rename_all = "camelCase")]
    StepUpdate {
        /// The run.
        run_id: RunId,
        /// The step.
        step_id: String,
        /// Its index, from 0.
        index: usize,
        /// How many steps there are.
        of: usize,
        /// Its status.
        status: StepStatus,
        /// 0..=1.
        progress: f64,
        /// A progress message.
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// Outputs the step produced.
        #[serde(skip_serializing_if = "Option::is_none")]
        outputs: Option<Vec<Output>>,
        /// When it moved, by the runner's clock (events stored before this was kept have none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<DateTime<Utc>>,
        /// Which attempt this is, for a step that is tried again (SPEC §8.3).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempt: Option<u32>,
        /// The step is taken up again by another runner after its own was lost (SPEC §8.1).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resumed: bool,
        /// When its wait ends, for a step that is `waiting` (SPEC §8.2).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<DateTime<Utc>>,
    },
    /// Text a running step appended to its answer (SPEC §7.2).
    #[serde(rename = "stepDelta", rename_all = "camelCase")]
    StepDelta {
        /// The run.
        run_id: RunId,
        /// The step.
        step_id: String,
        /// Its index, from 0.
        index: usize,
        /// The text appended since the previous delta.
        text: String,
        /// The step's progress with it, 0..=1 (for an answer: its tokens so far against its
        /// `maxTokens`).
        progress: f64,
    },
    /// Every step succeeded.
    #[serde(rename = "executionFinished", rename_all = "camelCase")]
    ExecutionFinished {
        /// The run.
        run_id: RunId,
        /// Always `succeeded`.
        status: RunStatus,
        /// Every output.
        outputs: Vec<Output>,
        /// From start to finish.
        duration_ms: i64,
        /// What was paid.
        cost_pts: i64,
    },
    /// The run failed and was refunded.
    #[serde(rename = "spellExecutionError", rename_all = "camelCase")]
    SpellExecutionError {
        /// The run.
        run_id: RunId,
        /// `step_failed`, `timed_out` or `internal`.
        code: String,
        /// A readable reason.
        message: String,
        /// The failed step.
        #[serde(skip_serializing_if = "Option::is_none")]
        step_id: Option<String>,
        /// Points given back.
        refunded_pts: i64,
    },
    /// The run was canceled by its owner and refunded by the cancel rule.
    #[serde(rename = "executionCanceled", rename_all = "camelCase")]
    ExecutionCanceled {
        /// The run.
        run_id: RunId,
        /// How many steps had succeeded.
        completed_steps: usize,
        /// Points given back.
        refunded_pts: i64,
        /// When it ended.
        canceled_at: DateTime<Utc>,
    },
}

impl EventBody {
    /// The SSE event type.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::ExecutionStarted { .. } => "executionStarted",
            EventBody::StepUpdate { .. } => "stepUpdate",
            EventBody::StepDelta { .. } => "stepDelta",
            EventBody::ExecutionFinished { .. } => "executionFinished",
            EventBody::SpellExecutionError { .. } => "spellExecutionError",
            EventBody::ExecutionCanceled { .. } => "executionCanceled",
        }
    }

    /// Whether this event ends the run's stream.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            EventBody::ExecutionFinished { .. }
                | EventBody::SpellExecutionError { .. }
                | EventBody::ExecutionCanceled { .. }
        )
    }

    /// The event's data as JSON (the `data:` line of the SSE event).
    pub fn data_json(&self) -> String {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut map)) => map.remove("data").unwrap_or(Value::Null).to_string(),
            _ => "null".to_owned(),
        }
    }
}

/// A step's id and title.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRef {
    /// The step id.
    pub id: String,
    /// The step title.
    pub title: String,
}

/// A stored run event: its seq and its body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    /// 1, 2, 3, ... per run.
    pub seq: u64,
    /// The event.
    #[serde(flatten)]
    pub body: EventBody,
}

/// A change asked of a run.
/// The state a tool left when it asked to be called back, for the step at `index`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallBackState {
    /// Which step.
    pub index: usize,
    /// What the tool is called again with (for `http`, the status URL to poll).
    pub state: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunChange {
    /// The runner takes a queued run, and its lease.
    Start {
        /// Now.
        at: DateTime<Utc>,
        /// When a sweeper may presume the runner dead.
        deadline: DateTime<Utc>,
        /// Until when the runner holds the run unless it renews its lease.
        lease_until: DateTime<Utc>,
    },
    /// Another runner takes over a running run whose lease ran out (its runner was lost), at
    /// the first step not succeeded. A step that was in flight is taken up again only if it is
    /// safe to repeat; else the run fails `interrupted`, refunded in full.
    Resume {
        /// Now.
        at: DateTime<Utc>,
        /// Until when the new runner holds the run unless it renews its lease.
        lease_until: DateTime<Utc>,
        /// Whether each step (by index) is safe to execute again.
        repeatable: Vec<bool>,
    },
    /// The holder keeps its lease (through [`Run::apply_held`]); nothing else changes.
    Renew,
    /// A step waits: it is `waiting` until `until`. A durable wait (`hold` false) lets the run
    /// go, and no runner holds it meanwhile; a short one keeps the holder's lease. A tool that
    /// asked to be called back leaves its `call_back` state with the run.
    Wait {
        /// Which step.
        index: usize,
        /// Now.
        at: DateTime<Utc>,
        /// When the wait ends.
        until: DateTime<Utc>,
        /// Whether the holder keeps the run while it waits.
        hold: bool,
        /// What the step's tool is called again with, if it asked to be called back.
        call_back: Option<Value>,
    },
    /// The holder lets the run go between steps (its invocation's time is running out): the
    /// next runner takes it over at once, at its next step.
    Release {
        /// Now: the lease ends.
        at: DateTime<Utc>,
    },
    /// A step moves.
    Step {
        /// Which step.
        index: usize,
        /// Its new status.
        status: StepStatus,
        /// 0..=1.
        progress: f64,
        /// A progress message.
        message: Option<String>,
        /// Outputs it produced (with a success).
        outputs: Vec<NewOutput>,
        /// Now.
        at: DateTime<Utc>,
        /// What it used (with a success).
        metered: Option<Metered>,
        /// Which attempt (a new attempt starts the answer so far afresh).
        attempt: Option<u32>,
    },
    /// A running step appended text to its answer.
    Delta {
        /// Which step.
        index: usize,
        /// The text appended.
        text: String,
        /// Its progress then, 0..=1.
        progress: f64,
    },
    /// Every step succeeded.
    Finish {
        /// Now.
        at: DateTime<Utc>,
    },
    /// The run failed: refund it in full.
    Fail {
        /// Now.
        at: DateTime<Utc>,
        /// The failure.
        error: RunError,
    },
    /// Its owner cancels it: a queued run ends at once with a full refund; a running one is
    /// marked `canceling` (no event) for the runner to stop at its next safe point.
    Cancel {
        /// Now.
        at: DateTime<Utc>,
    },
    /// The runner (or the sweeper) stops a `canceling` run: it ends `canceled`, refunded
    /// [`cancel_refund`].
    Stop {
        /// Now.
        at: DateTime<Utc>,
    },
}

/// A runner's hold on a run: the fencing number it took the run with, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The run's `lease_fence` when the runner took it.
    pub fence: u64,
    /// Until when it holds the run unless it writes again.
    pub until: DateTime<Utc>,
}

/// What a run canceled while running gives back: the share of its price for the steps that had
/// not succeeded, rounded down (`floor(cost × notSucceeded / of)`, in integers).
pub fn cancel_refund(cost_pts: i64, not_succeeded: usize, of: usize) -> i64 {
    if of == 0 {
        return cost_pts;
    }
    // i128: no overflow for any cost a ledger can hold.
    (i128::from(cost_pts) * not_succeeded as i128 / of as i128) as i64
}

/// What a run was when read for a change: a store commits the change only over the run as it
/// still is (its last event, its status — a cancel marks a running run `canceling` without an
/// event — and its lease's fencing number), and rewrites its outputs only when the change added
/// some.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunVersion {
    /// Its last event's seq.
    pub last_seq: u64,
    /// Its status.
    pub status: RunStatus,
    /// Its lease's fencing number.
    pub fence: u64,
    /// How many outputs it had.
    pub outputs: usize,
    /// Whether the change is made by the runner holding the run's lease: its changes come one
    /// after another, so a store may write such a change's event after its head (one write
    /// each, not a transaction), and owes the event to whoever changes the run next without
    /// holding it.
    pub held: bool,
}

/// What applying a change produced, for the store to write in the same transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The event to append (with the run's new `last_seq`); none when a running run is marked
    /// `canceling` (its status changes, not its history).
    pub event: Option<RunEvent>,
    /// Points to give back (with `Fail`, a `Cancel` of a queued run, and `Stop`).
    pub refund_pts: i64,
    /// Output files to store.
    pub files: Vec<OutputFile>,
    /// The webhook delivery the event calls for, to store with it (the outbox: a delivery is
    /// pending exactly when its event happened).
    pub delivery: Option<Delivery>,
}

/// Why a change was refused: it does not fit the run's state (a duplicate delivery, a race with
/// the sweeper, a late step update). Refusals are expected and change nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("run {run_id} is {status:?}: {reason}")]
pub struct Refused {
    /// The run.
    pub run_id: RunId,
    /// Its status.
    pub status: RunStatus,
    /// Why.
    pub reason: &'static str,
}

impl Run {
    /// What the run is now, to commit a change over it (see [`RunVersion`]).
    pub fn version(&self) -> RunVersion {
        RunVersion {
            last_seq: self.last_seq,
            status: self.status,
            fence: self.lease_fence,
            outputs: self.outputs.len(),
            held: false,
        }
    }

    /// Whether the run is still as `read` (who read it aside): a change decided over that read
    /// may be committed over this run.
    pub fn is_at(&self, read: &RunVersion) -> bool {
        RunVersion {
            held: read.held,
            ..self.version()
        } == *read
    }

    /// A new queued run of `spell`, paid by invoice `invoice_id`, with fresh run and debit ids.
    pub fn queued(
        spell: &crate::catalog::Spell,
        invoice_id: &InvoiceId,
        user_id: &UserId,
        cost_pts: i64,
        context: Value,
        now: DateTime<Utc>,
    ) -> Run {
        Run {
            run_id: RunId::new(),
            credit_tx_id: CreditTxId::new(),
            invoice_id: invoice_id.clone(),
            user_id: user_id.clone(),
            slug: spell.slug.clone(),
            spell_version: spell.def.version,
            status: RunStatus::Queued,
            steps: spell
                .def
                .steps
                .iter()
                .map(|s| StepState::pending(&s.id, &s.title))
                .collect(),
            outputs: vec![],
            cost_pts,
            refunded_pts: 0,
            context,
            created_at: now,
            started_at: None,
            finished_at: None,
            deadline_at: None,
            lease_fence: 0,
            lease_until: None,
            error: None,
            last_seq: 0,
            webhook: None,
            uploads: Vec::new(),
            call_back: None,
        }
    }

    /// The bus event that sends this run to a runner (to start it, take it over, or go on).
    pub fn execution(&self) -> crate::events::ExecutionStarted {
        crate::events::ExecutionStarted {
            run_id: self.run_id.clone(),
            slug: self.slug.clone(),
        }
    }

    /// The ledger entry that pays for this run (its id is the run's `creditTxId`).
    pub fn debit_entry(&self) -> crate::ledger::LedgerEntry {
        self.ledger_entry(
            self.credit_tx_id.clone(),
            crate::ledger::LedgerKind::Debit,
            -self.cost_pts,
            self.created_at,
        )
    }

    /// The ledger entry that gives `pts` back for this run.
    pub fn refund_entry(&self, pts: i64) -> crate::ledger::LedgerEntry {
        let at = self.finished_at.unwrap_or_else(Utc::now);
        self.ledger_entry(
            CreditTxId::new(),
            crate::ledger::LedgerKind::Refund,
            pts,
            at,
        )
    }

    fn ledger_entry(
        &self,
        tx_id: CreditTxId,
        kind: crate::ledger::LedgerKind,
        pts: i64,
        at: DateTime<Utc>,
    ) -> crate::ledger::LedgerEntry {
        crate::ledger::LedgerEntry {
            tx_id,
            user_id: self.user_id.clone(),
            kind,
            asset: crate::ledger::PTS.into(),
            pts,
            run_id: Some(self.run_id.clone()),
            invoice_id: Some(self.invoice_id.clone()),
            at,
            reason: None,
            granted_by: None,
        }
    }

    /// The output file URL for output `n` of this run.
    pub fn output_url(run_id: &RunId, n: usize) -> String {
        format!("/api/v1/runs/{run_id}/outputs/{n}")
    }

    fn refuse(&self, reason: &'static str) -> Refused {
        Refused {
            run_id: self.run_id.clone(),
            status: self.status,
            reason,
        }
    }

    /// Applies a change of the runner that holds `lease`: refused unless the run's lease still
    /// has its fencing number (another runner took the run over); the lease is renewed until
    /// `lease.until` with it.
    pub fn apply_held(&mut self, lease: Lease, change: RunChange) -> Result<Applied, Refused> {
        if self.lease_fence != lease.fence {
            return Err(self.refuse("another runner holds the run"));
        }
        let renews = !matches!(
            change,
            RunChange::Release { .. } | RunChange::Wait { hold: false, .. }
        );
        let applied = self.apply(change)?;
        if renews && !self.status.is_terminal() {
            self.lease_until = Some(lease.until);
        }
        Ok(applied)
    }

    /// When the step that waits (a durable wait) is due, if one does.
    pub fn waiting_until(&self) -> Option<DateTime<Utc>> {
        self.steps
            .iter()
            .find(|s| s.status == StepStatus::Waiting)
            .and_then(|s| s.until)
    }

    /// Whether a runner may take the run over at `now`: it is running and its lease ran out.
    pub fn lease_expired(&self, now: DateTime<Utc>) -> bool {
        matches!(self.status, RunStatus::Running | RunStatus::Canceling)
            && self.lease_until.is_none_or(|until| until <= now)
    }

    /// Applies a change: checks it fits, updates the run, and returns the event to append.
    pub fn apply(&mut self, change: RunChange) -> Result<Applied, Refused> {
        let mut files = Vec::new();
        let mut refund_pts = 0;
        let body = match change {
            RunChange::Start {
                at,
                deadline,
                lease_until,
            } => {
                if self.status != RunStatus::Queued {
                    return Err(self.refuse("only a queued run can start"));
                }
                self.status = RunStatus::Running;
                self.started_at = Some(at);
                self.deadline_at = Some(deadline);
                self.lease_fence += 1;
                self.lease_until = Some(lease_until);
                EventBody::ExecutionStarted {
                    run_id: self.run_id.clone(),
                    credit_tx_id: self.credit_tx_id.clone(),
                    slug: self.slug.clone(),
                    steps: self
                        .steps
                        .iter()
                        .map(|s| StepRef {
                            id: s.id.clone(),
                            title: s.title.clone(),
                        })
                        .collect(),
                    started_at: at,
                }
            }
            RunChange::Step {
                index,
                status,
                progress,
                message,
                at,
                outputs,
                metered,
                attempt,
            } => {
                // A step that ends while its run is canceling counts: the runner stops after it.
                if !matches!(self.status, RunStatus::Running | RunStatus::Canceling) {
                    return Err(self.refuse("steps move only while running"));
                }
                let of = self.steps.len();
                let Some(step) = self.steps.get(index) else {
                    return Err(self.refuse("no such step"));
                };
                if matches!(step.status, StepStatus::Succeeded | StepStatus::Failed) {
                    return Err(self.refuse("the step already ended"));
                }
                let step_id = step.id.clone();
                let mut shown = Vec::new();
                let mut made = Vec::new();
                for out in outputs {
                    let n = self.outputs.len();
                    made.push(n);
                    let url = out.file.as_ref().map(|_| Run::output_url(&self.run_id, n));
                    if let Some(body) = out.file {
                        files.push(OutputFile {
                            n,
                            mime: out.mime.clone(),
                            body,
                        });
                    }
                    let output = Output {
                        kind: out.kind,
                        mime: out.mime,
                        title: out.title,
                        url,
                        value: out.value,
                    };
                    self.outputs.push(output.clone());
                    shown.push(output);
                }
                let progress = progress.clamp(0.0, 1.0);
                if status != StepStatus::Running
                    && self.call_back.as_ref().is_some_and(|c| c.index == index)
                {
                    // The tool answered at last: nothing is left to call back.
                    self.call_back = None;
                }
                let step = &mut self.steps[index];
                step.status = status;
                step.until = None;
                step.progress = progress;
                step.message = message.clone();
                step.outputs.extend(made);
                if attempt.is_some() && attempt != step.attempt {
                    // Another attempt answers afresh.
                    step.attempt = attempt;
                    step.partial = None;
                }
                if status != StepStatus::Running {
                    step.partial = None;
                }
                if let Some(metered) = metered {
                    step.cost_pts = Some(metered.cost_pts);
                    step.usage = metered.usage;
                    step.usage_estimated = metered.usage_estimated;
                }
                EventBody::StepUpdate {
                    run_id: self.run_id.clone(),
                    step_id,
                    index,
                    of,
                    status,
                    progress,
                    message,
                    outputs: (!shown.is_empty()).then_some(shown),
                    at: Some(at),
                    attempt,
                    resumed: false,
                    until: None,
                }
            }
            RunChange::Resume {
                at,
                lease_until,
                repeatable,
            } => {
                if self.status != RunStatus::Running {
                    return Err(self.refuse("only a running run is taken over"));
                }
                if self.lease_until.is_some_and(|until| until > at) {
                    return Err(self.refuse("its runner still holds it"));
                }
                if self.waiting_until().is_some_and(|until| until > at) {
                    return Err(self.refuse("its wait is not over"));
                }
                self.lease_fence += 1;
                self.lease_until = Some(lease_until);
                let in_flight = self
                    .steps
                    .iter()
                    .position(|s| s.status == StepStatus::Running);
                let Some(index) = in_flight else {
                    // Lost (or handed over) between steps: the next one starts as usual, and
                    // its start is the event.
                    return Ok(Applied {
                        event: None,
                        refund_pts: 0,
                        files,
                        delivery: None,
                    });
                };
                // A step whose tool asked to be called back is repeated by calling it back (a
                // poll), whatever its tool.
                let calling_back = self.call_back.as_ref().is_some_and(|c| c.index == index);
                let step = &mut self.steps[index];
                if !calling_back && !repeatable.get(index).copied().unwrap_or(false) {
                    let step_id = Some(step.id.clone());
                    return self.apply(RunChange::Fail {
                        at,
                        error: RunError {
                            code: "interrupted".into(),
                            message: "The step was cut off when its runner was lost, and it is not safe to repeat; the run was refunded".into(),
                            step_id,
                        },
                    });
                }
                step.status = StepStatus::Running;
                step.progress = 0.0;
                step.message = None;
                step.partial = None;
                step.attempt = None;
                EventBody::StepUpdate {
                    run_id: self.run_id.clone(),
                    step_id: step.id.clone(),
                    index,
                    of: self.steps.len(),
                    status: StepStatus::Running,
                    progress: 0.0,
                    message: None,
                    outputs: None,
                    at: Some(at),
                    attempt: None,
                    resumed: true,
                    until: None,
                }
            }
            RunChange::Renew | RunChange::Release { .. } => {
                if !matches!(self.status, RunStatus::Running | RunStatus::Canceling) {
                    return Err(self.refuse("only a running run has a lease"));
                }
                if let RunChange::Release { at } = change {
                    self.lease_until = Some(at);
                }
                return Ok(Applied {
                    event: None,
                    refund_pts: 0,
                    files,
                    delivery: None,
                });
            }
            RunChange::Wait {
                index,
                at,
                until,
                hold,
                call_back,
            } => {
                if self.status != RunStatus::Running {
                    return Err(self.refuse("only a running run waits"));
                }
                let of = self.steps.len();
                let Some(step) = self.steps.get_mut(index) else {
                    return Err(self.refuse("no such step"));
                };
                if matches!(step.status, StepStatus::Succeeded | StepStatus::Failed) {
                    return Err(self.refuse("the step already ended"));
                }
                step.status = StepStatus::Waiting;
                step.until = Some(until);
                step.progress = 0.0;
                step.message = None;
                if let Some(state) = call_back {
                    self.call_back = Some(CallBackState { index, state });
                }
                if !hold {
                    // Nobody holds the run while it waits; whoever is sent when due takes it.
                    self.lease_until = Some(at);
                }
                EventBody::StepUpdate {
                    run_id: self.run_id.clone(),
                    step_id: step.id.clone(),
                    index,
                    of,
                    status: StepStatus::Waiting,
                    progress: 0.0,
                    message: None,
                    outputs: None,
                    at: Some(at),
                    attempt: None,
                    resumed: false,
                    until: Some(until),
                }
            }
            RunChange::Delta {
                index,
                text,
                progress,
            } => {
                if !matches!(self.status, RunStatus::Running | RunStatus::Canceling) {
                    return Err(self.refuse("steps move only while running"));
                }
                let Some(step) = self.steps.get_mut(index) else {
                    return Err(self.refuse("no such step"));
                };
                if step.status != StepStatus::Running {
                    return Err(self.refuse("only a running step appends text"));
                }
                step.partial.get_or_insert_with(String::new).push_str(&text);
                let progress = progress.clamp(0.0, 1.0).max(step.progress);
                step.progress = progress;
                EventBody::StepDelta {
                    run_id: self.run_id.clone(),
                    step_id: step.id.clone(),
                    index,
                    text,
                    progress,
                }
            }
            RunChange::Finish { at } => {
                // Every step succeeded before the runner saw a cancel: the run is done and paid.
                if !matches!(self.status, RunStatus::Running | RunStatus::Canceling) {
                    return Err(self.refuse("only a running run can finish"));
                }
                if self.steps.iter().any(|s| s.status != StepStatus::Succeeded) {
                    return Err(self.refuse("a run finishes only when every step succeeded"));
                }
                self.status = RunStatus::Succeeded;
                self.finished_at = Some(at);
                EventBody::ExecutionFinished {
                    run_id: self.run_id.clone(),
                    status: RunStatus::Succeeded,
                    outputs: self.outputs.clone(),
                    duration_ms: self.duration_ms().unwrap_or(0),
                    cost_pts: self.cost_pts,
                }
            }
            RunChange::Fail { at, error } => {
                if self.status.is_terminal() {
                    return Err(self.refuse("the run already ended"));
                }
                refund_pts = self.cost_pts - self.refunded_pts;
                self.status = RunStatus::Failed;
                self.finished_at = Some(at);
                self.refunded_pts += refund_pts;
                if let Some(step_id) = &error.step_id {
                    if let Some(step) = self.steps.iter_mut().find(|s| &s.id == step_id) {
                        step.status = StepStatus::Failed;
                    }
                }
                self.error = Some(error.clone());
                EventBody::SpellExecutionError {
                    run_id: self.run_id.clone(),
                    code: error.code,
                    message: error.message,
                    step_id: error.step_id,
                    refunded_pts: self.refunded_pts,
                }
            }
            RunChange::Cancel { at } => match self.status {
                RunStatus::Queued => {
                    refund_pts = self.cost_pts - self.refunded_pts;
                    self.end_canceled(at, refund_pts)
                }
                RunStatus::Running => {
                    self.status = RunStatus::Canceling;
                    return Ok(Applied {
                        event: None,
                        refund_pts: 0,
                        files,
                        delivery: None,
                    });
                }
                RunStatus::Canceling => return Err(self.refuse("the run is already canceling")),
                _ => return Err(self.refuse("the run already ended")),
            },
            RunChange::Stop { at } => {
                if self.status != RunStatus::Canceling {
                    return Err(self.refuse("only a canceling run stops"));
                }
                let of = self.steps.len();
                let succeeded = self.succeeded_steps();
                refund_pts = cancel_refund(self.cost_pts, of - succeeded, of)
                    .min(self.cost_pts - self.refunded_pts);
                // A step cut short did not happen.
                for step in &mut self.steps {
                    if matches!(step.status, StepStatus::Running | StepStatus::Waiting) {
                        step.status = StepStatus::Pending;
                        step.until = None;
                    }
                }
                self.end_canceled(at, refund_pts)
            }
        };
        self.last_seq += 1;
        let event = RunEvent {
            seq: self.last_seq,
            body,
        };
        Ok(Applied {
            delivery: self.delivery(&event),
            event: Some(event),
            refund_pts,
            files,
        })
    }

    /// The run as the API shows it (`GET /api/v1/runs/{runId}`, and the `data` of a webhook).
    pub fn snapshot(&self) -> Value {
        serde_json::json!({
            "runId": self.run_id,
            "creditTxId": self.credit_tx_id,
            "slug": self.slug,
            "status": self.status,
            "steps": self.steps,
            "outputs": self.outputs,
            "costPts": self.cost_pts,
            "refundedPts": self.refunded_pts,
            "createdAt": self.created_at,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "durationMs": self.duration_ms(),
            "error": self.error,
            "lastEventId": self.last_seq,
        })
    }

    fn succeeded_steps(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.status == StepStatus::Succeeded)
            .count()
    }

    /// Ends the run `canceled` with `refund_pts` given back; its terminal event.
    fn end_canceled(&mut self, at: DateTime<Utc>, refund_pts: i64) -> EventBody {
        self.status = RunStatus::Canceled;
        self.finished_at = Some(at);
        self.refunded_pts += refund_pts;
        EventBody::ExecutionCanceled {
            run_id: self.run_id.clone(),
            completed_steps: self.succeeded_steps(),
            refunded_pts: self.refunded_pts,
            canceled_at: at,
        }
    }

    /// Milliseconds from start to finish, once finished.
    pub fn duration_ms(&self) -> Option<i64> {
        match (self.started_at, self.finished_at) {
            (Some(s), Some(f)) => Some((f - s).num_milliseconds().max(0)),
            _ => None,
        }
    }
}

/// The webhook deliveries a run's events call for (SPEC §3.13).
impl Run {
    /// The delivery `event` calls for, if the run has a receiver that wants it: `run.started`
    /// for the start, `run.completed` for whichever end; `data` is the run as it is now.
    pub fn delivery(&self, event: &RunEvent) -> Option<Delivery> {
        let (wanted, at) = self.wanted_delivery(event)?;
        let kind = wanted.delivery_type();
        let body = serde_json::json!({
            "type": kind,
            "timestamp": at,
            "data": self.snapshot(),
        });
        Some(Delivery {
            webhook_id: Delivery::id(&self.run_id, event.seq),
            run_id: self.run_id.clone(),
            user_id: self.user_id.clone(),
            kind: kind.to_owned(),
            url: self.webhook.as_ref()?.url.clone(),
            body: body.to_string(),
            created_at: at,
            next_at: Some(at),
            attempts: Vec::new(),
        })
    }

    /// The `webhook-id` of the delivery `event` calls for, if it calls for one.
    pub fn delivery_id(&self, event: &RunEvent) -> Option<String> {
        self.wanted_delivery(event)
            .map(|_| Delivery::id(&self.run_id, event.seq))
    }

    /// Which delivery `event` calls for, and when it happened.
    fn wanted_delivery(&self, event: &RunEvent) -> Option<(WebhookEvent, DateTime<Utc>)> {
        let target = self.webhook.as_ref()?;
        let (wanted, at) = match &event.body {
            EventBody::ExecutionStarted { started_at, .. } => (WebhookEvent::Start, *started_at),
            body if body.is_terminal() => (
                WebhookEvent::Completed,
                self.finished_at.unwrap_or_else(Utc::now),
            ),
            _ => return None,
        };
        target.events.contains(&wanted).then_some((wanted, at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::queued_run;

    fn step(index: usize, status: StepStatus, outputs: Vec<NewOutput>) -> RunChange {
        RunChange::Step {
            index,
            status,
            progress: 1.0,
            message: None,
            outputs,
            at: Utc::now(),
            metered: None,
            attempt: None,
        }
    }

    #[test]
    fn a_run_moves_through_its_life_with_numbered_events() {
        let mut run = queued_run();
        let now = Utc::now();
        let started = run
            .apply(RunChange::Start {
                at: now,
                deadline: now,
                lease_until: now,
            })
            .unwrap();
        let event = started.event.unwrap();
        assert_eq!(event.seq, 1);
        assert_eq!(event.body.kind(), "executionStarted");
        let image = NewOutput {
            kind: OutputKind::Image,
            mime: "image/png".into(),
            title: None,
            value: None,
            file: Some(FileBody::Inline(vec![1, 2])),
        };
        let a = run
            .apply(step(0, StepStatus::Succeeded, vec![image]))
            .unwrap();
        assert_eq!(a.files.len(), 1);
        assert_eq!(
            run.outputs[0].url.as_deref(),
            Some("/api/v1/runs/run_1/outputs/0")
        );
        assert!(
            run.apply(RunChange::Finish { at: now }).is_err(),
            "step b is not done"
        );
        run.apply(step(1, StepStatus::Succeeded, vec![])).unwrap();
        let fin = run.apply(RunChange::Finish { at: now }).unwrap();
        let event = fin.event.unwrap();
        assert_eq!(event.seq, 4);
        assert!(event.body.is_terminal());
        assert_eq!(run.status, RunStatus::Succeeded);
    }

    #[test]
    fn a_call_back_is_kept_hidden_with_the_run_repeats_its_step_and_goes_when_answered() {
        let mut run = queued_run();
        let now = Utc::now();
        let secs = |s: i64| now + chrono::Duration::seconds(s);
        run.apply(RunChange::Start {
            at: now,
            deadline: secs(600),
            lease_until: secs(30),
        })
        .unwrap();
        let lease = Lease {
            fence: run.lease_fence,
            until: secs(40),
        };
        let poll = serde_json::json!({"poll": "https://jobs.example/1?key=k"});
        // A short wait keeps the holder's lease (renewed, even), a long one lets the run go.
        let wait = |hold, until| RunChange::Wait {
            index: 0,
            at: now,
            until,
            hold,
            call_back: Some(poll.clone()),
        };
        run.apply_held(lease, wait(true, secs(2))).unwrap();
        assert_eq!(run.lease_until, Some(secs(40)));
        assert_eq!(
            run.call_back.as_ref().map(|c| (c.index, &c.state)),
            Some((0, &poll))
        );
        assert!(
            !run.snapshot().to_string().contains("jobs.example"),
            "never shown"
        );
        run.apply_held(lease, wait(false, secs(90))).unwrap();
        assert!(run.lease_expired(now));
        // Its runner lost while polling (the step `running` again): the poll is repeated,
        // though the step's tool is not safe to repeat.
        run.steps[0].status = StepStatus::Running;
        run.steps[0].until = None;
        let resumed = run
            .apply(RunChange::Resume {
                at: secs(91),
                lease_until: secs(121),
                repeatable: vec![false, false],
            })
            .unwrap();
        assert!(matches!(
            resumed.event.unwrap().body,
            EventBody::StepUpdate { resumed: true, .. }
        ));
        assert_eq!(run.status, RunStatus::Running);
        run.apply(step(0, StepStatus::Succeeded, vec![])).unwrap();
        assert_eq!(run.call_back, None, "answered: nothing left to call back");
    }

    #[test]
    fn a_failed_run_is_refunded_once_and_then_refuses_everything() {
        let mut run = queued_run();
        let error = RunError {
            code: "timed_out".into(),
            message: "too slow".into(),
            step_id: None,
        };
        let failed = run
            .apply(RunChange::Fail {
                at: Utc::now(),
                error: error.clone(),
            })
            .unwrap();
        assert_eq!(failed.refund_pts, 7);
        assert_eq!(run.refunded_pts, 7);
        assert!(run
            .apply(RunChange::Fail {
                at: Utc::now(),
                error
            })
            .is_err());
        assert!(run.apply(RunChange::Finish { at: Utc::now() }).is_err());
        assert_eq!(run.last_seq, 1);
    }

    #[test]
    fn a_queued_run_canceled_ends_at_once_with_a_full_refund() {
        let mut run = queued_run();
        let now = Utc::now();
        let canceled = run.apply(RunChange::Cancel { at: now }).unwrap();
        assert_eq!(canceled.refund_pts, 7);
        let event = canceled.event.unwrap();
        assert_eq!(event.seq, 1);
        assert!(event.body.is_terminal());
        assert_eq!(
            event.body,
            EventBody::ExecutionCanceled {
                run_id: "run_1".into(),
                completed_steps: 0,
                refunded_pts: 7,
                canceled_at: now,
            }
        );
        assert_eq!(
            (run.status, run.refunded_pts, run.finished_at),
            (RunStatus::Canceled, 7, Some(now))
        );
        // Nothing moves it again: not a second cancel, a late start, a failure, a stop.
        let fail = RunChange::Fail {
            at: now,
            error: RunError {
                code: "timed_out".into(),
                message: "late".into(),
                step_id: None,
            },
        };
        let start = RunChange::Start {
            at: now,
            deadline: now,
            lease_until: now,
        };
        for change in [
            RunChange::Cancel { at: now },
            start,
            fail,
            RunChange::Stop { at: now },
        ] {
            assert!(run.apply(change.clone()).is_err(), "{change:?}");
        }
        assert_eq!((run.last_seq, run.refunded_pts), (1, 7));
    }

    #[test]
    fn a_running_run_canceled_stops_later_refunding_the_steps_not_done() {
        let mut run = queued_run();
        let now = Utc::now();
        run.apply(RunChange::Start {
            at: now,
            deadline: now,
            lease_until: now,
        })
        .unwrap();
        run.apply(step(0, StepStatus::Succeeded, vec![])).unwrap();
        assert!(
            run.apply(RunChange::Stop { at: now }).is_err(),
            "no stop before a cancel"
        );
        let asked = run.apply(RunChange::Cancel { at: now }).unwrap();
        assert_eq!((asked.event, asked.refund_pts), (None, 0));
        assert_eq!((run.status, run.last_seq), (RunStatus::Canceling, 2));
        assert!(run.apply(RunChange::Cancel { at: now }).is_err());
        // The step in flight may still report before the runner reaches its safe point.
        run.apply(step(1, StepStatus::Running, vec![])).unwrap();
        let stopped = run.apply(RunChange::Stop { at: now }).unwrap();
        // 7 pts for two steps, one not done: floor(7 × 1 / 2) = 3.
        assert_eq!(stopped.refund_pts, 3);
        assert_eq!(
            stopped.event.unwrap().body,
            EventBody::ExecutionCanceled {
                run_id: "run_1".into(),
                completed_steps: 1,
                refunded_pts: 3,
                canceled_at: now,
            }
        );
        assert_eq!((run.status, run.refunded_pts), (RunStatus::Canceled, 3));
        assert_eq!(run.steps[1].status, StepStatus::Pending, "cut short");
        assert!(run.apply(RunChange::Stop { at: now }).is_err());
        assert!(run.apply(RunChange::Finish { at: now }).is_err());
    }

    #[test]
    fn a_cancel_that_loses_the_race_to_the_last_step_leaves_the_run_succeeded() {
        let mut run = queued_run();
        let now = Utc::now();
        run.apply(RunChange::Start {
            at: now,
            deadline: now,
            lease_until: now,
        })
        .unwrap();
        run.apply(step(0, StepStatus::Succeeded, vec![])).unwrap();
        run.apply(RunChange::Cancel { at: now }).unwrap();
        run.apply(step(1, StepStatus::Succeeded, vec![])).unwrap();
        let done = run.apply(RunChange::Finish { at: now }).unwrap();
        assert_eq!(done.refund_pts, 0);
        assert_eq!((run.status, run.refunded_pts), (RunStatus::Succeeded, 0));
        assert!(run.apply(RunChange::Stop { at: now }).is_err());
    }

    #[test]
    fn the_cancel_refund_is_the_share_not_done_rounded_down() {
        assert_eq!(cancel_refund(7, 1, 2), 3);
        assert_eq!(cancel_refund(10, 3, 3), 10);
        assert_eq!(cancel_refund(10, 0, 3), 0);
        assert_eq!(cancel_refund(1, 2, 3), 0);
        assert_eq!(cancel_refund(100, 2, 3), 66);
        assert_eq!(
            cancel_refund(5, 0, 0),
            5,
            "a run without steps gives all back"
        );
        // No overflow on the way: 2 × (2⁶³ − 1) / 3, rounded down.
        assert_eq!(cancel_refund(i64::MAX, 2, 3), 6_148_914_691_236_517_204);
    }

    #[test]
    fn a_duplicate_start_is_refused() {
        let mut run = queued_run();
        let now = Utc::now();
        run.apply(RunChange::Start {
            at: now,
            deadline: now,
            lease_until: now,
        })
        .unwrap();
        assert!(run
            .apply(RunChange::Start {
                at: now,
                deadline: now,
                lease_until: now
            })
            .is_err());
    }

    #[test]
    fn events_serialise_as_the_stream_shows_them() {
        let ev = RunEvent {
            seq: 3,
            body: EventBody::SpellExecutionError {
                run_id: "r".into(),
                code: "step_failed".into(),
                message: "m".into(),
                step_id: Some("b".into()),
                refunded_pts: 5,
            },
        };
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["type"], "spellExecutionError");
        assert_eq!(v["data"]["refundedPts"], 5);
        let data: Value = serde_json::from_str(&ev.body.data_json()).unwrap();
        assert_eq!(data["stepId"], "b");
        let back: RunEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, ev);
    }
}
