//! Signing in on the page (SPEC §9.1): `GET /api/v1/auth/config` tells the page which OpenID
//! provider to send the user to, and `POST /api/v1/auth/token` trades the code the provider sent
//! back (Authorization Code with PKCE: the page holds the verifier) for the user's ID token. The
//! trade goes through this server so the page talks to its own origin only: its CSP stays
//! `connect-src 'self'` whatever the provider (Cognito's token endpoint is on another host than
//! its issuer), and the provider needs no CORS for the page.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use serde_json::json;

use super::{json, parse_object, rate_limit, str_field, ClientAddr, Handled, Problem};
use crate::Api;
use spellcast_application::oidc::RedeemError;

/// `GET /api/v1/auth/config`: `{"oidc": {issuer, clientId, authorizationEndpoint, ...}}`, or
/// `{"oidc": null}` where users sign in some other way (the local demo sessions).
pub async fn config(app: &Arc<Api>) -> Handled {
    let oidc = match &app.oidc() {
        None => serde_json::Value::Null,
        Some(provider) => serde_json::to_value(
            provider
                .endpoints()
                .await
                .map_err(|e| Problem::unavailable(format!("the OpenID provider: {e}")))?,
        )
        .map_err(Problem::internal)?,
    };
    let mut r = json(StatusCode::OK, &json!({ "oidc": oidc }));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    Ok(r)
}

/// `POST /api/v1/auth/token` `{"code", "codeVerifier", "redirectUri"}` → `{"token", "expiresIn"}`.
pub async fn token(app: &Arc<Api>, req: &http::request::Parts, body: &Bytes) -> Handled {
    let Some(provider) = &app.oidc() else {
        return Err(Problem::unauthorized(
            "No OpenID provider signs users in here",
        ));
    };
    if let Some(ClientAddr(ip)) = req.extensions.get() {
        rate_limit(app, &app.config().limits.sessions, &format!("addr:{ip}")).await?;
    }
    let fields = parse_object(body)?;
    let code = str_field(&fields, "code")?;
    let verifier = str_field(&fields, "codeVerifier")?;
    let redirect_uri = str_field(&fields, "redirectUri")?;
    if code.is_empty() || code.len() > 2048 {
        return Err(Problem::bad_field("/code", "must be the provider's code"));
    }
    // RFC 7636: 43-128 characters of [A-Za-z0-9-._~].
    let verifier_ok = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !verifier_ok {
        return Err(Problem::bad_field(
            "/codeVerifier",
            "must be a PKCE code verifier (43-128 of A-Z a-z 0-9 - . _ ~)",
        ));
    }
    let redirect_ok = url::Url::parse(redirect_uri)
        .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && redirect_uri.len() <= 2048);
    if !redirect_ok {
        return Err(Problem::bad_field("/redirectUri", "must be an http(s) URL"));
    }
    match provider.redeem(code, verifier, redirect_uri).await {
        Ok((token, expires_in)) => {
            // The first request signed in: the welcome grant, now.
            super::signed_in(app, &token).await?;
            Ok(json(
                StatusCode::OK,
                &json!({"token": token, "expiresIn": expires_in}),
            ))
        }
        Err(RedeemError::Refused(why)) => Err(Problem::unauthorized(format!(
            "The provider did not sign you in: {why}"
        ))),
        Err(e @ RedeemError::Provider(_)) => Err(Problem::unavailable(e)),
    }
}
