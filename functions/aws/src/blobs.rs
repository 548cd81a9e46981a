//! [`S3Blobs`]: large output files in an S3 bucket, fetched by clients through presigned URLs
//! (a Lambda's response could not carry them: 6 MB at most, base64 included).

use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use spellcast_application::ports::{BlobHead, Blobs, Served, StoreError, StoreResult};
use spellcast_domain::uploads::SignedPut;

use crate::sdk_error::store_error;

/// One bucket, one object per key.
#[derive(Clone)]
pub struct S3Blobs {
    client: Client,
    bucket: String,
}

impl S3Blobs {
    /// Blobs in `bucket`. With an endpoint override (moto, a local S3) addressing is path-style:
    /// such servers have no per-bucket host names.
    pub fn new(sdk: &SdkConfig, bucket: impl Into<String>) -> S3Blobs {
        let config = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(sdk.endpoint_url().is_some())
            .build();
        S3Blobs {
            client: Client::from_conf(config),
            bucket: bucket.into(),
        }
    }

    /// Creates the bucket if it does not exist (for local runs and tests; SAM creates it on AWS).
    pub async fn create_bucket(&self) -> StoreResult<()> {
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.code(),
                    Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(store_error(e)),
        }
    }
}

#[async_trait]
impl Blobs for S3Blobs {
    async fn put(&self, key: &str, mime: &str, bytes: Vec<u8>) -> StoreResult<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(mime)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let sent = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        let object = match sent {
            Ok(object) => object,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(store_error(e)),
        };
        let bytes = object.body.collect().await.map_err(StoreError::from_err)?;
        Ok(Some(bytes.into_bytes().to_vec()))
    }

    async fn signed_url(
        &self,
        key: &str,
        ttl: Duration,
        served: &Served,
    ) -> StoreResult<Option<String>> {
        let presigning = PresigningConfig::expires_in(ttl).map_err(StoreError::from_err)?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .response_content_type(&served.mime)
            .set_response_content_disposition(served.attachment.then(|| "attachment".to_owned()))
            .presigned(presigning)
            .await
            .map_err(store_error)?;
        Ok(Some(request.uri().to_owned()))
    }

    async fn head(&self, key: &str, first: usize) -> StoreResult<Option<BlobHead>> {
        // One ranged GET: the first bytes, and the whole size from `Content-Range`.
        let sent = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes=0-{}", first.max(1) - 1))
            .send()
            .await;
        let object = match sent {
            Ok(object) => object,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
            // An empty object has no byte 0 to start a range at.
            Err(e) if e.code() == Some("InvalidRange") => {
                return Ok(Some(BlobHead {
                    size: 0,
                    first: Vec::new(),
                }))
            }
            Err(e) => return Err(store_error(e)),
        };
        let size = object
            .content_range()
            .and_then(|range| range.rsplit_once('/'))
            .and_then(|(_, total)| total.parse().ok())
            .or_else(|| object.content_length().and_then(|n| u64::try_from(n).ok()))
            .unwrap_or(0);
        let bytes = object.body.collect().await.map_err(StoreError::from_err)?;
        let mut head = bytes.into_bytes().to_vec();
        head.truncate(first);
        Ok(Some(BlobHead { size, first: head }))
    }

    async fn signed_put(
        &self,
        key: &str,
        mime: &str,
        bytes: u64,
        ttl: Duration,
    ) -> StoreResult<Option<SignedPut>> {
        let presigning = PresigningConfig::expires_in(ttl).map_err(StoreError::from_err)?;
        let length = i64::try_from(bytes).map_err(StoreError::from_err)?;
        // `Content-Length` and `Content-Type` are signed: S3 refuses a PUT of another size or
        // type (the Rust SDK signs `content-length` when it is set).
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(mime)
            .content_length(length)
            .presigned(presigning)
            .await
            .map_err(store_error)?;
        let headers = request
            .headers()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
            .collect();
        Ok(Some(SignedPut {
            url: request.uri().to_owned(),
            headers,
        }))
    }

    async fn copy(&self, from: &str, to: &str, mime: &str) -> StoreResult<()> {
        let sent = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .copy_source(format!("{}/{from}", self.bucket))
            .key(to)
            .content_type(mime)
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            // Copied before, and the source expired since: what matters is there.
            Err(e) if e.code() == Some("NoSuchKey") => match self.head(to, 0).await? {
                Some(_) => Ok(()),
                None => Err(store_error(e)),
            },
            Err(e) => Err(store_error(e)),
        }
    }
}
