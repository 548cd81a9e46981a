//! What every Spellcast Lambda shares, so each function's `main` only wires: [`start`] reads
//! the settings and loads one `SdkConfig` per execution environment, [`Start::app`] builds the
//! app with only the ports the function uses (the event bus and the tools are for those that
//! publish or execute), then one of [`serve`], [`serve_streaming`], [`serve_runner`],
//! [`serve_stats`] or [`serve_webhooks`] answers events until the runtime stops. Each HTTP function names its own
//! endpoints (`spellcast_http::META`, ...), so it links only their handlers. There is no
//! dev-session endpoint here: the HTTP layer's `dev-session` feature is off.

mod app;
mod emf;
mod events;
mod http;
mod settings;
mod sqs_batch;
mod webhooks;

pub use app::{catalog, start, NoBlobs, NoEvents, Start};
pub use events::{run_delivery, scheduled, serve_runner, serve_stats};
pub use http::{iam_caller, serve, serve_streaming};
pub use lambda_http::Error;
pub use settings::Settings;
pub use spellcast_application::tools::Toolbox;
pub use spellcast_http as endpoints;
pub use webhooks::{serve_webhooks, webhook_batch};
