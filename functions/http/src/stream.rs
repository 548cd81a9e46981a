//! `GET /api/v1/spells/{slug}/stream`: a run's events as Server-Sent Events, resumable with
//! `Last-Event-ID`. What is sent and when is the core's [`Watching`](spellcast_application::watching)
//! (pushed as stored, heartbeats, a clean close before the platform's time limit); this module
//! frames it.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use sse_stream::Sse;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::runs::viewer;
use super::{query, slug, Body, Handled, Problem};
use crate::Api;
use futures::StreamExt;
use spellcast_application::watching::Watched;
use spellcast_domain::ids::CreditTxId;
use spellcast_domain::limits::Slot;
use spellcast_domain::run::RunEvent;

/// The first bytes of every stream: how long the browser waits before reconnecting.
const RETRY: &[u8] = b"retry: 2000\n\n";
/// The heartbeat comment.
const PING: &[u8] = b": ping\n\n";

/// One run event as an SSE frame.
pub fn frame(event: &RunEvent) -> Bytes {
    Sse::default()
        .id(event.seq.to_string())
        .event(event.body.kind())
        .data(event.body.data_json())
        .encode()
        // Ids are numbers and event types are fixed names, so encoding cannot fail.
        .unwrap_or_default()
}

fn last_event_id(req: &http::request::Parts) -> Result<u64, Problem> {
    // Each place it may come from is checked, even the one that is not used: a malformed id is
    // the client's mistake wherever it is. The header (EventSource's own) wins.
    let header = match req.headers.get("last-event-id") {
        Some(v) => Some(event_id(v.to_str().unwrap_or("x"))?),
        None => None,
    };
    let query = query(req, "lastEventId")
        .map(|v| event_id(&v))
        .transpose()?;
    Ok(header.or(query).unwrap_or(0))
}

/// An event id as a client sends it: 1 to 19 digits.
fn event_id(raw: &str) -> Result<u64, Problem> {
    let raw = raw.trim();
    if (1..=19).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_digit()) {
        raw.parse()
            .map_err(|_| Problem::bad_json("Last-Event-ID must be the id of an event"))
    } else {
        Err(Problem::bad_json(
            "Last-Event-ID (or lastEventId) must be the id of an event: 1 to 19 digits",
        ))
    }
}

/// `GET /api/v1/spells/{slug}/stream?creditTxId=...`.
pub async fn stream(app: &Arc<Api>, req: &http::request::Parts, raw_slug: &str) -> Handled {
    let slug = slug(raw_slug)?;
    let viewer = viewer(app, req, "invoice_invalid").await?;
    let credit_tx = query(req, "creditTxId")
        .and_then(|raw| CreditTxId::parse(&raw))
        .ok_or_else(|| Problem::bad_json("creditTxId must be the id a cast returned"))?;
    let after = last_event_id(req)?;
    let run = app
        .viewing()
        .run_by_credit_tx(&viewer, &credit_tx, &slug)
        .await?;

    if run.status.is_terminal() && after >= run.last_seq {
        // Everything was delivered: 204 tells EventSource to stop reconnecting.
        let mut r = http::Response::new(Body::Full(Bytes::new()));
        *r.status_mut() = StatusCode::NO_CONTENT;
        return Ok(r);
    }

    // SPEC 2: so many open streams per user and per run, across instances.
    let user = viewer.user().clone();
    let slot = match app.limiting().open_stream(&user, &run.run_id).await? {
        Ok(slot) => slot,
        Err(Slot::RunFull) => return Err(Problem::rate_limited("open streams of this run", 5)),
        Err(_) => return Err(Problem::rate_limited("open streams of this user", 5)),
    };

    let (tx, rx) = mpsc::channel::<Watched>(32);
    let (api, run_id) = (app.clone(), run.run_id.clone());
    let span = tracing::info_span!("stream", run_id = %run.run_id);
    let watching = app.watching(app.heartbeat);
    tokio::spawn(
        async move {
            // The body ends when the last sender goes: this one stays until the slot is given
            // back, so a Lambda is not frozen before it is.
            let open = tx.clone();
            watching.watch(&run, after, tx).await;
            if let Err(e) = slot.give_back().await {
                tracing::warn!(error = %e, "stream slot not given back; its lease frees it");
            }
            drop(open);
        }
        .instrument(span),
    );
    let frames = futures::stream::unfold(rx, move |mut rx| {
        let (api, run_id) = (api.clone(), run_id.clone());
        async move {
            let frame = match rx.recv().await? {
                // Framed once for all of the run's streams in this process.
                Watched::Event(event) => api.memo.frame(&run_id, event.seq, || frame(&event)),
                Watched::Ping => Bytes::from_static(PING),
            };
            Some((frame, rx))
        }
    });
    let body = futures::stream::once(async { Bytes::from_static(RETRY) }).chain(frames);
    let mut r = http::Response::new(Body::Stream(Box::pin(body)));
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spellcast_domain::run::{EventBody, StepStatus};

    #[test]
    fn a_frame_has_id_event_and_one_data_line() {
        let event = RunEvent {
            seq: 7,
            body: EventBody::StepUpdate {
                run_id: "r".into(),
                step_id: "a".into(),
                index: 0,
                of: 2,
                status: StepStatus::Running,
                progress: 0.5,
                message: Some("line one\nline two".into()),
                outputs: None,
                at: None,
                attempt: None,
                resumed: false,
                until: None,
            },
        };
        let text = String::from_utf8(frame(&event).to_vec()).unwrap();
        assert!(text.contains("id: 7\n"), "{text}");
        assert!(text.contains("event: stepUpdate\n"), "{text}");
        assert_eq!(text.matches("data:").count(), 1, "{text}");
        assert!(text.ends_with("\n\n"), "{text}");
    }
}
