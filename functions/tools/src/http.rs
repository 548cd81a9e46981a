//! `http`: POSTs the step's inputs to a deployer-configured HTTPS endpoint (for example a model
//! server), with a timeout and a response size limit. Off unless endpoints are configured, and a
//! spell can only name an endpoint, never a URL, so the allow-list is the configuration itself.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

#[cfg(test)]
use spellcast_application::tool_config::parse_endpoints;
use spellcast_application::tool_config::{check_url, HttpEndpoint};
use spellcast_application::tools::{CallBack, Progress, Tool, ToolCall, ToolError, ToolResult};
use spellcast_domain::catalog::STEPS;
use spellcast_domain::tool_kinds::{str_param, ToolKind};

use crate::json_output;

/// One configured endpoint.
struct Endpoint {
    url: url::Url,
    timeout: Duration,
    max_bytes: usize,
}

/// The `http` tool.
pub struct HttpTool {
    endpoints: BTreeMap<String, Endpoint>,
    client: reqwest::Client,
}

impl HttpTool {
    /// A tool calling `endpoints` through `client`.
    pub fn new(
        endpoints: &BTreeMap<String, HttpEndpoint>,
        client: reqwest::Client,
    ) -> Result<Self, String> {
        let mut checked = BTreeMap::new();
        for (name, endpoint) in endpoints {
            let url = check_url(&endpoint.url).map_err(|e| format!("http `{name}`: {e}"))?;
            checked.insert(
                name.clone(),
                Endpoint {
                    url,
                    timeout: Duration::from_secs(endpoint.timeout_secs.max(1)),
                    max_bytes: endpoint.max_bytes,
                },
            );
        }
        Ok(HttpTool {
            endpoints: checked,
            client,
        })
    }
}

