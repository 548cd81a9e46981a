//! hyper in front of the HTTP layer: the pages and their assets come from the in-memory
//! [`Site`], everything else goes to `spellcast_http::handle`. Four routes need no router
//! framework: a `match` on the path is all the dispatch there is, and each request costs one
//! `Arc` clone (a framework's router, state extraction and boxed middleware cost a third of
//! the requests a second a bare hyper server answers; `scripts/bench` measures it).

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use http::{header, Method, Request};
use http_body_util::{BodyExt, Either, Full, Limited, StreamBody};
use hyper::body::{Body as _, Frame, Incoming};
use spellcast_http as api;
use spellcast_http::Api;

use crate::site::Site;

/// A response body of the local server: whole, or streamed (SSE) with each chunk flushed.
pub type LocalBody =
    Either<Full<Bytes>, StreamBody<BoxStream<'static, Result<Frame<Bytes>, Infallible>>>>;
/// A response of the local server.
pub type Response = http::Response<LocalBody>;

/// What every request is answered from: the app, the endpoints this server answers, how long a
/// request body may take, and the site.
pub struct Routes {
    app: Arc<Api>,
    endpoints: Vec<&'static api::Endpoint>,
    body_read_timeout: Duration,
    site: Site,
}

impl Routes {
    /// The routes of the local server.
    pub fn new(
        app: Arc<Api>,
        site: Site,
        endpoints: Vec<&'static api::Endpoint>,
        body_read_timeout: Duration,
    ) -> Arc<Routes> {
        Arc::new(Routes {
            app,
            endpoints,
            body_read_timeout,
            site,
        })
    }

    /// Answers one request: static files, the pages (for crawlers, a spell's og page), and
    /// everything else through the core; hardened (see [`harden`]).
    pub async fn answer(self: Arc<Self>, req: Request<Incoming>) -> Response {
        harden(self.route(req)).await
    }

    async fn route(&self, req: Request<Incoming>) -> Response {
        let path = req.uri().path();
        if path == "/" {
            return self.site_file("/static/index.html", &req);
        }
        if path.starts_with("/static/") {
            return self.site_file(path, &req);
        }
        if path == "/healthz" {
            return full(http::Response::new(Bytes::from_static(b"ok")));
        }
        if let Some(slug) = path.strip_prefix("/spells/") {
            if !slug.is_empty() && !slug.contains('/') {
                return self.spell_page(req).await;
            }
        }
        // A run's page is the execution page, which finds the run from the address (as the
        // CloudFront Function routes them on AWS: infra/edge/crawler-route.js).
        if let Some(run_id) = path.strip_prefix("/runs/") {
            if is_page_id(run_id.strip_suffix('/').unwrap_or(run_id)) {
                return self.site_file("/static/spell.html", &req);
            }
        }
        // A shared run: crawlers get its og page (as for a spell), people the public page.
        if let Some(share_id) = path.strip_prefix("/r/") {
            if is_page_id(share_id.strip_suffix('/').unwrap_or(share_id)) {
                return self.page_or_og(req, "/static/share.html").await;
            }
        }
        if path == "/me" || path == "/me/" {
            return self.site_file("/static/me.html", &req);
        }
        self.core(req).await
    }

    /// A file of the site by its path (GET or HEAD), or a problem.
    fn site_file(&self, path: &str, req: &Request<Incoming>) -> Response {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return from_api(api::method_not_allowed("GET, HEAD"));
        }
        match self.site.serve(path, req.headers()) {
            Some(response) => full(response),
            None => from_api(api::not_found(req.uri().path()).into_response()),
        }
    }

    /// `/spells/{slug}`: crawlers get the og page (as the CloudFront Function routes them in
    /// AWS), people the static execution page.
    async fn spell_page(&self, req: Request<Incoming>) -> Response {
        self.page_or_og(req, "/static/spell.html").await
    }

    /// A page with an og page beside it (`{path}/og`): crawlers get that, people `page`.
    async fn page_or_og(&self, req: Request<Incoming>, page: &str) -> Response {
        let agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if spellcast_http::crawlers::is_crawler(agent) {
            let (mut parts, body) = req.into_parts();
            let og = format!("{}/og", parts.uri.path().trim_end_matches('/'));
            parts.uri = og.parse().unwrap_or(parts.uri);
            return self.core(Request::from_parts(parts, body)).await;
        }
        self.site_file(page, &req)
    }

    /// The HTTP layer's answer, once the body is read (within the size and time limits).
    async fn core(&self, req: Request<Incoming>) -> Response {
        let (parts, body) = req.into_parts();
        // Most requests (GET) have no body: no read, and no timer for it.
        let bytes = if body.is_end_stream() {
            Ok(Ok(Bytes::new()))
        } else {
            let read = Limited::new(body, api::body_limit(parts.uri.path()) + 1).collect();
            tokio::time::timeout(self.body_read_timeout, read)
                .await
                .map(|read| read.map(|collected| collected.to_bytes()))
        };
        from_api(match bytes {
            Ok(Ok(bytes)) => {
                let req = http::Request::from_parts(parts, bytes);
                api::handle(self.app.clone(), req, &self.endpoints).await
            }
            // Reading stops past the limit (or at a broken upload).
            Ok(Err(_)) => api::payload_too_large(&parts),
            // A body trickling in holds a task and a connection: not for longer than this.
            Err(_) => api::request_timeout(&parts),
        })
    }
}

/// What every answer gets: the security headers, and a panic answered as a 500 rather than
/// ending the connection (the server goes on; the panic's message is logged by the panic hook).
pub async fn harden(answer: impl Future<Output = Response>) -> Response {
    let mut response = match AssertUnwindSafe(answer).catch_unwind().await {
        Ok(response) => response,
        Err(_) => from_api(api::Problem::internal("a handler panicked").into_response()),
    };
    api::add_security_headers(response.headers_mut());
    response
}

/// A whole response.
pub fn full(response: http::Response<Bytes>) -> Response {
    response.map(|body| Either::Left(Full::new(body)))
}

/// The HTTP layer's response as the local server's.
fn from_api(response: api::Response) -> Response {
    let (parts, body) = response.into_parts();
    let body = match body {
        api::Body::Full(bytes) => Either::Left(Full::new(bytes)),
        api::Body::Stream(stream) => {
            Either::Right(StreamBody::new(stream.map(|b| Ok(Frame::data(b))).boxed()))
        }
    };
    http::Response::from_parts(parts, body)
}

/// What a run's or a shared run's page takes for an id: the API's pattern for one
/// (`[A-Za-z0-9_-]{1,128}`, as the CloudFront Function's `RUN_PAGE` and `SHARE_PAGE`).
fn is_page_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
