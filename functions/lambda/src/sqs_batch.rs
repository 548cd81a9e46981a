//! An SQS batch as Lambda's event source mapping hands it to a function: the webhooks queue's
//! (the webhooks function) and the wake-ups queue's (the runner).

use serde::Deserialize;
use serde_json::Value;

/// An SQS batch as Lambda hands it over (the webhooks queue's, the wake-ups queue's).
#[derive(Debug, Deserialize)]
pub struct Batch {
    /// Its messages.
    #[serde(rename = "Records", default)]
    pub records: Vec<Message>,
}

/// One message of a batch.
#[derive(Debug, Deserialize)]
pub struct Message {
    /// What a batch item failure names.
    #[serde(rename = "messageId")]
    pub message_id: String,
    /// Its body.
    #[serde(default)]
    pub body: String,
}

impl Batch {
    /// The batch `event` is, if it is one (it has `Records`).
    pub fn of(event: &Value) -> Option<Batch> {
        event.get("Records")?;
        Batch::deserialize(event).ok()
    }
}
