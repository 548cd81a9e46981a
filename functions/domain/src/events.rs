//! The execution events the bus carries between functions.

use serde::{Deserialize, Serialize};

use crate::ids::{RunId, Slug};

/// An execution event for the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionStarted {
    /// The run to execute.
    pub run_id: RunId,
    /// Its spell.
    pub slug: Slug,
}
