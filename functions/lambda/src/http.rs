//! `lambda_http` in front of the HTTP layer's handlers: requests in, core responses out, either
//! buffered (API Gateway) or streamed (the stream function's URL with `RESPONSE_STREAM`).

use spellcast_http::Api;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use http::header::CONTENT_TYPE;
use http_body::Frame;
use http_body_util::StreamBody;
use lambda_http::{service_fn, Error};
use spellcast_http::{self as api, Body, Endpoint};

use crate::emf;

/// A request as `lambda_http` hands it over, as the HTTP layer takes it.
pub fn into_request(req: lambda_http::Request) -> api::Request {
    let (parts, body) = req.into_parts();
    let bytes = Bytes::copy_from_slice(body.as_ref());
    http::Request::from_parts(parts, bytes)
}

/// Serves `endpoints` with whole responses until the runtime stops; metrics flush per
/// invocation. Behind a Function URL with `AuthType: AWS_IAM` (the admin function's), the IAM
/// principal that signed the request — which the Lambda service, not the caller, puts in the
/// request context — is handed to the handlers as the [`api::AdminCaller`].
pub async fn serve(app: Arc<Api>, endpoints: &'static [&'static Endpoint]) -> Result<(), Error> {
    lambda_http::run(service_fn(move |req: lambda_http::Request| {
        let app = app.clone();
        async move {
            let caller = iam_caller(&req);
            let mut req = into_request(req);
            if let Some(arn) = caller {
                req.extensions_mut().insert(api::AdminCaller(arn));
            }
            let response = buffered(api::handle(app, req, endpoints).await).await;
            emf::flush();
            Ok::<_, Error>(response)
        }
    }))
    .await
}

/// The ARN of the IAM principal that signed a Function URL request, if it was signed.
pub fn iam_caller(req: &lambda_http::Request) -> Option<String> {
    use lambda_http::request::RequestContext;
    use lambda_http::RequestExt;
    match req.request_context_ref()? {
        RequestContext::ApiGatewayV2(context) => context
            .authorizer
            .as_ref()?
            .iam
            .as_ref()?
            .user_arn
            .clone()
            .filter(|arn| !arn.is_empty()),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Serves `endpoints` with streamed responses: each chunk the handler produces (each SSE event)
/// is written to the client as it comes. Metrics flush when the body ends.
pub async fn serve_streaming(
    app: Arc<Api>,
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

    /// A Function URL event as Lambda delivers it (payload format 2.0).
    fn url_event(authorizer: serde_json::Value) -> lambda_http::Request {
        let event = serde_json::json!({
            "version": "2.0", "routeKey": "$default", "rawPath": "/api/v1/admin/grants",
            "rawQueryString": "", "headers": {"content-type": "application/json"},
            "requestContext": {
                "accountId": "123456789012", "apiId": "abc", "domainName": "abc.lambda-url.us-east-1.on.aws",
                "domainPrefix": "abc", "requestId": "r", "routeKey": "$default", "stage": "$default",
                "time": "06/Dec/2026:05:00:00 +0000", "timeEpoch": 1796533200000u64,
                "http": {"method": "POST", "path": "/api/v1/admin/grants", "protocol": "HTTP/1.1",
                         "sourceIp": "10.0.0.1", "userAgent": "t"},
                "authorizer": authorizer
            },
            "body": "{}", "isBase64Encoded": false
        });
        lambda_http::request::from_str(&event.to_string()).unwrap()
    }

    #[test]
    fn the_signer_of_a_function_url_request_is_its_admin_caller() {
        let signed = url_event(serde_json::json!({"iam": {
            "accessKey": "AKIA", "accountId": "123456789012", "callerId": "AIDA",
            "userArn": "arn:aws:iam::123456789012:user/ops", "userId": "AIDA"
        }}));
        assert_eq!(
            iam_caller(&signed).as_deref(),
            Some("arn:aws:iam::123456789012:user/ops")
        );
        assert_eq!(iam_caller(&url_event(serde_json::Value::Null)), None);
        assert_eq!(iam_caller(&url_event(serde_json::json!({"iam": {}}))), None);
    }
}
