//! The outgoing HTTP client: no redirects, a timeout, and (unless allowed) no requests to
//! loopback, private, link-local or other internal addresses, checked on the address that
//! is actually connected to (so DNS rebinding cannot slip through).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::request::Outgoing;

/// What one HTTP attempt produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    pub status: Option<u16>,
    pub latency: Duration,
    pub response_excerpt: String,
    pub error: Option<String>,
    pub retry_after: Option<Duration>,
}

const EXCERPT_BYTES: usize = 512;

/// Which destination addresses are refused.
#[derive(Debug, Clone)]
pub struct AddressPolicy {
    pub allow_private_networks: bool,
    /// Trusted internal networks.
    pub allowed_networks: Vec<ipnet::IpNet>,
}

impl AddressPolicy {
    pub fn refuses(&self, ip: IpAddr) -> bool {
        !self.allow_private_networks && is_internal(ip) && !self.allowed_networks.iter().any(|net| net.contains(&ip))
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    policy: Arc<AddressPolicy>,
}

impl Client {
    pub fn new(timeout: Duration, policy: AddressPolicy) -> anyhow::Result<Client> {
        let policy = Arc::new(policy);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(super::request::USER_AGENT)
            .dns_resolver(Arc::new(GuardedResolver { policy: policy.clone() }))
            .build()?;
        Ok(Client { http, policy })
    }

    /// POSTs `outgoing` to `url`. Never fails: errors are part of the result.
    pub async fn send(&self, url: &reqwest::Url, outgoing: &Outgoing) -> AttemptResult {
        let started = Instant::now();
        let failed = |error: String| AttemptResult {
            status: None,
            latency: started.elapsed(),
            response_excerpt: String::new(),
            error: Some(error),
            retry_after: None,
        };
        if let Some(host) = url.host_str()
            && let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>()
            && self.policy.refuses(ip)
        {
            return failed(format!(
                "refused: {ip} is an internal address (delivery.allow_private_networks is false and it is not in allowed_networks)"
            ));
        }
        let mut request = self.http.post(url.clone()).body(outgoing.body.clone());
        for (name, value) in &outgoing.headers {
            request = request.header(name, value);
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(error) => return failed(error_chain(&error)),
        };
        let status = response.status().as_u16();
        let retry_after =
            response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| parse_retry_after(v.to_str().ok()?));
        let mut excerpt = Vec::new();
        let mut error = None;
        while excerpt.len() < EXCERPT_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => excerpt.extend_from_slice(&chunk[..chunk.len().min(EXCERPT_BYTES - excerpt.len())]),
                Ok(None) => break,
                Err(e) => {
                    error = Some(format!("reading the response: {}", error_chain(&e)));
                    break;
                }
            }
        }
        AttemptResult {
            status: Some(status),
            latency: started.elapsed(),
            response_excerpt: String::from_utf8_lossy(&excerpt).into_owned(),
            error,
            retry_after,
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = cause.source();
    }
    message
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value.trim()).ok()?;
    Some(when.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// Loopback, private, shared (CGNAT), link-local (including the cloud metadata address),
/// unique-local, multicast, unspecified, broadcast, documentation and IPv4-mapped IPv6.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || (a == 100 && (64..128).contains(&b))
                || a == 0
                || a >= 240
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some()
                || v6.segments()[..6] == [0, 0, 0, 0, 0, 0]
        }
    }
}

struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved.iter().copied().filter(|a| !policy.refuses(a.ip())).collect();
            if allowed.is_empty() {
                let ips: Vec<String> = resolved.iter().map(|a| a.ip().to_string()).collect();
                return Err(format!(
                    "refused: {host} resolves only to internal addresses ({}); delivery.allow_private_networks is false",
                    ips.join(", ")
                )
                .into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "ff02::1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn allowed_networks_are_trusted_and_nothing_else() {
        let policy =
            AddressPolicy { allow_private_networks: false, allowed_networks: vec!["10.20.0.0/16".parse().unwrap()] };
        assert!(!policy.refuses("10.20.1.2".parse().unwrap()));
        assert!(policy.refuses("10.21.1.2".parse().unwrap()));
        assert!(policy.refuses("169.254.169.254".parse().unwrap()));
        assert!(!policy.refuses("1.1.1.1".parse().unwrap()));
        let open = AddressPolicy { allow_private_networks: true, allowed_networks: vec![] };
        assert!(!open.refuses("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
