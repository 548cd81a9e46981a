//! The implementations behind the domain's [`Tool`] port. Built-in tools are deterministic and
//! offline; the `http` tool calls a deployer-configured, allow-listed HTTPS endpoint. Every call
//! reports its actual cost. Only what executes runs (the runner, the local server) links this.

mod delay;
mod fail;
mod file;
mod http;
mod llm;
mod sigil;
mod text;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use spellcast_application::tool_config::ToolsConfig;
use spellcast_application::tools::{Tool, ToolCall, ToolError, Toolbox};
use spellcast_domain::run::{NewOutput, OutputKind};
use spellcast_domain::tool_kinds::{str_param, ToolKind};

pub use http::HttpTool;
pub use llm::{estimate_tokens, metered_cost, LlmTool};
pub use sigil::draw_sigil;

/// The built-in tools only (no endpoint configured).
pub fn builtin() -> Toolbox {
    Toolbox::default()
        .reading_templates_with(template_variables)
        .with(ToolKind::TextRender, Arc::new(text::TextRender))
        .with(ToolKind::JsonRender, Arc::new(text::JsonRender))
        .with(ToolKind::ImageSigil, Arc::new(sigil::SigilImage))
        .with(ToolKind::TimeDelay, Arc::new(delay::Delay))
        .with(ToolKind::Fail, Arc::new(fail::Fail))
        .with(ToolKind::FileShow, Arc::new(file::FileShow))
}

/// The built-in tools, with `http` and `llm.chat` over the endpoints `config` names (SPEC §7.4).
pub fn configured(config: &ToolsConfig) -> Result<Toolbox, String> {
    let mut tools = builtin();
    if config.http.is_empty() && config.llm.is_empty() {
        return Ok(tools);
    }
    let client = client(config)?;
    if !config.http.is_empty() {
        let http = HttpTool::new(&config.http, client.clone())?;
        tools = tools.with(ToolKind::Http, Arc::new(http) as Arc<dyn Tool>);
    }
    if !config.llm.is_empty() {
        let llm = LlmTool::new(&config.llm, client)?;
        tools = tools.with(ToolKind::LlmChat, Arc::new(llm) as Arc<dyn Tool>);
    }
    Ok(tools)
}

/// The one outbound client of the tools: rustls with the public roots (and the deployer's
/// extra CA file), redirects never followed (a configured endpoint cannot send a call
/// elsewhere), a connect timeout. Per-call timeouts are each tool's.
fn client(config: &ToolsConfig) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true);
    if let Some(file) = &config.ca_file {
        let pem = std::fs::read(file)
            .map_err(|e| format!("tool configuration: caFile {}: {e}", file.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("tool configuration: caFile {}: {e}", file.display()))?;
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder
        .build()
        .map_err(|e| format!("the tools' HTTP client: {e}"))
}

/// The variables a template reads, as dotted paths (`steps.answer.text`): minijinja's static
/// analysis, for the catalog's reference checks (SPEC §7.1).
pub fn template_variables(template: &str) -> Result<BTreeSet<String>, String> {
    let env = minijinja::Environment::new();
    let compiled = env
        .template_from_str(template)
        .map_err(|e| format!("template: {e}"))?;
    Ok(compiled.undeclared_variables(true).into_iter().collect())
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
    pub use spellcast_application::testing::MemoryBlobs as Files;
    use spellcast_application::tools::Progress;
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
    use spellcast_domain::catalog::Catalog;
    use std::path::Path;

    #[test]
    fn the_sample_catalog_can_be_executed_by_the_builtin_tools() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/spells");
        let catalog = spellcast_application::catalog_files::load_catalog(&dir).unwrap();
        let config = ToolsConfig::parse(
            r#"{"llm": {"local": {"baseUrl": "http://127.0.0.1:9/v1", "model": "m"}}}"#,
        )
        .unwrap();
        configured(&config).unwrap().check(&catalog).unwrap();
    }

    #[test]
    fn the_template_engine_names_what_a_template_reads() {
        let read = template_variables(
            "{{ name }} {{ steps.ask.text | upper }} {% for o in steps.img.outputs %}{{ o.url }}{% endfor %} {{ steps.r.json.a.b }} {{ steps.x.outputs[0].value }}",
        )
        .unwrap();
        let want: BTreeSet<String> = [
            "name",
            "steps.ask.text",
            "steps.img.outputs",
            "steps.r.json.a.b",
            "steps.x.outputs",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(read, want);
        assert!(template_variables("{{ oops").is_err());
    }

    #[test]
    fn a_catalog_with_a_bad_reference_is_refused_naming_the_file_step_and_reference() {
        let text = r#"{"slug": "bad", "version": 1, "title": "B", "summary": "s", "description": "d",
            "inputs": {"type": "object"},
            "steps": [
              {"id": "one", "title": "1", "tool": "text.render", "with": {"template": "{{ steps.two.text }}"}},
              {"id": "two", "title": "2", "tool": "text.render", "with": {"template": "x"}}]}"#;
        let catalog = Catalog::from_sources([(Path::new("infra/spells/bad.json"), text)]).unwrap();
        let err = builtin().check(&catalog).unwrap_err();
        assert!(err.contains("infra/spells/bad.json"), "{err}");
        assert!(err.contains("step `one`"), "{err}");
        assert!(err.contains("steps.two.text"), "{err}");
        assert!(err.contains("runs after this one"), "{err}");
    }
}
