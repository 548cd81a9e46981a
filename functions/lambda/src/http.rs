//! `lambda_http` in front of the HTTP layer's handlers: requests in, core responses out, either
//! buffered (API Gateway) or streamed (the stream function's URL with `RESPONSE_STREAM`).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use http::header::CONTENT_TYPE;
use http_body::Frame;
use http_body_util::StreamBody;
use lambda_http::{service_fn, Error};
use spellcast_core::App;
use spellcast_http::{self as api, Body, Endpoint};

use crate::emf;

/// A request as `lambda_http` hands it over, as the HTTP layer takes it.
pub fn into_request(req: lambda_http::Request) -> api::Request {
    let (parts, body) = req.into_parts();
    let bytes = Bytes::copy_from_slice(body.as_ref());
    http::Request::from_parts(parts, bytes)
}

/// Serves `endpoints` with whole responses until the runtime stops; metrics flush per
/// invocation.
pub async fn serve(app: Arc<App>, endpoints: &'static [&'static Endpoint]) -> Result<(), Error> {
    lambda_http::run(service_fn(move |req: lambda_http::Request| {
        let app = app.clone();
        async move {
            let response = api::handle(app, into_request(req), endpoints).await;
            let response = buffered(response).await;
            emf::flush();
            Ok::<_, Error>(response)
        }
    }))
    .await
}

/// Serves `endpoints` with streamed responses: each chunk the handler produces (each SSE event)
/// is written to the client as it comes. Metrics flush when the body ends.
pub async fn serve_streaming(
    app: Arc<App>,
    endpoints: &'static [&'static Endpoint],
) -> Result<(), Error> {
    lambda_http::run_with_streaming_response(service_fn(move |req: lambda_http::Request| {
        let app = app.clone();
        async move {
            let response = api::handle(app, into_request(req), endpoints).await;
            Ok::<_, Error>(streamed(response, emf::flush))
        }
    }))
    .await
}

/// A whole response for `lambda_http::run`: text stays text, anything else goes as binary.
pub async fn buffered(response: api::Response) -> http::Response<lambda_http::Body> {
    let (parts, body) = response.into_parts();
    let bytes = match body {
        Body::Full(bytes) => bytes,
        // Streams belong to the streaming function; collect rather than cut if one lands here.
        Body::Stream(chunks) => {
            let all: Vec<Bytes> = chunks.collect().await;
            Bytes::from(all.concat())
        }
    };
    let textual = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/") || t.contains("json") || t.contains("xml"));
    let body = if bytes.is_empty() {
        lambda_http::Body::Empty
    } else if textual {
        match String::from_utf8(bytes.to_vec()) {
            Ok(text) => lambda_http::Body::Text(text),
            Err(e) => lambda_http::Body::Binary(e.into_bytes()),
        }
    } else {
        lambda_http::Body::Binary(bytes.to_vec())
    };
    http::Response::from_parts(parts, body)
}

/// The body type of streamed responses.
pub type Frames = StreamBody<BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

/// A streamed response: one frame per chunk, then `at_end` once the last chunk is written (or
/// the client left). Never has a `Content-Length`.
pub fn streamed(response: api::Response, at_end: fn()) -> http::Response<Frames> {
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let chunks: BoxStream<'static, Bytes> = match body {
        Body::Full(bytes) => stream::once(async move { bytes }).boxed(),
        Body::Stream(chunks) => chunks,
    };
    let end = stream::once(async move {
        at_end();
        None
    });
    let frames = chunks
        .filter(|b| std::future::ready(!b.is_empty()))
        .map(|b| Some(Ok(Frame::data(b))))
        .chain(end)
        .filter_map(std::future::ready)
        .boxed();
    http::Response::from_parts(parts, StreamBody::new(frames))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static ENDED: AtomicUsize = AtomicUsize::new(0);

    #[tokio::test]
    async fn a_streamed_body_yields_each_chunk_then_runs_its_end_hook_once() {
        let chunks =
            stream::iter([&b"id: 1\n\n"[..], &b"id: 2\n\n"[..]].map(Bytes::from_static)).boxed();
        let response = http::Response::new(Body::Stream(chunks));
        let streamed = streamed(response, || {
            ENDED.fetch_add(1, Ordering::SeqCst);
        });
        let mut body = streamed.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "id: 1\n\n");
        assert_eq!(ENDED.load(Ordering::SeqCst), 0, "not before the end");
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(second, "id: 2\n\n");
        assert!(body.frame().await.is_none());
        assert_eq!(ENDED.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn json_goes_as_text_and_images_as_binary() {
        let mut json = http::Response::new(Body::Full(Bytes::from_static(b"{\"a\":1}")));
        json.headers_mut()
            .insert(CONTENT_TYPE, "application/json".parse().unwrap());
        assert!(
            matches!(buffered(json).await.body(), lambda_http::Body::Text(t) if t == "{\"a\":1}")
        );
        let mut png = http::Response::new(Body::Full(Bytes::from_static(&[0x89, b'P'])));
        png.headers_mut()
            .insert(CONTENT_TYPE, "image/png".parse().unwrap());
        assert!(matches!(
            buffered(png).await.body(),
            lambda_http::Body::Binary(_)
        ));
    }
}
