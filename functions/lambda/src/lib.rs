//! What every Spellcast Lambda shares, so each function's `main` only wires: [`start`] reads
//! the settings and builds the app once per execution environment, then one of [`serve`],
//! [`serve_streaming`], [`serve_runner`] or [`serve_stats`] answers events until the runtime
//! stops. There is no dev-session endpoint here: the core's `dev-session` feature is off.

mod app;
mod emf;
mod events;
mod http;
mod settings;

use std::sync::Arc;

pub use app::{build, catalog};
pub use events::{run_delivery, scheduled, serve_runner, serve_stats};
pub use http::{serve, serve_streaming};
pub use lambda_http::Error;
pub use settings::Settings;
pub use spellcast_core::api::EndpointKind;
use spellcast_core::App;

/// Logging (JSON lines, level from `RUST_LOG`), EMF metrics, then the app from the environment.
pub async fn start() -> Result<Arc<App>, Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_current_span(false)
        .without_time() // CloudWatch stamps each line
        .with_writer(std::io::stderr)
        .init();
    emf::install();
    let settings = Settings::from_env()?;
    Ok(build(settings).await?)
}
