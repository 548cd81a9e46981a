//! The webhook client against real sockets on the loopback: where it refuses to connect (names
//! that resolve to loopback, private and metadata addresses; such addresses in the URL), what a
//! receiver gets, and what it does with redirects, endless answers and silence.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::dns::Addrs;
use spellcast_application::ports::WebhookSender;
use spellcast_deliveries::{Deliveries, Lookup, Reach};
use spellcast_domain::webhooks::{Outgoing, WebhookSecret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A receiver on 127.0.0.1 that records each request's head and body and answers `answer`
/// (`None`: never answers).
struct Receiver {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    connections: Arc<Mutex<usize>>,
}

async fn receiver(answer: Option<Vec<u8>>) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(Mutex::new(0));
    let (r, c) = (requests.clone(), connections.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            *c.lock().unwrap() += 1;
            let (r, answer) = (r.clone(), answer.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                // The head, then as much body as it says.
                loop {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length: ")
                                    .map(str::to_owned)
                            })
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if got.len() >= end + 4 + length {
                            r.lock().unwrap().push(text);
                            break;
                        }
                    }
                }
                match answer {
                    Some(bytes) => {
                        let _ = socket.write_all(&bytes).await;
                        let _ = socket.shutdown().await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(60)).await,
                }
            });
        }
    });
    Receiver {
        addr,
        requests,
        connections,
    }
}

