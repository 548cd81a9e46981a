//! The Spellcast HTTP API as the client uses it: JSON in and out, problem+json errors kept whole
//! (their `code` decides the exit status).

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// What went wrong with a request.
#[derive(Debug)]
pub enum ApiError {
    /// The server answered with a problem.
    Problem {
        /// The HTTP status.
        status: StatusCode,
        /// The problem's stable code (`invalid_context`, `run_finished`, ...).
        code: String,
        /// Its readable detail.
        detail: String,
        /// Field errors (`pointer`: `message`), for bad input.
        errors: Vec<String>,
    },
    /// The server could not be reached, or answered something that is not the API.
    Transport(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Problem {
                code,
                detail,
                errors,
                ..
            } => {
                write!(f, "{detail} ({code})")?;
                for e in errors {
                    write!(f, "\n  {e}")?;
                }
                Ok(())
            }
            ApiError::Transport(e) => write!(f, "{e}"),
        }
    }
}

impl From<reqwest::Error> for ApiError {
    fn from(e: reqwest::Error) -> Self {
        ApiError::Transport(format!("cannot reach Spellcast: {e}"))
    }
}

/// A client of one Spellcast server.
#[derive(Clone)]
pub struct Api {
    /// The server's base URL, without a trailing slash.
    pub base: String,
    http: reqwest::Client,
}

impl Api {
    /// A client of the server at `base`.
    pub fn new(base: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    /// A request to `path` with `token` as its bearer.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// A PUT to an absolute URL (an upload's, perhaps on another host: S3), or to a path of
    /// this server; no bearer token goes with it.
    pub fn put_to(&self, url: &str) -> reqwest::RequestBuilder {
        let url = if url.starts_with('/') {
            format!("{}{url}", self.base)
        } else {
            url.to_owned()
        };
        self.http
            .put(url)
            .timeout(std::time::Duration::from_secs(120))
    }

    /// Sends a JSON request; the JSON answer, or the problem.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let mut req = self
            .request(method, path, token)
            .timeout(std::time::Duration::from_secs(30));
        if let Some(body) = body {
            req = req.json(body);
        }
        answer(req.send().await?).await
    }
}

/// A response read as the API's: its JSON if it succeeded, else its problem.
pub async fn answer(res: reqwest::Response) -> Result<Value, ApiError> {
    let status = res.status();
    let text = res.text().await?;
    let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(json);
    }
    Err(match json.get("code").and_then(Value::as_str) {
        Some(code) => ApiError::Problem {
            status,
            code: code.to_owned(),
            detail: json["detail"].as_str().unwrap_or_default().to_owned(),
            errors: json["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e["pointer"].as_str().unwrap_or_default(),
                        e["message"].as_str().unwrap_or_default()
                    )
                })
                .collect(),
        },
        None => ApiError::Transport(format!("the server answered {status}: {text:.200}")),
    })
}
