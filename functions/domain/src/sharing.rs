//! Shareable runs (SPEC §3.14): a finished run made public under an unguessable id.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{RunId, ShareId, UserId};

/// A run made public.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Share {
    /// Its public id.
    pub share_id: ShareId,
    /// The run.
    pub run_id: RunId,
    /// Who shared it (the run's owner).
    pub user_id: UserId,
    /// Whether the public page shows the run's inputs.
    pub include_inputs: bool,
    /// When it was shared.
    pub created_at: DateTime<Utc>,
}

impl Share {
    /// The public page's path.
    pub fn path(&self) -> String {
        format!("/r/{}", self.share_id)
    }
}
