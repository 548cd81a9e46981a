//! Spellcast's core: the domain (spells, invoices, runs, ledger, run events), the ports it needs
//! from the outside world (store, event bus, run signal, clock, tools), the use cases, and the HTTP
//! handlers as plain `http::Request -> http::Response` functions.
//!
//! Nothing here knows whether it runs under axum on a laptop or under `lambda_http` on AWS: entry
//! points build an [`App`] from adapters once, in their `main`, and call [`api::handle`].

pub mod api;
pub mod app;
pub mod auth;
pub mod catalog;
pub mod crawlers;
pub mod ids;
pub mod invoice;
pub mod ledger;
pub mod metrics;
pub mod og;
pub mod ports;
pub mod recovery;
pub mod run;
pub mod runner;
pub mod stats;
pub mod tools;

pub use app::{App, Config};
