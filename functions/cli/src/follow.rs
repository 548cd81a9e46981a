//! Following a run's event stream to its end, across dropped connections: each reconnect sends
//! `Last-Event-ID`, and an event already seen is never shown twice (SPEC §3.4).

use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sse_stream::SseByteStream;

use crate::api::{Api, ApiError};

/// Reconnects after this many failures in a row are given up.
const MAX_RETRIES: u32 = 30;

/// How following ended.
pub enum Ended {
    /// The terminal event: its type and data.
    Terminal(String, Value),
    /// The server said everything was delivered (204) before a terminal event was seen here.
    AllDelivered,
}

/// Follows the stream at `stream_url` (with the invoice token) from the start, calling `seen` for
/// every event once, in order, until the terminal one. `dropped` is called when a connection
/// ends early, before reconnecting.
pub async fn follow(
    api: &Api,
    stream_url: &str,
    invoice: &str,
    mut seen: impl FnMut(u64, &str, &Value),
    mut dropped: impl FnMut(&str),
) -> Result<Ended, ApiError> {
    let mut last: u64 = 0;
    let mut failures = 0u32;
    loop {
        let mut req = api.request(Method::GET, stream_url, Some(invoice))?;
        if last > 0 {
            req = req.header("last-event-id", last.to_string());
        }
        let outcome = match req.send().await {
            Ok(res) if res.status() == StatusCode::NO_CONTENT => return Ok(Ended::AllDelivered),
            Ok(res) if res.status().is_success() => {
                let chunks = futures::stream::unfold(res, |mut res| async move {
                    match res.chunk().await {
                        Ok(Some(chunk)) => Some((Ok::<_, reqwest::Error>(chunk), res)),
                        Ok(None) => None,
                        Err(e) => Some((Err(e), res)),
                    }
                });
                let mut events = std::pin::pin!(SseByteStream::new(chunks));
                let mut why = "the server closed the stream".to_owned();
                while let Some(event) = events.next().await {
                    let event = match event {
                        Ok(event) => event,
                        Err(e) => {
                            why = e.to_string();
                            break;
                        }
                    };
                    let (Some(id), Some(kind), Some(data)) = (
                        event.id.as_deref().and_then(|i| i.parse::<u64>().ok()),
                        event.event.as_deref(),
                        event.data.as_deref(),
                    ) else {
                        continue; // `retry:` and comments carry no event
                    };
                    if id <= last {
                        continue;
                    }
                    last = id;
                    failures = 0;
                    let data: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                    seen(id, kind, &data);
                    if is_terminal(kind) {
                        return Ok(Ended::Terminal(kind.to_owned(), data));
                    }
                }
                why
            }
            // A refusal (bad token, unknown run) does not get better by retrying.
            Ok(res)
                if res.status().is_client_error()
                    && res.status() != StatusCode::TOO_MANY_REQUESTS =>
            {
                // The problem is in the answer at hand: no second request for it.
                return Err(match crate::api::answer(res).await {
                    Err(problem) => problem,
                    Ok(_) => ApiError::Transport("the stream was refused".into()),
                });
            }
            Ok(res) => format!("the server answered {}", res.status()),
            Err(e) => format!("cannot reach Spellcast: {e}"),
        };
        failures += 1;
        if failures > MAX_RETRIES {
            return Err(ApiError::Transport(format!(
                "the stream kept failing: {outcome}"
            )));
        }
        dropped(&outcome);
        tokio::time::sleep(Duration::from_millis(250 * u64::from(failures.min(8)))).await;
    }
}

/// Whether an event ends its run's stream.
pub fn is_terminal(kind: &str) -> bool {
    matches!(
        kind,
        "executionFinished" | "spellExecutionError" | "executionCanceled"
    )
}
