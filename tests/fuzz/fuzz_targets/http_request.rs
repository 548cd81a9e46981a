//! Every request through the HTTP layer both servers use (`spellcast_http::handle`, every
//! endpoint, the demo session included), on the embedded store: whatever the method, path,
//! headers and body, the answer is never a 500 (a client's mistake is a 4xx problem) and never a
//! panic.
//!
//! Input: a first line `METHOD /path?query`, header lines `name: value`, an empty line, the body.
//! `{session}` anywhere in a header becomes a valid session token, so the fuzzer reaches past
//! authentication.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use spellcast_application::app::Ports;
use spellcast_application::auth::TokenKeys;
use spellcast_application::catalog_files::load_catalog;
use spellcast_application::ports::SystemClock;
use spellcast_application::{App, Config};
use spellcast_domain::limits::{Limit, Limits};
use spellcast_embedded::{DiskBlobs, LocalBus, LocalSignal, MemoryLimiter, RedbStore};
use spellcast_http::Api;

struct World {
    runtime: tokio::runtime::Runtime,
    app: Arc<Api>,
    session: String,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let spells = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/spells");
        let mut config = Config::new("http://fuzz.test");
        // Limits would turn most requests into 429s and hide the handlers behind them.
        config.limits = Limits::per_minute(u32::MAX, u32::MAX);
        config.limits.sessions = Limit::per_minute("sessions", u32::MAX);
        config.webhook_secret = Some(b"fuzz-webhook-secret".to_vec());
        let keys = TokenKeys::hs256(&[7; 32], "fuzz").expect("a 32-byte key");
        let now = chrono::Utc::now();
        let session = keys.session(&"fuzz-user".into(), now, now + chrono::Duration::days(365));
        let (bus, executions) = LocalBus::new();
        // No runner: casts stay queued (what runs is the runner's business, not the requests').
        // The start events then fail to publish, as with `--no-runner`; kept, they would pile
        // up in the channel for the whole run.
        drop(executions);
        let blobs = std::env::temp_dir().join(format!("spellcast-fuzz-{}", std::process::id()));
        let ports = Ports {
            tools: spellcast_tools::builtin(),
            store: Arc::new(RedbStore::in_memory().expect("an in-memory store")),
            blobs: Arc::new(DiskBlobs::open(blobs).expect("a blob directory")),
            bus: Arc::new(bus),
            signal: Arc::new(LocalSignal::default()),
            clock: Arc::new(SystemClock),
            limiter: Arc::new(MemoryLimiter::default()),
            provider_documents: None,
        };
        let catalog = load_catalog(&spells).expect("the sample catalog");
        let app = Arc::new(Api::new(Arc::new(App::new(config, catalog, keys, ports))));
        World {
            runtime,
            app,
            session,
        }
    })
}

/// The request the input describes, if it is one `http` can represent.
fn request(data: &[u8], session: &str) -> Option<http::Request<Bytes>> {
    let split = data.windows(2).position(|w| w == b"\n\n");
    let (head, body) = match split {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.lines();
    let (method, target) = lines.next()?.split_once(' ')?;
    let mut builder = http::Request::builder().method(method).uri(target);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        builder = builder.header(name.trim(), value.trim().replace("{session}", session));
    }
    builder.body(Bytes::copy_from_slice(body)).ok()
}

fuzz_target!(|data: &[u8]| {
    let world = world();
    let Some(req) = request(data, &world.session) else {
        return;
    };
    let app = world.app.clone();
    let response = world
        .runtime
        .block_on(spellcast_http::handle(app, req, spellcast_http::ALL));
    assert_ne!(
        response.status(),
        http::StatusCode::INTERNAL_SERVER_ERROR,
        "a 500 for {:?}",
        String::from_utf8_lossy(data)
    );
});