#[async_trait]
impl Tool for HttpTool {
    fn check(&self, params: &Value) -> Result<(), String> {
        let name = str_param(params, "endpoint").unwrap_or_default();
        if !self.endpoints.contains_key(name) {
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
        let endpoint = self
            .endpoints
            .get(name)
            .ok_or_else(|| ToolError::Failed(format!("endpoint `{name}` is not configured")))?;
        let polled = call
            .call_back
            .and_then(|state| state.get(POLL))
            .and_then(Value::as_str)
            .map(|url| same_origin(name, endpoint, url))
            .transpose()?;
        let doing = if polled.is_some() {
            "Checking on"
        } else {
            "Calling"
        };
        progress.report(0.1, Some(format!("{doing} {name}"))).await;
        let request = match &polled {
            // Called back: how is the job the endpoint accepted getting on?
            Some(url) => self.client.get(url.clone()),
            None => {
                // The inputs as cast, and the step's parameters with their templates
                // (references to earlier steps included) rendered.
                let mut inputs = call.context.clone();
                if let Some(map) = inputs.as_object_mut() {
                    map.remove(STEPS);
                }
                let params = crate::text::render_strings(call.params, call.context)?;
                let body = json!({"runId": call.run_id, "inputs": inputs, "params": params});
                self.client.post(endpoint.url.clone()).json(&body)
            }
        };
        let mut response = request
            .timeout(endpoint.timeout)
            .send()
            .await
            .map_err(|e| failed(name, e))?;
        let status = response.status();
        if status == reqwest::StatusCode::ACCEPTED {
            return accepted(name, endpoint, &response, polled);
        }
        if !status.is_success() {
            let message = format!("{name} answered {status}");
            return Err(if status.as_u16() == 429 || status.is_server_error() {
                ToolError::transient(message)
            } else {
                ToolError::Failed(message)
            });
        }
        let max_bytes = endpoint.max_bytes;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| failed(name, e))? {
            if body.len() + chunk.len() > max_bytes {
                return Err(ToolError::Failed(format!(
                    "{name}: response over {max_bytes} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| ToolError::Failed(format!("{name}: not JSON: {e}")))?;
        progress.report(1.0, None).await;
        Ok(ToolResult::done(
            vec![json_output(&call, value)?],
            ToolKind::Http.nominal_cost(call.params),
        ))
    }
}

/// The key of the status URL in the state an `http` step leaves when its endpoint accepted a
/// job to finish later.
const POLL: &str = "poll";
/// How long to wait before polling when a `202 Accepted` names no `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(2);
/// The longest `Retry-After` taken (a day, as the longest durable wait).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// A `202 Accepted` (the asynchronous request-reply pattern): the endpoint took the job and
/// says where its status is (`Location`, else where it was polled) and when to look
/// (`Retry-After`, in seconds). The step is called back then, to poll that URL.
fn accepted(
    name: &str,
    endpoint: &Endpoint,
    response: &reqwest::Response,
    polled: Option<url::Url>,
) -> Result<ToolResult, ToolError> {
    let header = |h: reqwest::header::HeaderName| {
        response
            .headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let poll = match header(reqwest::header::LOCATION) {
        Some(location) => {
            let url = response.url().join(location).map_err(|_| {
                ToolError::Failed(format!("{name} answered 202 with a bad Location"))
            })?;
            same_origin(name, endpoint, url.as_str())?
        }
        None => polled.ok_or_else(|| {
            ToolError::Failed(format!("{name} answered 202 with no Location to poll"))
        })?,
    };
    let after = header(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(DEFAULT_RETRY_AFTER, Duration::from_secs)
        .min(MAX_RETRY_AFTER);
    Ok(ToolResult {
        outputs: vec![],
        // The step's price is paid once, by its result.
        cost_pts: 0,
        usage: None,
        call_back: Some(CallBack {
            after,
            state: json!({ POLL: poll.as_str() }),
        }),
    })
}

/// `url` if it is on the endpoint's origin (scheme, host and port): an endpoint may send its
/// caller to poll itself, nowhere else (not another host, not the cloud's metadata service).
fn same_origin(name: &str, endpoint: &Endpoint, url: &str) -> Result<url::Url, ToolError> {
    match url::Url::parse(url) {
        Ok(url) if url.origin() == endpoint.url.origin() => Ok(url),
        _ => Err(ToolError::Failed(format!(
            "{name}: the status URL it gave is not on its own origin"
        ))),
    }
}

/// A transport error as the step's failure, named by the endpoint. reqwest's message carries the
/// URL, whose query string may hold a key: it is left out (the message reaches the run's events).
fn failed(name: &str, e: reqwest::Error) -> ToolError {
    ToolError::transient(format!("{name}: {}", e.without_url()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(spec: &str) -> HttpTool {
        HttpTool::new(&parse_endpoints(spec).unwrap(), reqwest::Client::new()).unwrap()
    }

    #[test]
    fn only_https_or_loopback_endpoints_are_accepted() {
        let ok = parse_endpoints("model=https://models.example/v1/run").unwrap();
        assert!(ok.contains_key("model"));
        assert!(parse_endpoints("model=http://127.0.0.1:8080/run").is_ok());
        assert!(parse_endpoints("model=http://models.example").is_err());
        assert!(parse_endpoints("model").is_err());
        assert!(parse_endpoints("").unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_failure_never_shows_the_endpoint_url() {
        // Nothing listens on port 9 of the loopback: the connection is refused at once.
        let tool = tool("model=https://127.0.0.1:9/run?api_key=SECRET-KEY");
        let params = serde_json::json!({"endpoint": "model"});
        let call = ToolCall {
            params: &params,
            context: &serde_json::json!({}),
            run_id: &"r".into(),
            uploads: &[],
            blobs: &crate::testing::Files::default(),
            call_back: None,
        };
        let Err(error) = tool.call(call, &crate::testing::Recorded::default()).await else {
            panic!("a refused connection fails the attempt")
        };
        assert!(
            error.is_transient(),
            "a refused connection may be tried again"
        );
        let message = error.to_string();
        assert!(message.starts_with("model: "), "{message}");
        assert!(
            !message.contains("SECRET") && !message.contains("127.0.0.1"),
            "{message}"
        );
    }

    #[test]
    fn a_step_can_only_name_a_configured_endpoint() {
        let tool = tool("model=https://models.example");
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
