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

/// IPv4 ranges that are not globally reachable: the IANA IPv4 Special-Purpose Address Registry,
/// multicast, and the reserved 240.0.0.0/4 (broadcast included).
const INTERNAL_V4: &[(u32, u8)] = &[
    (0x0000_0000, 8),  // 0.0.0.0/8 "this network"
    (0x0a00_0000, 8),  // 10.0.0.0/8 private
    (0x6440_0000, 10), // 100.64.0.0/10 shared address space (carrier-grade NAT)
    (0x7f00_0000, 8),  // 127.0.0.0/8 loopback
    (0xa9fe_0000, 16), // 169.254.0.0/16 link-local, cloud metadata services
    (0xac10_0000, 12), // 172.16.0.0/12 private
    (0xc000_0000, 24), // 192.0.0.0/24 IETF protocol assignments
    (0xc000_0200, 24), // 192.0.2.0/24 documentation
    (0xc058_6300, 24), // 192.88.99.0/24 6to4 relay anycast (deprecated)
    (0xc0a8_0000, 16), // 192.168.0.0/16 private
    (0xc612_0000, 15), // 198.18.0.0/15 benchmarking
    (0xc633_6400, 24), // 198.51.100.0/24 documentation
    (0xcb00_7100, 24), // 203.0.113.0/24 documentation
    (0xe000_0000, 4),  // 224.0.0.0/4 multicast
    (0xf000_0000, 4),  // 240.0.0.0/4 reserved, 255.255.255.255 broadcast
];

/// IPv6 ranges that are not globally reachable (the IANA IPv6 Special-Purpose Address
/// Registry, multicast, deprecated site-local), after the ranges that embed an IPv4 address
/// were judged by that address (see [`embedded_ipv4`]).
const INTERNAL_V6: &[(u128, u8)] = &[
    (0, 96),                           // ::/96 unspecified, loopback, IPv4-compatible (deprecated)
    (0x0064_ff9b_0001 << 80, 48),      // 64:ff9b:1::/48 local-use NAT64
    (0x0100 << 112, 64),               // 100::/64 discard-only
    (0x0100_0000_0000_0001 << 64, 64), // 100:0:0:1::/64 dummy prefix
    (0x2001 << 112, 23),               // 2001::/23 IETF protocol assignments
    (0x2001_0db8 << 96, 32),           // 2001:db8::/32 documentation
    (0x3fff << 112, 20),               // 3fff::/20 documentation
    (0x5f00 << 112, 16),               // 5f00::/16 segment routing SIDs
    (0xfc00 << 112, 7),                // fc00::/7 unique local
    (0xfe80 << 112, 10),               // fe80::/10 link-local
    (0xfec0 << 112, 10),               // fec0::/10 site-local (deprecated)
    (0xff00 << 112, 8),                // ff00::/8 multicast
];

fn in_range<T>(address: T, (network, length): (T, u8), bits: u32) -> bool
where
    T: Copy + std::ops::Shr<u32, Output = T> + PartialEq,
{
    let shift = bits - u32::from(length);
    shift >= bits || address >> shift == network >> shift
}

/// The IPv4 address an IPv6 address carries to its destination: IPv4-mapped (`::ffff:a.b.c.d`),
/// the well-known NAT64 prefix (`64:ff9b::/96`), 6to4 (`2002:AABB:CCDD::/48`), and Teredo
/// (`2001::/32`: the server, and the client's address stored inverted).
fn embedded_ipv4(v6: std::net::Ipv6Addr) -> Vec<std::net::Ipv4Addr> {
    let bits = u128::from(v6);
    let low = std::net::Ipv4Addr::from(bits as u32);
    if let Some(mapped) = v6.to_ipv4_mapped() {
        vec![mapped]
    } else if bits >> 32 == 0x0064_ff9b << 64 {
        vec![low]
    } else if bits >> 112 == 0x2002 {
        vec![std::net::Ipv4Addr::from((bits >> 80) as u32)]
    } else if bits >> 96 == 0x2001_0000 {
        vec![std::net::Ipv4Addr::from((bits >> 64) as u32), std::net::Ipv4Addr::from(!(bits as u32))]
    } else {
        Vec::new()
    }
}

