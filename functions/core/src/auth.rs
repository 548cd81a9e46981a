//! Tokens: user sessions and invoices are JWTs (via `jsonwebtoken`). Each kind has its own
//! audience, so a session token can never pass as an invoice or the other way round. The
//! algorithm is fixed by configuration; `none` and any other algorithm are rejected.

use chrono::{DateTime, Utc};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::ids::{InvoiceId, Slug, UserId};

/// The audience of session tokens.
pub const SESSION_AUDIENCE: &str = "spellcast-session";
/// The audience of invoice tokens.
pub const INVOICE_AUDIENCE: &str = "spellcast-invoice";
/// The audience of the tokens in local upload URLs.
pub const UPLOAD_AUDIENCE: &str = "spellcast-upload";

/// Claims of a session token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionClaims {
    /// The user id.
    pub sub: UserId,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Always [`SESSION_AUDIENCE`].
    pub aud: String,
    /// The issuer.
    pub iss: String,
}

/// Claims of an invoice token: the binding quote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvoiceClaims {
    /// The invoice id.
    pub jti: InvoiceId,
    /// Who may pay it.
    pub sub: UserId,
    /// The spell slug.
    pub spell: Slug,
    /// The spell version priced.
    pub ver: u32,
    /// The price in points.
    pub cost: i64,
    /// The asset (`PTS`).
    pub asset: String,
    /// Issued at.
    pub iat: i64,
    /// Expiry.
    pub exp: i64,
    /// Always [`INVOICE_AUDIENCE`].
    pub aud: String,
    /// The issuer.
    pub iss: String,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Signature, algorithm, audience, issuer or shape is wrong.
    #[error("the token is not valid")]
    Invalid,
    /// It was valid but has expired.
    #[error("the token has expired")]
    Expired,
}

/// Signs and verifies tokens with one configured key.
#[derive(Clone)]
pub struct TokenKeys {
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
}

impl TokenKeys {
    /// HMAC-SHA256 keys from a secret of at least 32 bytes.
    pub fn hs256(secret: &[u8], issuer: &str) -> Result<Self, String> {
        if secret.len() < 32 {
            return Err("the token secret must be at least 32 bytes".into());
        }
        // Installed once per process; a second install finds it there, which is fine.
        let _ = hs256_only::PROVIDER.install_default();
        Ok(TokenKeys {
            algorithm: Algorithm::HS256,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            issuer: issuer.to_owned(),
        })
    }

    /// The issuer named in every token.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    fn sign<C: Serialize>(&self, claims: &C) -> String {
        // Encoding with an HMAC key cannot fail for serialisable claims.
        encode(&Header::new(self.algorithm), claims, &self.encoding).unwrap_or_default()
    }

    fn verify<C: for<'de> Deserialize<'de>>(
        &self,
        token: &str,
        audience: &str,
        check_expiry: bool,
    ) -> Result<C, TokenError> {
        let mut validation = Validation::new(self.algorithm);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iat", "aud", "iss", "sub"]);
        validation.validate_exp = check_expiry;
        validation.leeway = 0;
        decode::<C>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }

    /// A session token for `user_id`, valid until `exp`.
    pub fn session(&self, user_id: &UserId, now: DateTime<Utc>, exp: DateTime<Utc>) -> String {
        self.sign(&SessionClaims {
            sub: user_id.clone(),
            exp: exp.timestamp(),
            iat: now.timestamp(),
            aud: SESSION_AUDIENCE.into(),
            iss: self.issuer.clone(),
        })
    }

    /// Verifies a session token.
    pub fn verify_session(&self, token: &str) -> Result<SessionClaims, TokenError> {
        self.verify(token, SESSION_AUDIENCE, true)
    }

    /// Signs invoice claims (their `aud` and `iss` are set here).
    pub fn invoice(&self, mut claims: InvoiceClaims) -> String {
        claims.aud = INVOICE_AUDIENCE.into();
        claims.iss = self.issuer.clone();
        self.sign(&claims)
    }

    /// Verifies an invoice token, including its expiry.
    pub fn verify_invoice(&self, token: &str) -> Result<InvoiceClaims, TokenError> {
        self.verify(token, INVOICE_AUDIENCE, true)
    }

    /// Signs the claims of a local upload URL (their `aud` and `iss` are set here).
    pub fn upload(&self, mut claims: crate::uploads::UploadClaims) -> String {
        claims.aud = UPLOAD_AUDIENCE.into();
        claims.iss = self.issuer.clone();
        self.sign(&claims)
    }

    /// Verifies the token of a local upload URL, including its expiry.
    pub fn verify_upload(&self, token: &str) -> Result<crate::uploads::UploadClaims, TokenError> {
        self.verify(token, UPLOAD_AUDIENCE, true)
    }

    /// Verifies an invoice token's signature but not its expiry: a stream may outlive the quote,
    /// and the caller decides how long after `exp` it stays good.
    pub fn verify_invoice_ignoring_expiry(&self, token: &str) -> Result<InvoiceClaims, TokenError> {
        self.verify(token, INVOICE_AUDIENCE, false)
    }
}

