//! Run webhooks (SPEC §3.13), the parts that are rules rather than I/O: where a delivery may go,
//! how it is signed (Standard Webhooks: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body` with
//! the user's `whsec_` secret), when a failed delivery is tried again (for more than 24 hours),
//! and which addresses are public (a delivery connects only to those: no loopback, private,
//! link-local or cloud metadata address, whatever a name resolves to).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ids::{RunId, UserId};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The run events a webhook can be told of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookEvent {
    /// The run started (`run.started`).
    Start,
    /// The run ended, whichever way (`run.completed`).
    Completed,
}

impl WebhookEvent {
    /// The delivery's `type`.
    pub fn delivery_type(self) -> &'static str {
        match self {
            WebhookEvent::Start => "run.started",
            WebhookEvent::Completed => "run.completed",
        }
    }
}

/// Where a run's webhook deliveries go, and for which events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookTarget {
    /// The receiver (https).
    pub url: String,
    /// The events it wants (by default, the end only).
    pub events: Vec<WebhookEvent>,
}

/// Longest receiver URL accepted.
pub const MAX_URL_LEN: usize = 2048;

impl WebhookTarget {
    /// A target from a cast's `webhook` and `webhookEvents`: an absolute `https` URL with a host
    /// and no credentials in it (`http` to a loopback address only where `allow_loopback` says
    /// so: the local server's tests). An empty event list means the default, `completed`.
    pub fn parse(
        url: &str,
        events: &[String],
        allow_loopback: bool,
    ) -> Result<WebhookTarget, String> {
        if url.len() > MAX_URL_LEN {
            return Err(format!("the URL is over {MAX_URL_LEN} characters"));
        }
        let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        let host = parsed.host_str().unwrap_or_default();
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("the URL must not carry credentials".into());
        }
        let loopback = matches!(host, "localhost" | "127.0.0.1" | "[::1]");
        match parsed.scheme() {
            "https" => {}
            "http" if allow_loopback && loopback => {}
            _ => return Err("the URL must be https".into()),
        }
        let mut wanted = Vec::new();
        for event in events {
            let event = match event.as_str() {
                "start" => WebhookEvent::Start,
                "completed" => WebhookEvent::Completed,
                other => {
                    return Err(format!(
                        "unknown webhook event `{other}` (start, completed)"
                    ))
                }
            };
            if !wanted.contains(&event) {
                wanted.push(event);
            }
        }
        if wanted.is_empty() {
            wanted.push(WebhookEvent::Completed);
        }
        Ok(WebhookTarget {
            url: parsed.to_string(),
            events: wanted,
        })
    }
}

/// A user's signing secret: `whsec_` and the base64 of its key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSecret(String);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(…)")
    }
}

const SECRET_PREFIX: &str = "whsec_";

impl WebhookSecret {
    /// A new secret with a random 24-byte key.
    pub fn generate() -> WebhookSecret {
        let key: [u8; 24] = rand::random();
        WebhookSecret(format!("{SECRET_PREFIX}{}", STANDARD.encode(key)))
    }

    /// The secret as the user is shown it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A stored secret, if it has the shape of one.
    pub fn parse(raw: &str) -> Option<WebhookSecret> {
        let key = raw.strip_prefix(SECRET_PREFIX)?;
        let bytes = STANDARD.decode(key).ok()?;
        (!bytes.is_empty()).then(|| WebhookSecret(raw.to_owned()))
    }

    fn key(&self) -> Vec<u8> {
        let encoded = self.0.strip_prefix(SECRET_PREFIX).unwrap_or(&self.0);
        STANDARD.decode(encoded).unwrap_or_default()
    }

