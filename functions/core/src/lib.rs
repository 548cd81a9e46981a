//! Spellcast's core: the domain (spells, invoices, runs, ledger, run events), the ports it needs
//! from the outside world (store, event bus, run signal, clock, tools), and the use cases (the
//! runner, recovery, prices).
//!
//! Nothing here knows about HTTP, AWS, Lambda or how a tool runs: entry points build an [`App`]
//! from adapters once, in their `main`, and hand it to the HTTP layer (`spellcast-http`) or to
//! the runner.

pub mod app;
pub mod auth;
pub mod cancel;
pub mod cast;
pub mod catalog;
pub mod delivering;
pub mod deltas;
pub mod ids;
pub mod invoice;
pub mod ledger;
pub mod limits;
pub mod memo;
pub mod metrics;
pub mod oidc;
pub mod ports;
pub mod quote;
pub mod recovery;
pub mod references;
pub mod run;
pub mod runner;
pub mod sharing;
pub mod stats;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tool_config;
pub mod tools;
pub mod uploads;
pub mod viewing;
pub mod watching;
pub mod webhooks;

pub use app::{App, Config};