/// Names of the tests' own: each resolves to the addresses given.
fn names(table: Vec<(&'static str, Vec<SocketAddr>)>) -> Lookup {
    let table = Arc::new(table);
    Arc::new(move |host: String| {
        let table = table.clone();
        Box::pin(async move {
            let found: Vec<SocketAddr> = table
                .iter()
                .find(|(name, _)| *name == host)
                .map(|(_, addrs)| addrs.clone())
                .ok_or_else(|| format!("no such name {host}"))?;
            Ok(Box::new(found.into_iter()) as Addrs)
        })
    })
}

fn outgoing(url: String) -> Outgoing {
    let secret = WebhookSecret::generate();
    let body = br#"{"type":"run.completed","data":{}}"#.to_vec();
    Outgoing {
        signature: secret.sign("msg_1", 1_795_000_000, &body),
        url,
        id: "msg_1".into(),
        timestamp: 1_795_000_000,
        body,
    }
}

#[tokio::test]
async fn names_resolving_to_loopback_private_or_metadata_addresses_are_never_connected() {
    let target = receiver(Some(
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
    ))
    .await;
    let port = target.addr.port();
    let at = |ip: &str| format!("{ip}:{port}").parse::<SocketAddr>().unwrap();
    let lookup = names(vec![
        ("loop.test", vec![at("127.0.0.1")]),
        ("ten.test", vec![at("10.0.0.1")]),
        ("metadata.test", vec![at("169.254.169.254")]),
        ("v6.test", vec![at("[::1]")]),
        ("mapped.test", vec![at("[::ffff:127.0.0.1]")]),
        (
            "mixed.test",
            vec![at("10.1.2.3"), at("127.0.0.1"), at("192.168.0.1")],
        ),
    ]);
    let client = Deliveries::with_lookup(Reach::PublicOnly, lookup, Duration::from_secs(5));
    for name in [
        "loop.test",
        "ten.test",
        "metadata.test",
        "v6.test",
        "mapped.test",
        "mixed.test",
    ] {
        let attempt = client
            .send(&outgoing(format!("https://{name}:{port}/hook")))
            .await;
        assert!(!attempt.delivered(), "{name}");
        let error = attempt.error.unwrap_or_default();
        assert!(error.contains("no public address"), "{name}: {error}");
    }
    // The real resolver's localhost too.
    let real = Deliveries::new(Reach::PublicOnly);
    let attempt = real
        .send(&outgoing(format!("https://localhost:{port}/hook")))
        .await;
    assert!(attempt
        .error
        .unwrap_or_default()
        .contains("no public address"));
    assert_eq!(
        *target.connections.lock().unwrap(),
        0,
        "nothing reached the receiver"
    );
}

#[tokio::test]
async fn addresses_written_in_the_url_are_checked_too() {
    let target = receiver(Some(
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
    ))
    .await;
    let port = target.addr.port();
    let client = Deliveries::new(Reach::PublicOnly);
    for url in [
        format!("https://127.0.0.1:{port}/"),
        format!("https://[::1]:{port}/"),
        format!("https://[::ffff:127.0.0.1]:{port}/"),
        "https://169.254.169.254/latest/meta-data/".to_owned(),
        "https://10.0.0.1/".to_owned(),
    ] {
        let attempt = client.send(&outgoing(url.clone())).await;
        assert!(
            attempt
                .error
                .unwrap_or_default()
                .contains("not a public address"),
            "{url}"
        );
    }
    // Plain http is refused outright where only public addresses are reachable.
    let attempt = client.send(&outgoing("http://example.com/".into())).await;
    assert!(!attempt.delivered());
    assert_eq!(*target.connections.lock().unwrap(), 0);
}

#[tokio::test]
async fn a_receiver_gets_the_signed_post() {
    let target = receiver(Some(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec())).await;
    let client = Deliveries::new(Reach::AlsoLoopback);
    let sent = outgoing(format!("http://127.0.0.1:{}/hook?k=1", target.addr.port()));
    let attempt = client.send(&sent).await;
    assert!(attempt.delivered(), "{attempt:?}");
    assert_eq!(attempt.status, Some(204));
    let requests = target.requests.lock().unwrap();
    let request = requests[0].to_ascii_lowercase();
    assert!(request.starts_with("post /hook?k=1 http/1.1"), "{request}");
    assert!(request.contains("webhook-id: msg_1"));
    assert!(request.contains("webhook-timestamp: 1795000000"));
    assert!(request.contains(&format!(
        "webhook-signature: {}",
        sent.signature.to_ascii_lowercase()
    )));
    assert!(request.contains("content-type: application/json"));
    assert!(request.ends_with(r#"{"type":"run.completed","data":{}}"#));
}

#[tokio::test]
async fn a_redirect_is_an_answer_not_a_way_elsewhere() {
    let target = receiver(Some(
        b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://169.254.169.254/\r\ncontent-length: 0\r\n\r\n".to_vec(),
    ))
    .await;
    let client = Deliveries::new(Reach::AlsoLoopback);
    let attempt = client
        .send(&outgoing(format!(
            "http://127.0.0.1:{}/",
            target.addr.port()
        )))
        .await;
    assert!(!attempt.delivered());
    assert_eq!(attempt.status, Some(307));
    assert_eq!(target.requests.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_endless_answer_is_read_only_so_far_and_silence_times_out() {
    let mut endless = b"HTTP/1.1 200 OK\r\ncontent-length: 50000000\r\n\r\n".to_vec();
    endless.extend(std::iter::repeat_n(b'x', 4 * 1024 * 1024));
    let big = receiver(Some(endless)).await;
    let client =
        Deliveries::with_lookup(Reach::AlsoLoopback, names(vec![]), Duration::from_secs(5));
    let started = Instant::now();
    let attempt = client
        .send(&outgoing(format!("http://127.0.0.1:{}/", big.addr.port())))
        .await;
    assert_eq!(attempt.status, Some(200));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "it did not wait for 50 MB"
    );

    let silent = receiver(None).await;
    let client = Deliveries::with_lookup(
        Reach::AlsoLoopback,
        names(vec![]),
        Duration::from_millis(300),
    );
    let attempt = client
        .send(&outgoing(format!(
            "http://127.0.0.1:{}/",
            silent.addr.port()
        )))
        .await;
    assert_eq!(attempt.status, None);
    assert!(attempt
        .error
        .unwrap_or_default()
        .contains("no answer in time"));
}
