//! [`HttpsJson`]: the [`JsonFetcher`] an OpenID provider's discovery document and keys come
//! through, on the HTTP stack every function already links (hyper 1 + rustls 0.23 on ring),
//! trusting Mozilla's roots (any provider's certificate), not only Amazon's as the SDK does.

use std::time::Duration;

use async_trait::async_trait;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use spellcast_application::oidc::JsonFetcher;

/// The largest document read (a key set is a few KB).
const MOST_BYTES: usize = 256 * 1024;

/// Fetches JSON over HTTPS (plain http only to loopback, which the OIDC settings already
/// require of an `http://` issuer), 5 s at most per document, no redirects.
pub struct HttpsJson {
    client: tokio::sync::OnceCell<
        Client<
            hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
            Full<bytes::Bytes>,
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

impl HttpsJson {
    /// Sends `request`, reads at most [`MOST_BYTES`] of JSON back, within 5 s.
    async fn send(
        &self,
        request: http::Request<Full<bytes::Bytes>>,
    ) -> Result<(u16, serde_json::Value), String> {
        let client = self
            .client
            .get_or_try_init(|| async {
                Self::connector().map(|c| Client::builder(TokioExecutor::new()).build(c))
            })
            .await?;
        let url = request.uri().to_string();
        let fetch = async {
            let response = client
                .request(request)
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MOST_BYTES)
                .collect()
                .await
                .map_err(|e| format!("{url}: {e}"))?
                .to_bytes();
            let json = serde_json::from_slice(&body)
                .map_err(|e| format!("{url} answered {status}, not JSON: {e}"))?;
            Ok((status, json))
        };
        tokio::time::timeout(Duration::from_secs(5), fetch)
            .await
            .map_err(|_| format!("{url}: no answer in 5 s"))?
    }
}

#[async_trait]
impl JsonFetcher for HttpsJson {
    async fn get_json(&self, url: &str) -> Result<serde_json::Value, String> {
        let request = http::Request::get(url)
            .header(http::header::ACCEPT, "application/json")
            .body(Full::default())
            .map_err(|e| format!("{url}: {e}"))?;
        match self.send(request).await? {
            (200, json) => Ok(json),
            (status, _) => Err(format!("{url} answered {status}")),
        }
    }

    async fn post_form(
        &self,
        url: &str,
        fields: &[(&str, &str)],
    ) -> Result<(u16, serde_json::Value), String> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let request = http::Request::post(url)
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Full::from(body))
            .map_err(|e| format!("{url}: {e}"))?;
        self.send(request).await
    }
}
