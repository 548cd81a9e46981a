//! `text.render` and `json.render`: text and JSON outputs from templates over the inputs.

use async_trait::async_trait;
use serde_json::Value;

use spellcast_application::tools::{Progress, Tool, ToolCall, ToolError, ToolResult};
use spellcast_domain::run::{NewOutput, OutputKind};
use spellcast_domain::tool_kinds::str_param;

use crate::{check_template, json_output, render_template, title};

/// Renders `template` into a text output. Costs 1 point per started 500 characters.
pub struct TextRender;

#[async_trait]
impl Tool for TextRender {
    fn check(&self, params: &Value) -> Result<(), String> {
        str_param(params, "template").map_or(Ok(()), check_template)
    }

    async fn call(
        &self,
        call: ToolCall<'_>,
        progress: &dyn Progress,
    ) -> Result<ToolResult, ToolError> {
        let template = str_param(call.params, "template").unwrap_or_default();
        let text = render_template(template, call.context)?;
        progress.report(1.0, None).await;
        let cost_pts = 1 + (text.chars().count() as i64).saturating_sub(1) / 500;
        let output = NewOutput {
            kind: OutputKind::Text,
            mime: "text/plain; charset=utf-8".into(),
            title: title(&call)?,
            value: Some(Value::String(text)),
            file: None,
        };
        Ok(ToolResult::done(vec![output], cost_pts))
    }
}

/// Renders every string inside `value` as a template and outputs the result as JSON. Costs 1.
pub struct JsonRender;

/// A string that is exactly one `{{ expression }}` keeps the expression's JSON type (a number
/// stays a number); any other string is rendered as a text template.
fn render_string(s: &str, context: &Value) -> Result<Value, ToolError> {
    let trimmed = s.trim();
    if let Some(expr) = trimmed
        .strip_prefix("{{")
        .and_then(|r| r.strip_suffix("}}"))
    {
        if !expr.contains("{{") && !expr.contains("}}") {
            let env = minijinja::Environment::new();
            let value = env
                .compile_expression(expr)
                .and_then(|e| e.eval(minijinja::Value::from(minijinja::value::Serde(context))))
                .map_err(|e| ToolError::Failed(format!("template: {e}")))?;
            return serde_json::to_value(&value)
                .map_err(|e| ToolError::Failed(format!("template: {e}")));
        }
    }
    render_template(s, context).map(Value::String)
}

/// Renders every string inside `value` as a template over `context`.
pub(crate) fn render_strings(value: &Value, context: &Value) -> Result<Value, ToolError> {
    Ok(match value {
        Value::String(s) => render_string(s, context)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_strings(v, context))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_strings(v, context)?)))
                .collect::<Result<_, ToolError>>()?,
        ),
        other => other.clone(),
    })
}

#[async_trait]
impl Tool for JsonRender {
    async fn call(
        &self,
        call: ToolCall<'_>,
        progress: &dyn Progress,
    ) -> Result<ToolResult, ToolError> {
        let value = render_strings(
            call.params.get("value").unwrap_or(&Value::Null),
            call.context,
        )?;
        progress.report(1.0, None).await;
        Ok(ToolResult::done(vec![json_output(&call, value)?], 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Recorded;
    use serde_json::json;

    #[tokio::test]
    async fn text_is_rendered_from_inputs_and_priced_by_length() {
        let params = json!({"template": "Hello, {{ name }}!"});
        let ctx = json!({"name": "<b>Ada</b>"});
        let call = ToolCall {
            params: &params,
            context: &ctx,
            run_id: &"r".into(),
            uploads: &[],
            blobs: &crate::testing::Files::default(),
            call_back: None,
        };
        let out = TextRender.call(call, &Recorded::default()).await.unwrap();
        assert_eq!(out.outputs[0].value, Some(json!("Hello, <b>Ada</b>!")));
        assert_eq!(out.cost_pts, 1);
        let long = json!({"name": "x".repeat(1200)});
        let call = ToolCall {
            params: &params,
            context: &long,
            run_id: &"r".into(),
            uploads: &[],
            blobs: &crate::testing::Files::default(),
            call_back: None,
        };
        assert_eq!(
            TextRender
                .call(call, &Recorded::default())
                .await
                .unwrap()
                .cost_pts,
            3
        );
    }

    #[tokio::test]
    async fn json_render_fills_nested_strings() {
        let params = json!({"value": {"topic": "{{ topic }}", "n": 3, "list": ["{{ topic }}!"]}});
        let ctx = json!({"topic": "owls"});
        let call = ToolCall {
            params: &params,
            context: &ctx,
            run_id: &"r".into(),
            uploads: &[],
            blobs: &crate::testing::Files::default(),
            call_back: None,
        };
        let out = JsonRender.call(call, &Recorded::default()).await.unwrap();
        assert_eq!(
            out.outputs[0].value,
            Some(json!({"topic": "owls", "n": 3, "list": ["owls!"]}))
        );
    }

    #[test]
    fn a_broken_template_is_refused_at_load() {
        assert!(TextRender.check(&json!({"template": "{{ oops"})).is_err());
        assert!(TextRender.check(&json!({"template": "{{ fine }}"})).is_ok());
    }
}