/// The crypto behind `jsonwebtoken`: HMAC-SHA256 from RustCrypto and nothing else, so no
/// function links RSA, ECDSA or EdDSA code it never runs. Any other algorithm is refused.
mod hs256_only {
    use hmac::{Hmac, Mac};
    use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
    use jsonwebtoken::errors::{ErrorKind, Result};
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
    use sha2::Sha256;

    pub(super) static PROVIDER: CryptoProvider = CryptoProvider {
        signer_factory,
        verifier_factory,
        key_utils: KeyUtils::new_unimplemented(),
    };

    struct Hs256(Hmac<Sha256>);

    impl Hs256 {
        fn new(algorithm: &Algorithm, secret: &[u8]) -> Result<Self> {
            if *algorithm != Algorithm::HS256 {
                return Err(ErrorKind::InvalidAlgorithm.into());
            }
            Hmac::new_from_slice(secret)
                .map(Hs256)
                .map_err(|_| ErrorKind::InvalidKeyFormat.into())
        }
    }

    fn signer_factory(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
        Ok(Box::new(Hs256::new(algorithm, key.as_bytes())?))
    }

    fn verifier_factory(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
        Ok(Box::new(Hs256::new(algorithm, key.try_get_as_bytes()?)?))
    }

    impl signature::Signer<Vec<u8>> for Hs256 {
        fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
            let mut mac = self.0.clone();
            mac.update(msg);
            Ok(mac.finalize().into_bytes().to_vec())
        }
    }

    impl signature::Verifier<Vec<u8>> for Hs256 {
        fn verify(
            &self,
            msg: &[u8],
            signature: &Vec<u8>,
        ) -> std::result::Result<(), signature::Error> {
            let mut mac = self.0.clone();
            mac.update(msg);
            // Constant-time comparison.
            mac.verify_slice(signature)
                .map_err(signature::Error::from_source)
        }
    }

    impl JwtSigner for Hs256 {
        fn algorithm(&self) -> Algorithm {
            Algorithm::HS256
        }
    }

    impl JwtVerifier for Hs256 {
        fn algorithm(&self) -> Algorithm {
            Algorithm::HS256
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use chrono::Duration;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn keys() -> TokenKeys {
        TokenKeys::hs256(&[7u8; 32], "test").unwrap()
    }

    #[test]
    fn a_session_round_trips_and_expires() {
        let now = Utc::now();
        let token = keys().session(&"u1".into(), now, now + Duration::minutes(5));
        assert_eq!(keys().verify_session(&token).unwrap().sub, "u1");
        let old = keys().session(
            &"u1".into(),
            now - Duration::hours(2),
            now - Duration::hours(1),
        );
        assert_eq!(
            keys().verify_session(&old).unwrap_err(),
            TokenError::Expired
        );
    }

    #[test]
    fn tokens_do_not_cross_audiences_or_keys() {
        let now = Utc::now();
        let session = keys().session(&"u1".into(), now, now + Duration::minutes(5));
        assert_eq!(
            keys().verify_invoice(&session).unwrap_err(),
            TokenError::Invalid
        );
        let other = TokenKeys::hs256(&[8u8; 32], "test").unwrap();
        assert_eq!(
            other.verify_session(&session).unwrap_err(),
            TokenError::Invalid
        );
    }

    #[test]
    fn alg_none_is_rejected() {
        let now = Utc::now().timestamp();
        let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64(format!(
            r#"{{"sub":"u1","exp":{},"iat":{now},"aud":"{SESSION_AUDIENCE}","iss":"test"}}"#,
            now + 300
        )
        .as_bytes());
        let forged = format!("{header}.{body}.");
        assert_eq!(
            keys().verify_session(&forged).unwrap_err(),
            TokenError::Invalid
        );
    }

    /// A token signed by hand with HMAC over `header.body`, as any JWT library would.
    fn hand_signed<M: hmac::Mac + hmac::digest::KeyInit>(alg: &str) -> String {
        let now = Utc::now().timestamp();
        let header = b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
        let body = b64(format!(
            r#"{{"sub":"u1","exp":{},"iat":{now},"aud":"{SESSION_AUDIENCE}","iss":"test"}}"#,
            now + 300
        )
        .as_bytes());
        let mut mac = <M as hmac::Mac>::new_from_slice(&[7u8; 32]).unwrap();
        mac.update(format!("{header}.{body}").as_bytes());
        format!("{header}.{body}.{}", b64(&mac.finalize().into_bytes()))
    }

    #[test]
    fn only_hs256_signatures_are_accepted() {
        let hs256 = hand_signed::<hmac::Hmac<sha2::Sha256>>("HS256");
        assert_eq!(keys().verify_session(&hs256).unwrap().sub, "u1");
        let hs512 = hand_signed::<hmac::Hmac<sha2::Sha512>>("HS512");
        assert_eq!(
            keys().verify_session(&hs512).unwrap_err(),
            TokenError::Invalid
        );
        let mut tampered = hs256.clone();
        tampered.insert(hs256.rfind('.').unwrap() + 1, 'A');
        assert_eq!(
            keys().verify_session(&tampered).unwrap_err(),
            TokenError::Invalid
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(TokenKeys::hs256(b"short", "x").is_err());
    }
}
