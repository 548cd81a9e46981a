//! Many event streams at once, for `scripts/bench`.
//!
//! `stream-load idle ADDR PATHS N`: opens N streams, spread over the stream paths (with their
//! tokens) listed one per line in the file PATHS, prints `open N` once every one has its 200,
//! and holds them (reading pings) until its standard input closes.
//!
//! `stream-load latency ADDR PATHS N`: opens N streams the same way and, from the moment all are
//! open until every stream has ended, measures for each `stepUpdate` that happened after that
//! moment how long after its `at` (the runner's clock, the same machine's) it reached the
//! stream; prints the count and percentiles in milliseconds as JSON.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Opens one stream; sends `()` on `opened` at its 200, then each event's delay past `since`.
async fn stream(
    addr: String,
    path: String,
    opened: mpsc::Sender<()>,
    since: watch::Receiver<Option<DateTime<Utc>>>,
    delays: mpsc::UnboundedSender<f64>,
) -> Result<(), Error> {
    let tcp = TcpStream::connect(&addr).await?;
    tcp.set_nodelay(true)?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", &addr)
        .header("accept", "text/event-stream")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    if response.status() != 200 {
        return Err(format!("stream answered {}", response.status()).into());
    }
    opened.send(()).await?;
    let mut body = response.into_body();
    let mut pending = String::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        let received = Utc::now();
        pending.push_str(&String::from_utf8_lossy(&data));
        // SSE events end at a blank line; the data line of a stepUpdate carries its `at`.
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            let Some(start) = *since.borrow() else {
                continue;
            };
            if !event.contains("event: stepUpdate") {
                continue;
            }
            let at = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str::<serde_json::Value>(d.trim()).ok())
                .find_map(|v| {
                    v["at"]
                        .as_str()
                        .and_then(|a| a.parse::<DateTime<Utc>>().ok())
                });
            if let Some(at) = at.filter(|at| *at >= start) {
                let ms = (received - at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0;
                let _ = delays.send(ms);
            }
        }
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, addr, paths, n] = &args[..] else {
        return Err("usage: stream-load idle|latency ADDR PATHS_FILE N".into());
    };
    let paths: Vec<String> = std::fs::read_to_string(paths)?
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let n: usize = n.parse()?;
    if paths.is_empty() || n == 0 {
        return Err("no stream paths, or N is 0".into());
    }
    let (opened_tx, mut opened) = mpsc::channel(1024);
    let (since_tx, since) = watch::channel(None);
    let (delays_tx, mut delays) = mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        tasks.spawn(stream(
            addr.clone(),
            paths[i % paths.len()].clone(),
            opened_tx.clone(),
            since.clone(),
            delays_tx.clone(),
        ));
    }
    drop((opened_tx, delays_tx));
    for _ in 0..n {
        tokio::select! {
            got = opened.recv() => if got.is_none() { break },
            Some(ended) = tasks.join_next() => {
                return Err(format!("a stream ended before all were open: {ended:?}").into());
            }
        }
    }
    since_tx.send(Some(Utc::now()))?;
    println!("open {n}");
    if mode == "idle" {
        // Held until the bench has read the server's memory and closes our input.
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
        return Ok(());
    }
    let deadline = tokio::time::sleep(Duration::from_secs(120));
    tokio::pin!(deadline);
    let mut failed = 0;
    loop {
        tokio::select! {
            ended = tasks.join_next() => match ended {
                Some(Ok(Ok(()))) => {}
                Some(_) => failed += 1,
                None => break,
            },
            () = &mut deadline => return Err("the streams did not end within 120 s".into()),
        }
    }
    let mut all = Vec::new();
    while let Ok(ms) = delays.try_recv() {
        all.push(ms);
    }
    all.sort_by(f64::total_cmp);
    let report = serde_json::json!({
        "streams": n,
        "failedStreams": failed,
        "events": all.len(),
        "p50Ms": percentile(&all, 50.0),
        "p90Ms": percentile(&all, 90.0),
        "p99Ms": percentile(&all, 99.0),
        "maxMs": all.last().copied().unwrap_or(f64::NAN),
    });
    println!("{report}");
    Ok(())
}
