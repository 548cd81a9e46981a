//! Tools as the domain sees them. The catalog language is defined here: which tools a step can
//! name ([`ToolKind`]), the parameters each takes, what it produces for later steps, and what a
//! call is quoted before any call was measured. How a tool runs is an adapter's business
//! (`spellcast-tools`), behind the application's `Tool` port.

use serde_json::Value;

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
    /// `llm.chat`: asks a configured OpenAI-compatible chat model, streaming its answer.
    LlmChat,
    /// `file.show`: puts a file input in the gallery, with what it is (type, size, SHA-256).
    FileShow,
}

impl ToolKind {
    /// Every kind.
    pub const ALL: [ToolKind; 8] = [
        ToolKind::TextRender,
        ToolKind::JsonRender,
        ToolKind::ImageSigil,
        ToolKind::TimeDelay,
        ToolKind::Fail,
        ToolKind::Http,
        ToolKind::LlmChat,
        ToolKind::FileShow,
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
            ToolKind::LlmChat => "llm.chat",
            ToolKind::FileShow => "file.show",
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
                // Up to a day: a long wait is durable (SPEC §8.2).
                number_in(params, "seconds", 0.0, 86_400.0)?;
                number_in(params, "ticks", 1.0, 100.0)
            }
            ToolKind::Fail => Ok(()),
            ToolKind::Http => {
                require_str(params, "endpoint")?;
                if params.get("repeatable").is_some_and(|r| !r.is_boolean()) {
                    return Err("`repeatable` must be true or false".into());
                }
                match params.get("costPts") {
                    None => Ok(()),
                    Some(v) if v.as_i64().is_some_and(|n| n >= 0) => Ok(()),
                    Some(_) => Err("`costPts` must be a whole number of points, 0 or more".into()),
                }
            }
            ToolKind::LlmChat => {
                require_str(params, "endpoint")?;
                require_str(params, "prompt")?;
                if params.get("system").is_some_and(|s| !s.is_string()) {
                    return Err("`system` must be a string".into());
                }
                if params
                    .get("maxTokens")
                    .is_some_and(|v| !v.as_u64().is_some_and(|n| (1..=MAX_TOKENS).contains(&n)))
                {
                    return Err(format!(
                        "`maxTokens` must be a whole number from 1 to {MAX_TOKENS}"
                    ));
                }
                number_in(params, "temperature", 0.0, 2.0)
            }
            // Which input it names is checked with the spell's inputs.
            ToolKind::FileShow => require_str(params, "input"),
        }
    }

    /// What a step of this tool produces, for references to it (SPEC §7.1).
    pub fn produces(self, with: &Value, output_schema: Option<&Value>) -> Produces {
        let nothing = Produces::default();
        match self {
            ToolKind::TextRender => Produces {
                text: true,
                outputs: 1,
                ..nothing
            },
            ToolKind::JsonRender => Produces {
                json: Some(JsonShape::Literal(
                    with.get("value").cloned().unwrap_or(Value::Null),
                )),
                outputs: 1,
                ..nothing
            },
            ToolKind::ImageSigil => Produces {
                outputs: 1,
                ..nothing
            },
            ToolKind::TimeDelay | ToolKind::Fail => nothing,
            ToolKind::Http => Produces {
                json: Some(match output_schema {
                    Some(schema) => JsonShape::Schema(schema.clone()),
                    None => JsonShape::Opaque,
                }),
                outputs: 1,
                ..nothing
            },
            ToolKind::LlmChat => Produces {
                text: true,
                usage: true,
                outputs: 1,
                ..nothing
            },
            ToolKind::FileShow => Produces {
                json: Some(JsonShape::Literal(serde_json::json!({
                    "input": "", "mime": "", "bytes": 0, "sha256": ""
                }))),
                outputs: 2,
                ..nothing
            },
        }
    }

    /// How many attempts a step of this tool gets unless it says otherwise (SPEC §8.3).
    pub fn default_attempts(self) -> u32 {
        match self {
            // Only a step that says it is safe to repeat is sent twice.
            ToolKind::Http => 1,
            _ => 3,
        }
    }

    /// Whether a call cut off with its runner may be made again (SPEC §8.1): the built-ins and
    /// `llm.chat` change nothing outside the run; an `http` call may, so only a step that says
    /// `"repeatable": true` is.
    pub fn repeatable(self, params: &Value) -> bool {
        match self {
            ToolKind::Http => params.get("repeatable") == Some(&Value::Bool(true)),
            _ => true,
        }
    }

    /// What a call is quoted before any call was measured.
    pub fn nominal_cost(self, params: &Value) -> i64 {
        match self {
            ToolKind::TextRender | ToolKind::JsonRender | ToolKind::Fail | ToolKind::FileShow => 1,
            ToolKind::ImageSigil => 5,
            // One point per started second.
            ToolKind::TimeDelay => delay_seconds(params).ceil().max(1.0) as i64,
            ToolKind::Http => params
                .get("costPts")
                .and_then(Value::as_i64)
                .unwrap_or(10)
                .max(0),
            // A guess until the first answers are metered: a point per started 100 tokens
            // the step may generate.
            ToolKind::LlmChat => max_tokens(params).div_ceil(100) as i64,
        }
    }
}

