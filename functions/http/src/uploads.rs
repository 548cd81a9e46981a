//! `POST /api/v1/uploads` (where to PUT a file for a file input, SPEC §7.3) and the local
//! server's own upload target, `PUT /api/v1/uploads/{uploadId}/content?token=…` (on AWS the
//! bytes go to S3 through a presigned URL instead).

use std::sync::Arc;

use bytes::Bytes;
use http::{header, StatusCode};

use super::{json, parse_object, rate_limit, response, session, str_field, whole_number};
use super::{Body, Handled, Problem};

use crate::Api;
use spellcast_application::uploading::{ReceiveError, UploadError};

use spellcast_domain::uploads::MAX_UPLOAD_BYTES;

/// `POST /api/v1/uploads` `{"mime", "bytes"}` → 201 with where to PUT the bytes.
pub async fn request(app: &Arc<Api>, req: &http::request::Parts, body: &Bytes) -> Handled {
    let user = session(app, req).await?;
    rate_limit(app, &app.config().limits.uploads, user.sub.as_str()).await?;
    let fields = parse_object(body)?;
    let mime = str_field(&fields, "mime")?;
    let bytes = fields
        .get("bytes")
        .and_then(whole_number)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| {
            Problem::bad_field(
                "/bytes",
                &format!("must be a whole number from 1 to {MAX_UPLOAD_BYTES}"),
            )
        })?;
    let ticket = app
        .uploading()
        .request(&user.sub, mime, bytes)
        .await
        .map_err(|e| match e {
            UploadError::BadMime => Problem::bad_field("/mime", &e.to_string()),
            UploadError::BadSize { .. } => Problem::bad_field("/bytes", &e.to_string()),
            UploadError::Store(e) => e.into(),
        })?;
    Ok(json(StatusCode::CREATED, &ticket))
}

/// `PUT /api/v1/uploads/{uploadId}/content?token=…`: the local server's upload target. The token
/// binds the upload, its type and its exact size, and expires, as an S3 presigned PUT does.
pub async fn content(app: &Arc<Api>, req: &http::request::Parts, id: &str, body: Bytes) -> Handled {
    let token = super::query(req, "token")
        .ok_or_else(|| Problem::unauthorized("The upload URL's token is missing"))?;
    let sent_type = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mismatch =
        |detail: String| Problem::new(StatusCode::BAD_REQUEST, "upload_mismatch", detail);
    app.uploading()
        .receive(id, &token, sent_type, body.to_vec())
        .await
        .map_err(|e| match e {
            ReceiveError::Expired => {
                Problem::unauthorized("The upload URL has expired: ask for another")
            }
            ReceiveError::Invalid => Problem::unauthorized("The upload URL's token is not valid"),
            ReceiveError::OtherUpload => {
                Problem::unauthorized("The upload URL's token is for another upload")
            }
            ReceiveError::WrongType(mime) => {
                mismatch(format!("The PUT must carry Content-Type: {mime}"))
            }
            ReceiveError::TooLarge => Problem::payload_too_large(),
            ReceiveError::WrongSize(len) => {
                mismatch(format!("The PUT must send exactly {len} bytes"))
            }
            ReceiveError::Store(e) => e.into(),
        })?;
    Ok(response(StatusCode::NO_CONTENT, Body::Full(Bytes::new())))
}
