//! Functions invoked by events rather than HTTP: the runner (the `executionStarted` rule's
//! target, and the wake-ups queue's) and the stats function (the 15-minute schedule, and the
//! signed webhook through API Gateway), each telling its events apart by their shape.

use spellcast_http::Api;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use lambda_http::aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use lambda_http::aws_lambda_events::encodings::Body as EventBody;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde::Deserialize;
use serde_json::{json, Value};
use spellcast_application::runner::Execution;
use spellcast_application::App;
use spellcast_domain::events::ExecutionStarted;
use spellcast_http as api;

use crate::emf;
use crate::sqs_batch::Batch;
use spellcast_aws::WakeUp;

/// An EventBridge event as it reaches a target.
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "detail-type")]
    detail_type: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    detail: Value,
}

/// Reads the run to execute from an `executionStarted` event.
pub fn execution(event: &Value) -> Result<ExecutionStarted, String> {
    let envelope =
        Envelope::deserialize(event).map_err(|e| format!("not an EventBridge event: {e}"))?;
    if envelope.detail_type != "executionStarted" {
        return Err(format!("unexpected detail-type `{}`", envelope.detail_type));
    }
    ExecutionStarted::deserialize(&envelope.detail)
        .map_err(|e| format!("bad executionStarted detail: {e}"))
}

/// Executes the run an `executionStarted` event names: a queued run, or one whose runner was
/// lost or handed it over. A duplicate delivery is answered `skipped`. Once `hand_over_at` has
/// passed the run is handed to the next invocation between steps. A store failure is returned
/// as an error: Lambda retries, then the event lands in the dead-letter queue.
pub async fn run_delivery(
    app: &App,
    event: &Value,
    hand_over_at: Option<DateTime<Utc>>,
) -> Result<Value, Error> {
    let started = execution(event)?;
    let outcome = app
        .runner()
        .execute_until(&started.run_id, hand_over_at)
        .await?;
    Ok(match outcome {
        Execution::Ran(status) => json!({ "runId": started.run_id, "ran": true, "status": status }),
        Execution::Skipped => json!({ "runId": started.run_id, "ran": false }),
        Execution::HandedOver => {
            json!({ "runId": started.run_id, "ran": true, "handedOver": true })
        }
        Execution::Waiting => json!({ "runId": started.run_id, "ran": true, "waiting": true }),
    })
}

/// When an invocation ending at `deadline` (epoch milliseconds, from its context) hands its run
/// over: with a quarter of its time left, at most two minutes (time for the step under way to
/// end), or after `budget` (`SPELLCAST_HANDOVER_BUDGET_MS`) if that comes first. A deadline not
/// in the future is no deadline (`cargo lambda watch` sends its timeout, 600000, not a time).
pub fn hand_over_at(
    deadline_ms: u64,
    now: DateTime<Utc>,
    budget: Option<std::time::Duration>,
) -> Option<DateTime<Utc>> {
    let by_deadline = DateTime::<Utc>::from_timestamp_millis(deadline_ms as i64)
        .filter(|deadline| *deadline > now)
        .map(|deadline| deadline - ((deadline - now) / 4).min(chrono::Duration::minutes(2)));
    let by_budget = budget
        .and_then(|b| chrono::Duration::from_std(b).ok())
        .map(|b| now + b);
    match (by_deadline, by_budget) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Executes the runs of a batch from the wake-ups queue (durable waits, SPEC §8.2), one after
/// the other: each that is due, or set again for later if its timer fired early (one hop of a
/// wait over 15 minutes). A message the store failed for is a batch item failure (SQS gives it
/// again); one that names no run is dropped.
pub(crate) async fn wake_up_batch(
    app: &App,
    batch: Batch,
    hand_over_at: Option<DateTime<Utc>>,
) -> Result<Value, Error> {
    let mut failures = Vec::new();
    for message in batch.records {
        let Ok(wake_up) = serde_json::from_str::<WakeUp>(&message.body) else {
            tracing::error!(message_id = message.message_id, "not a wake-up; dropped");
            continue;
        };
        let outcome = app
            .runner()
            .wake_up(wake_up.execution(), wake_up.due_at, hand_over_at)
            .await;
        match outcome {
            Ok(outcome) => tracing::info!(run_id = %wake_up.run_id, ?outcome, "wake-up handled"),
            Err(e) => {
                tracing::warn!(run_id = %wake_up.run_id, error = %e, "wake-up kept for a retry");
                failures.push(json!({ "itemIdentifier": message.message_id }));
            }
        }
    }
    Ok(json!({ "batchItemFailures": failures }))
}

/// Serves the runner until the runtime stops: `executionStarted` events from EventBridge, and
/// batches from the wake-ups queue; each invocation hands its run over in time (see
/// [`hand_over_at`]).
pub async fn serve_runner(app: Arc<Api>, budget: Option<std::time::Duration>) -> Result<(), Error> {
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let app = app.clone();
        async move {
            let by = hand_over_at(event.context.deadline, Utc::now(), budget);
            let result = match Batch::of(&event.payload) {
                Some(batch) => wake_up_batch(&app, batch, by).await,
                None => run_delivery(&app, &event.payload, by).await,
            };
            emf::flush();
            result
        }
    }))
    .await
}

