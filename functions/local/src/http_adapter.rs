//! axum in front of the HTTP layer: API routes go to `spellcast_http::handle`, the pages and
//! their assets come from the in-memory [`Site`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRef, Request, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use spellcast_core::App;
use spellcast_http::{self as api, MAX_BODY_BYTES};
use tower_http::catch_panic::CatchPanicLayer;

use crate::site::Site;

/// The router: static files, the pages (for crawlers, a spell's og page), and everything else
/// through the core.
pub fn router(
    app: Arc<App>,
    site: Arc<Site>,
    endpoints: Vec<&'static api::Endpoint>,
    body_read_timeout: Duration,
) -> Router {
    let state = Served {
        api: Api {
            app,
            endpoints: endpoints.into(),
            body_read_timeout,
        },
        site,
    };
    let routes = Router::new()
        .route("/static/{*path}", get(static_file).head(static_file))
        .route("/spells/{slug}", get(spell_page).head(spell_page))
        .route("/", get(home_page).head(home_page))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(core_handler)
        .with_state(state);
    harden(routes)
}

/// What every route gets: the security headers, and a panic answered as a 500 rather than
/// ending the connection (the server goes on; the panic's message is logged by the panic hook).
pub fn harden(routes: Router) -> Router {
    // The panic catcher inside, so its 500 gets the headers too.
    routes
        .layer(CatchPanicLayer::custom(panicked))
        .layer(axum::middleware::map_response(security_headers))
}

/// A handler's panic as a 500 `internal` problem.
fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    to_axum(api::Problem::internal("a handler panicked").into_response())
}

/// The headers every response carries, static files included (API answers have them already).
async fn security_headers(mut response: Response) -> Response {
    api::add_security_headers(response.headers_mut());
    response
}

/// What the handlers share.
#[derive(Clone)]
struct Served {
    api: Api,
    site: Arc<Site>,
}

/// The app, the endpoints this server answers and how long a request body may take.
#[derive(Clone)]
struct Api {
    app: Arc<App>,
    endpoints: Arc<[&'static api::Endpoint]>,
    body_read_timeout: Duration,
}

impl FromRef<Served> for Api {
    fn from_ref(served: &Served) -> Self {
        served.api.clone()
    }
}

/// A file of the site by its path, or a 404 problem.
fn site_file(site: &Site, path: &str, req: &Request) -> Response {
    match site.serve(path, req.headers()) {
        Some(response) => response.map(Body::from),
        None => to_axum(api::not_found(req.uri().path()).into_response()),
    }
}

async fn static_file(State(served): State<Served>, req: Request) -> Response {
    site_file(&served.site, req.uri().path(), &req)
}

async fn home_page(State(served): State<Served>, req: Request) -> Response {
    site_file(&served.site, "/static/index.html", &req)
}

/// `/spells/{slug}`: crawlers get the og page (as the CloudFront Function routes them in AWS),
/// people the static execution page.
async fn spell_page(State(served): State<Served>, req: Request) -> Response {
    let agent = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if spellcast_http::crawlers::is_crawler(agent) {
        let (mut parts, body) = req.into_parts();
        let og = format!("{}/og", parts.uri.path().trim_end_matches('/'));
        parts.uri = og.parse().unwrap_or(parts.uri);
        return core_handler(State(served.api), Request::from_parts(parts, body)).await;
    }
    site_file(&served.site, "/static/spell.html", &req)
}

async fn core_handler(State(site): State<Api>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let read = tokio::time::timeout(
        site.body_read_timeout,
        axum::body::to_bytes(body, MAX_BODY_BYTES + 1),
    );
    let response = match read.await {
        Ok(Ok(bytes)) => {
            let req = http::Request::from_parts(parts, bytes);
            api::handle(site.app, req, &site.endpoints).await
        }
        // Reading stops past the limit (or at a broken upload).
        Ok(Err(_)) => api::payload_too_large(&parts),
        // A body trickling in holds a task and a connection: not for longer than this.
        Err(_) => api::request_timeout(&parts),
    };
    to_axum(response)
}

/// The HTTP layer's response as axum's.
fn to_axum(response: api::Response) -> Response {
    let (parts, body) = response.into_parts();
    let body = match body {
        api::Body::Full(bytes) => Body::from(bytes),
        api::Body::Stream(stream) => Body::from_stream(stream.map(Ok::<_, Infallible>)),
    };
    Response::from_parts(parts, body)
}
