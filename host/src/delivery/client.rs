//! The outgoing HTTP client: no redirects, a timeout, and (unless allowed) no requests to
//! loopback, private, link-local or other internal addresses, checked on the address that
//! is actually connected to (so DNS rebinding cannot slip through).
//!
//! It is hyper's pooled client with rustls (the platform's certificate verifier), not
//! reqwest: reqwest parses each request's URL twice more and runs redirect and retry layers
//! this client never uses; without them the host spends about 8% less CPU per event under
//! load (BENCHMARKS.md).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::http::{HeaderName, HeaderValue, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;

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

type Connector = hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>;

#[derive(Clone)]
pub struct Client {
    http: hyper_util::client::legacy::Client<Connector, Full<Bytes>>,
    policy: Arc<AddressPolicy>,
    timeout: Duration,
}

impl Client {
    pub fn new(timeout: Duration, policy: AddressPolicy) -> anyhow::Result<Client> {
        let policy = Arc::new(policy);
        let mut tcp = HttpConnector::new_with_resolver(GuardedResolver { policy: policy.clone() });
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(timeout.min(Duration::from_secs(10))));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .try_with_platform_verifier()?
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        Ok(Client { http, policy, timeout })
    }

    /// POSTs `outgoing` to `url` within `timeout` (the client's own when `None`). Never
    /// fails: errors are part of the result.
    pub async fn send(&self, url: &Uri, outgoing: &Outgoing, timeout: Option<Duration>) -> AttemptResult {
        let timeout = timeout.unwrap_or(self.timeout);
        let started = Instant::now();
        let failed = |error: String| AttemptResult {
            status: None,
            latency: started.elapsed(),
            response_excerpt: String::new(),
            error: Some(error),
            retry_after: None,
        };
        if let Some(host) = url.host()
            && let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>()
            && self.policy.refuses(ip)
        {
            return failed(format!(
                "refused: {ip} is an internal address (delivery.allow_private_networks is false and it is not in allowed_networks)"
            ));
        }
        let request = match request(url, outgoing) {
            Ok(request) => request,
            Err(error) => return failed(error),
        };
        match tokio::time::timeout(timeout, self.exchange(request, started)).await {
            Ok(Ok(result)) => result,
            Ok(Err(error)) => failed(error),
            Err(_) => failed(format!("timed out after {timeout:?}")),
        }
    }

    /// Sends `request` and reads the status, `Retry-After` and the first bytes of the body;
    /// `Err` if no response came.
    async fn exchange(&self, request: Request<Full<Bytes>>, started: Instant) -> Result<AttemptResult, String> {
        let response = self.http.request(request).await.map_err(|error| error_chain(&error))?;
        let status = response.status().as_u16();
        let retry_after =
            response.headers().get(hyper::header::RETRY_AFTER).and_then(|v| parse_retry_after(v.to_str().ok()?));
        let mut body = response.into_body();
        let mut excerpt = Vec::new();
        let mut error = None;
        while excerpt.len() < EXCERPT_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(chunk) = frame.data_ref() {
                        excerpt.extend_from_slice(&chunk[..chunk.len().min(EXCERPT_BYTES - excerpt.len())]);
                    }
                }
                Some(Err(e)) => {
                    error = Some(format!("reading the response: {}", error_chain(&e)));
                    break;
                }
                None => break,
            }
        }
        Ok(AttemptResult {
            status: Some(status),
            latency: started.elapsed(),
            response_excerpt: String::from_utf8_lossy(&excerpt).into_owned(),
            error,
            retry_after,
        })
    }
}

/// The POST of `outgoing` to `url`, its headers checked (a plugin's header can be invalid).
fn request(url: &Uri, outgoing: &Outgoing) -> Result<Request<Full<Bytes>>, String> {
    let mut request = Request::post(url.clone()).body(Full::new(outgoing.body.clone())).map_err(|e| e.to_string())?;
    let headers = request.headers_mut();
    for (name, value) in &outgoing.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header name {name:?}"))?;
        let value = HeaderValue::from_str(value).map_err(|_| format!("invalid value for header {name}"))?;
        headers.append(name, value);
    }
    Ok(request)
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

/// Resolves a host name and keeps only the addresses the policy allows, so a name that
/// points at an internal address is refused at connect time.
#[derive(Clone)]
struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
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
            Ok(allowed.into_iter())
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
