//! Errors that are the client's to fix, located in the request.

use serde::Serialize;

/// A violation of a spell's input schema, located by a JSON Pointer into the request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// For example `/context/prompt`.
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}
