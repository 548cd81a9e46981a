//! Uploads (SPEC §7.3): handing out where a file's bytes go, and checking a cast's file inputs.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use spellcast_domain::errors::FieldError;
use spellcast_domain::ids::{UploadId, UserId};
use spellcast_domain::uploads::*;

use crate::auth::TokenKeys;
use crate::ports::{Blobs, Clock, StoreError, UploadStore};

/// Why the bytes PUT to a local upload URL were refused.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// The URL's token has expired.
    #[error("the upload URL has expired: ask for another")]
    Expired,
    /// The URL's token is not good.
    #[error("the upload URL's token is not valid")]
    Invalid,
    /// The token is for another upload.
    #[error("the upload URL's token is for another upload")]
    OtherUpload,
    /// The PUT's `Content-Type` is not the one asked for.
    #[error("the PUT must carry Content-Type: {0}")]
    WrongType(String),
    /// More bytes than asked for.
    #[error("more bytes than the upload asked for")]
    TooLarge,
    /// Fewer bytes than asked for.
    #[error("the PUT must send exactly {0} bytes")]
    WrongSize(u64),
    /// The blob store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why an upload was not handed out.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// `mime` is not a media type.
    #[error("`mime` must be a media type such as \"image/png\"")]
    BadMime,
    /// `bytes` is 0 or too large.
    #[error("`bytes` must be a whole number from 1 to {max}")]
    BadSize {
        /// The largest allowed.
        max: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a cast's file inputs were refused.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Inputs that do not hold a usable upload, each pointing at its property.
    #[error("{} file input(s) refused", .0.len())]
    Invalid(Vec<FieldError>),
    /// The store or the blob store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What uploads need: the store, where the bytes go, the keys that sign local upload URLs, the
/// time, and the public origin (for local URLs).
pub struct Uploading<'a> {
    /// Upload records.
    pub store: &'a dyn UploadStore,
    /// Where the bytes go.
    pub blobs: &'a dyn Blobs,
    /// Signs local upload URLs.
    pub keys: &'a TokenKeys,
    /// The time.
    pub clock: &'a dyn Clock,
    /// The public origin (`http://127.0.0.1:8787`).
    pub public_url: &'a str,
    /// How long an upload stays usable by a cast.
    pub ttl: chrono::Duration,
}

impl Uploading<'_> {
    /// Takes the bytes of upload `id` PUT to the local server's upload URL with `token`, sent as
    /// `content_type`: what an S3 presigned PUT checks (the token's upload, type and exact size,
    /// and its expiry), then stores them where a cast looks for them.
    pub async fn receive(
        &self,
        id: &str,
        token: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<UploadId, ReceiveError> {
        let claims = self.keys.verify_upload(token).map_err(|e| match e {
            crate::auth::TokenError::Expired => ReceiveError::Expired,
            crate::auth::TokenError::Invalid => ReceiveError::Invalid,
        })?;
        if UploadId::parse(id).as_ref() != Some(&claims.jti) {
            return Err(ReceiveError::OtherUpload);
        }
        if !content_type.eq_ignore_ascii_case(&claims.mime) {
            return Err(ReceiveError::WrongType(claims.mime));
        }
        if bytes.len() as u64 > claims.len {
            return Err(ReceiveError::TooLarge);
        }
        if bytes.len() as u64 != claims.len {
            return Err(ReceiveError::WrongSize(claims.len));
        }
        self.blobs
            .put(&pending_key(&claims.jti), &claims.mime, bytes)
            .await?;
        tracing::info!(upload_id = %claims.jti, bytes = claims.len, "upload received");
        Ok(claims.jti)
    }

    /// Records an upload of `bytes` bytes of `mime` for `user` and says where to PUT them.
    pub async fn request(
        &self,
        user: &UserId,
        mime: &str,
        bytes: u64,
    ) -> Result<UploadTicket, UploadError> {
        if !is_media_type(mime) {
            return Err(UploadError::BadMime);
        }
        if !(1..=MAX_UPLOAD_BYTES).contains(&bytes) {
            return Err(UploadError::BadSize {
                max: MAX_UPLOAD_BYTES,
            });
        }
        let now = self.clock.now();
        let upload = Upload {
            upload_id: UploadId::new(),
            user_id: user.clone(),
            mime: mime.to_ascii_lowercase(),
            bytes,
            created_at: now,
            expires_at: now + self.ttl,
        };
        self.store.put_upload(&upload).await?;
        let put_until = (now + chrono::Duration::seconds(PUT_TTL_SECS)).min(upload.expires_at);
        let ttl = (put_until - now).to_std().unwrap_or_default();
        let key = pending_key(&upload.upload_id);
        let signed = match self
            .blobs
            .signed_put(&key, &upload.mime, bytes, ttl)
            .await?
        {
            Some(signed) => signed,
            None => {
                let token = self.keys.upload(UploadClaims {
                    jti: upload.upload_id.clone(),
                    sub: user.clone(),
                    mime: upload.mime.clone(),
                    len: bytes,
                    iat: now.timestamp(),
                    exp: put_until.timestamp(),
                    aud: String::new(),
                    iss: String::new(),
                });
                SignedPut {
                    url: format!(
                        "{}/api/v1/uploads/{}/content?token={token}",
                        self.public_url, upload.upload_id
                    ),
                    headers: BTreeMap::from([("content-type".into(), upload.mime.clone())]),
                }
            }
        };
        tracing::info!(upload_id = %upload.upload_id, bytes, mime = %upload.mime, "upload asked for");
        Ok(UploadTicket {
            upload_id: upload.upload_id,
            url: signed.url,
            method: "PUT",
            headers: signed.headers,
            expires_at: put_until,
            max_bytes: bytes,
        })
    }
}

