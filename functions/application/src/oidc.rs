//! Signing in with an OpenID provider (SPEC §9.1): the provider's JWTs (ID or access tokens) are
//! verified against the keys its discovery document names. Keys are cached; a token naming a key
//! the cache lacks refetches the set, at most once per `refetch_after`, so a rotation is picked
//! up and a flood of made-up `kid`s costs the provider one request a minute.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::auth::TokenError;
use spellcast_domain::ids::UserId;

/// Talks JSON to the provider over HTTPS (the discovery document, the key set, the token
/// endpoint): all that signing in needs from the network, an adapter's job.
#[async_trait]
pub trait JsonFetcher: Send + Sync {
    /// The document at `url`, or why not.
    async fn get_json(&self, url: &str) -> Result<serde_json::Value, String>;
    /// POSTs `fields` form-encoded to `url`: its status and JSON answer, or why there is none.
    async fn post_form(
        &self,
        url: &str,
        fields: &[(&str, &str)],
    ) -> Result<(u16, serde_json::Value), String>;
}

/// Where the provider's user-facing endpoints are (from its discovery document).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderEndpoints {
    /// The issuer.
    pub issuer: String,
    /// The client id the page signs in as.
    pub client_id: String,
    /// Where the browser is sent to sign in.
    pub authorization_endpoint: String,
    /// Where sign-in codes become tokens (the server relays the page's request; the CLI's device
    /// flow polls it).
    pub token_endpoint: String,
    /// Where the browser is sent to sign out of the provider, if it has such a place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_session_endpoint: Option<String>,
    /// Whether it offers the device authorization flow (for the CLI), and where.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_authorization_endpoint: Option<String>,
}

/// Which provider's tokens are accepted.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// The issuer, exactly as its tokens' `iss` (`https://cognito-idp.REGION.amazonaws.com/POOL`).
    pub issuer: String,
    /// The client id: a token's `aud` (ID tokens) or `client_id` (access tokens) must name it.
    pub audience: String,
    /// The least time between two fetches of the key set caused by unknown keys.
    pub refetch_after: Duration,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds (at most 60).
    pub leeway_secs: u64,
}

impl OidcSettings {
    /// Least time between refetches of the key set unless configured otherwise.
    pub const REFETCH_AFTER_SECS: u64 = 60;
    /// Skew allowed unless configured otherwise.
    pub const LEEWAY_SECS: u64 = 60;

    /// Defaults for `issuer` and `audience`; an `http://` issuer only on a loopback address.
    pub fn new(issuer: &str, audience: &str) -> Result<Self, String> {
        let url = url::Url::parse(issuer).map_err(|e| format!("the OIDC issuer {issuer}: {e}"))?;
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
            return Err(format!(
                "the OIDC issuer {issuer} must be https (http only on a loopback address)"
            ));
        }
        if audience.is_empty() {
            return Err("the OIDC audience (the client id) is required with an issuer".into());
        }
        Ok(OidcSettings {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            refetch_after: Duration::from_secs(Self::REFETCH_AFTER_SECS),
            leeway_secs: Self::LEEWAY_SECS,
        })
    }
}

/// The user id of the provider's user `sub`: stable, opaque, and never equal to another
/// issuer's (two providers may both have a user "42").
pub fn user_id_of(issuer: &str, sub: &str) -> UserId {
    let digest = Sha256::new()
        .chain_update(issuer.as_bytes())
        .chain_update([0u8])
        .chain_update(sub.as_bytes())
        .finalize();
    UserId::from(format!("oidc_{}", hex::encode(&digest[..16])).as_str())
}

/// The claims read from a provider's token (the rest is ignored).
#[derive(Debug, Deserialize)]
struct ProviderClaims {
    sub: String,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    iat: Option<i64>,
}

/// `aud` is a string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// What the cache holds: the keys by `kid`, and when they were last fetched.
#[derive(Default)]
struct KeyCache {
    discovery: Option<serde_json::Value>,
    keys: HashMap<String, (Algorithm, DecodingKey)>,
    fetched: Option<Instant>,
}

/// Verifies one provider's tokens.
pub struct OidcVerifier {
    settings: OidcSettings,
    fetcher: Arc<dyn JsonFetcher>,
    cache: tokio::sync::Mutex<KeyCache>,
}

