//! The streaming baseline `scripts/bench-lambda` measures the stream function against: the
//! smallest `lambda_http` function with a streamed response (one chunk), same profile, so the
//! emulator's streaming path is measured on both sides.

use bytes::Bytes;
use http_body_util::Full;
use lambda_http::{service_fn, Error, Request, Response};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::run_with_streaming_response(service_fn(|_req: Request| async {
        Ok::<_, Error>(Response::new(Full::new(Bytes::from_static(b"hello\n"))))
    }))
    .await
}