/// Checks the file inputs of a cast of a spell with `files` by `user`: each given one names an
/// upload of the caller's, not expired, whose bytes arrived, within the property's `maxBytes`
/// and whose content (sniffed, not declared) fits its `contentMediaType`. Every refusal points at
/// its property.
pub async fn check_inputs(
    files: &[FileInput],
    context: &Value,
    user: &UserId,
    now: DateTime<Utc>,
    store: &dyn UploadStore,
    blobs: &dyn Blobs,
) -> Result<Vec<RunUpload>, InputError> {
    let mut uploads = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        let Some(given) = context.get(&file.name) else {
            continue;
        };
        match check_one(file, given, user, now, store, blobs).await? {
            Ok(upload) => uploads.push(upload),
            Err(message) => errors.push(FieldError {
                pointer: format!("/context/{}", file.name),
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(uploads)
    } else {
        Err(InputError::Invalid(errors))
    }
}

async fn check_one(
    file: &FileInput,
    given: &Value,
    user: &UserId,
    now: DateTime<Utc>,
    store: &dyn UploadStore,
    blobs: &dyn Blobs,
) -> Result<Result<RunUpload, String>, StoreError> {
    let Some(id) = given.as_str().and_then(UploadId::parse) else {
        return Ok(Err("must be the `uploadId` of an upload".into()));
    };
    // Another user's upload is answered as a missing one: ids say nothing of others' files.
    let upload = match store.upload(&id).await? {
        Some(upload) if upload.user_id == *user => upload,
        _ => return Ok(Err(format!("there is no upload `{id}` of yours"))),
    };
    if upload.expires_at <= now {
        return Ok(Err(
            "the upload has expired: upload the file again".to_owned()
        ));
    }
    let Some(head) = blobs.head(&pending_key(&id), SNIFF_BYTES).await? else {
        return Ok(Err(
            "the upload is not complete: its bytes were never PUT to its URL".to_owned(),
        ));
    };
    if head.size > file.max_bytes {
        return Ok(Err(format!(
            "the file is {} bytes; this input takes at most {}",
            head.size, file.max_bytes
        )));
    }
    let mime = sniff(&head.first);
    if !file.accepts(&mime) {
        return Ok(Err(format!(
            "the file's content is {mime}; this input takes {}",
            file.accept
        )));
    }
    Ok(Ok(RunUpload {
        input: file.name.clone(),
        upload_id: id,
        mime,
        bytes: head.size,
    }))
}

/// Keeps a run's uploads as long as the run: copies each out of the prefix that expires (done
/// by the cast, and again by the runner, since either may be cut short; copying twice is
/// harmless), as the type its bytes are — not the one the client declared, which S3 would
/// otherwise serve it as (a PNG declared `text/html` must never be served as a page). An upload
/// already kept and gone from the prefix is fine.
pub async fn keep(blobs: &dyn Blobs, uploads: &[RunUpload]) -> Result<(), StoreError> {
    for upload in uploads {
        blobs
            .copy(&pending_key(&upload.upload_id), &upload.key(), &upload.mime)
            .await?;
    }
    Ok(())
}