/// Whether an event is EventBridge's schedule.
fn is_schedule(event: &Value) -> bool {
    Envelope::deserialize(event)
        .is_ok_and(|e| e.source == "aws.events" && e.detail_type == "Scheduled Event")
}

/// The input of the every-minute schedule (`infra/template.yaml`, `EveryMinute`): recovery
/// only, so a lost start event is published again within about two minutes of its cast (SPEC
/// §5.8), while prices are recomputed on the 15-minute schedule.
pub const RECOVERY_TICK: &str = r#"{"spellcast":"recover"}"#;

/// Whether an event is the every-minute recovery tick.
fn is_recovery_tick(event: &Value) -> bool {
    serde_json::from_str::<Value>(RECOVERY_TICK).is_ok_and(|tick| *event == tick)
}

/// The recovery tick's work: republish lost start events, fail and refund stuck runs.
pub async fn recover(app: &App) -> Result<Value, Error> {
    let sweep = app.recovery().sweep().await?;
    Ok(json!({
        "republished": sweep.republished,
        "timedOut": sweep.timed_out,
        "resumed": sweep.resumed,
        "redelivered": sweep.redelivered,
    }))
}

/// The 15-minute schedule's work: recompute prices, then recover.
pub async fn scheduled(app: &App) -> Result<Value, Error> {
    let prices = app.pricing().recompute().await?;
    let mut report = recover(app).await?;
    report["spells"] = json!(prices.len());
    Ok(report)
}