impl OidcVerifier {
    /// A verifier fetching through `fetcher`; nothing is fetched before the first token.
    pub fn new(settings: OidcSettings, fetcher: Arc<dyn JsonFetcher>) -> Self {
        crate::auth::install_verifiers();
        OidcVerifier {
            settings,
            fetcher,
            cache: Default::default(),
        }
    }

    /// The accepted issuer.
    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// The user a provider's token names, if the token is good now.
    pub async fn verify(&self, token: &str) -> Result<UserId, TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Invalid)?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.unwrap_or_default();
        let (alg, key) = self.key(&kid).await?;
        if alg != header.alg {
            return Err(TokenError::Invalid);
        }
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = self.settings.leeway_secs.min(60);
        validation.validate_nbf = true;
        // `aud` or `client_id`, checked below: Cognito's access tokens carry only the latter.
        validation.validate_aud = false;
        let claims = decode::<ProviderClaims>(token, &key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?
            .claims;
        let audience = &self.settings.audience;
        let for_us = match &claims.aud {
            Some(Audience::One(a)) => a == audience,
            Some(Audience::Many(all)) => all.iter().any(|a| a == audience),
            None => claims.client_id.as_deref() == Some(audience),
        };
        let now = chrono::Utc::now().timestamp();
        let issued_in_future = claims
            .iat
            .is_some_and(|iat| iat > now + validation.leeway as i64);
        if !for_us || issued_in_future || claims.sub.is_empty() {
            return Err(TokenError::Invalid);
        }
        Ok(user_id_of(&self.settings.issuer, &claims.sub))
    }

    /// The key named `kid` (or the only key, for a token without one), refetching the set when
    /// it is unknown and the last fetch is old enough.
    async fn key(&self, kid: &str) -> Result<(Algorithm, DecodingKey), TokenError> {
        let mut cache = self.cache.lock().await;
        if let Some(found) = pick(&cache.keys, kid) {
            return Ok(found);
        }
        let may_fetch = cache
            .fetched
            .is_none_or(|at| at.elapsed() >= self.settings.refetch_after);
        if !may_fetch {
            return Err(TokenError::Invalid);
        }
        cache.fetched = Some(Instant::now());
        match self.fetch_keys(&mut cache).await {
            Ok(keys) => cache.keys = keys,
            Err(e) => {
                tracing::warn!(issuer = %self.settings.issuer, "cannot fetch the OIDC keys: {e}");
                return Err(TokenError::Invalid);
            }
        }
        pick(&cache.keys, kid).ok_or(TokenError::Invalid)
    }

    /// The provider's endpoints, from its discovery document (fetched once).
    pub async fn endpoints(&self) -> Result<ProviderEndpoints, String> {
        let mut cache = self.cache.lock().await;
        let doc = self.discovery(&mut cache).await?;
        let url = |name: &str| doc[name].as_str().map(str::to_owned);
        Ok(ProviderEndpoints {
            issuer: self.settings.issuer.clone(),
            client_id: self.settings.audience.clone(),
            authorization_endpoint: url("authorization_endpoint")
                .ok_or("the provider names no authorization_endpoint")?,
            token_endpoint: url("token_endpoint").ok_or("the provider names no token_endpoint")?,
            end_session_endpoint: url("end_session_endpoint"),
            device_authorization_endpoint: url("device_authorization_endpoint"),
        })
    }

    async fn discovery(&self, cache: &mut KeyCache) -> Result<serde_json::Value, String> {
        if let Some(doc) = &cache.discovery {
            return Ok(doc.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        let doc = self.fetcher.get_json(&url).await?;
        if doc["issuer"].as_str() != Some(&self.settings.issuer) {
            return Err(format!("{url} names another issuer"));
        }
        cache.discovery = Some(doc.clone());
        Ok(doc)
    }

    async fn fetch_keys(
        &self,
        cache: &mut KeyCache,
    ) -> Result<HashMap<String, (Algorithm, DecodingKey)>, String> {
        let doc = self.discovery(cache).await?;
        let jwks_uri = doc["jwks_uri"]
            .as_str()
            .ok_or("the discovery document has no jwks_uri")?;
        let set: JwkSet = serde_json::from_value(self.fetcher.get_json(jwks_uri).await?)
            .map_err(|e| format!("{jwks_uri}: {e}"))?;
        Ok(usable_keys(&set))
    }

    /// Trades a sign-in code (Authorization Code with PKCE, from the page) for the user's ID
    /// token at the provider's token endpoint; the token is returned only if it signs a user in
    /// here, with how many seconds it lasts.
    pub async fn redeem(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<(String, i64), RedeemError> {
        let endpoints = self.endpoints().await.map_err(RedeemError::Provider)?;
        let fields = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", redirect_uri),
            ("client_id", &self.settings.audience),
        ];
        let (status, answer) = self
            .fetcher
            .post_form(&endpoints.token_endpoint, &fields)
            .await
            .map_err(RedeemError::Provider)?;
        if status >= 500 {
            return Err(RedeemError::Provider(format!(
                "the token endpoint answered {status}"
            )));
        }
        let Some(token) = answer["id_token"].as_str().filter(|_| status == 200) else {
            return Err(RedeemError::Refused(
                answer["error_description"]
                    .as_str()
                    .or(answer["error"].as_str())
                    .unwrap_or("the provider refused the code")
                    .chars()
                    .take(200)
                    .collect(),
            ));
        };
        self.verify(token).await.map_err(|_| {
            RedeemError::Refused("the provider's token does not sign in here".into())
        })?;
        let expires_in = answer["expires_in"].as_i64().unwrap_or(3600);
        Ok((token.to_owned(), expires_in))
    }
}

/// Why a sign-in code gave no token.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    /// The provider refused it (a used or forged code, a wrong verifier): the client's mistake.
    #[error("{0}")]
    Refused(String),
    /// The provider could not be reached or answered nonsense.
    #[error("the OpenID provider: {0}")]
    Provider(String),
}

