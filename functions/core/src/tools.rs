//! Tools as the domain sees them. The catalog language is defined here: which tools a step can
//! name ([`ToolKind`]), the parameters each takes, and what a call is quoted before any call was
//! measured. How a tool runs is an adapter's business (`spellcast-tools`), behind the [`Tool`]
//! port, so only what executes runs links the tools' code.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::run::NewOutput;

/// The tools a step can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ToolKind {
    /// `text.render`: a text output from a template over the inputs.
    TextRender,
    /// `json.render`: a JSON output whose strings are templates.
    JsonRender,
    /// `image.sigil`: a procedural PNG from a seed template.
    ImageSigil,
    /// `time.delay`: waits, reporting progress ticks.
    TimeDelay,
    /// `fail`: fails, to show the refund path.
    Fail,
    /// `http`: POSTs to a deployer-configured, allow-listed HTTPS endpoint.
    Http,
}

impl ToolKind {
    /// Every kind.
    pub const ALL: [ToolKind; 6] = [
        ToolKind::TextRender,
        ToolKind::JsonRender,
        ToolKind::ImageSigil,
        ToolKind::TimeDelay,
        ToolKind::Fail,
        ToolKind::Http,
    ];

    /// The name a spell's step uses.
    pub fn name(self) -> &'static str {
        match self {
            ToolKind::TextRender => "text.render",
            ToolKind::JsonRender => "json.render",
            ToolKind::ImageSigil => "image.sigil",
            ToolKind::TimeDelay => "time.delay",
            ToolKind::Fail => "fail",
            ToolKind::Http => "http",
        }
    }

    /// The kind a step names.
    pub fn parse(name: &str) -> Option<ToolKind> {
        ToolKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Checks a step's parameters when the catalog loads: what is required, and the bounds.
    /// (What needs the tool itself, such as compiling a template, is [`Tool::check`].)
    pub fn check(self, params: &Value) -> Result<(), String> {
        match self {
            ToolKind::TextRender => require_str(params, "template"),
            ToolKind::JsonRender => match params.get("value") {
                Some(_) => Ok(()),
                None => Err("`value` is required".into()),
            },
            ToolKind::ImageSigil => {
                require_str(params, "seed")?;
                number_in(params, "size", 64.0, 1024.0)
            }
            ToolKind::TimeDelay => {
                number_in(params, "seconds", 0.0, 60.0)?;
                number_in(params, "ticks", 1.0, 100.0)
            }
            ToolKind::Fail => Ok(()),
            ToolKind::Http => {
                require_str(params, "endpoint")?;
                match params.get("costPts") {
                    None => Ok(()),
                    Some(v) if v.as_i64().is_some_and(|n| n >= 0) => Ok(()),
                    Some(_) => Err("`costPts` must be a whole number of points, 0 or more".into()),
                }
            }
        }
    }

    /// What a call is quoted before any call was measured.
    pub fn nominal_cost(self, params: &Value) -> i64 {
        match self {
            ToolKind::TextRender | ToolKind::JsonRender | ToolKind::Fail => 1,
            ToolKind::ImageSigil => 5,
            // One point per started second.
            ToolKind::TimeDelay => delay_seconds(params).ceil().max(1.0) as i64,
            ToolKind::Http => params
                .get("costPts")
                .and_then(Value::as_i64)
                .unwrap_or(10)
                .max(0),
        }
    }
}

/// How long a `time.delay` step waits (1 s unless it says otherwise).
pub fn delay_seconds(params: &Value) -> f64 {
    params.get("seconds").and_then(Value::as_f64).unwrap_or(1.0)
}

/// A step's call of a tool.
pub struct ToolCall<'a> {
    /// The step's `with` parameters, as written in the spell.
    pub params: &'a Value,
    /// The run's inputs.
    pub context: &'a Value,
    /// The run, for logs.
    pub run_id: &'a crate::ids::RunId,
}

/// What a successful call produced.
#[derive(Debug)]
pub struct ToolResult {
    /// Its outputs.
    pub outputs: Vec<NewOutput>,
    /// What it actually cost.
    pub cost_pts: i64,
}

