//! What unit tests of the core and of the tools share (the `testing` feature, or the core's own
//! tests): blobs in memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::ports::{BlobHead, Blobs, Served, StoreError, StoreResult};
use spellcast_domain::uploads::SignedPut;

/// Blobs in a map, as the port says they behave (no signed URLs: the caller serves them).
#[derive(Default)]
pub struct MemoryBlobs(Mutex<HashMap<String, Vec<u8>>>);

impl MemoryBlobs {
    /// How many keys hold bytes.
    pub fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or_default()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self, key: &str) -> Option<Vec<u8>> {
        self.0.lock().ok()?.get(key).cloned()
    }
}

#[async_trait]
impl Blobs for MemoryBlobs {
    async fn put(&self, key: &str, _mime: &str, bytes: Vec<u8>) -> StoreResult<()> {
        let mut map = self.0.lock().map_err(StoreError::from_err)?;
        map.insert(key.to_owned(), bytes);
        Ok(())
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.read(key))
    }

    async fn signed_url(&self, _: &str, _: Duration, _: &Served) -> StoreResult<Option<String>> {
        Ok(None)
    }

    async fn head(&self, key: &str, first: usize) -> StoreResult<Option<BlobHead>> {
        Ok(self.read(key).map(|b| BlobHead {
            size: b.len() as u64,
            first: b[..first.min(b.len())].to_vec(),
        }))
    }

    async fn signed_put(
        &self,
        _: &str,
        _: &str,
        _: u64,
        _: Duration,
    ) -> StoreResult<Option<SignedPut>> {
        Ok(None)
    }

    async fn copy(&self, from: &str, to: &str, _mime: &str) -> StoreResult<()> {
        match (self.read(from), self.read(to)) {
            (Some(bytes), _) => self.put(to, "", bytes).await,
            (None, Some(_)) => Ok(()),
            (None, None) => Err(StoreError::new(format!("no blob {from}"))),
        }
    }
}
