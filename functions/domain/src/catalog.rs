//! The spell catalog: spells as JSON files under `infra/spells/`, checked when they load so a
//! broken file is a clear start-up error naming the file, never a failure at cast time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::errors::FieldError;
use crate::ids::Slug;
use crate::tool_kinds::{str_param, ToolKind};

/// The longest a run of any spell may take: a day.
pub const MAX_TIMEOUT_SECS: u64 = 24 * 60 * 60;

/// The name under which templates read the results of earlier steps (`steps.<id>.text`).
pub const STEPS: &str = "steps";

/// One step of a spell: a call of a tool.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepDef {
    /// Unique within the spell.
    pub id: String,
    /// Shown to people.
    pub title: String,
    /// The tool's name.
    pub tool: String,
    /// The tool's parameters; strings may be templates over the inputs and the results of
    /// earlier steps (`{{ steps.answer.text }}`, SPEC §7.1).
    #[serde(default = "empty_object")]
    pub with: Value,
    /// How often a transient failure is tried again (SPEC §8.3); the tool's default otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryDef>,
    /// The JSON Schema of an `http` step's JSON output: only then can later steps reference
    /// its fields (`steps.<id>.json.label`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
}

/// A step's retry policy: `{"attempts": 3, "backoffSecs": 2}`, waits doubling and jittered.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryDef {
    /// Attempts in all, the first included (1..=10).
    pub attempts: u32,
    /// The first wait, in seconds (0..=60); each next one doubles.
    #[serde(default = "default_backoff")]
    pub backoff_secs: f64,
}

fn default_backoff() -> f64 {
    1.0
}

impl StepDef {
    /// The tool it names (checked when the catalog loads).
    pub fn kind(&self) -> Option<ToolKind> {
        ToolKind::parse(&self.tool)
    }

    /// The file input it reads, for a tool that reads one (`file.show`'s `input`).
    pub fn file_input(&self) -> Option<&str> {
        match self.kind() {
            Some(ToolKind::FileShow) => str_param(&self.with, "input"),
            _ => None,
        }
    }

    /// How long the step waits, if it is a wait of at least `durable_after` (a `time.delay`):
    /// such a wait is durable (SPEC §8.2) — no runner stays to wait it out.
    pub fn durable_wait(&self, durable_after: chrono::Duration) -> Option<chrono::Duration> {
        if self.kind() != Some(ToolKind::TimeDelay) {
            return None;
        }
        let seconds = self.with.get("seconds").and_then(Value::as_f64)?;
        let wait = chrono::Duration::milliseconds((seconds * 1000.0) as i64);
        (wait >= durable_after).then_some(wait)
    }

    /// Whether a call cut off with its runner may be made again (SPEC §8.1).
    pub fn repeatable(&self) -> bool {
        self.kind().is_some_and(|k| k.repeatable(&self.with))
    }

    /// Its retry policy: as written, or the tool's default.
    pub fn retry(&self) -> RetryDef {
        self.retry.unwrap_or_else(|| RetryDef {
            attempts: self.kind().map_or(1, ToolKind::default_attempts),
            backoff_secs: default_backoff(),
        })
    }
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// A picture of its own for a spell's shared link (without one, the server draws a card).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OgSpec {
    /// The share image: a path under the site (`/static/og/x.png`) or an absolute URL.
    pub image: String,
    /// Its width in pixels.
    pub image_width: u32,
    /// Its height in pixels.
    pub image_height: u32,
    /// What it shows, for people who cannot see it.
    pub image_alt: String,
}

/// A spell as written in the catalog.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpellDef {
    /// Its slug (the file name without `.json` must match it).
    pub slug: String,
    /// Its version; a quote names the version it priced.
    pub version: u32,
    /// Its name.
    pub title: String,
    /// One line.
    pub summary: String,
    /// A paragraph.
    pub description: String,
    /// The JSON Schema (2020-12) of its inputs.
    pub inputs: Value,
    /// Its steps, in order.
    pub steps: Vec<StepDef>,
    /// How long a run may take before it is presumed stuck.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Its own share picture; without one the server draws a card (`/spells/{slug}/og.png`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub og: Option<OgSpec>,
}

fn default_timeout() -> u64 {
    120
}

/// A checked spell. Its input validator is compiled on first use (only the cast needs it, so
/// no other function pays for it at start); [`Catalog::load`] compiles every one up front.
pub struct Spell {
    /// The definition.
    pub def: SpellDef,
    /// Its slug.
    pub slug: Slug,
    /// The file it was read from (or compiled in from), for errors that name it.
    pub file: PathBuf,
    /// Its file inputs (SPEC §7.3).
    pub files: Vec<crate::uploads::FileInput>,
    validator: OnceLock<Result<jsonschema::Validator, String>>,
}

