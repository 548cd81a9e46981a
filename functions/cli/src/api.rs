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

    /// `path` (perhaps given by the server: a stream's or an output's URL) as a URL of this
    /// server: joined to the base as a URL is (so `@evil/x` stays a path here), and refused if it
    /// names another origin — a token never goes anywhere but the server it is for.
    pub fn url_of(&self, path: &str) -> Result<reqwest::Url, ApiError> {
        let base = reqwest::Url::parse(&format!("{}/", self.base))
            .map_err(|e| ApiError::Transport(format!("{}: not a URL: {e}", self.base)))?;
        let url = base
            .join(path)
            .map_err(|e| ApiError::Transport(format!("{path:?}: not a URL: {e}")))?;
        if url.origin() != base.origin() {
            return Err(ApiError::Transport(format!(
                "the server named another origin ({}); not sending the token there",
                url.origin().ascii_serialization()
            )));
        }
        Ok(url)
    }

    /// A request to `path` of this server ([`Api::url_of`]) with `token` as its bearer.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> Result<reqwest::RequestBuilder, ApiError> {
        let req = self.http.request(method, self.url_of(path)?);
        Ok(match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        })
    }

    /// A PUT to an upload's URL: absolute (S3's, another origin: no token goes with it), or a
    /// path of this server.
    pub fn put_to(&self, url: &str) -> Result<reqwest::RequestBuilder, ApiError> {
        let url = match reqwest::Url::parse(url) {
            Ok(absolute) => absolute,
            Err(_) => self.url_of(url)?,
        };
        Ok(self
            .http
            .put(url)
            .timeout(std::time::Duration::from_secs(120)))
    }

    /// POSTs `fields` form-encoded to the OpenID provider's `url` (no Spellcast token goes there):
    /// its status and JSON answer.
    pub async fn provider_form(
        &self,
        url: &str,
        fields: &[(&str, &str)],
    ) -> Result<(StatusCode, Value), ApiError> {
        let res = self
            .http
            .post(url)
            .form(fields)
            .timeout(std::time::Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| ApiError::Transport(format!("cannot reach the sign-in provider: {e}")))?;
        let status = res.status();
        let json = res.json().await.unwrap_or(Value::Null);
        Ok((status, json))
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
            .request(method, path, token)?
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_given_paths_stay_on_the_server() {
        let api = Api::new("http://127.0.0.1:3000/");
        let at = |p: &str| api.url_of(p).map(|u| u.to_string());
        assert_eq!(
            at("/api/v1/runs/r/outputs/0").unwrap(),
            "http://127.0.0.1:3000/api/v1/runs/r/outputs/0"
        );
        // Glued to the base as text, `@evil/x` would make evil the host and the base its user.
        assert_eq!(at("@evil/x").unwrap(), "http://127.0.0.1:3000/@evil/x");
        for elsewhere in [
            "//evil.example/x",
            "https://evil.example/x",
            "http://127.0.0.1:3001/x",
        ] {
            let err = at(elsewhere).unwrap_err().to_string();
            assert!(err.contains("another origin"), "{elsewhere}: {err}");
        }
        // An upload URL may be another origin (S3): no token goes with it.
        assert!(api
            .put_to("https://bucket.s3.example/uploads/x?X-Amz-Signature=1")
            .is_ok());
    }
}
