//! `llm.chat`: asks a configured OpenAI-compatible chat model (OpenAI, vLLM, llama.cpp's server,
//! Ollama, ...) and streams its answer into the run as it is generated (SPEC §7.2).
//!
//! The call is `POST {baseUrl}/chat/completions` with `stream: true` and
//! `stream_options.include_usage`, and `max_tokens` always set so a step's cost is bounded. The
//! answer's text reaches watchers as coalesced `stepDelta`s; the cost is metered from the usage
//! chunk, or, when the stream ended without one, from the text by the counting rule of
//! [`estimate_tokens`].

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{json, Value};
use sse_stream::SseByteStream;
use tokio::time::Instant;

use spellcast_application::deltas::Coalescer;
use spellcast_application::tool_config::{check_url, LlmEndpoint};
use spellcast_application::tools::{Progress, Tool, ToolCall, ToolError, ToolResult};
use spellcast_domain::run::{NewOutput, OutputKind};
use spellcast_domain::tool_kinds::{max_tokens, str_param, Usage};

use crate::{check_template, render_template, title};

/// One configured model.
struct Model {
    config: LlmEndpoint,
    url: url::Url,
    api_key: Option<String>,
}

/// The `llm.chat` tool over its configured endpoints.
pub struct LlmTool {
    models: BTreeMap<String, Model>,
    client: reqwest::Client,
}

impl LlmTool {
    /// A tool calling `endpoints` through `client`; each endpoint's key is read from the
    /// environment variable it names, once.
    pub fn new(
        endpoints: &BTreeMap<String, LlmEndpoint>,
        client: reqwest::Client,
    ) -> Result<Self, String> {
        let mut models = BTreeMap::new();
        for (name, config) in endpoints {
            let base = check_url(&config.base_url).map_err(|e| format!("llm `{name}`: {e}"))?;
            let url = url::Url::parse(&format!(
                "{}/chat/completions",
                base.as_str().trim_end_matches('/')
            ))
            .map_err(|e| format!("llm `{name}`: {e}"))?;
            let api_key = match &config.api_key_env {
                None => None,
                Some(var) => Some(std::env::var(var).map_err(|_| {
                    format!("llm `{name}`: the environment variable {var} (its key) is not set")
                })?),
            };
            models.insert(
                name.clone(),
                Model {
                    config: config.clone(),
                    url,
                    api_key,
                },
            );
        }
        Ok(LlmTool { models, client })
    }
}

/// The counting rule for a stream that ended without a usage chunk: the larger of the number
/// of text pieces streamed (a server sends at least one token per piece) and a quarter of the
/// characters, rounded up.
pub fn estimate_tokens(text: &str, pieces: u64) -> u64 {
    let chars = text.chars().count() as u64;
    pieces.max(chars.div_ceil(4))
}

/// `ceil(prompt × perPrompt / 1000 + completion × perCompletion / 1000)`, in integers.
pub fn metered_cost(usage: &Usage, config: &LlmEndpoint) -> i64 {
    // u64 × u64 fits in u128; only the sum of two such products can overflow.
    let thousandths = (u128::from(usage.prompt_tokens) * u128::from(config.pts_per_1k_prompt))
        .saturating_add(
            u128::from(usage.completion_tokens) * u128::from(config.pts_per_1k_completion),
        );
    i64::try_from(thousandths.div_ceil(1000)).unwrap_or(i64::MAX)
}

/// What a stream gave so far.
#[derive(Default)]
struct Answer {
    /// The endpoint took the request (a 2xx): from then on the attempt consumed tokens.
    opened: bool,
    text: String,
    pieces: u64,
    usage: Option<Usage>,
    done: bool,
    finished: bool,
}

impl Answer {
    /// The usage as reported, or as counted (`estimated`).
    fn usage(&self, prompt: &str) -> Usage {
        self.usage.unwrap_or(Usage {
            prompt_tokens: estimate_tokens(prompt, 0),
            completion_tokens: estimate_tokens(&self.text, self.pieces),
            estimated: true,
        })
    }

    /// Reads one `data:` of the stream.
    fn take(&mut self, data: &str) -> Result<Option<String>, String> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(None);
        }
        let chunk: Value =
            serde_json::from_str(data).map_err(|e| format!("a stream chunk is not JSON: {e}"))?;
        if let Some(error) = chunk.get("error") {
            return Err(error_message(error));
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            let count = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
            self.usage = Some(Usage {
                prompt_tokens: count("prompt_tokens"),
                completion_tokens: count("completion_tokens"),
                estimated: false,
            });
        }
        let choice = chunk.get("choices").and_then(|c| c.get(0));
        if choice
            .and_then(|c| c.get("finish_reason"))
            .is_some_and(|r| !r.is_null())
        {
            self.finished = true;
        }
        let piece = choice
            .and_then(|c| c.get("delta"))
            .and_then(|d| d.get("content"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty());
        Ok(piece.map(|t| {
            self.text.push_str(t);
            self.pieces += 1;
            t.to_owned()
        }))
    }
}

