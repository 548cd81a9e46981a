//! axum in front of the HTTP layer: API routes go to `spellcast_http::handle`, the page and its
//! assets are served from `static/`.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRef, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use spellcast_core::App;
use spellcast_http::{self as api, MAX_BODY_BYTES};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeaderLayer;

/// The router: static files, the execution page (or, for crawlers, the og page), and everything
/// else through the core.
pub fn router(
    app: Arc<App>,
    static_dir: &Path,
    endpoints: Vec<&'static api::Endpoint>,
    body_read_timeout: Duration,
) -> Router {
    let site = Site {
        api: Api {
            app,
            endpoints: endpoints.into(),
            body_read_timeout,
        },
        page: ServeFile::new(static_dir.join("spell.html")),
    };
    // Static files are compressed and cached briefly (their names carry no version); API answers,
    // and above all the event stream, are never compressed here.
    let assets = ServiceBuilder::new()
        .layer(CompressionLayer::new())
        .layer(SetResponseHeaderLayer::if_not_present(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("public, max-age=3600, stale-while-revalidate=86400"),
        ))
        .service(ServeDir::new(static_dir));
    let routes = Router::new()
        .nest_service("/static", assets)
        .route("/spells/{slug}", get(spell_page).head(spell_page))
        .route_service("/", ServeFile::new(static_dir.join("index.html")))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(core_handler)
        .with_state(site);
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
struct Site {
    api: Api,
    page: ServeFile,
}

/// The app, the endpoints this server answers and how long a request body may take.
#[derive(Clone)]
struct Api {
    app: Arc<App>,
    endpoints: Arc<[&'static api::Endpoint]>,
    body_read_timeout: Duration,
}

impl FromRef<Site> for Api {
    fn from_ref(site: &Site) -> Self {
        site.api.clone()
    }
}

/// `/spells/{slug}`: crawlers get the og page (as the CloudFront Function routes them in AWS),
/// people the static execution page.
async fn spell_page(State(site): State<Site>, req: Request) -> Response {
    let agent = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if spellcast_http::crawlers::is_crawler(agent) {
        let (mut parts, body) = req.into_parts();
        let og = format!("{}/og", parts.uri.path().trim_end_matches('/'));
        parts.uri = og.parse().unwrap_or(parts.uri);
        return core_handler(State(site.api), Request::from_parts(parts, body)).await;
    }
    let mut page = site.page;
    match page.try_call(req).await {
        Ok(r) => r.map(Body::new),
        Err(e) => {
            tracing::error!(error = %e, "the execution page cannot be read");
            http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
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
