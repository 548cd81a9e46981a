//! Sending run webhooks (SPEC §3.13): one attempt is one POST with the Standard Webhooks headers,
//! over https only, with no redirect followed, a 10 s limit and at most 64 KiB of the answer
//! read. Where it connects is decided here, not by the receiver's DNS: a name is resolved once,
//! the addresses that are not public are dropped, and the connection is made to what is left
//! (so a name that resolves to 127.0.0.1, 10.x or 169.254.169.254 — at any moment — is never
//! reached); an address written in the URL is checked the same way.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use spellcast_application::ports::WebhookSender;
use spellcast_domain::webhooks::{is_public, Attempted, Outgoing};

/// How long one attempt may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an answer is read (the rest is ignored).
pub const MAX_ANSWER: usize = 64 * 1024;

/// Finds the addresses of a name.
pub type Lookup = Arc<dyn Fn(String) -> Resolving + Send + Sync>;

/// The system's resolver.
fn system_lookup() -> Lookup {
    Arc::new(|host: String| {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    })
}

/// Which addresses a delivery may connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Public addresses only (always, on AWS and by default locally).
    PublicOnly,
    /// Public and loopback addresses, and plain http to loopback: the local server's tests
    /// (`--unsafe-webhook-loopback`).
    AlsoLoopback,
}

impl Reach {
    fn allows(self, ip: IpAddr) -> bool {
        is_public(ip) || (self == Reach::AlsoLoopback && ip.is_loopback())
    }
}

/// A resolver that hands the connector only the addresses [`Reach`] allows.
struct Screened {
    lookup: Lookup,
    reach: Reach,
}

impl Resolve for Screened {
    fn resolve(&self, name: Name) -> Resolving {
        let (lookup, reach) = (self.lookup.clone(), self.reach);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let allowed: Vec<SocketAddr> = lookup(host.clone())
                .await?
                .filter(|a| reach.allows(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(format!("{host} has no public address").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The webhook client.
pub struct Deliveries {
    client: reqwest::Client,
    reach: Reach,
}

impl Deliveries {
    /// A client with the system's resolver.
    pub fn new(reach: Reach) -> Deliveries {
        Deliveries::with_lookup(reach, system_lookup(), TIMEOUT)
    }

    /// A client that also trusts the certificate authorities of `pem` (receivers whose
    /// certificates a private CA signed: `SPELLCAST_WEBHOOK_CA_FILE`), besides the public ones.
    pub fn trusting(reach: Reach, pem: &[u8]) -> Result<Deliveries, String> {
        let roots = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
        if roots.is_empty() {
            return Err("the PEM bundle holds no certificate".into());
        }
        Ok(Deliveries::build(reach, system_lookup(), TIMEOUT, roots))
    }

    /// A client resolving names with `lookup` (tests give it names of their own), giving up
    /// after `timeout`.
    pub fn with_lookup(reach: Reach, lookup: Lookup, timeout: Duration) -> Deliveries {
        Deliveries::build(reach, lookup, timeout, Vec::new())
    }

    fn build(
        reach: Reach,
        lookup: Lookup,
        timeout: Duration,
        roots: Vec<reqwest::Certificate>,
    ) -> Deliveries {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(reach == Reach::PublicOnly)
            // A proxy would resolve and connect in our place: the screen would check nothing.
            .no_proxy()
            .dns_resolver(Arc::new(Screened { lookup, reach }))
            .user_agent("Spellcast-Webhooks/1");
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
        Deliveries {
            client: builder.build().unwrap_or_default(),
            reach,
        }
    }

    fn refused(error: impl Into<String>) -> Attempted {
        Attempted {
            status: None,
            error: Some(error.into()),
        }
    }
}

#[async_trait]
impl WebhookSender for Deliveries {
    async fn send(&self, outgoing: &Outgoing) -> Attempted {
        let Ok(url) = url::Url::parse(&outgoing.url) else {
            return Deliveries::refused("not a URL");
        };
        // An address in the URL is not resolved, so it is checked here.
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal {
            if !self.reach.allows(ip) {
                return Deliveries::refused(format!("{ip} is not a public address"));
            }
        }
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &outgoing.id)
            .header("webhook-timestamp", outgoing.timestamp.to_string())
            .header("webhook-signature", &outgoing.signature)
            .body(outgoing.body.clone())
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => return Deliveries::refused(describe(&e)),
        };
        let status = response.status().as_u16();
        // Read a little of the answer (a receiver that streams forever is not waited for).
        let mut read = 0;
        while read < MAX_ANSWER {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                _ => break,
            }
        }
        Attempted {
            status: Some(status),
            error: (!(200..300).contains(&status))
                .then(|| format!("the receiver answered {status}")),
        }
    }
}

/// A transport error in a few words, with its cause (reqwest's own message is generic).
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "no answer in time".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        "the request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