/// An endpoint's error object as one line (`error.message`), cut short.
fn error_message(error: &Value) -> String {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| error.to_string());
    message.chars().take(300).collect()
}

#[async_trait]
impl Tool for LlmTool {
    fn check(&self, params: &Value) -> Result<(), String> {
        let name = str_param(params, "endpoint").unwrap_or_default();
        if !self.models.contains_key(name) {
            return Err(format!("endpoint `{name}` is not configured"));
        }
        for key in ["system", "prompt", "title"] {
            if let Some(template) = str_param(params, key) {
                check_template(template)?;
            }
        }
        Ok(())
    }

    async fn call(
        &self,
        call: ToolCall<'_>,
        progress: &dyn Progress,
    ) -> Result<ToolResult, ToolError> {
        let name = str_param(call.params, "endpoint").unwrap_or_default();
        let model = self
            .models
            .get(name)
            .ok_or_else(|| ToolError::Failed(format!("endpoint `{name}` is not configured")))?;
        let prompt = render_template(
            str_param(call.params, "prompt").unwrap_or_default(),
            call.context,
        )?;
        let system = str_param(call.params, "system")
            .map(|s| render_template(s, call.context))
            .transpose()?;
        let mut messages = Vec::new();
        if let Some(system) = &system {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": prompt}));
        let mut body = json!({
            "model": model.config.model,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": max_tokens(call.params),
        });
        if let Some(t) = call.params.get("temperature") {
            body["temperature"] = t.clone();
        }
        let prompt_text = format!("{}{prompt}", system.unwrap_or_default());
        let total = Duration::from_secs(model.config.timeout_secs.max(1));
        let mut answer = Answer::default();
        let outcome = tokio::time::timeout(
            total,
            self.stream(name, model, &body, &mut answer, progress),
        )
        .await;
        let usage = answer.usage(&prompt_text);
        // A refused request consumed nothing; one the endpoint took did, cut or not.
        let cost_pts = if answer.opened {
            metered_cost(&usage, &model.config)
        } else {
            0
        };
        let redact = |message: String| match &model.api_key {
            Some(key) if !key.is_empty() => message.replace(key.as_str(), "[key]"),
            _ => message,
        };
        match outcome {
            Err(_) => Err(ToolError::Transient {
                message: format!("{name}: no whole answer within {} s", total.as_secs()),
                cost_pts,
            }),
            Ok(Err(StreamError::Transient(message))) => Err(ToolError::Transient {
                message: redact(message),
                cost_pts,
            }),
            Ok(Err(StreamError::Permanent(message))) => Err(ToolError::Failed(redact(message))),
            Ok(Ok(())) => Ok(ToolResult {
                outputs: vec![NewOutput {
                    kind: OutputKind::Text,
                    mime: "text/plain; charset=utf-8".into(),
                    title: title(&call)?,
                    value: Some(Value::String(answer.text)),
                    file: None,
                }],
                cost_pts,
                usage: Some(usage),
                call_back: None,
            }),
        }
    }
}

/// Why a stream failed: worth another attempt, or not.
enum StreamError {
    Transient(String),
    Permanent(String),
}

impl LlmTool {
    /// Sends the request and reads the stream into `answer`, passing its text on as coalesced
    /// deltas.
    async fn stream(
        &self,
        name: &str,
        model: &Model,
        body: &Value,
        answer: &mut Answer,
        progress: &dyn Progress,
    ) -> Result<(), StreamError> {
        let mut request = self.client.post(model.url.clone()).json(body);
        if let Some(key) = &model.api_key {
            request = request.bearer_auth(key);
        }
        // reqwest's messages carry the URL, whose query may hold a key: never shown.
        let transport =
            |e: reqwest::Error| StreamError::Transient(format!("{name}: {}", e.without_url()));
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            let text = read_capped(response, 64 * 1024).await;
            let detail = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("error").map(error_message))
                .unwrap_or_else(|| text.chars().take(300).collect());
            let message = format!("{name} answered {}: {detail}", status.as_u16());
            return Err(
                if status.as_u16() == 429 || status.is_server_error() || status.as_u16() == 408 {
                    StreamError::Transient(message)
                } else {
                    StreamError::Permanent(message)
                },
            );
        }
        answer.opened = true;
        // The step's progress: the tokens so far against the most it may write.
        let most = body["max_tokens"].as_u64().unwrap_or(1).max(1) as f64;
        let max_bytes = model.config.max_bytes;
        let idle = Duration::from_secs(model.config.idle_timeout_secs.max(1));
        // The stream ends early past the cap (a line without end would otherwise grow the
        // parser's buffer without bound); `over` tells why it ended.
        let over = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cut = over.clone();
        let chunks = futures::stream::unfold((response, 0usize), move |(mut res, read)| {
            let cut = cut.clone();
            async move {
                match res.chunk().await {
                    Ok(Some(chunk)) if read + chunk.len() > max_bytes => {
                        cut.store(true, std::sync::atomic::Ordering::Relaxed);
                        None
                    }
                    Ok(Some(chunk)) => {
                        let read = read + chunk.len();
                        Some((Ok::<_, reqwest::Error>(chunk), (res, read)))
                    }
                    Ok(None) => None,
                    Err(e) => Some((Err(e), (res, read))),
                }
            }
        });
        let mut events = std::pin::pin!(SseByteStream::new(chunks));
        let mut deltas = Coalescer::new(Duration::from_millis(model.config.delta_ms));
        loop {
            let due = deltas.due();
            let flush = async move {
                match due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                () = flush => {
                    if let Some(text) = deltas.take(Instant::now()) {
                        progress
                            .append(text, answer.pieces as f64 / most)
                            .await;
                    }
                    continue;
                }
                event = tokio::time::timeout(idle, events.next()) => event,
            };
            let event = match event {
                Err(_) => {
                    return Err(StreamError::Transient(format!(
                        "{name}: the stream was silent for {} s",
                        idle.as_secs()
                    )))
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(StreamError::Transient(format!(
                        "{name}: the stream broke: {e}"
                    )))
                }
                Ok(Some(Ok(event))) => event,
            };
            let Some(data) = event.data.as_deref() else {
                continue;
            };
            match answer.take(data) {
                Err(message) => {
                    return Err(StreamError::Permanent(format!("{name}: {message}")));
                }
                Ok(Some(piece)) => {
                    if let Some(text) = deltas.push(&piece, Instant::now()) {
                        progress.append(text, answer.pieces as f64 / most).await;
                    }
                }
                Ok(None) => {}
            }
            if answer.done {
                break;
            }
        }
        if over.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StreamError::Permanent(format!(
                "{name}: the answer is over {max_bytes} bytes"
            )));
        }
        if let Some(text) = deltas.take(Instant::now()) {
            progress.append(text, answer.pieces as f64 / most).await;
        }
        if !answer.done && !answer.finished {
            return Err(StreamError::Transient(format!(
                "{name}: the stream ended before the answer did"
            )));
        }
        Ok(())
    }
}

