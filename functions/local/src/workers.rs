//! The background work of the local process: the runner, the webhook worker, the recovery
//! sweeper, the stats ticker, and the Prometheus recorder behind `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use spellcast_application::delivering::Next;
use spellcast_application::ports::WebhookSender;
use spellcast_application::{metrics, App};
use spellcast_domain::events::ExecutionStarted;
use spellcast_http::MetricsRender;
use tokio::sync::{mpsc, Notify, Semaphore};

/// How many runs execute at once in this process.
const PARALLEL_RUNS: usize = 32;

/// Executes every run the bus delivers, each in its own task.
pub async fn runner(app: Arc<App>, mut executions: mpsc::UnboundedReceiver<ExecutionStarted>) {
    let slots = Arc::new(Semaphore::new(PARALLEL_RUNS));
    while let Some(event) = executions.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let app = app.clone();
        tokio::spawn(async move {
            if let Err(e) = app.runner().execute(&event.run_id).await {
                tracing::error!(run_id = %event.run_id, error = %e, "run execution failed; recovery will refund it");
            }
            drop(slot);
        });
    }
}

/// Sets the timers of the runs in a durable wait (this process's timers died with the last
/// one), then publishes lost start events again and refunds stuck runs, every `period`.
pub async fn sweeper(app: Arc<App>, period: Duration) {
    match app.recovery().wake_waiting().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(waiting = n, "wake-ups of waiting runs set again"),
        Err(e) => tracing::error!(error = %e, "wake-ups of waiting runs not set"),
    }
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if let Err(e) = app.recovery().sweep().await {
            tracing::error!(error = %e, "recovery sweep failed");
        }
    }
}

/// Deletes the uploads no cast used once they expire (`--upload-ttl-secs`): their records in
/// the embedded store, their bytes under the data dir. A used upload's bytes were copied out of
/// `uploads/` by its cast, so they stay with the run.
pub async fn upload_sweeper(expiry: crate::backends::UploadExpiry, ttl: Duration) {
    if expiry.records.is_none() && expiry.files.is_none() {
        return;
    }
    // Often enough that nothing outlives its time by more than a quarter of it.
    let mut tick = tokio::time::interval(
        (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(600)),
    );
    loop {
        tick.tick().await;
        if let Some(records) = &expiry.records {
            match records.remove_expired_uploads(chrono::Utc::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "expired upload records removed"),
                Err(e) => tracing::error!(error = %e, "expired uploads not removed"),
            }
        }
        if let Some(files) = &expiry.files {
            match files.remove_older_than("uploads", ttl).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "unused upload files removed"),
                Err(e) => tracing::error!(error = %e, "unused upload files not removed"),
            }
        }
    }
}

/// Most deliveries attempted at once.
const PARALLEL_DELIVERIES: usize = 16;
/// How often the webhook worker looks for due deliveries when nothing wakes it sooner.
const DELIVERY_POLL: Duration = Duration::from_secs(2);

/// Delivers run webhooks: what is due in the store, when a delivery is announced, when the
/// soonest retry falls due, and every [`DELIVERY_POLL`] (so deliveries a restart left pending go
/// out too).
pub async fn webhook_worker(app: Arc<App>, sender: Arc<dyn WebhookSender>, announced: Arc<Notify>) {
    loop {
        let delivering = app.delivering(sender.as_ref());
        let mut wait = DELIVERY_POLL;
        match delivering.due(PARALLEL_DELIVERIES * 4).await {
            Ok(due) => {
                let full = due.len() == PARALLEL_DELIVERIES * 4;
                let nexts: Vec<Next> = futures::stream::iter(due)
                    .map(|d| {
                        let delivering = &delivering;
                        async move {
                            delivering
                                .attempt(&d.run_id, &d.webhook_id)
                                .await
                                .unwrap_or_else(|e| {
                                    tracing::error!(webhook_id = d.webhook_id, error = %e, "delivery failed");
                                    Next::Done
                                })
                        }
                    })
                    .buffer_unordered(PARALLEL_DELIVERIES)
                    .collect()
                    .await;
                let now = app.now();
                for next in nexts {
                    if let Next::At(at) = next {
                        wait = wait.min((at - now).to_std().unwrap_or_default());
                    }
                }
                if full {
                    continue;
                }
            }
            Err(e) => tracing::error!(error = %e, "due deliveries not read"),
        }
        tokio::select! {
            () = announced.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Recomputes spell prices at start and every `period`.
pub async fn stats_ticker(app: Arc<App>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if let Err(e) = app.pricing().recompute().await {
            tracing::error!(error = %e, "price recomputation failed");
        }
    }
}

/// Installs the Prometheus recorder (histogram with explicit buckets, not a summary).
pub fn install_metrics() -> Result<MetricsRender, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(metrics::DURATION.into()),
            metrics::DURATION_BUCKETS,
        )
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    metrics::describe();
    Ok(Arc::new(move || handle.render()))
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
