//! [`S3Blobs`]: large output files in an S3 bucket, fetched by clients through presigned URLs
//! (a Lambda's response could not carry them: 6 MB at most, base64 included).

use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use spellcast_core::ports::{Blobs, StoreError, StoreResult};

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

    async fn signed_url(&self, key: &str, ttl: Duration) -> StoreResult<Option<String>> {
        let presigning = PresigningConfig::expires_in(ttl).map_err(StoreError::from_err)?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(presigning)
            .await
            .map_err(store_error)?;
        Ok(Some(request.uri().to_owned()))
    }
}