/// At most `cap` bytes of an answer's body, as text.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= cap {
            body.truncate(cap);
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(prompt: u64, completion: u64) -> LlmEndpoint {
        serde_json::from_value(json!({"baseUrl": "https://m.example/v1", "model": "m",
            "ptsPer1kPrompt": prompt, "ptsPer1kCompletion": completion}))
        .unwrap()
    }

    #[test]
    fn cost_is_metered_from_usage_rounded_up_in_integers() {
        let usage = |p, c| Usage {
            prompt_tokens: p,
            completion_tokens: c,
            estimated: false,
        };
        assert_eq!(metered_cost(&usage(0, 0), &endpoint(1, 4)), 0);
        assert_eq!(metered_cost(&usage(1, 0), &endpoint(1, 4)), 1);
        // 120 × 1 + 250 × 4 = 1120 thousandths → 2 points.
        assert_eq!(metered_cost(&usage(120, 250), &endpoint(1, 4)), 2);
        assert_eq!(metered_cost(&usage(1000, 1000), &endpoint(1, 4)), 5);
        // No overflow on the way.
        assert_eq!(
            metered_cost(&usage(u64::MAX, u64::MAX), &endpoint(u64::MAX, u64::MAX)),
            i64::MAX
        );
    }

    #[test]
    fn a_stream_without_a_usage_chunk_is_counted_and_marked_estimated() {
        let mut answer = Answer::default();
        for piece in ["Hel", "lo", " there, traveller"] {
            let data = json!({"choices": [{"delta": {"content": piece}}]}).to_string();
            assert_eq!(answer.take(&data).unwrap().as_deref(), Some(piece));
        }
        answer.take("[DONE]").unwrap();
        assert!(answer.done);
        let usage = answer.usage("Say hello");
        assert!(usage.estimated);
        // 22 characters → 6 by the quarter rule, more than the 3 pieces.
        assert_eq!(usage.completion_tokens, 6);
        assert_eq!(usage.prompt_tokens, 3);
        assert_eq!(estimate_tokens("ab", 5), 5, "a piece is at least a token");
    }

    #[test]
    fn the_usage_chunk_is_taken_as_reported() {
        let mut answer = Answer::default();
        answer
            .take(r#"{"choices":[{"delta":{"content":"Hi"},"finish_reason":"stop"}]}"#)
            .unwrap();
        answer
            .take(r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":1,"total_tokens":13}}"#)
            .unwrap();
        assert!(answer.finished);
        assert_eq!(
            answer.usage("ignored"),
            Usage {
                prompt_tokens: 12,
                completion_tokens: 1,
                estimated: false
            }
        );
        let err = answer
            .take(r#"{"error":{"message":"model overloaded"}}"#)
            .unwrap_err();
        assert_eq!(err, "model overloaded");
        assert!(answer.take("{not json").is_err());
    }
}
