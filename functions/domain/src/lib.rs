//! Spellcast's domain: spells and their catalog, invoices and the cast rule, runs and the one
//! state machine that changes them ([`run::Run::apply`]), the points ledger, prices, webhook
//! rules, shares, uploads and the events runs make.
//!
//! Entities and rules only: no ports, no async, no I/O. The application crate
//! (`spellcast-application`) builds the use cases on top; adapters never reach in here to decide
//! anything the domain decides.

pub mod cast;
pub mod catalog;
pub mod errors;
pub mod events;
pub mod ids;
pub mod invoice;
pub mod ledger;
pub mod limits;
pub mod prices;
pub mod references;
pub mod run;
pub mod sharing;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tool_kinds;
pub mod uploads;
pub mod webhooks;