impl std::fmt::Debug for Spell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spell").field("slug", &self.slug).finish()
    }
}

impl Spell {
    /// Checks a definition: slug, title, unique steps naming known tools with sane parameters,
    /// and an input schema of `type: object` (compiled by [`Spell::schema`]).
    pub fn check(def: SpellDef) -> Result<Spell, String> {
        let slug = Slug::parse(&def.slug).ok_or_else(|| format!("invalid slug `{}`", def.slug))?;
        if def.steps.is_empty() {
            return Err("a spell needs at least one step".into());
        }
        if def.title.trim().is_empty() {
            return Err("the title is empty".into());
        }
        // Runs outlive a runner's invocation (SPEC §8.2), up to a day.
        if !(1..=MAX_TIMEOUT_SECS).contains(&def.timeout_secs) {
            return Err(format!(
                "`timeoutSecs` must be from 1 to {MAX_TIMEOUT_SECS} (24 hours)"
            ));
        }
        let mut ids = std::collections::BTreeSet::new();
        for step in &def.steps {
            if !ids.insert(step.id.as_str()) {
                return Err(format!("step id `{}` is used twice", step.id));
            }
            let kind = ToolKind::parse(&step.tool)
                .ok_or_else(|| format!("step `{}`: unknown tool `{}`", step.id, step.tool))?;
            kind.check(&step.with)
                .map_err(|e| format!("step `{}` ({}): {e}", step.id, step.tool))?;
            if let Some(retry) = step.retry {
                if !(1..=10).contains(&retry.attempts)
                    || !(0.0..=60.0).contains(&retry.backoff_secs)
                {
                    return Err(format!(
                        "step `{}`: `retry` takes 1 to 10 attempts and a backoff of 0 to 60 s",
                        step.id
                    ));
                }
            }
            if step.output_schema.is_some() && kind != ToolKind::Http {
                return Err(format!(
                    "step `{}`: only an http step declares an `outputSchema` ({} says what it makes)",
                    step.id, step.tool
                ));
            }
        }
        if def.inputs.get("type").and_then(Value::as_str) != Some("object") {
            return Err("`inputs` must be a JSON Schema of `type: object`".into());
        }
        if def
            .inputs
            .get("properties")
            .and_then(|p| p.get(STEPS))
            .is_some()
        {
            return Err(
                "an input cannot be named `steps`: templates read earlier steps' results there"
                    .into(),
            );
        }
        let files = crate::uploads::FileInput::of_schema(&def.inputs)?;
        for step in &def.steps {
            if let Some(input) = step.file_input() {
                if !files.iter().any(|f| f.name == input) {
                    return Err(format!(
                        "step `{}` ({}): `input` must name a file input ({}), not `{input}`",
                        step.id,
                        step.tool,
                        crate::uploads::UPLOAD_FORMAT
                    ));
                }
            }
        }
        Ok(Spell {
            slug,
            file: PathBuf::from(format!("{}.json", def.slug)),
            files,
            def,
            validator: OnceLock::new(),
        })
    }

