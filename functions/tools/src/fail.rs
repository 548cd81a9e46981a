//! `fail`: always fails with its `message`. Shows the refund path deterministically.

use async_trait::async_trait;

use spellcast_application::tools::{Progress, Tool, ToolCall, ToolError, ToolResult};
use spellcast_domain::tool_kinds::str_param;

/// Fails every call.
pub struct Fail;

#[async_trait]
impl Tool for Fail {
    async fn call(
        &self,
        call: ToolCall<'_>,
        progress: &dyn Progress,
    ) -> Result<ToolResult, ToolError> {
        progress.report(0.5, Some("Gathering power".into())).await;
        let message = str_param(call.params, "message").unwrap_or("The spell fizzled");
        Err(ToolError::Failed(message.to_owned()))
    }
}
