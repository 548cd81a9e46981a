//! Recovery: nothing paid for is ever lost. A queued run whose start event went missing is
//! published again; a run whose runner was lost (its lease ran out) is sent to a runner again,
//! which takes it over at its first step not succeeded; a run stuck past its deadline is failed
//! and refunded once.

use crate::ports::{Clock, DeliveryStore, StoreResult};
use crate::run_log::RunLog;
use spellcast_domain::catalog::Catalog;
use spellcast_domain::ids::RunId;
use spellcast_domain::run::{Run, RunChange, RunError, RunStatus};

/// What recovery needs: the spells (for their timeouts), where changes go, and the time.
pub struct Recovery<'a> {
    /// The spells.
    pub catalog: &'a Catalog,
    /// Where changes go (its bus also takes republished start events).
    pub log: RunLog<'a>,
    /// Webhook deliveries, to find those whose announcement was lost.
    pub deliveries: &'a dyn DeliveryStore,
    /// The time.
    pub clock: &'a dyn Clock,
    /// After this, a queued run's start event counts as lost.
    pub republish_after: chrono::Duration,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// Runs whose start event was published again.
    pub republished: Vec<RunId>,
    /// Runs failed and refunded for being stuck.
    pub timed_out: Vec<RunId>,
    /// Runs whose runner was lost, sent to a runner to take them over.
    pub resumed: Vec<RunId>,
    /// Webhook deliveries announced again (their `webhook-id`s).
    pub redelivered: Vec<String>,
}

/// Most stale deliveries one sweep announces again (the rest wait for the next sweep).
const STALE_DELIVERIES: usize = 500;

