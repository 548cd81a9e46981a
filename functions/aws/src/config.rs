//! One `SdkConfig` per process, with timeouts, so a slow AWS call fails instead of hanging a run,
//! and one HTTP client: hyper 1 + rustls 0.23 on ring (the SDK's default features, which would
//! add aws-lc and the legacy hyper 0.14 + rustls 0.21 client, are off), trusting one root store
//! compiled into the binary rather than the system's certificate files, which the SDK would read
//! and parse at every cold start.

use std::time::Duration;

use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider, TlsContext, TrustStore};
use base64::Engine;

/// The loader every `SdkConfig` of the project starts from: the latest behaviour version and
/// the one HTTP client. Region and credentials come from the environment (on Lambda, its
/// variables), or from the caller.
pub fn sdk_defaults() -> ConfigLoader {
    let tls = TlsContext::builder()
        .with_trust_store(compiled_in_roots())
        .build()
        .expect("a TLS context of PEM certificates builds");
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .tls_context(tls)
        .build_https();
    aws_config::defaults(BehaviorVersion::latest()).http_client(http)
}

/// Mozilla's root certificates as `webpki-root-certs` compiles them in, as the PEM the SDK's
/// trust store takes.
fn compiled_in_roots() -> TrustStore {
    let mut store = TrustStore::empty().with_native_roots(false);
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        store.add_pem_certificate(pem(cert));
    }
    store
}

/// One DER certificate as PEM.
fn pem(der: &[u8]) -> Vec<u8> {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(body.len() + body.len() / 64 + 64);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out.into_bytes()
}

/// Loads the AWS configuration from the environment (region, credentials, `AWS_ENDPOINT_URL` for
/// DynamoDB-compatible servers in tests) with timeouts fit for AWS: 3 s to connect, 5 s per
/// attempt, 15 s per operation.
pub async fn load_sdk_config() -> SdkConfig {
    sdk_defaults()
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(15))
                .build(),
        )
        .load()
        .await
}

/// The configuration for a slow engine (a test server answering one request at a time): every
/// timeout is `timeout`, and stalled-stream protection, whose grace period suits AWS, is off.
pub async fn load_sdk_config_for_slow_engine(timeout: Duration) -> SdkConfig {
    sdk_defaults()
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(timeout)
                .operation_attempt_timeout(timeout)
                .operation_timeout(timeout * 2)
                .build(),
        )
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .load()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    #[test]
    fn the_compiled_in_roots_read_back_as_the_same_certificates() {
        let roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS;
        assert!(roots.len() > 100, "Mozilla's set, not a handful");
        for cert in roots {
            let back: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(&pem(cert))
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(back.len(), 1);
            assert_eq!(back[0].as_ref(), cert.as_ref());
        }
    }
}