/// Why a call failed; the run fails with it.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The tool did its job and the job failed.
    #[error("{0}")]
    Failed(String),
}

/// Where a tool reports progress.
#[async_trait]
pub trait Progress: Send + Sync {
    /// Reports progress (0..=1) with an optional message.
    async fn report(&self, fraction: f64, message: Option<String>);
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

/// The tools a process can execute, by kind. Processes that execute no runs have none.
#[derive(Clone, Default)]
pub struct Toolbox {
    tools: BTreeMap<ToolKind, Arc<dyn Tool>>,
}

impl Toolbox {
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
    /// the step's parameters. A process that executes runs calls this at start.
    pub fn check(&self, catalog: &crate::catalog::Catalog) -> Result<(), String> {
        for spell in catalog.iter() {
            for step in &spell.def.steps {
                let tool = self.get(&step.tool).ok_or_else(|| {
                    format!(
                        "spell `{}`, step `{}`: the tool `{}` is not available here",
                        spell.slug, step.id, step.tool
                    )
                })?;
                tool.check(&step.with).map_err(|e| {
                    format!(
                        "spell `{}`, step `{}` ({}): {e}",
                        spell.slug, step.id, step.tool
                    )
                })?;
            }
        }
        Ok(())
    }
}

/// A string parameter.
pub fn str_param<'a>(params: &'a Value, key: &str) -> Option<&'a str> {
    params.get(key).and_then(Value::as_str)
}

/// A required string parameter, as a load-time check.
fn require_str(params: &Value, key: &str) -> Result<(), String> {
    match str_param(params, key) {
        Some(_) => Ok(()),
        None => Err(format!("`{key}` (string) is required")),
    }
}

/// An optional number parameter within bounds, as a load-time check.
fn number_in(params: &Value, key: &str, min: f64, max: f64) -> Result<(), String> {
    match params.get(key).map(Value::as_f64) {
        None => Ok(()),
        Some(Some(n)) if (min..=max).contains(&n) => Ok(()),
        Some(_) => Err(format!("`{key}` must be a number from {min} to {max}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_kind_is_found_by_its_name() {
        for kind in ToolKind::ALL {
            assert_eq!(ToolKind::parse(kind.name()), Some(kind));
        }
        assert_eq!(ToolKind::parse("nope"), None);
    }

    #[test]
    fn parameters_are_checked_at_load() {
        assert!(ToolKind::TextRender.check(&json!({})).is_err());
        assert!(ToolKind::TimeDelay.check(&json!({"seconds": 61})).is_err());
        assert!(ToolKind::TimeDelay.check(&json!({"seconds": 2})).is_ok());
        assert!(ToolKind::ImageSigil
            .check(&json!({"seed": "x", "size": 8}))
            .is_err());
        assert!(ToolKind::Http
            .check(&json!({"url": "https://evil.example"}))
            .is_err());
        assert!(ToolKind::Http
            .check(&json!({"endpoint": "m", "costPts": -1}))
            .is_err());
    }

    #[test]
    fn nominal_costs_follow_the_parameters() {
        assert_eq!(
            ToolKind::TimeDelay.nominal_cost(&json!({"seconds": 2.5})),
            3
        );
        assert_eq!(ToolKind::TimeDelay.nominal_cost(&json!({"seconds": 0})), 1);
        assert_eq!(ToolKind::Http.nominal_cost(&json!({"endpoint": "m"})), 10);
        assert_eq!(ToolKind::ImageSigil.nominal_cost(&json!({})), 5);
    }

    #[test]
    fn a_process_without_a_tool_cannot_execute_its_steps() {
        let catalog = crate::catalog::tests::catalog_of(json!([
            {"id": "a", "title": "A", "tool": "text.render", "with": {"template": "hi"}}
        ]));
        let err = Toolbox::default().check(&catalog).unwrap_err();
        assert!(err.contains("text.render"), "{err}");
    }
}