/// Whether `ip` is not globally reachable: loopback, private, shared, link-local (the cloud
/// metadata address), documentation, benchmarking, reserved, multicast, unique-local, and every
/// other range of the IANA special-purpose registries that is not globally reachable. An IPv6
/// address that carries an IPv4 one (IPv4-mapped, NAT64, 6to4, Teredo) is judged by it.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => INTERNAL_V4.iter().any(|&range| in_range(u32::from(v4), range, 32)),
        IpAddr::V6(v6) => {
            let embedded = embedded_ipv4(v6);
            if !embedded.is_empty() {
                return embedded.into_iter().any(|v4| is_internal(IpAddr::V4(v4)));
            }
            INTERNAL_V6.iter().any(|&range| in_range(u128::from(v6), range, 128))
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
            "0.1.2.3",
            "198.18.0.1",
            "198.19.255.255",
            "240.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::10.0.0.1",
            "::8.8.8.8",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "ff02::1",
            "64:ff9b::10.0.0.1",
            "64:ff9b::169.254.169.254",
            "64:ff9b:1::1.1.1.1",
            "2002:a00:1::1",
            "2002:7f00:1::",
            "2001:0:4136:e378:8000:63bf:f5ff:fffe",
            "2001:db8::1",
            "100::1",
            "3fff::1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700::1111",
            "64:ff9b::1.1.1.1",
            "2002:101:101::1",
            "2001:0:4136:e378:8000:63bf:fefe:fefe",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    /// The registries' ranges, written out here independently of the tables above.
    const SPECIAL_V4: &[&str] = &[
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    ];
    const SPECIAL_V6: &[&str] = &[
        "::/96",
        "64:ff9b:1::/48",
        "100::/64",
        "100:0:0:1::/64",
        "2001:2::/48",
        "2001:10::/28",
        "2001:db8::/32",
        "3fff::/20",
        "5f00::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    ];

    fn v4_in(range: &str, host: u32) -> std::net::Ipv4Addr {
        let net: ipnet::Ipv4Net = range.parse().unwrap();
        std::net::Ipv4Addr::from(u32::from(net.network()) | (host & u32::from(net.hostmask())))
    }

    fn special_v4(ip: std::net::Ipv4Addr) -> bool {
        SPECIAL_V4.iter().any(|range| range.parse::<ipnet::Ipv4Net>().unwrap().contains(&ip))
    }

    proptest::proptest! {
        #[test]
        fn every_address_in_a_special_range_is_refused(range in 0..SPECIAL_V4.len(), v6 in 0..SPECIAL_V6.len(), host: u32, host6: u128) {
            proptest::prop_assert!(is_internal(IpAddr::V4(v4_in(SPECIAL_V4[range], host))));
            let net: ipnet::Ipv6Net = SPECIAL_V6[v6].parse().unwrap();
            let ip = std::net::Ipv6Addr::from(u128::from(net.network()) | (host6 & u128::from(net.hostmask())));
            proptest::prop_assert!(is_internal(IpAddr::V6(ip)), "{}", ip);
        }

        #[test]
        fn public_addresses_are_allowed_and_judged_alike_when_embedded(bits: u32, suffix: u16) {
            let v4 = std::net::Ipv4Addr::from(bits);
            let special = special_v4(v4);
            proptest::prop_assert_eq!(is_internal(IpAddr::V4(v4)), special, "{}", v4);
            let embedded = [
                v4.to_ipv6_mapped(),
                std::net::Ipv6Addr::from((0x0064_ff9b_u128 << 96) | u128::from(bits)),
                std::net::Ipv6Addr::from((0x2002_u128 << 112) | (u128::from(bits) << 80) | u128::from(suffix)),
                // Teredo: a public server, the client's address inverted.
                std::net::Ipv6Addr::from((0x2001_0000_u128 << 96) | (0x0101_0101_u128 << 64) | u128::from(!bits)),
            ];
            for ip in embedded {
                proptest::prop_assert_eq!(is_internal(IpAddr::V6(ip)), special, "{} carrying {}", ip, v4);
            }
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
