//! The implementations behind the domain's [`Tool`] port. Built-in tools are deterministic and
//! offline; the `http` tool calls a deployer-configured, allow-listed HTTPS endpoint. Every call
//! reports its actual cost. Only what executes runs (the runner, the local server) links this.

mod delay;
mod fail;
mod http;
mod sigil;
mod text;

use std::sync::Arc;

use serde_json::Value;
use spellcast_core::run::{NewOutput, OutputKind};
use spellcast_core::tools::{str_param, Tool, ToolCall, ToolError, ToolKind, Toolbox};

pub use http::{HttpEndpoints, HttpTool};
pub use sigil::draw_sigil;

/// The built-in tools, plus `http` when endpoints are configured.
pub fn builtin(http: Option<HttpTool>) -> Toolbox {
    let mut tools = Toolbox::default()
        .with(ToolKind::TextRender, Arc::new(text::TextRender))
        .with(ToolKind::JsonRender, Arc::new(text::JsonRender))
        .with(ToolKind::ImageSigil, Arc::new(sigil::SigilImage))
        .with(ToolKind::TimeDelay, Arc::new(delay::Delay))
        .with(ToolKind::Fail, Arc::new(fail::Fail));
    if let Some(http) = http {
        tools = tools.with(ToolKind::Http, Arc::new(http) as Arc<dyn Tool>);
    }
    tools
}

/// The built-in tools, with `http` when `http_endpoints` (`name=https://...,...`) names any,
/// with the default timeout and response limit.
pub fn configured(http_endpoints: Option<&str>) -> Result<Toolbox, String> {
    let http = match http_endpoints.map(HttpEndpoints::parse).transpose()? {
        Some(endpoints) if !endpoints.0.is_empty() => Some(HttpTool::new(
            endpoints,
            HttpTool::DEFAULT_TIMEOUT,
            HttpTool::DEFAULT_MAX_BYTES,
        )),
        _ => None,
    };
    Ok(builtin(http))
}

/// Renders a template against the run's inputs (`{{ name }}`). Output is text, not HTML.
fn render_template(template: &str, context: &Value) -> Result<String, ToolError> {
    let env = minijinja::Environment::new();
    env.render_str(
        template,
        minijinja::Value::from(minijinja::value::Serde(context)),
    )
    .map_err(|e| ToolError::Failed(format!("template: {e}")))
}

/// Checks that a template compiles.
fn check_template(template: &str) -> Result<(), String> {
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

/// A JSON output captioned by the step's `title`.
fn json_output(call: &ToolCall<'_>, value: Value) -> Result<NewOutput, ToolError> {
    Ok(NewOutput {
        kind: OutputKind::Json,
        mime: "application/json".into(),
        title: title(call)?,
        value: Some(value),
        file: None,
    })
}

#[cfg(test)]
pub(crate) mod testing {
    use async_trait::async_trait;
    use spellcast_core::tools::Progress;
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

#[cfg(test)]
mod tests {
    use super::*;
    use spellcast_core::catalog::Catalog;
    use std::path::Path;

    #[test]
    fn the_sample_catalog_can_be_executed_by_the_builtin_tools() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/spells");
        let catalog = Catalog::load(&dir).unwrap();
        builtin(None).check(&catalog).unwrap();
    }
}
