//! `http`: POSTs the step's inputs to a deployer-configured HTTPS endpoint (for example a model
//! server), with a timeout and a response size limit. Off unless endpoints are configured, and a
//! spell can only name an endpoint, never a URL, so the allow-list is the configuration itself.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use spellcast_core::tools::{str_param, Progress, Tool, ToolCall, ToolError, ToolKind, ToolResult};

use crate::json_output;

/// The allow-list: endpoint name → HTTPS URL.
#[derive(Debug, Clone, Default)]
pub struct HttpEndpoints(pub BTreeMap<String, url::Url>);

impl HttpEndpoints {
    /// Parses `name=https://host/path,name2=...`; every URL must be HTTPS.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, raw) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}`: expected name=https://..."))?;
            let url = url::Url::parse(raw).map_err(|e| format!("`{name}`: {e}"))?;
            if url.scheme() != "https" {
                return Err(format!("`{name}`: only https:// endpoints are allowed"));
            }
            map.insert(name.to_owned(), url);
        }
        Ok(HttpEndpoints(map))
    }
}

/// The `http` tool.
pub struct HttpTool {
    endpoints: HttpEndpoints,
    client: reqwest::Client,
    max_bytes: usize,
}

impl HttpTool {
    /// The timeout of one call unless configured otherwise.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// The largest response unless configured otherwise.
    pub const DEFAULT_MAX_BYTES: usize = 1 << 20;

    /// A tool calling `endpoints`, giving up after `timeout` or past `max_bytes` of response.
    pub fn new(endpoints: HttpEndpoints, timeout: Duration, max_bytes: usize) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true)
            .build()
            .unwrap_or_default();
        HttpTool {
            endpoints,
            client,
            max_bytes,
        }
    }
}

#[async_trait]
impl Tool for HttpTool {
    fn check(&self, params: &Value) -> Result<(), String> {
        let name = str_param(params, "endpoint").unwrap_or_default();
        if !self.endpoints.0.contains_key(name) {
            return Err(format!("endpoint `{name}` is not configured"));
        }
        Ok(())
    }

    async fn call(
        &self,
        call: ToolCall<'_>,
        progress: &dyn Progress,
    ) -> Result<ToolResult, ToolError> {
        let name = str_param(call.params, "endpoint").unwrap_or_default();
        let url = self
            .endpoints
            .0
            .get(name)
            .ok_or_else(|| ToolError::Failed(format!("endpoint `{name}` is not configured")))?;
        progress.report(0.1, Some(format!("Calling {name}"))).await;
        let mut response = self
            .client
            .post(url.clone())
            .json(&json!({"runId": call.run_id, "inputs": call.context, "params": call.params}))
            .send()
            .await
            .map_err(|e| failed(name, e))?;
        if !response.status().is_success() {
            return Err(ToolError::Failed(format!(
                "{name} answered {}",
                response.status()
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| failed(name, e))? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(ToolError::Failed(format!(
                    "{name}: response over {} bytes",
                    self.max_bytes
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| ToolError::Failed(format!("{name}: not JSON: {e}")))?;
        progress.report(1.0, None).await;
        Ok(ToolResult {
            outputs: vec![json_output(&call, value)?],
            cost_pts: ToolKind::Http.nominal_cost(call.params),
        })
    }
}

/// A transport error as the step's failure, named by the endpoint. reqwest's message carries the
/// URL, whose query string may hold a key: it is left out (the message reaches the run's events).
fn failed(name: &str, e: reqwest::Error) -> ToolError {
    ToolError::Failed(format!("{name}: {}", e.without_url()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_endpoints_are_accepted() {
        let ok = HttpEndpoints::parse("model=https://models.example/v1/run").unwrap();
        assert!(ok.0.contains_key("model"));
        assert!(HttpEndpoints::parse("model=http://models.example").is_err());
        assert!(HttpEndpoints::parse("model").is_err());
        assert!(HttpEndpoints::parse("").unwrap().0.is_empty());
    }

    #[tokio::test]
    async fn a_failure_never_shows_the_endpoint_url() {
        // Nothing listens on port 9 of the loopback: the connection is refused at once.
        let tool = HttpTool::new(
            HttpEndpoints::parse("model=https://127.0.0.1:9/run?api_key=SECRET-KEY").unwrap(),
            Duration::from_secs(5),
            1024,
        );
        let params = serde_json::json!({"endpoint": "model"});
        let call = ToolCall {
            params: &params,
            context: &serde_json::json!({}),
            run_id: &"r".into(),
        };
        let Err(ToolError::Failed(message)) =
            tool.call(call, &crate::testing::Recorded::default()).await
        else {
            panic!("a refused connection fails the step")
        };
        assert!(message.starts_with("model: "), "{message}");
        assert!(
            !message.contains("SECRET") && !message.contains("127.0.0.1"),
            "{message}"
        );
    }

    #[test]
    fn a_step_can_only_name_a_configured_endpoint() {
        let tool = HttpTool::new(
            HttpEndpoints::parse("model=https://models.example").unwrap(),
            Duration::from_secs(1),
            1024,
        );
        assert!(tool
            .check(&serde_json::json!({"endpoint": "model"}))
            .is_ok());
        assert!(tool
            .check(&serde_json::json!({"endpoint": "other"}))
            .is_err());
        assert!(tool
            .check(&serde_json::json!({"url": "https://evil.example"}))
            .is_err());
    }
}
