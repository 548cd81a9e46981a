//! [`HttpsJson`]: the [`JsonFetcher`] an OpenID provider's discovery document and keys come
//! through, on the HTTP stack every function already links (hyper 1 + rustls 0.23 on ring),
//! trusting Mozilla's roots (any provider's certificate), not only Amazon's as the SDK does.

use std::time::Duration;

use async_trait::async_trait;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use spellcast_core::oidc::JsonFetcher;

/// The largest document read (a key set is a few KB).
const MOST_BYTES: usize = 256 * 1024;

/// Fetches JSON over HTTPS (plain http only to loopback, which the OIDC settings already
/// require of an `http://` issuer), 5 s at most per document, no redirects.
pub struct HttpsJson {
    client: tokio::sync::OnceCell<
        Client<
            hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
            Empty<bytes::Bytes>,
        >,
    >,
}

impl Default for HttpsJson {
    fn default() -> Self {
        HttpsJson {
            client: tokio::sync::OnceCell::new(),
        }
    }
}

impl HttpsJson {
    fn connector() -> Result<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        String,
    > {
        let mut roots = rustls::RootCertStore::empty();
        for der in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
            // A root rustls cannot use is skipped; the rest still serve.
            let _ = roots.add(der.clone());
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build())
    }
}

#[async_trait]
impl JsonFetcher for HttpsJson {
    async fn get_json(&self, url: &str) -> Result<serde_json::Value, String> {
        let client = self
            .client
            .get_or_try_init(|| async {
                Self::connector().map(|c| Client::builder(TokioExecutor::new()).build(c))
            })
            .await?;
        let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let request = http::Request::get(uri)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let fetch = async {
            let response = client
                .request(request)
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("{url} answered {}", response.status()));
            }
            let body = Limited::new(response.into_body(), MOST_BYTES)
                .collect()
                .await
                .map_err(|e| format!("{url}: {e}"))?
                .to_bytes();
            serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
        };
        tokio::time::timeout(Duration::from_secs(5), fetch)
            .await
            .map_err(|_| format!("{url}: no answer in 5 s"))?
    }
}
