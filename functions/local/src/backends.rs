//! The two places the local server can keep its state: the embedded redb database, or DynamoDB
//! with EventBridge (the adapters the Lambdas use), for running the product on AWS services.

use std::sync::Arc;

use async_trait::async_trait;
use spellcast_application::ports::Limiter;
use spellcast_application::ports::{Blobs, BusError, EventBus, Store};
use spellcast_aws::{load_sdk_config, DynamoStore, EventBridgeBus, S3Blobs, Timeouts};
use spellcast_domain::events::ExecutionStarted;
use spellcast_domain::ids::RunId;
use spellcast_embedded::{DiskBlobs, LocalBus, MemoryLimiter, RedbStore};

use crate::config::Args;

/// A store, a bus, rate limit counters, where large files go, and the token secret to use with
/// them.
pub struct Backend {
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn Blobs>,
    /// A temporary directory the blobs live in (with `--memory`), removed when dropped.
    pub scratch: Option<tempfile::TempDir>,
    pub limiter: Arc<dyn Limiter>,
    pub bus: Arc<dyn EventBus>,
    pub token_secret: Vec<u8>,
    /// What deletes unused uploads here.
    pub expiry: UploadExpiry,
}

/// What deletes unused uploads in this process (on AWS DynamoDB's TTL deletes the records and
/// the bucket's lifecycle rule the bytes; so does a bucket here).
#[derive(Clone, Default)]
pub struct UploadExpiry {
    /// The embedded store's upload records.
    pub records: Option<RedbStore>,
    /// Upload bytes under the data dir.
    pub files: Option<Arc<DiskBlobs>>,
}

/// redb under `--data-dir` (or in memory), the in-process bus.
pub fn embedded(args: &Args, bus: LocalBus) -> Result<Backend, String> {
    let store = if args.memory {
        RedbStore::in_memory()
    } else {
        RedbStore::open(&args.data_dir, args.cache_mib << 20)
    }
    .map_err(|e| format!("cannot open the store in {}: {e}", args.data_dir.display()))?;
    let token_secret = match args.token_secret.clone() {
        Some(s) => s.into_bytes(),
        // Without a configured secret, a random one is made once and kept with the data.
        None => store
            .setting_or_init("token-secret", || rand::random::<[u8; 32]>().to_vec())
            .map_err(|e| e.to_string())?,
    };
    let (blobs, scratch) = disk_blobs(args)?;
    Ok(Backend {
        expiry: UploadExpiry {
            records: Some(store.clone()),
            files: Some(blobs.clone()),
        },
        store: Arc::new(store),
        blobs,
        scratch,
        // One process: counts in memory are the whole truth.
        limiter: Arc::new(MemoryLimiter::default()),
        bus: Arc::new(bus),
        token_secret,
    })
}

/// DynamoDB and EventBridge from one `SdkConfig`; this process's runner still executes the runs
/// (it plays the part of the rule's target that the runner Lambda plays on AWS).
pub async fn dynamodb(args: &Args, local: LocalBus) -> Result<Backend, String> {
    let config = load_sdk_config(match args.aws_timeout_secs {
        Some(secs) => Timeouts::SlowEngine(std::time::Duration::from_secs(secs.max(1))),
        None => Timeouts::Aws,
    })
    .await;
    let store = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&config),
        &args.table,
        chrono::Duration::days(7),
    );
    let events = aws_sdk_eventbridge::Client::new(&config);
    if args.create_tables {
        store.create_table().await.map_err(|e| e.to_string())?;
        if let Err(e) = events.create_event_bus().name(&args.event_bus).send().await {
            let exists = e
                .as_service_error()
                .is_some_and(|e| e.is_resource_already_exists_exception());
            if !exists {
                return Err(format!(
                    "cannot create the event bus: {}",
                    aws_sdk_eventbridge::error::DisplayErrorContext(&e)
                ));
            }
        }
    }
    let (blobs, scratch, files) = match &args.outputs_bucket {
        Some(bucket) => {
            let s3 = S3Blobs::new(&config, bucket);
            if args.create_tables {
                s3.create_bucket().await.map_err(|e| e.to_string())?;
            }
            (Arc::new(s3) as Arc<dyn Blobs>, None, None)
        }
        None => {
            let (disk, scratch) = disk_blobs(args)?;
            (disk.clone() as Arc<dyn Blobs>, scratch, Some(disk))
        }
    };
    let token_secret = match args.token_secret.clone() {
        Some(s) => s.into_bytes(),
        None => {
            tracing::warn!("no SPELLCAST_TOKEN_SECRET: tokens will not survive a restart");
            rand::random::<[u8; 32]>().to_vec()
        }
    };
    let store = Arc::new(store);
    Ok(Backend {
        // Counted in the table, as the Lambdas count: several servers share the limits.
        limiter: store.clone(),
        store,
        blobs,
        scratch,
        bus: Arc::new(Both {
            remote: EventBridgeBus::new(events, &args.event_bus),
            local,
        }),
        token_secret,
        expiry: UploadExpiry {
            records: None,
            files,
        },
    })
}

/// Large files under `--data-dir`'s `blobs/`, or, with `--memory`, in a temporary directory that
/// goes when the process ends.
fn disk_blobs(args: &Args) -> Result<(Arc<DiskBlobs>, Option<tempfile::TempDir>), String> {
    let (dir, scratch) = if args.memory {
        let scratch = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
        (scratch.path().join("blobs"), Some(scratch))
    } else {
        (args.data_dir.join("blobs"), None)
    };
    let blobs = DiskBlobs::open(&dir).map_err(|e| e.to_string())?;
    Ok((Arc::new(blobs), scratch))
}

/// Publishes to EventBridge and hands executions to this process's runner.
struct Both {
    remote: EventBridgeBus,
    local: LocalBus,
}

#[async_trait]
impl EventBus for Both {
    async fn execution_started(&self, event: ExecutionStarted) -> Result<(), BusError> {
        self.remote.execution_started(event.clone()).await?;
        self.local.execution_started(event).await
    }

    async fn webhook_due(&self, run_id: &RunId, webhook_id: &str) -> Result<(), BusError> {
        // This process's worker delivers (as the webhooks function does on AWS).
        self.remote.webhook_due(run_id, webhook_id).await?;
        self.local.webhook_due(run_id, webhook_id).await
    }

    async fn execution_due(
        &self,
        event: ExecutionStarted,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), BusError> {
        // This process's runner executes, so this process keeps the timer.
        self.local.execution_due(event, at).await
    }
}
