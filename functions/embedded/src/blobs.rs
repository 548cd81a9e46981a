//! [`DiskBlobs`]: large output files as plain files under a directory (the data dir's `blobs/`
//! locally), served by the server itself.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use spellcast_application::ports::{BlobHead, Blobs, StoreError, StoreResult};
use spellcast_domain::uploads::SignedPut;

/// Files under one directory, one per key.
pub struct DiskBlobs {
    dir: PathBuf,
}

impl DiskBlobs {
    /// Blobs under `dir` (created, readable by this user only).
    pub fn open(dir: impl Into<PathBuf>) -> StoreResult<DiskBlobs> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .map_err(|e| StoreError::new(format!("{}: {e}", dir.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| StoreError::new(format!("{}: {e}", dir.display())))?;
        }
        Ok(DiskBlobs { dir })
    }

    /// The file of `key`: keys are the runner's (`runs/{runId}/{sha256}`); anything else, above
    /// all a path that could leave the directory, is refused.
    fn path(&self, key: &str) -> StoreResult<PathBuf> {
        let safe = !key.is_empty()
            && key.split('/').all(|part| {
                !part.is_empty()
                    && part != "."
                    && part != ".."
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
        if safe {
            Ok(self.dir.join(Path::new(key)))
        } else {
            Err(StoreError::new(format!("not a blob key: {key:?}")))
        }
    }
}

#[async_trait]
impl Blobs for DiskBlobs {
    async fn put(&self, key: &str, _mime: &str, bytes: Vec<u8>) -> StoreResult<()> {
        let path = self.path(key)?;
        tokio::task::spawn_blocking(move || {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            // Written whole, then renamed: a reader never sees half a file.
            let partial = path.with_extension("partial");
            std::fs::write(&partial, &bytes)?;
            std::fs::rename(&partial, &path)
        })
        .await
        .map_err(StoreError::from_err)?
        .map_err(StoreError::from_err)
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let path = self.path(key)?;
        tokio::task::spawn_blocking(move || match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::from_err(e)),
        })
        .await
        .map_err(StoreError::from_err)?
    }

    async fn signed_url(
        &self,
        _key: &str,
        _ttl: Duration,
        _served: &spellcast_application::ports::Served,
    ) -> StoreResult<Option<String>> {
        Ok(None)
    }

    async fn head(&self, key: &str, first: usize) -> StoreResult<Option<BlobHead>> {
        let path = self.path(key)?;
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let file = match std::fs::File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(StoreError::from_err(e)),
            };
            let size = file.metadata().map_err(StoreError::from_err)?.len();
            let mut head = Vec::with_capacity(first);
            file.take(first as u64)
                .read_to_end(&mut head)
                .map_err(StoreError::from_err)?;
            Ok(Some(BlobHead { size, first: head }))
        })
        .await
        .map_err(StoreError::from_err)?
    }

    async fn signed_put(
        &self,
        _key: &str,
        _mime: &str,
        _bytes: u64,
        _ttl: Duration,
    ) -> StoreResult<Option<SignedPut>> {
        // The local server takes the PUT itself.
        Ok(None)
    }

    async fn copy(&self, from: &str, to: &str, _mime: &str) -> StoreResult<()> {
        let (from, to) = (self.path(from)?, self.path(to)?);
        tokio::task::spawn_blocking(move || {
            if to.exists() {
                return Ok(());
            }
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let partial = to.with_extension("partial");
            std::fs::copy(&from, &partial)?;
            std::fs::rename(&partial, &to)
        })
        .await
        .map_err(StoreError::from_err)?
        .map_err(StoreError::from_err)
    }
}

impl DiskBlobs {
    /// Deletes the files under `prefix` written more than `age` ago (unused uploads: the
    /// bucket's lifecycle rule does this on AWS). Returns how many went.
    pub async fn remove_older_than(&self, prefix: &str, age: Duration) -> StoreResult<usize> {
        let dir = self.path(prefix)?;
        tokio::task::spawn_blocking(move || {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(StoreError::from_err(e)),
            };
            let mut removed = 0;
            for entry in entries.flatten() {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|at| at.elapsed().ok())
                    .is_some_and(|elapsed| elapsed >= age);
                if old && std::fs::remove_file(entry.path()).is_ok() {
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await
        .map_err(StoreError::from_err)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blobs_round_trip_and_keys_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = DiskBlobs::open(dir.path().join("blobs")).unwrap();
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        blobs
            .put("runs/run_1/abc", "x/y", bytes.clone())
            .await
            .unwrap();
        blobs
            .put("runs/run_1/abc", "x/y", bytes.clone())
            .await
            .unwrap();
        assert_eq!(blobs.get("runs/run_1/abc").await.unwrap(), Some(bytes));
        assert_eq!(blobs.get("runs/run_1/nope").await.unwrap(), None);
        assert_eq!(
            blobs
                .signed_url(
                    "runs/run_1/abc",
                    Duration::from_secs(1),
                    &spellcast_application::ports::Served::as_type("x/y")
                )
                .await
                .unwrap(),
            None
        );
        for bad in [
            "",
            "../x",
            "runs/../../etc/passwd",
            "/etc/passwd",
            "runs//x",
            "a/./b",
        ] {
            assert!(blobs.get(bad).await.is_err(), "{bad}");
            assert!(blobs.put(bad, "x/y", vec![1]).await.is_err(), "{bad}");
        }
    }
}
