//! Step references (SPEC §7.1): a step's templates may read the results of earlier steps,
//! `steps.<id>.text`, `.json.<path>`, `.outputs[n]` and `.usage.completionTokens`.
//!
//! They are checked when the catalog loads, from the variables each template reads (the
//! template engine is an adapter's: it hands them over as dotted paths), never at run time; and
//! at run time they are read from the run as stored, so a resumed run sees exactly what the first
//! runner produced.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::catalog::{Spell, STEPS};
use crate::run::{OutputKind, Run, StepStatus};
use crate::tool_kinds::JsonShape;

/// The variables a template reads, as dotted paths (`steps.answer.text`, `name`): what the
/// template engine's static analysis gives, or why the template does not parse.
pub type ReadVariables<'a> = &'a dyn Fn(&str) -> Result<BTreeSet<String>, String>;

/// Every string in a step's parameters, where templates are.
fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

impl Spell {
    /// Checks every reference of every step to an earlier step's result: the step exists,
    /// comes before, and its tool makes that result. The error names the step and the
    /// reference (the caller adds the file).
    pub fn check_references(&self, read: ReadVariables<'_>) -> Result<(), String> {
        let steps = &self.def.steps;
        for (index, step) in steps.iter().enumerate() {
            let mut templates = Vec::new();
            strings(&step.with, &mut templates);
            for template in templates {
                let variables = read(&template).map_err(|e| format!("step `{}`: {e}", step.id))?;
                for variable in variables {
                    let mut parts = variable.split('.');
                    if parts.next() != Some(STEPS) {
                        continue;
                    }
                    check_one(self, index, &parts.collect::<Vec<_>>())
                        .map_err(|e| format!("step `{}`: `{{{{ {variable} }}}}`: {e}", step.id))?;
                }
            }
        }
        Ok(())
    }
}

/// Checks one reference `steps.<path…>` made by step `from`.
fn check_one(spell: &Spell, from: usize, path: &[&str]) -> Result<(), String> {
    const NAME_A_RESULT: &str =
        "name a step's result: steps.<id>.text, .json, .outputs[n] or .usage";
    let Some((id, rest)) = path.split_first() else {
        return Err(NAME_A_RESULT.into());
    };
    let steps = &spell.def.steps;
    let Some(to) = steps.iter().position(|s| s.id == *id) else {
        return Err(format!("there is no step `{id}`"));
    };
    if to == from {
        return Err("a step cannot read its own result".into());
    }
    if to > from {
        return Err(format!("step `{id}` runs after this one"));
    }
    let target = &steps[to];
    let Some(kind) = target.kind() else {
        return Err(format!("step `{id}` names an unknown tool"));
    };
    let makes = kind.produces(&target.with, target.output_schema.as_ref());
    let tool = kind.name();
    let Some((result, rest)) = rest.split_first() else {
        return Err(NAME_A_RESULT.into());
    };
    match *result {
        "text" if !makes.text => Err(format!("step `{id}` ({tool}) makes no text output")),
        "text" if !rest.is_empty() => Err("a text has no fields".into()),
        "text" => Ok(()),
        "json" => match &makes.json {
            None => Err(format!("step `{id}` ({tool}) makes no JSON output")),
            Some(JsonShape::Opaque) if !rest.is_empty() => Err(format!(
                "step `{id}` declares no `outputSchema`, so its fields cannot be referenced"
            )),
            Some(shape) if !shape.has_path(rest) => Err(format!(
                "step `{id}`'s JSON output has no field `{}`",
                rest.join(".")
            )),
            Some(_) => Ok(()),
        },
        "outputs" if makes.outputs == 0 => Err(format!("step `{id}` ({tool}) makes no outputs")),
        "outputs" => match rest.first() {
            None => Ok(()),
            Some(n) if n.parse::<usize>().is_ok_and(|n| n < makes.outputs) => Ok(()),
            Some(n) => Err(format!(
                "step `{id}` makes {} output(s): `{n}` is not one of them",
                makes.outputs
            )),
        },
        "usage" if !makes.usage => Err(format!("step `{id}` ({tool}) reports no usage")),
        "usage" => match rest {
            [] | ["promptTokens"] | ["completionTokens"] => Ok(()),
            _ => Err("usage has `promptTokens` and `completionTokens`".into()),
        },
        other => Err(format!("`{other}` is not a result: {NAME_A_RESULT}")),
    }
}

