//! Where files live: large outputs, uploads and inputs (S3 on AWS, files under the data dir
//! locally).

use std::time::Duration;

use async_trait::async_trait;

use spellcast_domain::uploads::SignedPut;

use super::StoreResult;

/// Where large output files live (S3 on AWS, files under the data dir locally), so that no store
/// item nears its size limit (SPEC §5.7). Keys are made by the runner from the run id and the
/// file's hash: writing the same file twice is harmless.
#[async_trait]
pub trait Blobs: Send + Sync {
    /// Stores `bytes` of media type `mime` under `key`.
    async fn put(&self, key: &str, mime: &str, bytes: Vec<u8>) -> StoreResult<()>;
    /// The bytes under `key`, if any.
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// A URL the client may fetch the bytes from directly for `ttl` (an S3 presigned URL),
    /// answered as `served` says whatever they were stored as, or `None` where the server
    /// serves them itself.
    async fn signed_url(
        &self,
        key: &str,
        ttl: Duration,
        served: &Served,
    ) -> StoreResult<Option<String>>;
    /// The size of the bytes under `key` and their first `first` bytes, if there are any.
    async fn head(&self, key: &str, first: usize) -> StoreResult<Option<BlobHead>>;
    /// A URL a client may PUT exactly `bytes` bytes of `mime` to under `key` for `ttl`, with the
    /// size and type bound by its signature (an S3 presigned PUT), or `None` where the server
    /// takes uploads itself.
    async fn signed_put(
        &self,
        key: &str,
        mime: &str,
        bytes: u64,
        ttl: Duration,
    ) -> StoreResult<Option<SignedPut>>;
    /// Copies the bytes under `from` to `to`, kept as media type `mime` (whatever type they were
    /// written with). Nothing under `from` is fine if `to` has them already (a copy made
    /// before); else it is an error.
    async fn copy(&self, from: &str, to: &str, mime: &str) -> StoreResult<()>;
}

/// How the blob store answers a signed URL: with this media type, and as a download unless the
/// file is an image a browser only ever draws. Opened from the bucket's own domain, an SVG or an
/// HTML file would run there; the type is forced so what was stored cannot decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// The `Content-Type` to answer with.
    pub mime: String,
    /// Whether to answer `Content-Disposition: attachment`.
    pub attachment: bool,
}

impl Served {
    /// How a file of media type `mime` is served: inline only as a raster image.
    pub fn as_type(mime: &str) -> Served {
        Served {
            mime: mime.to_owned(),
            attachment: !drawn_only(mime),
        }
    }
}

/// Whether a file of media type `mime` is an image format that holds no script (PNG, JPEG, GIF,
/// WebP, AVIF; not SVG).
pub fn drawn_only(mime: &str) -> bool {
    let base = mime.split(';').next().unwrap_or_default().trim();
    [
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
    ]
    .iter()
    .any(|t| base.eq_ignore_ascii_case(t))
}

/// What [`Blobs::head`] tells of stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobHead {
    /// How many bytes there are.
    pub size: u64,
    /// The first of them (as many as asked for, or all if fewer).
    pub first: Vec<u8>,
}
