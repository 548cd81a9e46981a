//! The tool port: how a step's call of a tool is made. Which tools exist and what they take is
//! the domain's ([`spellcast_domain::tool_kinds`]); how each runs is an adapter's business
//! (`spellcast-tools`), so only what executes runs links the tools' code.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use spellcast_domain::catalog::Catalog;
use spellcast_domain::run::NewOutput;
use spellcast_domain::tool_kinds::{ToolKind, Usage};

/// A step's call of a tool.
pub struct ToolCall<'a> {
    /// The step's `with` parameters, as written in the spell.
    pub params: &'a Value,
    /// What its templates read: the run's inputs, and `steps` with the results of the steps
    /// before it as stored (SPEC §7.1).
    pub context: &'a Value,
    /// The run, for logs.
    pub run_id: &'a spellcast_domain::ids::RunId,
    /// The files the run took as inputs (SPEC §7.3), read by reference from `blobs`.
    pub uploads: &'a [spellcast_domain::uploads::RunUpload],
    /// Where their bytes are.
    pub blobs: &'a dyn crate::ports::Blobs,
    /// What the tool left when it last asked to be called back ([`ToolResult::call_back`]):
    /// none on a step's first call.
    pub call_back: Option<&'a Value>,
}

/// What a successful call produced.
#[derive(Debug)]
pub struct ToolResult {
    /// Its outputs.
    pub outputs: Vec<NewOutput>,
    /// What it actually cost.
    pub cost_pts: i64,
    /// What a model used, for a tool that calls one.
    pub usage: Option<Usage>,
    /// Set when the tool is not done: it asks to be called again later (SPEC §8.2; an `http`
    /// endpoint that answered `202 Accepted`). Its outputs are then empty.
    pub call_back: Option<CallBack>,
}

impl ToolResult {
    /// A finished call's result.
    pub fn done(outputs: Vec<NewOutput>, cost_pts: i64) -> Self {
        ToolResult {
            outputs,
            cost_pts,
            usage: None,
            call_back: None,
        }
    }
}

/// A tool's "call me back later": after `after`, with `state`.
#[derive(Debug, Clone, PartialEq)]
pub struct CallBack {
    /// How long to wait before the next call.
    pub after: Duration,
    /// What the next call is given (as [`ToolCall::call_back`]).
    pub state: Value,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The tool did its job and the job failed: the step fails at once.
    #[error("{0}")]
    Failed(String),
    /// Something on the way failed (a connection, a timeout, a 429 or 5xx): the step may be
    /// tried again (SPEC §8.3). What the failed attempt consumed is still paid for.
    #[error("{message}")]
    Transient {
        /// Why, without keys or URLs.
        message: String,
        /// Points the attempt consumed (tokens a cut stream had already generated).
        cost_pts: i64,
    },
}

impl ToolError {
    /// A transient failure that consumed nothing.
    pub fn transient(message: impl Into<String>) -> Self {
        ToolError::Transient {
            message: message.into(),
            cost_pts: 0,
        }
    }

    /// Whether another attempt may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ToolError::Transient { .. })
    }

    /// What the failed attempt consumed.
    pub fn cost_pts(&self) -> i64 {
        match self {
            ToolError::Failed(_) => 0,
            ToolError::Transient { cost_pts, .. } => *cost_pts,
        }
    }
}

/// Where a tool reports progress.
#[async_trait]
pub trait Progress: Send + Sync {
    /// Reports progress (0..=1) with an optional message.
    async fn report(&self, fraction: f64, message: Option<String>);
    /// Appends text to the step's answer so far (a `stepDelta` event), with the step's progress
    /// (0..=1) as it stands then. Tools call it already coalesced ([`crate::deltas::Coalescer`]).
    async fn append(&self, _text: String, _progress: f64) {}
}

/// The port to a tool's implementation.
#[async_trait]
pub trait Tool: Send + Sync {
    /// Checks a step's parameters beyond [`ToolKind::check`], with what only the
    /// implementation knows (a template compiles, an endpoint is configured).
    fn check(&self, _params: &Value) -> Result<(), String> {
        Ok(())
    }
    /// Runs the tool.
    async fn call(
        &self,
        call: ToolCall<'_>,
        progress: &dyn Progress,
    ) -> Result<ToolResult, ToolError>;
}

/// A template engine's static analysis: the variables a template reads, as dotted paths.
pub type TemplateVariables = fn(&str) -> Result<std::collections::BTreeSet<String>, String>;

/// The tools a process can execute, by kind. Processes that execute no runs have none.
#[derive(Clone, Default)]
pub struct Toolbox {
    tools: BTreeMap<ToolKind, Arc<dyn Tool>>,
    variables: Option<TemplateVariables>,
}

impl Toolbox {
    /// Sets the template engine's static analysis: the variables a template reads, as dotted
    /// paths. With it, [`Toolbox::check`] checks step references (SPEC §7.1).
    pub fn reading_templates_with(mut self, variables: TemplateVariables) -> Self {
        self.variables = Some(variables);
        self
    }

    /// Adds (or replaces) the implementation of `kind`.
    pub fn with(mut self, kind: ToolKind, tool: Arc<dyn Tool>) -> Self {
        self.tools.insert(kind, tool);
        self
    }

    /// Whether this process executes nothing.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// The implementation of the tool a step names.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        ToolKind::parse(name).and_then(|kind| self.tools.get(&kind))
    }

    /// Checks that every step of `catalog` can be executed here: its tool is present and accepts
    /// the step's parameters, and its references to earlier steps hold. A process that executes
    /// runs calls this at start; errors name the spell's file.
    pub fn check(&self, catalog: &Catalog) -> Result<(), String> {
        for spell in catalog.iter() {
            let file = spell.file.display();
            for step in &spell.def.steps {
                let tool = self.get(&step.tool).ok_or_else(|| {
                    format!(
                        "spell catalog: {file}: step `{}`: the tool `{}` is not available here",
                        step.id, step.tool
                    )
                })?;
                tool.check(&step.with).map_err(|e| {
                    format!(
                        "spell catalog: {file}: step `{}` ({}): {e}",
                        step.id, step.tool
                    )
                })?;
            }
        }
        self.check_references(catalog)
    }

    /// Checks the step references of every spell of `catalog` (SPEC §7.1), naming the file,
    /// the step and the reference; nothing to check without a template engine.
    pub fn check_references(&self, catalog: &Catalog) -> Result<(), String> {
        let Some(variables) = self.variables else {
            return Ok(());
        };
        for spell in catalog.iter() {
            spell
                .check_references(&variables)
                .map_err(|e| format!("spell catalog: {}: {e}", spell.file.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_process_without_a_tool_cannot_execute_its_steps() {
        let catalog = spellcast_domain::testing::catalog_of(json!([
            {"id": "a", "title": "A", "tool": "text.render", "with": {"template": "hi"}}
        ]));
        let err = Toolbox::default().check(&catalog).unwrap_err();
        assert!(err.contains("text.render"), "{err}");
    }
}
