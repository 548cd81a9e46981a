//! The tool configuration document (SPEC §7.4): the endpoints a deployer lets spells call, by
//! name. A spell names an endpoint, never a URL or a key; keys come from the environment.
//!
//! ```json
//! {"http": {"upscale": {"url": "https://models.example/upscale", "timeoutSecs": 60}},
//!  "llm":  {"local": {"baseUrl": "http://127.0.0.1:8080/v1", "model": "smollm2-135m",
//!                     "apiKeyEnv": "OPENAI_API_KEY", "ptsPer1kPrompt": 1,
//!                     "ptsPer1kCompletion": 4, "timeoutSecs": 120, "idleTimeoutSecs": 20}},
//!  "caFile": "/path/to/extra-ca.pem"}
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

use spellcast_domain::catalog::Catalog;
use spellcast_domain::tool_kinds::{str_param, ToolKind};

/// Every configured endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolsConfig {
    /// Endpoints of the `http` tool.
    #[serde(default)]
    pub http: BTreeMap<String, HttpEndpoint>,
    /// Chat models of the `llm.chat` tool.
    #[serde(default)]
    pub llm: BTreeMap<String, LlmEndpoint>,
    /// A PEM file of certificate authorities to trust besides the public ones.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// An endpoint of the `http` tool.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpEndpoint {
    /// Where steps naming it POST (checked by [`ToolsConfig::parse`]).
    pub url: String,
    /// How long one call may take.
    #[serde(default = "default_http_timeout")]
    pub timeout_secs: u64,
    /// The largest answer read.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
}

/// A chat model behind an OpenAI-compatible API.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LlmEndpoint {
    /// The API's base, such as `https://api.openai.com/v1` (`/chat/completions` is added;
    /// checked by [`ToolsConfig::parse`]).
    pub base_url: String,
    /// The model asked for.
    pub model: String,
    /// The environment variable holding the API key, if the endpoint needs one.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Points per 1,000 prompt tokens.
    #[serde(default)]
    pub pts_per_1k_prompt: u64,
    /// Points per 1,000 completion tokens.
    #[serde(default)]
    pub pts_per_1k_completion: u64,
    /// How long one whole answer may take.
    #[serde(default = "default_llm_timeout")]
    pub timeout_secs: u64,
    /// How long the stream may stay silent.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// The most bytes of stream read for one answer.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// At most one `stepDelta` per step per this many milliseconds.
    #[serde(default = "default_delta_ms")]
    pub delta_ms: u64,
}

fn default_http_timeout() -> u64 {
    30
}
fn default_llm_timeout() -> u64 {
    120
}
fn default_idle_timeout() -> u64 {
    20
}
fn default_max_bytes() -> usize {
    1 << 20
}
fn default_delta_ms() -> u64 {
    crate::deltas::DEFAULT_WINDOW.as_millis() as u64
}

/// Parses the shorthand `name=https://host/path,name2=...` (`--http-endpoints`,
/// `SPELLCAST_HTTP_ENDPOINTS`) into `http` endpoints with the default timeout and answer size.
pub fn parse_endpoints(spec: &str) -> Result<BTreeMap<String, HttpEndpoint>, String> {
    let mut map = BTreeMap::new();
    for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, raw) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}`: expected name=https://..."))?;
        check_url(raw).map_err(|e| format!("`{name}`: {e}"))?;
        map.insert(
            name.to_owned(),
            HttpEndpoint {
                url: raw.to_owned(),
                timeout_secs: default_http_timeout(),
                max_bytes: default_max_bytes(),
            },
        );
    }
    Ok(map)
}

/// Whether `url` may be called: `https`, or plain `http` to this machine (a model on the same
/// machine) — never plain text across a network.
pub fn check_url(url: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(url).map_err(|e| format!("`{url}`: {e}"))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err("plain http:// is allowed only to a loopback address".into()),
        other => Err(format!("`{other}://` is not https")),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

impl ToolsConfig {
    /// Parses and checks the document.
    pub fn parse(text: &str) -> Result<ToolsConfig, String> {
        let config: ToolsConfig =
            serde_json::from_str(text).map_err(|e| format!("tool configuration: {e}"))?;
        for (name, endpoint) in &config.http {
            check_url(&endpoint.url)
                .map_err(|e| format!("tool configuration: http `{name}`: {e}"))?;
        }
        for (name, endpoint) in &config.llm {
            check_url(&endpoint.base_url)
                .map_err(|e| format!("tool configuration: llm `{name}`: {e}"))?;
            if endpoint.model.trim().is_empty() {
                return Err(format!(
                    "tool configuration: llm `{name}`: `model` is empty"
                ));
            }
        }
        Ok(config)
    }

