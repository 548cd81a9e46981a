//! Tokens: user sessions and invoices are JWTs (via `jsonwebtoken`). Each kind has its own
//! audience, so a session token can never pass as an invoice or the other way round. The
//! algorithm is fixed by configuration; `none` and any other algorithm are rejected.

use chrono::{DateTime, Utc};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use spellcast_domain::ids::{InvoiceId, Slug, UserId};

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

/// Signs and verifies our own tokens: sessions with one key, invoices and upload URLs with
/// another, so that neither key's holder can forge the other kind.
#[derive(Clone)]
pub struct TokenKeys {
    algorithm: Algorithm,
    session: (EncodingKey, DecodingKey),
    invoice: (EncodingKey, DecodingKey),
    issuer: String,
}

impl TokenKeys {
    /// HMAC-SHA256 keys: one secret for sessions and another for invoices, each at least 32 bytes
    /// and not equal.
    pub fn new(session: &[u8], invoice: &[u8], issuer: &str) -> Result<Self, String> {
        if session.len() < 32 || invoice.len() < 32 {
            return Err("a token secret must be at least 32 bytes".into());
        }
        if session == invoice {
            return Err("the session and invoice secrets must differ".into());
        }
        install_verifiers();
        let pair = |s: &[u8]| (EncodingKey::from_secret(s), DecodingKey::from_secret(s));
        Ok(TokenKeys {
            algorithm: Algorithm::HS256,
            session: pair(session),
            invoice: pair(invoice),
            issuer: issuer.to_owned(),
        })
    }

    /// Keys derived from one secret of at least 32 bytes (the local server's): the session key
    /// is the secret, the invoice key an HMAC of a fixed label under it.
    pub fn hs256(secret: &[u8], issuer: &str) -> Result<Self, String> {
        use hmac::Mac;
        if secret.len() < 32 {
            return Err("the token secret must be at least 32 bytes".into());
        }
        let mut mac =
            <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).map_err(|e| e.to_string())?;
        mac.update(b"spellcast invoice key v1");
        let invoice = mac.finalize().into_bytes();
        Self::new(secret, &invoice, issuer)
    }

    /// The issuer named in every token.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    fn sign<C: Serialize>(&self, key: &EncodingKey, claims: &C) -> String {
        // Encoding with an HMAC key cannot fail for serialisable claims.
        encode(&Header::new(self.algorithm), claims, key).unwrap_or_default()
    }

    fn verify<C: for<'de> Deserialize<'de>>(
        &self,
        key: &DecodingKey,
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
        decode::<C>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }

    /// A session token for `user_id`, valid until `exp`.
    pub fn session(&self, user_id: &UserId, now: DateTime<Utc>, exp: DateTime<Utc>) -> String {
        self.sign(
            &self.session.0,
            &SessionClaims {
                sub: user_id.clone(),
                exp: exp.timestamp(),
                iat: now.timestamp(),
                aud: SESSION_AUDIENCE.into(),
                iss: self.issuer.clone(),
            },
        )
    }

    /// Verifies a session token.
    pub fn verify_session(&self, token: &str) -> Result<SessionClaims, TokenError> {
        self.verify(&self.session.1, token, SESSION_AUDIENCE, true)
    }

    /// Signs invoice claims (their `aud` and `iss` are set here).
    pub fn invoice(&self, mut claims: InvoiceClaims) -> String {
        claims.aud = INVOICE_AUDIENCE.into();
        claims.iss = self.issuer.clone();
        self.sign(&self.invoice.0, &claims)
    }

    /// Verifies an invoice token, including its expiry.
    pub fn verify_invoice(&self, token: &str) -> Result<InvoiceClaims, TokenError> {
        self.verify(&self.invoice.1, token, INVOICE_AUDIENCE, true)
    }

    /// Signs the claims of a local upload URL (their `aud` and `iss` are set here).
    pub fn upload(&self, mut claims: spellcast_domain::uploads::UploadClaims) -> String {
        claims.aud = UPLOAD_AUDIENCE.into();
        claims.iss = self.issuer.clone();
        self.sign(&self.invoice.0, &claims)
    }

    /// Verifies the token of a local upload URL, including its expiry.
    pub fn verify_upload(
        &self,
        token: &str,
    ) -> Result<spellcast_domain::uploads::UploadClaims, TokenError> {
        self.verify(&self.invoice.1, token, UPLOAD_AUDIENCE, true)
    }

    /// Verifies an invoice token's signature but not its expiry: a stream may outlive the quote,
    /// and the caller decides how long after `exp` it stays good.
    pub fn verify_invoice_ignoring_expiry(&self, token: &str) -> Result<InvoiceClaims, TokenError> {
        self.verify(&self.invoice.1, token, INVOICE_AUDIENCE, false)
    }
}