/// The most tokens an `llm.chat` step may ask for.
pub const MAX_TOKENS: u64 = 8192;

/// How many tokens an `llm.chat` step may generate (`maxTokens`, 256 unless it says otherwise):
/// always sent, so a step's cost is bounded.
pub fn max_tokens(params: &Value) -> u64 {
    params
        .get("maxTokens")
        .and_then(Value::as_u64)
        .unwrap_or(256)
        .clamp(1, MAX_TOKENS)
}

/// What a step produces that later steps may reference.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Produces {
    /// A text output (`steps.<id>.text`).
    pub text: bool,
    /// A JSON output (`steps.<id>.json`), with what is known of its fields.
    pub json: Option<JsonShape>,
    /// Token usage (`steps.<id>.usage.promptTokens`, `.completionTokens`).
    pub usage: bool,
    /// How many outputs it makes (`steps.<id>.outputs[n]`).
    pub outputs: usize,
}

/// What is known, before a run, of a step's JSON output.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonShape {
    /// The value as written in the spell (`json.render`): its object keys are its fields.
    Literal(Value),
    /// A JSON Schema the output follows (an `http` step's `outputSchema`).
    Schema(Value),
    /// Nothing: no field can be referenced.
    Opaque,
}

impl JsonShape {
    /// Whether `path` (object keys, one per segment) names a field this output has.
    pub fn has_path(&self, path: &[&str]) -> bool {
        let Some((first, rest)) = path.split_first() else {
            return true;
        };
        match self {
            JsonShape::Opaque => false,
            JsonShape::Literal(value) => match value.get(*first) {
                Some(inner @ Value::Object(_)) => JsonShape::Literal(inner.clone()).has_path(rest),
                Some(_) => rest.is_empty(),
                None => false,
            },
            JsonShape::Schema(schema) => match schema.get("properties").and_then(|p| p.get(*first))
            {
                Some(inner) if rest.is_empty() => inner.is_object() || inner.is_boolean(),
                Some(inner) => JsonShape::Schema(inner.clone()).has_path(rest),
                None => false,
            },
        }
    }
}

/// How long a `time.delay` step waits (1 s unless it says otherwise).
pub fn delay_seconds(params: &Value) -> f64 {
    params.get("seconds").and_then(Value::as_f64).unwrap_or(1.0)
}

/// Tokens a model read and wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Tokens of the prompt.
    pub prompt_tokens: u64,
    /// Tokens of the answer.
    pub completion_tokens: u64,
    /// Counted from the streamed text, the stream having ended without a usage chunk (kept on
    /// the step as `usageEstimated`).
    #[serde(skip)]
    pub estimated: bool,
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
        assert!(ToolKind::TimeDelay
            .check(&json!({"seconds": 86_401}))
            .is_err());
        assert!(ToolKind::TimeDelay
            .check(&json!({"seconds": 86_400}))
            .is_ok());
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
}