/// An API Gateway (HTTP API, payload 2.0) or Function URL request, as the HTTP layer takes it.
pub fn http_request(event: ApiGatewayV2httpRequest) -> Result<api::Request, Error> {
    let path = event.raw_path.unwrap_or_else(|| "/".into());
    let uri = match event.raw_query_string.filter(|q| !q.is_empty()) {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let body = match event.body {
        Some(b) if event.is_base64_encoded => {
            Bytes::from(base64::engine::general_purpose::STANDARD.decode(b)?)
        }
        Some(b) => Bytes::from(b),
        None => Bytes::new(),
    };
    let mut request = http::Request::builder()
        .method(event.request_context.http.method)
        .uri(uri)
        .body(body)?;
    *request.headers_mut() = event.headers;
    Ok(request)
}

/// A response as API Gateway (payload 2.0) takes it from a function that is not
/// `lambda_http`'s.
pub async fn http_response(response: api::Response) -> ApiGatewayV2httpResponse {
    let whole = crate::http::buffered(response).await;
    let (parts, body) = whole.into_parts();
    let is_base64_encoded = matches!(body, lambda_http::Body::Binary(_));
    let body = match body {
        lambda_http::Body::Empty => None,
        lambda_http::Body::Text(t) => Some(EventBody::Text(t)),
        lambda_http::Body::Binary(b) => Some(EventBody::Binary(b)),
        _ => None,
    };
    let mut out = ApiGatewayV2httpResponse::default();
    out.status_code = i64::from(parts.status.as_u16());
    out.headers = parts.headers;
    out.body = body;
    out.is_base64_encoded = is_base64_encoded;
    out
}

/// Serves the stats function: the schedule, or the webhook.
pub async fn serve_stats(app: Arc<Api>) -> Result<(), Error> {
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let app = app.clone();
        async move {
            if is_schedule(&event.payload) {
                return scheduled(&app).await;
            }
            if is_recovery_tick(&event.payload) {
                return recover(&app).await;
            }
            let request: ApiGatewayV2httpRequest = serde_json::from_value(event.payload)?;
            let response = api::handle(app, http_request(request)?, &[&api::STATS_REFRESH]).await;
            Ok(serde_json::to_value(http_response(response).await)?)
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_handed_over_with_time_left_for_the_step_under_way() {
        let now = Utc::now();
        let in_secs = |s: i64| (now + chrono::Duration::seconds(s)).timestamp_millis() as u64;
        let secs =
            |at: Option<DateTime<Utc>>| (at.unwrap() - now).num_milliseconds() as f64 / 1000.0;
        // 15 minutes: two minutes before the end.
        assert_eq!(secs(hand_over_at(in_secs(900), now, None)).round(), 780.0);
        // 40 seconds: a quarter of it left.
        assert_eq!(secs(hand_over_at(in_secs(40), now, None)).round(), 30.0);
        // A budget shorter than that wins.
        let budget = Some(std::time::Duration::from_millis(1500));
        assert_eq!(secs(hand_over_at(in_secs(900), now, budget)), 1.5);
        // No deadline in the future (an emulator's): the budget alone, or never.
        assert_eq!(hand_over_at(600_000, now, None), None);
        assert_eq!(secs(hand_over_at(600_000, now, budget)), 1.5);
    }

    #[test]
    fn the_recovery_tick_is_told_from_the_schedule_and_from_requests() {
        assert!(is_recovery_tick(&json!({"spellcast": "recover"})));
        assert!(!is_recovery_tick(&json!({"spellcast": "prices"})));
        let schedule =
            json!({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
        assert!(!is_recovery_tick(&schedule) && is_schedule(&schedule));
        assert!(!is_schedule(&json!({"spellcast": "recover"})));
    }

    #[test]
    fn a_wake_up_batch_is_told_from_an_eventbridge_event() {
        let batch = json!({"Records": [{"messageId": "m1", "eventSource": "aws:sqs",
            "body": r#"{"runId":"r1","slug":"nap","dueAt":"2026-12-06T12:00:00Z"}"#}]});
        let records = Batch::of(&batch).unwrap().records;
        let wake_up: WakeUp = serde_json::from_str(&records[0].body).unwrap();
        assert_eq!(
            (records[0].message_id.as_str(), wake_up.run_id.as_str()),
            ("m1", "r1")
        );
        let event = json!({"detail-type": "executionStarted", "source": "spellcast",
            "detail": {"runId": "r1", "slug": "nap"}});
        assert!(Batch::of(&event).is_none());
    }

    #[test]
    fn an_execution_started_event_names_its_run() {
        let event = json!({
            "version": "0", "id": "e", "source": "spellcast", "detail-type": "executionStarted",
            "account": "1", "time": "2026-11-25T00:00:00Z", "region": "us-east-1", "resources": [],
            "detail": {"runId": "r1", "slug": "hello-sigil"}
        });
        let started = execution(&event).unwrap();
        assert_eq!(
            (started.run_id.as_str(), started.slug.as_str()),
            ("r1", "hello-sigil")
        );
        assert!(!is_schedule(&event));
    }

    #[test]
    fn other_events_are_refused_with_a_reason() {
        let wrong = json!({"detail-type": "stepUpdate", "source": "spellcast", "detail": {}});
        assert!(execution(&wrong).unwrap_err().contains("stepUpdate"));
        assert!(execution(&json!({"hello": 1})).is_err());
        let bad = json!({"detail-type": "executionStarted", "detail": {"runId": 5}});
        assert!(execution(&bad).is_err());
    }

    #[test]
    fn the_schedule_is_told_apart_from_a_webhook_call() {
        let schedule = json!({
            "version": "0", "id": "e", "source": "aws.events", "detail-type": "Scheduled Event",
            "account": "1", "time": "2026-11-25T00:00:00Z", "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:1:rule/x"], "detail": {}
        });
        assert!(is_schedule(&schedule));
        let webhook = json!({"version": "2.0", "rawPath": "/api/v1/internal/stats/refresh"});
        assert!(!is_schedule(&webhook));
    }

    #[test]
    fn a_webhook_event_becomes_a_request_with_its_body_and_headers() {
        let event: ApiGatewayV2httpRequest = serde_json::from_value(json!({
            "version": "2.0", "routeKey": "POST /api/v1/internal/stats/refresh",
            "rawPath": "/api/v1/internal/stats/refresh", "rawQueryString": "a=1",
            "headers": {"x-spellcast-signature": "sha256=00"},
            "requestContext": {"http": {"method": "POST", "path": "/api/v1/internal/stats/refresh",
                "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "t"},
                "accountId": "1", "apiId": "a", "domainName": "d", "domainPrefix": "d",
                "requestId": "r", "routeKey": "k", "stage": "$default", "time": "t", "timeEpoch": 0},
            "body": "e30=", "isBase64Encoded": true
        }))
        .unwrap();
        let req = http_request(event).unwrap();
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(req.uri(), "/api/v1/internal/stats/refresh?a=1");
        assert_eq!(req.headers()["x-spellcast-signature"], "sha256=00");
        assert_eq!(req.body().as_ref(), b"{}");
    }
}
