//! Metrics on Lambda: the same names the local server exposes at `/metrics`, written to stdout
//! as CloudWatch Embedded Metric Format once per invocation (CloudWatch Logs turns the lines
//! into metrics; no API call, no extra latency).

use std::sync::OnceLock;

use metrics_cloudwatch_embedded::Collector;

/// The CloudWatch namespace of Spellcast's metrics.
pub const NAMESPACE: &str = "Spellcast";

static COLLECTOR: OnceLock<Option<&'static Collector>> = OnceLock::new();

/// Installs the EMF recorder (once per process).
pub fn install() {
    COLLECTOR.get_or_init(|| {
        match metrics_cloudwatch_embedded::Builder::new()
            .cloudwatch_namespace(NAMESPACE)
            .init()
        {
            Ok(collector) => {
                spellcast_application::metrics::describe();
                Some(collector)
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                None
            }
        }
    });
}

/// Writes what was recorded since the last flush (called when an invocation ends).
pub fn flush() {
    if let Some(Some(collector)) = COLLECTOR.get() {
        let stdout = std::io::stdout();
        if let Err(e) = collector.flush(stdout.lock()) {
            tracing::warn!(error = %e, "metrics not flushed");
        }
    }
}