    /// The `webhook-signature` header of a delivery: `v1,` and the base64 HMAC-SHA256 of
    /// `{id}.{timestamp}.{body}`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key()) {
            Ok(mac) => mac,
            Err(_) => return String::new(),
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// How long after attempt `attempt` (1 for the first) the next one is made; `None` after the
/// last. The delays add up to 27 h 35 min 5 s: a receiver down for a day still gets it.
pub fn retry_after(attempt: u32) -> Option<Duration> {
    const DELAYS_SECS: [u64; 7] = [5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600];
    DELAYS_SECS
        .get(attempt.checked_sub(1)? as usize)
        .map(|s| Duration::from_secs(*s))
}

/// Whether a delivery may connect to `ip`: a public unicast address, not loopback, private,
/// shared (CGNAT), link-local (where cloud metadata lives: 169.254.169.254, fd00:ec2::254),
/// documentation, benchmarking, multicast or reserved — also when written as an IPv4-mapped
/// IPv6 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

/// A public IPv6 address: none of the ranges that reach something else than the address they
/// name. Every form that carries an IPv4 address inside (mapped, translated, compatible, NAT64,
/// 6to4, Teredo) is refused outright: a receiver that has a public IPv4 address is reached by it.
fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let first = s[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local (fc00::/7, AWS metadata fd00:ec2::254)
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated, still routed by some)
        || first == 0x2001 && s[1] == 0x0db8 // documentation
        || first == 0x2001 && s[1] == 0 // Teredo (2001::/32)
        || first == 0x2002 // 6to4 (2002::/16)
        || first == 0x0064 && s[1] == 0xff9b // NAT64 (64:ff9b::/96, and 64:ff9b:1::/48)
        || first == 0x0100 && s[1..4] == [0, 0, 0] // discard-only (100::/64)
        || s[..5] == [0, 0, 0, 0, 0] && (s[5] == 0xffff || s[5] == 0) // mapped, compatible
        || s[..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0) // translated (::ffff:0:0:0/96)
}

/// One event's delivery to a run's receiver: written with the event, in the same transaction
/// (so a delivery is pending exactly when its event happened), tried until the receiver takes
/// it or the retries run out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// `webhook-id`: the same on every attempt (`msg_{runId}_{seq}`).
    pub webhook_id: String,
    /// The run.
    pub run_id: RunId,
    /// Its owner, whose secret signs it.
    pub user_id: UserId,
    /// `run.started` or `run.completed`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The receiver.
    pub url: String,
    /// The JSON body, fixed when the event happened: every attempt sends the same bytes.
    pub body: String,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
    /// When the next attempt is due; `None` once delivered or given up.
    pub next_at: Option<DateTime<Utc>>,
    /// The attempts so far, oldest first.
    pub attempts: Vec<Attempt>,
}

/// One attempt as `GET /api/v1/runs/{runId}/webhooks` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// The delivery's `webhook-id`.
    pub webhook_id: String,
    /// `run.started` or `run.completed`.
    #[serde(rename = "type")]
    pub kind: String,
    /// 1 for the first.
    pub attempt: u32,
    /// The receiver's status, if it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was made.
    pub at: DateTime<Utc>,
    /// When the next one is due, if one will be made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<DateTime<Utc>>,
}

impl Delivery {
    /// The `webhook-id` of the delivery of a run's event `seq`: the same on every attempt.
    pub fn id(run_id: &RunId, seq: u64) -> String {
        format!("msg_{run_id}_{seq}")
    }

    /// Whether an attempt is still to be made.
    pub fn is_pending(&self) -> bool {
        self.next_at.is_some()
    }
}