impl Recovery<'_> {
    /// Looks at every unfinished run once.
    pub async fn sweep(&self) -> StoreResult<Sweep> {
        let now = self.clock.now();
        let mut report = Sweep::default();
        for run in self.log.runs.unfinished_runs().await? {
            let timeout = self
                .catalog
                .get(&run.slug)
                .map(|s| s.timeout())
                .unwrap_or_else(|| chrono::Duration::minutes(15));
            let lost = run.lease_expired(now);
            let stuck = match run.status {
                // A canceling run whose runner was lost stops now: nobody else will.
                RunStatus::Canceling => lost || run.deadline_at.is_some_and(|d| d < now),
                RunStatus::Running => run.deadline_at.is_some_and(|d| d < now),
                // A run that never started within a whole timeout after several republications is
                // refunded rather than left waiting for ever.
                RunStatus::Queued => run.created_at + timeout + self.republish_after < now,
                _ => false,
            };
            if stuck && run.status == RunStatus::Canceling {
                // Its owner asked for a cancel and its runner died: it ends canceled, refunded
                // by the cancel rule, as if the runner had stopped it.
                if self
                    .log
                    .advance(&run.run_id, RunChange::Stop { at: now })
                    .await?
                    .is_some()
                {
                    tracing::warn!(run_id = %run.run_id, "stuck canceling run stopped");
                    report.timed_out.push(run.run_id);
                }
            } else if stuck {
                let change = RunChange::Fail {
                    at: now,
                    error: RunError {
                        code: "timed_out".into(),
                        message: "The run did not finish in time and was refunded".into(),
                        step_id: run
                            .steps
                            .iter()
                            .find(|s| s.status == spellcast_domain::run::StepStatus::Running)
                            .map(|s| s.id.clone()),
                    },
                };
                if self.log.advance(&run.run_id, change).await?.is_some() {
                    tracing::warn!(run_id = %run.run_id, "stuck run failed and refunded");
                    report.timed_out.push(run.run_id);
                }
            } else if run.waiting_until().is_some_and(|until| until > now) {
                // A durable wait not due yet: its wake-up is set (and if that was lost, the
                // sweep after it is due sends the run on, as a lost runner's).
            } else if run.status == RunStatus::Running && lost {
                // Its runner was lost: the runner this reaches takes it over (one wins the
                // lease if several do).
                if self.publish(&run).await {
                    tracing::warn!(run_id = %run.run_id, "run of a lost runner sent to be resumed");
                    report.resumed.push(run.run_id);
                }
            } else if run.status == RunStatus::Queued
                && run.created_at + self.republish_after < now
                && self.publish(&run).await
            {
                tracing::warn!(run_id = %run.run_id, "queued run published again");
                report.republished.push(run.run_id);
            }
        }
        // A delivery still pending well after it was due lost its announcement (or its queue
        // message): announce it again. At least once — a receiver may see it twice.
        let stale = now - self.republish_after;
        for delivery in self
            .deliveries
            .due_deliveries(stale, STALE_DELIVERIES)
            .await?
        {
            let (run_id, id) = (&delivery.run_id, &delivery.webhook_id);
            match self.log.bus.webhook_due(run_id, id).await {
                Ok(()) => {
                    tracing::warn!(%run_id, webhook_id = id, "webhook delivery announced again");
                    report.redelivered.push(delivery.webhook_id);
                }
                Err(e) => tracing::warn!(%run_id, error = %e, "webhook announcement failed"),
            }
        }
        Ok(report)
    }

    /// Sets the wake-up of every run in a durable wait again: what a process whose timers are
    /// its own (the local server) does at start, its old timers having died with the old
    /// process. A bus whose timers are durable (the wake-ups queue on AWS) does not need it.
    pub async fn wake_waiting(&self) -> StoreResult<usize> {
        let now = self.clock.now();
        let mut set = 0;
        for run in self.log.runs.unfinished_runs().await? {
            let Some(until) = run.waiting_until().filter(|until| *until > now) else {
                continue;
            };
            if run.status != RunStatus::Running {
                continue;
            }
            match self.log.bus.execution_due(run.execution(), until).await {
                Ok(()) => set += 1,
                Err(e) => tracing::warn!(run_id = %run.run_id, error = %e, "wake-up not set"),
            }
        }
        Ok(set)
    }

    /// Sends `run` to a runner again; whether the bus took it.
    async fn publish(&self, run: &Run) -> bool {
        let event = run.execution();
        match self.log.bus.execution_started(event).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(run_id = %run.run_id, error = %e, "publishing the run failed");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Fixture;
    use serde_json::json;

    /// A spell `t` of two steps (2 points) that times out after 120 s.
    fn fixture() -> Fixture {
        let catalog = spellcast_domain::testing::catalog_of(json!([
            {"id": "a", "title": "A", "tool": "text.render", "with": {"template": "a"}},
            {"id": "b", "title": "B", "tool": "text.render", "with": {"template": "b"}}
        ]));
        assert_eq!(catalog.iter().next().unwrap().timeout().num_seconds(), 120);
        Fixture::new(catalog)
    }

    fn minutes(n: i64) -> chrono::Duration {
        chrono::Duration::minutes(n)
    }

    /// Starts the run, due by `deadline_in`, its runner's lease until `lease_in`.
    async fn start(
        f: &Fixture,
        run_id: &RunId,
        deadline_in: chrono::Duration,
        lease_in: chrono::Duration,
    ) {
        let now = f.clock.now();
        let change = RunChange::Start {
            at: now,
            deadline: now + deadline_in,
            lease_until: now + lease_in,
        };
        f.run_log().advance(run_id, change).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_queued_run_is_published_again_then_refunded_if_it_never_starts() {
        let f = fixture();
        let run = f.cast_run("u", json!({})).await;
        let recovery = f.recovery(minutes(1));
        // Young: left alone.
        assert_eq!(recovery.sweep().await.unwrap(), Sweep::default());
        // Older than the republish delay: its start is published again, it stays paid.
        f.clock.advance(minutes(2));
        let sweep = recovery.sweep().await.unwrap();
        assert_eq!(sweep.republished, vec![run.run_id.clone()]);
        assert_eq!(f.bus.started.lock().unwrap().len(), 2);
        assert_eq!(f.balance("u"), 0);
        // Never started within its timeout and the republish delay: failed and refunded, once.
        f.clock.advance(minutes(2));
        let sweep = recovery.sweep().await.unwrap();
        assert_eq!(sweep.timed_out, vec![run.run_id.clone()]);
        assert_eq!(f.balance("u"), 2);
        assert_eq!(recovery.sweep().await.unwrap(), Sweep::default());
        assert_eq!(f.balance("u"), 2);
    }

    #[tokio::test]
    async fn a_running_run_is_failed_and_refunded_only_past_its_deadline() {
        let f = fixture();
        let run = f.cast_run("u", json!({})).await;
        start(&f, &run.run_id, minutes(5), minutes(5)).await;
        let recovery = f.recovery(minutes(1));
        f.clock.advance(minutes(4));
        assert_eq!(recovery.sweep().await.unwrap(), Sweep::default());
        f.clock.advance(minutes(2));
        let sweep = recovery.sweep().await.unwrap();
        assert_eq!(sweep.timed_out, vec![run.run_id.clone()]);
        let failed = f.store.with(|s| s.runs[&run.run_id].clone());
        assert_eq!(failed.status, RunStatus::Failed);
        assert_eq!(failed.error.unwrap().code, "timed_out");
        assert_eq!(f.balance("u"), 2);
    }

    #[tokio::test]
    async fn a_canceling_run_whose_runner_died_ends_canceled_by_the_cancel_rule() {
        let f = fixture();
        let run = f.cast_run("u", json!({})).await;
        start(&f, &run.run_id, minutes(5), minutes(5)).await;
        let now = f.clock.now();
        f.run_log()
            .advance(&run.run_id, RunChange::Cancel { at: now })
            .await
            .unwrap();
        f.clock.advance(minutes(6));
        let sweep = f.recovery(minutes(1)).sweep().await.unwrap();
        assert_eq!(sweep.timed_out, vec![run.run_id.clone()]);
        let stopped = f.store.with(|s| s.runs[&run.run_id].clone());
        // No step done: everything back, as a stop by its runner would have given.
        assert_eq!(
            (stopped.status, stopped.refunded_pts),
            (RunStatus::Canceled, 2)
        );
        assert_eq!(f.balance("u"), 2);
    }

    #[tokio::test]
    async fn a_run_whose_runner_was_lost_is_sent_to_a_runner_again_before_its_deadline() {
        let f = fixture();
        let run = f.cast_run("u", json!({})).await;
        let lease = chrono::Duration::seconds(30);
        start(&f, &run.run_id, minutes(5), lease).await;
        let recovery = f.recovery(minutes(1));
        f.clock.advance(chrono::Duration::seconds(20));
        assert_eq!(recovery.sweep().await.unwrap(), Sweep::default());
        // The lease ran out: its runner is presumed lost, and the run goes to a runner again
        // (the cast's start event, then this one), still paid.
        f.clock.advance(chrono::Duration::seconds(11));
        let sweep = recovery.sweep().await.unwrap();
        assert_eq!(sweep.resumed, vec![run.run_id.clone()]);
        assert_eq!(
            *f.bus.started.lock().unwrap(),
            [run.run_id.clone(), run.run_id.clone()]
        );
        assert_eq!(
            f.store.with(|s| s.runs[&run.run_id].status),
            RunStatus::Running
        );
        assert_eq!(f.balance("u"), 0);
    }

    #[tokio::test]
    async fn a_canceling_run_whose_runner_was_lost_stops_without_waiting_for_its_deadline() {
        let f = fixture();
        let run = f.cast_run("u", json!({})).await;
        start(&f, &run.run_id, minutes(5), chrono::Duration::seconds(30)).await;
        let now = f.clock.now();
        f.run_log()
            .advance(&run.run_id, RunChange::Cancel { at: now })
            .await
            .unwrap();
        f.clock.advance(chrono::Duration::seconds(31));
        let sweep = f.recovery(minutes(1)).sweep().await.unwrap();
        assert_eq!(sweep.timed_out, vec![run.run_id.clone()]);
        assert!(sweep.resumed.is_empty());
        assert_eq!(
            f.store.with(|s| s.runs[&run.run_id].status),
            RunStatus::Canceled
        );
        assert_eq!(f.balance("u"), 2);
    }
}