/// The run's outputs that later steps may read as `steps.<id>.text` but whose text is not in the
/// run: a text too long to travel with it was stored as a `text/plain` file (SPEC §5.7). The
/// runner reads these (indexes into `run.outputs`) and hands their texts to [`scope`].
pub fn texts_to_read(run: &Run, index: usize) -> Vec<usize> {
    run.steps
        .iter()
        .take(index)
        .filter(|step| step.status == StepStatus::Succeeded)
        .filter(|step| {
            !step.outputs.iter().any(|&n| {
                run.outputs
                    .get(n)
                    .is_some_and(|o| o.kind == OutputKind::Text)
            })
        })
        .filter_map(|step| {
            step.outputs.iter().copied().find(|&n| {
                run.outputs
                    .get(n)
                    .is_some_and(|o| o.kind == OutputKind::File && o.mime.starts_with("text/plain"))
            })
        })
        .collect()
}

/// What the templates of step `index` read: the run's inputs, and under `steps` the results of
/// the steps before it that succeeded, as stored in `run` (`files`: the texts of
/// [`texts_to_read`], by output index).
pub fn scope(run: &Run, index: usize, files: &std::collections::BTreeMap<usize, String>) -> Value {
    let mut scope = match &run.context {
        Value::Object(inputs) => inputs.clone(),
        _ => Map::new(),
    };
    let mut steps = Map::new();
    for step in run.steps.iter().take(index) {
        if step.status != StepStatus::Succeeded {
            continue;
        }
        let outputs: Vec<&crate::run::Output> = step
            .outputs
            .iter()
            .filter_map(|&n| run.outputs.get(n))
            .collect();
        let first = |kind: crate::run::OutputKind| {
            outputs
                .iter()
                .find(|o| o.kind == kind)
                .and_then(|o| o.value.clone())
        };
        let mut result = Map::new();
        let stored_text = || {
            step.outputs
                .iter()
                .find_map(|n| files.get(n))
                .map(|t| Value::String(t.clone()))
        };
        if let Some(text) = first(OutputKind::Text).or_else(stored_text) {
            result.insert("text".into(), text);
        }
        if let Some(json) = first(OutputKind::Json) {
            result.insert("json".into(), json);
        }
        result.insert(
            "outputs".into(),
            outputs
                .iter()
                .map(|o| json!({"kind": o.kind, "mime": o.mime, "value": o.value, "url": o.url}))
                .collect(),
        );
        if let Some(usage) = &step.usage {
            result.insert("usage".into(), json!(usage));
        }
        steps.insert(step.id.clone(), Value::Object(result));
    }
    scope.insert(STEPS.into(), Value::Object(steps));
    Value::Object(scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `{{ a.b.c }}` expressions only: enough to test the rules without a template
    /// engine (the real one is the tools' adapter's, tested there).
    fn naive(template: &str) -> Result<BTreeSet<String>, String> {
        Ok(template
            .split("{{")
            .skip(1)
            .filter_map(|part| part.split("}}").next())
            .map(|expr| expr.trim().replace('[', ".").replace(']', ""))
            .collect())
    }

    fn spell(steps: Value) -> Spell {
        let mut def = crate::testing::def(json!({"type": "object"}));
        def.steps = serde_json::from_value(steps).unwrap();
        Spell::check(def).unwrap()
    }

    fn check(steps: Value) -> Result<(), String> {
        spell(steps).check_references(&naive)
    }

    #[test]
    fn references_to_results_that_earlier_steps_make_are_accepted() {
        check(json!([
            {"id": "ask", "title": "A", "tool": "llm.chat", "with": {"endpoint": "m", "prompt": "{{ q }}"}},
            {"id": "rec", "title": "R", "tool": "json.render", "with": {"value": {"a": {"b": 1}, "c": "x"}}},
            {"id": "img", "title": "I", "tool": "image.sigil", "with": {"seed": "{{ steps.ask.text }}"}},
            {"id": "out", "title": "O", "tool": "text.render", "with": {"template":
                "{{ steps.ask.text }} {{ steps.ask.usage.completionTokens }} {{ steps.rec.json.a.b }} {{ steps.rec.json.c }} {{ steps.img.outputs[0] }}"}}
        ]))
        .unwrap();
    }

    #[test]
    fn a_dangling_self_forward_or_impossible_reference_is_refused_naming_it() {
        let cases = [
            (
                json!({"template": "{{ steps.nope.text }}"}),
                "there is no step `nope`",
            ),
            (
                json!({"template": "{{ steps.b.text }}"}),
                "a step cannot read its own result",
            ),
            (
                json!({"template": "{{ steps.c.text }}"}),
                "runs after this one",
            ),
            (
                json!({"template": "{{ steps.a.text }}"}),
                "makes no text output",
            ),
            (
                json!({"template": "{{ steps.a.usage.completionTokens }}"}),
                "reports no usage",
            ),
            (json!({"template": "{{ steps.a.json.x }}"}), "no field `x`"),
            (
                json!({"template": "{{ steps.a.outputs[1] }}"}),
                "makes 1 output(s)",
            ),
            (json!({"template": "{{ steps.a }}"}), "name a step's result"),
            (json!({"template": "{{ steps }}"}), "name a step's result"),
            (
                json!({"template": "{{ steps.a.txet }}"}),
                "`txet` is not a result",
            ),
        ];
        for (with, want) in cases {
            let err = check(json!([
                {"id": "a", "title": "A", "tool": "json.render", "with": {"value": {"y": 1}}},
                {"id": "b", "title": "B", "tool": "text.render", "with": with},
                {"id": "c", "title": "C", "tool": "text.render", "with": {"template": "x"}}
            ]))
            .unwrap_err();
            assert!(err.contains(want) && err.contains("step `b`"), "{err}");
        }
    }

    #[test]
    fn an_http_steps_fields_need_its_output_schema() {
        let steps = |schema: Option<Value>| {
            let mut first =
                json!({"id": "h", "title": "H", "tool": "http", "with": {"endpoint": "e"}});
            if let Some(schema) = schema {
                first["outputSchema"] = schema;
            }
            json!([first, {"id": "t", "title": "T", "tool": "text.render",
                           "with": {"template": "{{ steps.h.json.label }}"}}])
        };
        let err = check(steps(None)).unwrap_err();
        assert!(err.contains("no `outputSchema`"), "{err}");
        check(steps(Some(
            json!({"type": "object", "properties": {"label": {"type": "string"}}}),
        )))
        .unwrap();
        let err = check(steps(Some(
            json!({"type": "object", "properties": {"name": {}}}),
        )))
        .unwrap_err();
        assert!(err.contains("no field `label`"), "{err}");
    }

    #[test]
    fn the_scope_holds_the_inputs_and_the_succeeded_steps_as_stored() {
        use crate::run::{NewOutput, OutputKind, RunChange};
        let mut run = crate::testing::queued_run();
        run.context = json!({"q": "why?"});
        let now = chrono::Utc::now();
        run.apply(RunChange::Start {
            at: now,
            deadline: now,
            lease_until: now,
        })
        .unwrap();
        let text = NewOutput {
            kind: OutputKind::Text,
            mime: "text/plain".into(),
            title: None,
            value: Some(json!("Because.")),
            file: None,
        };
        run.apply(RunChange::Step {
            index: 0,
            status: StepStatus::Succeeded,
            progress: 1.0,
            message: None,
            outputs: vec![text],
            at: now,
            metered: Some(crate::run::Metered {
                cost_pts: 2,
                usage: Some(crate::tool_kinds::Usage {
                    prompt_tokens: 5,
                    completion_tokens: 3,
                    estimated: false,
                }),
                usage_estimated: false,
            }),
            attempt: Some(1),
        })
        .unwrap();
        let none = Default::default();
        let scope = scope(&run, 1, &none);
        assert_eq!(scope["q"], "why?");
        assert_eq!(scope["steps"]["a"]["text"], "Because.");
        assert_eq!(scope["steps"]["a"]["usage"]["completionTokens"], 3);
        assert_eq!(scope["steps"]["a"]["outputs"][0]["kind"], "text");
        assert!(scope["steps"].get("b").is_none());
        // Step 0 sees nothing of itself.
        assert_eq!(super::scope(&run, 0, &none)["steps"], json!({}));
        assert!(texts_to_read(&run, 1).is_empty(), "the text is in the run");
    }

    #[test]
    fn a_text_stored_as_a_file_is_read_for_its_reference() {
        use crate::run::{FileBody, NewOutput, RunChange};
        let mut run = crate::testing::queued_run();
        let now = chrono::Utc::now();
        run.apply(RunChange::Start {
            at: now,
            deadline: now,
            lease_until: now,
        })
        .unwrap();
        // What the runner's offload makes of a text over the inline limit.
        let long = NewOutput {
            kind: OutputKind::File,
            mime: "text/plain; charset=utf-8".into(),
            title: None,
            value: None,
            file: Some(FileBody::Blob("runs/run_1/abc".into())),
        };
        run.apply(RunChange::Step {
            index: 0,
            status: StepStatus::Succeeded,
            progress: 1.0,
            message: None,
            outputs: vec![long],
            at: now,
            metered: None,
            attempt: None,
        })
        .unwrap();
        assert_eq!(texts_to_read(&run, 1), vec![0]);
        let files = [(0, "a very long answer".to_owned())].into_iter().collect();
        assert_eq!(
            scope(&run, 1, &files)["steps"]["a"]["text"],
            "a very long answer"
        );
    }
}
