//! axum in front of the core: API routes go to `spellcast_core::api::handle`, the page and its
//! assets are served from `static/`.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use spellcast_core::api::{self, MAX_BODY_BYTES};
use spellcast_core::App;
use tower_http::services::{ServeDir, ServeFile};

/// The router: static files, the execution page, and everything else through the core.
pub fn router(app: Arc<App>, static_dir: &Path) -> Router {
    let page = ServeFile::new(static_dir.join("spell.html"));
    Router::new()
        .nest_service("/static", ServeDir::new(static_dir))
        .route_service("/spells/{slug}", page)
        .route_service("/", ServeFile::new(static_dir.join("index.html")))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(core_handler)
        .with_state(app)
}

async fn core_handler(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let response = match axum::body::to_bytes(body, MAX_BODY_BYTES + 1).await {
        Ok(bytes) => api::handle(app, http::Request::from_parts(parts, bytes)).await,
        // Reading stops past the limit (or at a broken upload).
        Err(_) => api::payload_too_large(&parts),
    };
    let (parts, body) = response.into_parts();
    let body = match body {
        api::Body::Full(bytes) => Body::from(bytes),
        api::Body::Stream(stream) => Body::from_stream(stream.map(Ok::<_, Infallible>)),
    };
    Response::from_parts(parts, body)
}