    /// The configuration of a process: the JSON document `json` (if any), with the `http`
    /// shorthand `http_shorthand` (if any) added.
    pub fn from_parts(json: Option<&str>, http_shorthand: Option<&str>) -> Result<Self, String> {
        let mut config = match json.map(str::trim).filter(|j| !j.is_empty()) {
            Some(json) => ToolsConfig::parse(json)?,
            None => ToolsConfig::default(),
        };
        if let Some(spec) = http_shorthand {
            config.http.extend(parse_endpoints(spec)?);
        }
        Ok(config)
    }

    /// Whether the endpoint a step of `kind` names is configured (steps of other tools need
    /// none).
    pub fn has_endpoint(&self, kind: ToolKind, name: &str) -> bool {
        match kind {
            ToolKind::Http => self.http.contains_key(name),
            ToolKind::LlmChat => self.llm.contains_key(name),
            _ => true,
        }
    }

    /// The catalog without the spells whose steps name an endpoint that is not configured, and
    /// one warning for each spell left out (SPEC §7.4: the other spells still serve).
    pub fn available(&self, catalog: Catalog) -> (Catalog, Vec<String>) {
        let mut warnings = Vec::new();
        let kept = catalog.retain(|spell| {
            let missing = spell.def.steps.iter().find_map(|step| {
                let kind = ToolKind::parse(&step.tool)?;
                let name = str_param(&step.with, "endpoint")?;
                (!self.has_endpoint(kind, name)).then_some((step, kind, name))
            });
            match missing {
                None => true,
                Some((step, kind, name)) => {
                    warnings.push(format!(
                        "spell `{}` is left out: its step `{}` names the {} endpoint `{name}`, \
                         which is not configured",
                        spell.slug,
                        step.id,
                        kind.name()
                    ));
                    false
                }
            }
        });
        (kept, warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn endpoints_are_https_or_loopback() {
        let ok = ToolsConfig::parse(
            r#"{"http": {"up": {"url": "https://models.example/up"}},
                "llm": {"local": {"baseUrl": "http://127.0.0.1:8080/v1", "model": "m"},
                        "six": {"baseUrl": "http://[::1]:8080/v1", "model": "m"},
                        "name": {"baseUrl": "http://localhost:8080/v1", "model": "m"}}}"#,
        )
        .unwrap();
        assert_eq!(ok.llm["local"].idle_timeout_secs, 20);
        assert_eq!(ok.llm["local"].delta_ms, 100);
        for bad in [
            r#"{"llm": {"x": {"baseUrl": "http://10.0.0.5:8080/v1", "model": "m"}}}"#,
            r#"{"llm": {"x": {"baseUrl": "http://models.example/v1", "model": "m"}}}"#,
            r#"{"http": {"x": {"url": "ftp://models.example/"}}}"#,
            r#"{"llm": {"x": {"baseUrl": "https://a.example/v1", "model": " "}}}"#,
            r#"{"llm": {"x": {"baseUrl": "https://a.example/v1", "model": "m", "apiKey": "sk-1"}}}"#,
            r#"{"llms": {}}"#,
        ] {
            assert!(ToolsConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_spell_naming_a_missing_endpoint_is_left_out_with_one_warning() {
        let mut catalog = spellcast_domain::testing::catalog_of(json!([
            {"id": "a", "title": "A", "tool": "llm.chat",
             "with": {"endpoint": "gone", "prompt": "hi"}},
            {"id": "b", "title": "B", "tool": "llm.chat",
             "with": {"endpoint": "gone", "prompt": "hi"}}
        ]));
        let mut plain = spellcast_domain::testing::def(json!({"type": "object"}));
        plain.slug = "plain".into();
        catalog.insert(spellcast_domain::catalog::Spell::check(plain).unwrap());
        let (kept, warnings) = ToolsConfig::default().available(catalog);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("`t`") && warnings[0].contains("`gone`"));
        let slugs: Vec<_> = kept.iter().map(|s| s.slug.to_string()).collect();
        assert_eq!(slugs, ["plain"]);
    }
}