fn pick(
    keys: &HashMap<String, (Algorithm, DecodingKey)>,
    kid: &str,
) -> Option<(Algorithm, DecodingKey)> {
    match keys.get(kid) {
        Some(found) => Some(found.clone()),
        // A token without `kid` is accepted only from a provider with one key.
        None if kid.is_empty() && keys.len() == 1 => keys.values().next().cloned(),
        None => None,
    }
}

/// The signing keys of a set this verifier can use: RSA (RS256) and P-256 (ES256) keys meant for
/// signatures; anything else (encryption keys, other curves, symmetric keys) is left out.
fn usable_keys(set: &JwkSet) -> HashMap<String, (Algorithm, DecodingKey)> {
    use jsonwebtoken::jwk::PublicKeyUse;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            _ => continue,
        };
        // A key that names another algorithm is not used for this one.
        if let Some(named) = jwk.common.key_algorithm {
            if named.to_string() != format!("{alg:?}") {
                continue;
            }
        }
        if let Ok(key) = DecodingKey::from_jwk(jwk) {
            keys.insert(jwk.common.key_id.clone().unwrap_or_default(), (alg, key));
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issuer_is_https_or_loopback_http() {
        assert!(OidcSettings::new("https://id.example", "c").is_ok());
        assert!(OidcSettings::new("http://127.0.0.1:9000", "c").is_ok());
        assert!(OidcSettings::new("http://localhost:9000/x", "c").is_ok());
        assert!(OidcSettings::new("http://id.example", "c").is_err());
        assert!(OidcSettings::new("https://id.example", "").is_err());
    }

    #[test]
    fn user_ids_are_stable_and_differ_between_issuers() {
        let a = user_id_of("https://a.example", "42");
        assert_eq!(a, user_id_of("https://a.example", "42"));
        assert_ne!(a, user_id_of("https://b.example", "42"));
        assert_ne!(
            user_id_of("https://a.example4", "2"),
            user_id_of("https://a.example", "42")
        );
        assert!(UserId::parse(a.as_str()).is_some());
    }

    #[test]
    fn only_signing_keys_of_known_kinds_are_used() {
        let set: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"},
            {"kty": "EC", "kid": "e", "crv": "P-256", "use": "sig",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "kid": "enc", "crv": "P-256", "use": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "kid": "named-other", "crv": "P-256", "alg": "ES384",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
        ]}))
        .unwrap();
        let keys = usable_keys(&set);
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["e"]);
        assert_eq!(keys["e"].0, Algorithm::ES256);
    }
}