/// One delivery attempt as it goes out: where, and the signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The receiver.
    pub url: String,
    /// `webhook-id`: the same on every attempt of one event.
    pub id: String,
    /// `webhook-timestamp`: Unix seconds of this attempt.
    pub timestamp: i64,
    /// `webhook-signature`.
    pub signature: String,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempted {
    /// The receiver's status, if it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed (no answer, a refused address, a non-2xx status), if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Attempted {
    /// Whether the receiver took it (a 2xx).
    pub fn delivered(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_reachable() {
        for private in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.8",
            "172.16.5.4",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.7",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.1.1.1",
            "64:ff9b::a00:1",
            "::127.0.0.1",
            "::ffff:8.8.8.8",
            "::ffff:0:808:808",
            "2002:c000:204::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "fec0::1",
            "64:ff9b:1::808:808",
            "100::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "2001:4860:4860::8888",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn a_target_is_an_https_url_without_credentials() {
        let t = WebhookTarget::parse("https://hooks.example/run?x=1", &[], false).unwrap();
        assert_eq!(t.events, vec![WebhookEvent::Completed], "the default");
        let both = [
            "start".to_owned(),
            "completed".to_owned(),
            "start".to_owned(),
        ];
        let t = WebhookTarget::parse("https://hooks.example/", &both, false).unwrap();
        assert_eq!(t.events, vec![WebhookEvent::Start, WebhookEvent::Completed]);
        for bad in [
            "http://hooks.example/",
            "ftp://hooks.example/",
            "https://user:pass@hooks.example/",
            "hooks.example/x",
            "https://",
            "javascript:alert(1)",
        ] {
            assert!(WebhookTarget::parse(bad, &[], false).is_err(), "{bad}");
        }
        let long = format!("https://h.example/{}", "a".repeat(MAX_URL_LEN));
        assert!(WebhookTarget::parse(&long, &[], false).is_err());
        assert!(WebhookTarget::parse("https://h.example/", &["finished".into()], false).is_err());
        // Plain http to the loopback only when the local server's flag allows it.
        assert!(WebhookTarget::parse("http://127.0.0.1:9/h", &[], false).is_err());
        assert!(WebhookTarget::parse("http://127.0.0.1:9/h", &[], true).is_ok());
        assert!(WebhookTarget::parse("http://10.0.0.1/h", &[], true).is_err());
    }

    #[test]
    fn signatures_verify_with_the_standard_webhooks_library() {
        let secret = WebhookSecret::generate();
        assert!(secret.as_str().starts_with("whsec_"));
        assert_eq!(WebhookSecret::parse(secret.as_str()), Some(secret.clone()));
        assert_eq!(WebhookSecret::parse("whsec_"), None);
        assert_eq!(WebhookSecret::parse("sk_123"), None);
        assert!(!format!("{secret:?}").contains("whsec_"), "never in logs");

        let id = "msg_2b8dq1u7rnl0bp8l";
        let now = chrono::Utc::now().timestamp();
        let body = br#"{"type":"run.completed","timestamp":"2026-11-26T23:00:00Z","data":{}}"#;
        let signature = secret.sign(id, now, body);
        assert!(signature.starts_with("v1,"));
        let verifier = standardwebhooks::Webhook::new(secret.as_str()).unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", id.parse().unwrap());
        headers.insert("webhook-timestamp", now.to_string().parse().unwrap());
        headers.insert("webhook-signature", signature.parse().unwrap());
        verifier.verify(body, &headers).unwrap();
        // A changed body, another secret, or another id does not verify.
        assert!(verifier.verify(b"{}", &headers).is_err());
        let other = standardwebhooks::Webhook::new(WebhookSecret::generate().as_str()).unwrap();
        assert!(other.verify(body, &headers).is_err());
        headers.insert("webhook-id", "msg_other".parse().unwrap());
        assert!(verifier.verify(body, &headers).is_err());
    }

    #[test]
    fn retries_go_on_for_more_than_a_day_then_stop() {
        assert_eq!(retry_after(0), None);
        assert_eq!(retry_after(1), Some(Duration::from_secs(5)));
        let delays: Vec<Duration> = (1..).map_while(retry_after).collect();
        assert!(
            delays.windows(2).all(|w| w[0] <= w[1]),
            "never sooner than before"
        );
        let total: Duration = delays.iter().sum();
        assert!(total >= Duration::from_secs(24 * 3600), "{total:?}");
        assert_eq!(retry_after(delays.len() as u32 + 1), None);
    }
}