    /// The compiled input schema (compiled once, on first use).
    pub fn schema(&self) -> Result<&jsonschema::Validator, String> {
        self.validator
            .get_or_init(|| {
                jsonschema::draft202012::new(&self.def.inputs)
                    .map_err(|e| format!("`inputs` is not a valid JSON Schema: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The quote of one step before any call of it was measured.
    pub fn nominal_cost(step: &StepDef) -> i64 {
        ToolKind::parse(&step.tool).map_or(1, |kind| kind.nominal_cost(&step.with))
    }

    /// Every violation of the input schema, pointed at `/context/...`. A schema that does not
    /// compile (which [`Catalog::load`] and the compiled catalog's test rule out) refuses all.
    pub fn validate_context(&self, context: &Value) -> Vec<FieldError> {
        let validator = match self.schema() {
            Ok(v) => v,
            Err(message) => {
                return vec![FieldError {
                    pointer: "/context".into(),
                    message,
                }]
            }
        };
        validator
            .iter_errors(context)
            .map(|error| {
                let mut pointer = format!("/context{}", error.instance_path());
                // A missing property is reported on its parent; point at the property itself.
                if let jsonschema::error::ValidationErrorKind::Required { property } = error.kind()
                {
                    if let Some(name) = property.as_str() {
                        pointer.push('/');
                        pointer.push_str(&name.replace('~', "~0").replace('/', "~1"));
                    }
                }
                FieldError {
                    pointer,
                    message: error.to_string(),
                }
            })
            .collect()
    }

    /// When a run of this spell is presumed stuck, counted from its start.
    pub fn timeout(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.def.timeout_secs as i64)
    }

    /// Whether each step (by index) may be executed again after its runner was lost.
    pub fn repeatable_steps(&self) -> Vec<bool> {
        self.def.steps.iter().map(StepDef::repeatable).collect()
    }
}

/// A catalog that failed to load, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("spell catalog: {file}: {reason}")]
pub struct CatalogError {
    /// The file (or directory) at fault.
    pub file: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// Every spell by slug.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    spells: BTreeMap<String, Arc<Spell>>,
}

impl Catalog {
    /// Compiles every input schema now and checks every `outputSchema` is one, naming the
    /// spell at fault. (Not part of [`Spell::check`]: the JSON Schema code would then be linked
    /// into every Lambda, 2.4 MB each, where only the cast validates inputs.)
    pub fn compile_schemas(&self) -> Result<(), CatalogError> {
        for spell in self.iter() {
            let fail = |reason| CatalogError {
                file: spell.file.clone(),
                reason,
            };
            spell.schema().map_err(fail)?;
            for step in &spell.def.steps {
                if let Some(schema) = &step.output_schema {
                    jsonschema::draft202012::meta::validate(schema).map_err(|e| {
                        fail(format!(
                            "step `{}`: `outputSchema` is not a JSON Schema: {e}",
                            step.id
                        ))
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Checks spells given as `(file name, JSON text)` pairs: files read at start, or compiled
    /// into a Lambda's binary. Each file's stem must be its spell's slug. Input schemas are
    /// compiled on first use (see [`Catalog::compile_schemas`]).
    pub fn from_sources<'a>(
        sources: impl IntoIterator<Item = (&'a Path, &'a str)>,
    ) -> Result<Catalog, CatalogError> {
        let fail = |file: &Path, reason: String| CatalogError {
            file: file.to_owned(),
            reason,
        };
        let mut catalog = Catalog::default();
        for (file, text) in sources {
            let def: SpellDef =
                serde_json::from_str(text).map_err(|e| fail(file, e.to_string()))?;
            let stem = file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            if stem != def.slug {
                return Err(fail(
                    file,
                    format!("slug `{}` does not match the file name", def.slug),
                ));
            }
            let mut spell = Spell::check(def).map_err(|e| fail(file, e))?;
            spell.file = file.to_owned();
            catalog.insert(spell);
        }
        Ok(catalog)
    }

    /// Adds (or replaces) a checked spell.
    pub fn insert(&mut self, spell: Spell) {
        self.spells.insert(spell.slug.to_string(), Arc::new(spell));
    }

    /// The catalog of the spells `keep` says yes to.
    pub fn retain(mut self, mut keep: impl FnMut(&Spell) -> bool) -> Catalog {
        self.spells.retain(|_, spell| keep(spell));
        self
    }

    /// A spell by slug.
    pub fn get(&self, slug: &Slug) -> Option<Arc<Spell>> {
        self.spells.get(slug.as_str()).cloned()
    }

    /// Every spell.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Spell>> {
        self.spells.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::def;
    use serde_json::json;

    #[test]
    fn context_errors_point_into_the_request_body() {
        let spell = Spell::check(def(json!({
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "maxLength": 3}, "n": {"type": "integer"}},
            "additionalProperties": false
        })))
        .unwrap();
        assert!(spell.validate_context(&json!({"name": "Ada"})).is_empty());
        let pointers: Vec<String> = spell
            .validate_context(&json!({"n": "x"}))
            .into_iter()
            .map(|e| e.pointer)
            .collect();
        assert!(
            pointers.contains(&"/context/name".to_owned()),
            "{pointers:?}"
        );
        assert!(pointers.contains(&"/context/n".to_owned()), "{pointers:?}");
        let long = spell.validate_context(&json!({"name": "Grace"}));
        assert_eq!(long.len(), 1);
        assert_eq!(long[0].pointer, "/context/name");
    }

    #[test]
    fn a_step_with_an_unknown_tool_is_refused() {
        let mut d = def(json!({"type": "object"}));
        d.steps[0].tool = "nope".into();
        let err = Spell::check(d).unwrap_err();
        assert!(err.contains("unknown tool"), "{err}");
    }

    #[test]
    fn a_spell_may_take_up_to_a_day() {
        let mut d = def(json!({"type": "object"}));
        d.timeout_secs = MAX_TIMEOUT_SECS;
        assert!(Spell::check(d.clone()).is_ok());
        for wrong in [0, MAX_TIMEOUT_SECS + 1] {
            d.timeout_secs = wrong;
            let err = Spell::check(d.clone()).unwrap_err();
            assert!(err.contains("timeoutSecs"), "{err}");
        }
    }
}
