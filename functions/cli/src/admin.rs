//! `spellcast admin grant`: an administrator's grant (SPEC §9.2). On AWS the admin function's
//! URL takes only requests signed with AWS Signature Version 4 by a principal IAM allows, so the
//! request is signed with the shell's AWS credentials (its environment's); the local server takes
//! its `--admin-token` instead.

use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use reqwest::Url;
use serde_json::Value;

use crate::api::{answer, ApiError};

/// How the grant proves who asks.
pub enum Credential {
    /// The local server's admin token, as a bearer token.
    Token(String),
    /// The shell's AWS credentials, signing for the `lambda` service.
    Aws,
}

/// POSTs the grant to `{base}/api/v1/admin/grants`; the ledger entry.
pub async fn grant(
    http: &reqwest::Client,
    base: &str,
    body: &Value,
    idempotency_key: Option<&str>,
    credential: &Credential,
) -> Result<Value, ApiError> {
    let url = Url::parse(&format!("{}/", base.trim_end_matches('/')))
        .and_then(|b| b.join("api/v1/admin/grants"))
        .map_err(|e| ApiError::Transport(format!("{base}: not a URL: {e}")))?;
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut req = http::Request::post(url.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(bytes)
        .map_err(|e| ApiError::Transport(e.to_string()))?;
    if let Some(key) = idempotency_key {
        let value = http::HeaderValue::from_str(key)
            .map_err(|_| ApiError::Transport("the idempotency key is not a header value".into()))?;
        req.headers_mut().insert("idempotency-key", value);
    }
    match credential {
        Credential::Token(token) => {
            let value = http::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ApiError::Transport("the admin token is not a header value".into()))?;
            req.headers_mut().insert(http::header::AUTHORIZATION, value);
        }
        Credential::Aws => {
            let creds = credentials().await?;
            sign_v4(
                &mut req,
                &creds,
                &region_of(&url),
                std::time::SystemTime::now(),
            )?;
        }
    }
    let req = reqwest::Request::try_from(req).map_err(|e| ApiError::Transport(e.to_string()))?;
    answer(http.execute(req).await?).await
}

/// The shell's AWS credentials, from its environment (`AWS_ACCESS_KEY_ID`, ...; for a profile or
/// SSO: `eval "$(aws configure export-credentials --format env)"` first).
async fn credentials() -> Result<aws_credential_types::Credentials, ApiError> {
    aws_config::environment::EnvironmentVariableCredentialsProvider::new()
        .provide_credentials()
        .await
        .map_err(|e| {
            ApiError::Transport(format!(
                "no AWS credentials to sign the grant with ({e}): set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY, or run eval \"$(aws configure export-credentials --format env)\""
            ))
        })
}

/// The region of a Function URL (`https://ID.lambda-url.REGION.on.aws/`), else the shell's.
fn region_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    let labels: Vec<&str> = host.split('.').collect();
    match labels.iter().position(|l| *l == "lambda-url") {
        Some(i) if i + 1 < labels.len() => labels[i + 1].to_owned(),
        _ => std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|_| "us-east-1".into()),
    }
}

/// Signs `req` for the `lambda` service with AWS Signature Version 4 (headers, body hashed).
fn sign_v4(
    req: &mut http::Request<Vec<u8>>,
    creds: &aws_credential_types::Credentials,
    region: &str,
    now: std::time::SystemTime,
) -> Result<(), ApiError> {
    let identity = creds.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("lambda")
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| ApiError::Transport(format!("cannot sign: {e}")))?
        .into();
    let uri = req.uri().to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let signable = SignableRequest::new(
        req.method().as_str(),
        uri,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(req.body()),
    )
    .map_err(|e| ApiError::Transport(format!("cannot sign: {e}")))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| ApiError::Transport(format!("cannot sign: {e}")))?
        .into_parts();
    instructions.apply_to_request_http1x(req);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_a_function_url() {
        let url = Url::parse("https://abc123.lambda-url.eu-west-2.on.aws/").unwrap();
        assert_eq!(region_of(&url), "eu-west-2");
    }

    #[test]
    fn a_signed_grant_names_its_key_scope_and_signs_its_body() {
        let creds =
            aws_credential_types::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let mut req =
            http::Request::post("https://abc.lambda-url.us-east-1.on.aws/api/v1/admin/grants")
                .header("content-type", "application/json")
                .body(b"{}".to_vec())
                .unwrap();
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_533_200);
        sign_v4(&mut req, &creds, "us-east-1", at).unwrap();
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261206/us-east-1/lambda/aws4_request"
            ),
            "{auth}"
        );
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-date"),
            "{auth}"
        );
        let mut other = req.clone();
        *other.body_mut() = b"{\"pts\":1}".to_vec();
        other.headers_mut().remove("authorization");
        sign_v4(&mut other, &creds, "us-east-1", at).unwrap();
        assert_ne!(
            other.headers()["authorization"],
            req.headers()["authorization"],
            "the body is signed"
        );
    }
}
