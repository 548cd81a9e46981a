//! Tools: what a spell's steps call. Built-in tools are deterministic and offline; the `http` tool
//! calls a deployer-configured, allow-listed HTTPS endpoint. Every call reports its actual cost.

mod delay;
mod fail;
mod http;
mod sigil;
mod text;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

pub use http::{HttpEndpoints, HttpTool};

use crate::run::NewOutput;

/// A step's call of a tool.
pub struct ToolCall<'a> {
    /// The step's `with` parameters, as written in the spell.
    pub params: &'a Value,
    /// The run's inputs.
    pub context: &'a Value,
    /// The run, for logs.
    pub run_id: &'a str,
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

/// A tool a step can call.
#[async_trait]
pub trait Tool: Send + Sync {
    /// Checks a step's parameters when the catalog loads.
    fn check(&self, params: &Value) -> Result<(), String>;
    /// What a call is expected to cost before any call was measured.
    fn nominal_cost(&self, params: &Value) -> i64;
    /// Runs the tool.
    async fn call(
        &self,
        call: ToolCall<'_>,
        progress: &dyn Progress,
    ) -> Result<ToolResult, ToolError>;
}

/// The tools by name.
#[derive(Clone, Default)]
pub struct Toolbox {
    tools: BTreeMap<String, Arc<dyn Tool>>,
}

impl Toolbox {
    /// The built-in tools, plus `http` when endpoints are configured.
    pub fn builtin(http: Option<HttpTool>) -> Self {
        let mut tools: BTreeMap<String, Arc<dyn Tool>> = BTreeMap::new();
        tools.insert("text.render".into(), Arc::new(text::TextRender));
        tools.insert("json.render".into(), Arc::new(text::JsonRender));
        tools.insert("image.sigil".into(), Arc::new(sigil::SigilImage));
        tools.insert("time.delay".into(), Arc::new(delay::Delay));
        tools.insert("fail".into(), Arc::new(fail::Fail));
        if let Some(http) = http {
            tools.insert("http".into(), Arc::new(http));
        }
        Toolbox { tools }
    }

    /// A tool by name.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.get(name)
    }
}

/// Renders a template against the run's inputs (`{{ name }}`). Output is text, not HTML.
pub fn render_template(template: &str, context: &Value) -> Result<String, ToolError> {
    let env = minijinja::Environment::new();
    env.render_str(
        template,
        minijinja::Value::from(minijinja::value::Serde(context)),
    )
    .map_err(|e| ToolError::Failed(format!("template: {e}")))
}

/// Checks that a template compiles.
pub fn check_template(template: &str) -> Result<(), String> {
    let env = minijinja::Environment::new();
    env.template_from_str(template)
        .map(|_| ())
        .map_err(|e| format!("template: {e}"))
}

/// The output caption: the `title` parameter rendered over the inputs.
fn title(call: &ToolCall<'_>) -> Result<Option<String>, ToolError> {
    str_param(call.params, "title")
        .map(|t| render_template(t, call.context))
        .transpose()
}

/// A string parameter.
fn str_param<'a>(params: &'a Value, key: &str) -> Option<&'a str> {
    params.get(key).and_then(Value::as_str)
}

/// A required string parameter, as a load-time check.
fn require_str<'a>(params: &'a Value, key: &str) -> Result<&'a str, String> {
    str_param(params, key).ok_or_else(|| format!("`{key}` (string) is required"))
}

/// An optional number parameter within bounds, as a load-time check.
fn number_in(params: &Value, key: &str, min: f64, max: f64) -> Result<Option<f64>, String> {
    match params.get(key) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(format!("`{key}` must be a number from {min} to {max}")),
        },
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use std::sync::Mutex;

    /// Records progress reports.
    #[derive(Default)]
    pub struct Recorded(pub Mutex<Vec<f64>>);

    #[async_trait]
    impl Progress for Recorded {
        async fn report(&self, fraction: f64, _message: Option<String>) {
            self.0.lock().unwrap().push(fraction);
        }
    }
}
