//! One `SdkConfig` per process, with timeouts, so a slow AWS call fails instead of hanging a run,
//! and one HTTP client: hyper 1 + rustls 0.23 on ring (the SDK's default features, which would
//! add aws-lc and the legacy hyper 0.14 + rustls 0.21 client, are off), trusting one root store
//! compiled into the binary rather than the system's certificate files, which the SDK would read
//! and parse at every cold start.

use std::time::Duration;

use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider, TlsContext, TrustStore};
use base64::Engine;

/// How long AWS calls may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeouts {
    /// Fit for AWS: 3 s to connect, 5 s per attempt, 15 s per operation.
    Aws,
    /// For a slow engine (a test server answering one request at a time): every timeout is
    /// this, and stalled-stream protection, whose grace period suits AWS, is off.
    SlowEngine(Duration),
}

impl Timeouts {
    fn config(self) -> TimeoutConfig {
        match self {
            Timeouts::Aws => TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(15))
                .build(),
            Timeouts::SlowEngine(timeout) => TimeoutConfig::builder()
                .connect_timeout(timeout)
                .operation_attempt_timeout(timeout)
                .operation_timeout(timeout * 2)
                .build(),
        }
    }

    fn stalled_stream_protection(self) -> StalledStreamProtectionConfig {
        match self {
            Timeouts::Aws => StalledStreamProtectionConfig::enabled().build(),
            Timeouts::SlowEngine(_) => StalledStreamProtectionConfig::disabled(),
        }
    }
}

/// The one HTTP client of the project's SDK clients.
fn http_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
    let tls = TlsContext::builder()
        .with_trust_store(compiled_in_roots())
        .build()
        .expect("a TLS context of PEM certificates builds");
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .tls_context(tls)
        .build_https()
}

/// The loader for processes that are not Lambda functions (the local server, tests against a
/// real account): the latest behaviour version, the one HTTP client, and region and
/// credentials from the default chain (environment, profiles, web identity, containers,
/// instance metadata) unless the caller sets them.
pub fn sdk_defaults() -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest()).http_client(http_client())
}

/// Loads the configuration through the default chain (see [`sdk_defaults`]).
pub async fn load_sdk_config(timeouts: Timeouts) -> SdkConfig {
    sdk_defaults()
        .timeout_config(timeouts.config())
        .stalled_stream_protection(timeouts.stalled_stream_protection())
        .load()
        .await
}

/// The configuration of a Lambda function, from the variables Lambda sets: `AWS_REGION` and
/// the execution role's credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`), plus `AWS_ENDPOINT_URL` where a test points the function at a
/// compatible server. Nothing is read from files and no provider chain is built, so none is
/// linked: the default chain (profiles, SSO, web identity with its STS client, containers,
/// instance metadata) was a fifth of each function's code and most of its start.
pub fn sdk_config_from_environment(timeouts: Timeouts) -> SdkConfig {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let region = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION"));
    let mut config = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(http_client())
        .region(region.map(Region::new))
        .credentials_provider(SharedCredentialsProvider::new(
            EnvironmentVariableCredentialsProvider::new(),
        ))
        .timeout_config(timeouts.config())
        .stalled_stream_protection(timeouts.stalled_stream_protection());
    if let Some(endpoint) = var("AWS_ENDPOINT_URL") {
        config = config.endpoint_url(endpoint);
    }
    config.build()
}

/// The names of Amazon Trust Services' roots, which issue the certificates of every AWS service
/// endpoint (DynamoDB and EC2 since 2018, S3 and CloudFront since 2022): Amazon Root CA 1–4 and
/// the Starfield Services root that cross-signs them.
const AWS_ROOT_NAMES: [&[u8]; 2] = [
    b"Amazon Root CA ",
    b"Starfield Services Root Certificate Authority",
];

/// The roots the SDK trusts: Amazon Trust Services' roots, taken from Mozilla's set as
/// `webpki-root-certs` compiles it in, as the PEM the SDK's trust store takes. Only those five,
/// because the SDK parses every trusted root again for each TLS connector it builds, the first
/// before the function's first event: with all of Mozilla's roots that parsing was 70% of a
/// function's start.
fn compiled_in_roots() -> TrustStore {
    let mut store = TrustStore::empty().with_native_roots(false);
    for cert in aws_roots() {
        store.add_pem_certificate(pem(cert));
    }
    store
}

/// Amazon Trust Services' roots among Mozilla's.
fn aws_roots() -> impl Iterator<Item = &'static [u8]> {
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|cert| cert.as_ref())
        .filter(|der| {
            // The issuer (the subject, in a root) comes within the first few hundred bytes.
            let head = &der[..der.len().min(400)];
            AWS_ROOT_NAMES
                .iter()
                .any(|name| memchr::memmem::find(head, name).is_some())
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    #[test]
    fn the_sdk_trusts_amazon_trust_services_five_roots() {
        let roots: Vec<&[u8]> = aws_roots().collect();
        assert_eq!(roots.len(), 5);
        let names = [
            "Amazon Root CA 1",
            "Amazon Root CA 2",
            "Amazon Root CA 3",
            "Amazon Root CA 4",
            "Starfield Services Root Certificate Authority - G2",
        ];
        for name in names {
            let found = roots
                .iter()
                .filter(|der| memchr::memmem::find(der, name.as_bytes()).is_some())
                .count();
            assert_eq!(found, 1, "{name}");
        }
    }

    #[test]
    fn the_compiled_in_roots_read_back_as_the_same_certificates() {
        for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
            let back: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(&pem(cert))
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(back.len(), 1);
            assert_eq!(back[0].as_ref(), cert.as_ref());
        }
    }
}
