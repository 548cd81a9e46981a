//! Execution metrics, recorded through the `metrics` facade so each entry point picks the
//! exporter: Prometheus text locally, CloudWatch Embedded Metric Format on Lambda.

use spellcast_domain::run::EventBody;

/// Runs started, by spell.
pub const STARTED: &str = "spell_execution_started_total";
/// Runs finished successfully, by spell.
pub const FINISHED: &str = "spell_execution_finished_total";
/// Runs failed, by spell.
pub const ERRORS: &str = "spell_execution_error_total";
/// Runs canceled by their owners, by spell.
pub const CANCELED: &str = "spell_execution_canceled_total";
/// Run duration in seconds, by spell and outcome.
pub const DURATION: &str = "spell_run_duration_seconds";
/// The duration histogram's bucket bounds (seconds).
pub const DURATION_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Describes the metrics (help text) once per process.
pub fn describe() {
    metrics::describe_counter!(STARTED, "Spell runs started");
    metrics::describe_counter!(FINISHED, "Spell runs that succeeded");
    metrics::describe_counter!(ERRORS, "Spell runs that failed and were refunded");
    metrics::describe_counter!(CANCELED, "Spell runs canceled by their owners");
    metrics::describe_histogram!(DURATION, metrics::Unit::Seconds, "Spell run duration");
}

/// Records what a run event means for the metrics.
pub fn record(slug: &spellcast_domain::ids::Slug, event: &EventBody, duration_ms: Option<i64>) {
    let spell = slug.to_string();
    let seconds = duration_ms.unwrap_or(0) as f64 / 1000.0;
    match event {
        EventBody::ExecutionStarted { .. } => {
            metrics::counter!(STARTED, "spell" => spell).increment(1);
        }
        EventBody::ExecutionFinished { .. } => {
            metrics::counter!(FINISHED, "spell" => spell.clone()).increment(1);
            metrics::histogram!(DURATION, "spell" => spell, "outcome" => "succeeded")
                .record(seconds);
        }
        EventBody::SpellExecutionError { .. } => {
            metrics::counter!(ERRORS, "spell" => spell.clone()).increment(1);
            metrics::histogram!(DURATION, "spell" => spell, "outcome" => "failed").record(seconds);
        }
        EventBody::ExecutionCanceled { .. } => {
            metrics::counter!(CANCELED, "spell" => spell.clone()).increment(1);
            metrics::histogram!(DURATION, "spell" => spell, "outcome" => "canceled")
                .record(seconds);
        }
        EventBody::StepUpdate { .. } | EventBody::StepDelta { .. } => {}
    }
}
