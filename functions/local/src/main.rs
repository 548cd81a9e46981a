//! `spellcast-local`: the whole product in one process, on the embedded store, with no AWS
//! account. Wiring only: configuration in, adapters built once, then the API, the runner, the
//! recovery sweeper and the stats ticker run side by side until the process is stopped.

mod backends;
mod config;
mod http_adapter;
mod serve;
mod site;
mod workers;

use std::sync::Arc;

use clap::Parser;
use spellcast_application::app::Ports;
use spellcast_application::auth::TokenKeys;
use spellcast_application::ports::SystemClock;
use spellcast_application::App;
use spellcast_deliveries::{Deliveries, Reach};
use spellcast_embedded::{LocalBus, LocalSignal};
use spellcast_http::Api;

use config::{Args, StoreKind};

#[tokio::main]
async fn main() {
    let args = Args::parse();
    // Log lines (one per request at the default level) are written by a thread of their own: a
    // request only hands its line over, instead of taking stderr's lock and making a write
    // call (`scripts/bench` measures both levels). Not lossy: a stderr that cannot keep up
    // slows requests down rather than losing lines.
    let (writer, flush_on_exit) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(writer)
        // Colours for a person at a terminal only: escape codes in a log file are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if cfg!(panic = "abort") {
        tracing::warn!(
            "built with panic = \"abort\": a panicking handler ends the process; build with \
             --profile release-local (or a debug build) to have it answer 500 instead"
        );
    }
    let result = run(args).await;
    drop(flush_on_exit);
    if let Err(e) = result {
        eprintln!("spellcast-local: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let site = site::Site::load(&args.static_dir)
        .map_err(|e| format!("cannot read {}: {e}", args.static_dir.display()))?;
    if let Some(out) = &args.write_site {
        // For scripts/upload-static: the same names and bytes as served here.
        return site
            .write(out)
            .map_err(|e| format!("cannot write the site to {}: {e}", out.display()));
    }
    let tools_config = args.tools_config()?;
    let tools = spellcast_tools::configured(&tools_config)?;
    let catalog = spellcast_application::catalog_files::load_catalog(&args.catalog)
        .map_err(|e| e.to_string())?;
    // Checked whole first: a broken reference is an error even in a spell left out below.
    spellcast_tools::builtin().check_references(&catalog)?;
    let (catalog, left_out) = tools_config.available(catalog);
    for warning in &left_out {
        tracing::warn!("{warning}");
    }
    tools.check(&catalog)?;

    let (local_bus, executions) = LocalBus::new();
    let webhooks_due = local_bus.webhooks_due();
    let backend = match args.store {
        StoreKind::Embedded => backends::embedded(&args, local_bus)?,
        StoreKind::Dynamodb => backends::dynamodb(&args, local_bus).await?,
    };
    let keys = TokenKeys::hs256(&backend.token_secret, "spellcast-local")?;
    // With --memory, large files live in a temporary directory for as long as the process.
    let _scratch = backend.scratch;
    let expiry = backend.expiry;

    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{bound}"));

    let metrics = workers::install_metrics()?;
    let mut config = args.app_config(&public_url);
    config.oidc = args.oidc()?;
    let ports = Ports {
        store: backend.store,
        blobs: backend.blobs,
        bus: backend.bus,
        signal: Arc::new(LocalSignal::default()),
        clock: Arc::new(SystemClock),
        limiter: backend.limiter,
        tools,
        // The provider's HTTPS client only where there is a provider.
        provider_documents: config.oidc.is_some().then(|| {
            Arc::new(spellcast_aws::HttpsJson::default())
                as Arc<dyn spellcast_application::oidc::JsonFetcher>
        }),
    };
    let app = Arc::new(App::new(config, catalog, keys, ports));

    if args.no_runner {
        // Executions are not consumed: a cast stays queued, as if its start event were lost.
        drop(executions);
        tracing::warn!("runner disabled (--no-runner)");
    } else {
        tokio::spawn(workers::runner(app.clone(), executions));
    }
    let reach = if args.unsafe_webhook_loopback {
        tracing::warn!("webhooks may go to loopback addresses (--unsafe-webhook-loopback)");
        Reach::AlsoLoopback
    } else {
        Reach::PublicOnly
    };
    if args.no_webhooks {
        tracing::warn!("webhook deliveries disabled (--no-webhooks)");
    } else {
        tokio::spawn(workers::webhook_worker(
            app.clone(),
            Arc::new(Deliveries::new(reach)),
            webhooks_due,
        ));
    }
    tokio::spawn(workers::sweeper(app.clone(), args.sweep_interval()));
    tokio::spawn(workers::stats_ticker(app.clone(), args.stats_interval()));
    tokio::spawn(workers::upload_sweeper(
        expiry,
        std::time::Duration::from_secs(args.upload_ttl_secs.max(1)),
    ));

    let demo = args.demo_sessions(bound);
    if !demo {
        tracing::warn!(
            "no demo sessions (POST /api/v1/dev/session): they are served only on a loopback \
             address with the embedded store, or with --unsafe-demo-sessions"
        );
    }
    let endpoints = spellcast_http::ALL
        .iter()
        .copied()
        .filter(|e| demo || e.path != spellcast_http::DEV_SESSION.path)
        .collect();
    let api = Arc::new(Api {
        heartbeat: args.heartbeat(),
        metrics: Some(metrics),
        ..Api::new(app)
    });
    let routes = http_adapter::Routes::new(api, site, endpoints, args.body_read_timeout());
    println!("Spellcast is ready: open {public_url}/spells/hello-sigil");
    tracing::info!(addr = %bound, catalog = %args.catalog.display(), "listening");
    let handler = move |req| routes.clone().answer(req);
    let server = serve::serve(listener, handler, args.connection_limits());
    tokio::select! {
        () = server => Ok(()),
        _ = workers::shutdown_signal() => {
            tracing::info!("stopping");
            Ok(())
        }
    }
}
