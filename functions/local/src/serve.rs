//! The local server's accept loop: a handler on hyper's HTTP/1.1 connections, with what a server
//! facing untrusted clients needs — a cap on open connections, a deadline for a request's
//! headers (an idle keep-alive connection counts: slowloris), and `TCP_NODELAY`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use spellcast_http::ClientAddr;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::http_adapter::Response;

/// What one client may hold of the server.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections at most; past it, new ones wait in the listen backlog.
    pub max_connections: usize,
    /// A connection that has not sent a complete request head within this is closed.
    pub header_read_timeout: Duration,
}

/// Serves `handler` on `listener` until the future is dropped.
pub async fn serve<H, F>(listener: TcpListener, handler: H, limits: ConnectionLimits)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        // A slot before accepting: at the cap the server stops taking connections, it does not
        // take and drop them.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return; // the semaphore is never closed
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was accepted: wait a
                // moment rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // A file's body is written after its headers; without TCP_NODELAY that second write
        // waits for the client's delayed ACK (about 40 ms a file).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        // Every request of the connection carries its peer's address (for per-address limits).
        let client = ClientAddr(peer.ip());
        let handler = handler.clone();
        let service = service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(client);
            // Boxed: hyper keeps room for a request's future beside every connection, idle or
            // not, and the answer's whole state machine is kilobytes (measured: 23.8 KB an idle
            // event stream unboxed, against 15 KB).
            let answer = Box::pin(handler(req));
            async move { Ok::<Response, Infallible>(answer.await) }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use bytes::Bytes;

    use super::*;
    use crate::http_adapter::{full, harden};

    /// `/boom` panics, anything else is "fine".
    async fn answer(req: Request<Incoming>) -> Response {
        if req.uri().path() == "/boom" {
            panic!("a bug in a handler")
        }
        full(http::Response::new(Bytes::from_static(b"fine")))
    }

    /// Serves the hardened `answer` with `limits` on a free loopback port.
    async fn start(limits: ConnectionLimits) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, |req| harden(answer(req)), limits));
        addr
    }

    /// One request on a new connection; the whole answer.
    fn get_once(addr: std::net::SocketAddr, path: &str) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            c,
            "GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        answer
    }

    const LIMITS: ConnectionLimits = ConnectionLimits {
        max_connections: 64,
        header_read_timeout: Duration::from_secs(10),
    };

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_handler_is_a_500_and_the_server_goes_on() {
        let addr = start(LIMITS).await;
        for _ in 0..3 {
            let answer = tokio::task::spawn_blocking(move || get_once(addr, "/boom"))
                .await
                .unwrap();
            assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
            assert!(answer.contains("application/problem+json"), "{answer}");
            assert!(answer.contains(r#""code":"internal""#), "{answer}");
            assert!(
                !answer.contains("a bug in a handler"),
                "the panic is not shown"
            );
            assert!(answer
                .to_lowercase()
                .contains("x-content-type-options: nosniff"));
        }
        let answer = tokio::task::spawn_blocking(move || get_once(addr, "/ok"))
            .await
            .unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("fine"),
            "{answer}"
        );
    }
}
