//! Spellcast's application: the ports the domain's use cases need from the outside world (the
//! store, one port per aggregate; the event bus, run signal, blobs, clock, tools) and the use
//! cases themselves (quote, cast, run, cancel, recovery, sharing, watching, deliveries, sign-in,
//! pricing), over the entities and rules of `spellcast-domain`.
//!
//! Nothing here knows about HTTP, AWS, Lambda or how a tool runs: entry points build an [`App`]
//! from adapters once, in their `main`, and hand it to the HTTP layer (`spellcast-http`) or to
//! the runner.

pub mod accounts;
pub mod advancing;
pub mod app;
pub mod auth;
pub mod cancel;
pub mod cast;
pub mod catalog_files;
pub mod delivering;
pub mod deltas;
pub mod limiting;
pub mod metrics;
pub mod oidc;
pub mod ports;
pub mod pricing;
pub mod quote;
pub mod recovery;
pub mod run_log;
pub mod runner;
pub mod sharing;
pub mod sign_in;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tool_config;
pub mod tools;
pub mod uploading;
pub mod viewing;
pub mod watching;

pub use app::{App, Config};
