//! The store's part that keeps uploads users asked for (SPEC §7.3).

use async_trait::async_trait;

use spellcast_domain::ids::UploadId;
use spellcast_domain::uploads::Upload;

use super::StoreResult;

/// Uploads users asked for (SPEC §7.3).
#[async_trait]
pub trait UploadStore: Send + Sync {
    /// Records an upload a user asked for (SPEC §7.3); the store forgets it some time after it
    /// expires.
    async fn put_upload(&self, upload: &Upload) -> StoreResult<()>;
    /// An upload, if the store still has it (perhaps expired: the caller judges).
    async fn upload(&self, upload_id: &UploadId) -> StoreResult<Option<Upload>>;
}