/// The crypto behind `jsonwebtoken`: RustCrypto's HMAC-SHA256 (our own tokens, signed and
/// verified), RSA PKCS#1 v1.5 with SHA-256 and ECDSA P-256 (an OpenID provider's tokens, verified
/// only). Nothing else is linked or accepted: a key answers only the algorithm of its own family,
/// so an HMAC "signed" with a provider's public key never verifies.
mod verifiers {
    use hmac::{Hmac, Mac};
    use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
    use jsonwebtoken::errors::{ErrorKind, Result};
    use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};
    use sha2::{Digest, Sha256};

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

    /// An RSA public key (from a JWK's `n` and `e`) checking RS256.
    struct Rs256(rsa::RsaPublicKey);

    /// A P-256 public key (from a JWK's `x` and `y`) checking ES256.
    struct Es256(p256::ecdsa::VerifyingKey);

    fn signer_factory(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
        Ok(Box::new(Hs256::new(algorithm, key.as_bytes())?))
    }

    fn verifier_factory(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
        use jsonwebtoken::AlgorithmFamily as F;
        match (algorithm, key.family(), key.kind()) {
            (Algorithm::HS256, F::Hmac, DecodingKeyKind::SecretOrDer(secret)) => {
                Ok(Box::new(Hs256::new(algorithm, secret)?))
            }
            (Algorithm::RS256, F::Rsa, DecodingKeyKind::RsaModulusExponent { n, e }) => {
                let key = rsa::RsaPublicKey::new(
                    rsa::BigUint::from_bytes_be(n),
                    rsa::BigUint::from_bytes_be(e),
                )
                .map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?;
                // Shorter RSA keys are breakable; no provider of note signs with them.
                if rsa::traits::PublicKeyParts::size(&key) < 256 {
                    return Err(ErrorKind::InvalidRsaKey("shorter than 2048 bits".into()).into());
                }
                Ok(Box::new(Rs256(key)))
            }
            (Algorithm::ES256, F::Ec, DecodingKeyKind::SecretOrDer(point)) => {
                p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                    .map(|k| Box::new(Es256(k)) as Box<dyn JwtVerifier>)
                    .map_err(|_| ErrorKind::InvalidEcdsaKey.into())
            }
            _ => Err(ErrorKind::InvalidAlgorithm.into()),
        }
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

    impl signature::Verifier<Vec<u8>> for Rs256 {
        fn verify(
            &self,
            msg: &[u8],
            signature: &Vec<u8>,
        ) -> std::result::Result<(), signature::Error> {
            let digest = Sha256::digest(msg);
            self.0
                .verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &digest, signature)
                .map_err(signature::Error::from_source)
        }
    }

    impl signature::Verifier<Vec<u8>> for Es256 {
        fn verify(
            &self,
            msg: &[u8],
            signature: &Vec<u8>,
        ) -> std::result::Result<(), signature::Error> {
            let signature = p256::ecdsa::Signature::from_slice(signature)?;
            signature::Verifier::verify(&self.0, msg, &signature)
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

    impl JwtVerifier for Rs256 {
        fn algorithm(&self) -> Algorithm {
            Algorithm::RS256
        }
    }

    impl JwtVerifier for Es256 {
        fn algorithm(&self) -> Algorithm {
            Algorithm::ES256
        }
    }
}

/// Installs the one crypto provider (once per process; a second call finds it there).
pub(crate) fn install_verifiers() {
    let _ = verifiers::PROVIDER.install_default();
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
