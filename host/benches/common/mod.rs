//! What the load benches share: the real host started on a temp dir, a receiver that
//! records arrival times, load clients, and the host's CPU time and peak RSS from `/proc`.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;

use super::support;
pub use super::support::process_cpu_time;

/// Event id (or webhook-id) -> (the body was an event envelope, when it arrived).
pub type Arrivals = Arc<Mutex<HashMap<String, (bool, Instant)>>>;

pub fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub async fn start_receiver() -> (String, Arrivals) {
    let arrivals: Arrivals = Arc::default();
    let state = arrivals.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let state = state.clone();
        async move {
            let now = Instant::now();
            // field-map bodies carry the event id; slack-notify's do not, so count those by
            // webhook-id (one delivery per event). Only the two top-level keys are read: the
            // receiver shares the two cores with the host.
            #[derive(serde::Deserialize)]
            struct Probe {
                id: Option<String>,
                #[serde(rename = "type")]
                kind: Option<serde::de::IgnoredAny>,
            }
            let probe: Probe = serde_json::from_slice(&body).unwrap_or(Probe { id: None, kind: None });
            let key = probe.id.unwrap_or_else(|| {
                headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
            });
            let envelope = probe.kind.is_some();
            state.lock().unwrap().entry(key).or_insert((envelope, now));
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, arrivals)
}

pub struct Host {
    pub child: std::process::Child,
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl Host {
    /// The real `hookwasm serve` with one webhook to `receiver`, through `plugin` if given,
    /// with `max_in_flight_per_webhook = 128` (the pipeline bench's tuned setting).
    pub fn start(receiver: &str, plugin: Option<(&str, &str)>) -> Host {
        Host::start_with(receiver, plugin, "max_in_flight_per_webhook = 128\n", |_| {})
    }

    /// The real `hookwasm serve` with one webhook to `receiver`, through `plugin` if given;
    /// `delivery` is added to the `[delivery]` section (which otherwise only allows the
    /// local receiver) and may open sections of its own after it. `seed` runs on the data dir
    /// before the host starts.
    pub fn start_with(receiver: &str, plugin: Option<(&str, &str)>, delivery: &str, seed: impl FnOnce(&Path)) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins.d");
        std::fs::create_dir_all(&plugins).unwrap();
        let mut webhook = format!("id = \"load\"\nurl = \"{receiver}\"\nevents = [\"message.created\"]\n");
        if let Some((plugin, plugin_config)) = plugin {
            std::fs::copy(support::plugin_path(plugin), plugins.join(format!("{plugin}.wasm"))).unwrap();
            webhook += &format!("plugin = \"{plugin}\"\nplugin_config = {plugin_config}\n");
        }
        let data = dir.path().join("data");
        seed(&data);
        let mut config = format!(
            r#"[server]
listen = "127.0.0.1:0"
data_dir = {data:?}
plugins_dir = {plugins:?}
[delivery]
allow_http = true
allow_private_networks = true
{delivery}
"#,
            data = data.display().to_string(),
            plugins = plugins.display().to_string(),
        );
        // Hosts on PostgreSQL take their webhooks from the database, not the config file.
        let shared = delivery.contains("backend = \"postgres\"");
        let webhooks = dir.path().join("webhooks.toml");
        match shared {
            true => std::fs::write(&webhooks, format!("[[webhooks]]\n{webhook}")).unwrap(),
            false => config += &format!("[[webhooks]]\n{webhook}"),
        }
        std::fs::write(dir.path().join("hookwasm.toml"), config).unwrap();
        let host = Host::spawn(Host::command(&dir.path().join("hookwasm.toml")), dir);
        if shared {
            host.apply_webhooks(&webhooks);
        }
        host
    }

    /// Until this host serves the webhooks of `file`: applies them through it unless
    /// another host sharing its database already did.
    fn apply_webhooks(&self, file: &Path) {
        let cli = |args: &[&str]| {
            let binary = std::env::var("HOOKWASM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_hookwasm").to_string());
            Command::new(binary).args(args).args(["--server", &self.url]).output().unwrap()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cli(&["webhooks", "show", "load"]).status.success() {
            let applied = cli(&["webhooks", "apply", file.to_str().unwrap()]);
            assert!(Instant::now() < deadline, "webhooks apply: {}", String::from_utf8_lossy(&applied.stderr));
            if !applied.status.success() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// `hookwasm serve --config <config>` of the build under test (`HOOKWASM_BIN` or this one).
    pub fn command(config: &Path) -> Command {
        let binary = std::env::var("HOOKWASM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_hookwasm").to_string());
        let mut command = Command::new(binary);
        command.args(["serve", "--config"]).arg(config).env("HOOKWASM_LOG", "warn");
        command
    }

    pub fn spawn(mut command: Command, dir: tempfile::TempDir) -> Host {
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        let url = support::listening_url(&mut child);
        Host { child, url, dir }
    }

    /// `host:port` the host listens on.
    pub fn address(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    /// User plus system CPU time the host process has used so far.
    pub fn cpu_time(&self) -> Duration {
        process_cpu_time(&self.child.id().to_string())
    }

    pub fn peak_rss_mib(&self) -> f64 {
        support::process_status_kib(&self.child.id().to_string(), "VmHWM:") as f64 / 1024.0
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One load client: a keep-alive HTTP/1 connection on hyper's client itself. The load
/// generator shares the two cores with the host; reqwest on top of it parses each request's
/// URL twice and runs its redirect and retry layers, which the bench process paid for on
/// every event (BENCHMARKS.md has the figures before and after).
pub struct Producer {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>,
    authority: String,
}

impl Producer {
    pub async fn connect(authority: &str) -> Producer {
        let stream = tokio::net::TcpStream::connect(authority).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        Producer { sender, authority: authority.to_string() }
    }

    /// POSTs `body` to `/v1/events`; returns the status once the whole response is read.
    pub async fn post_event(&mut self, body: String) -> u16 {
        use http_body_util::BodyExt as _;
        let request = axum::http::Request::post("/v1/events")
            .header("host", &self.authority)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(Bytes::from(body)))
            .unwrap();
        self.sender.ready().await.unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        response.into_body().collect().await.unwrap();
        status
    }
}

/// The sample event serialized once with a placeholder id, so that the load generator (which
/// shares the two cores with the host) only splices an id into each body.
#[derive(Clone)]
pub struct EventTemplate(Arc<str>);

impl EventTemplate {
    const PLACEHOLDER: &str = "__hookwasm_bench_event_id__";

    pub fn load() -> EventTemplate {
        let mut event: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(support::sample_path("message.created")).unwrap()).unwrap();
        event["id"] = Self::PLACEHOLDER.into();
        EventTemplate(event.to_string().into())
    }

    pub fn body(&self, id: &str) -> String {
        self.0.replacen(Self::PLACEHOLDER, id, 1)
    }
}

pub async fn wait_for(arrivals: &Arrivals, count: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while arrivals.lock().unwrap().len() < count {
        assert!(Instant::now() < deadline, "only {} of {count} delivered", arrivals.lock().unwrap().len());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Renames a new variant of `plugin` into the host's plugins dir.
pub fn deploy(host: &Host, plugin: &str, bytes: &[u8]) {
    let dir = host.dir.path().join("plugins.d");
    let tmp = dir.join(format!(".{plugin}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{plugin}.wasm"))).unwrap();
}

/// Ingest-to-delivery latencies of one paced run, sorted, and the host's CPU per event.
pub struct Latencies {
    sorted: Vec<Duration>,
    pub host_cpu_per_event: Duration,
}

impl Latencies {
    pub fn percentile(&self, p: f64) -> Duration {
        support::percentile(&self.sorted, p)
    }

    /// `p50 .. ms, p99 .. ms, max .. ms; host CPU .. µs/event`.
    pub fn summary(&self) -> String {
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; host CPU {:.0} µs/event",
            self.percentile(0.50).as_secs_f64() * 1e3,
            self.percentile(0.99).as_secs_f64() * 1e3,
            self.sorted.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            self.host_cpu_per_event.as_secs_f64() * 1e6,
        )
    }
}

/// Posts `rate` events/s for `seconds` to `host` (event ids `{prefix}-{i}`, each on its own
/// task, as producers do), waits for every one to arrive, and measures post-to-arrival.
/// The webhook's plugin must put the event id in the body (field-map does).
pub async fn paced_latency(host: &Host, arrivals: &Arrivals, rate: u64, seconds: u64, prefix: &str) -> Latencies {
    paced_latency_across(&[host], arrivals, rate, seconds, prefix).await
}

/// As [`paced_latency`], posting to `hosts` in turn; CPU is theirs together.
pub async fn paced_latency_across(
    hosts: &[&Host],
    arrivals: &Arrivals,
    rate: u64,
    seconds: u64,
    prefix: &str,
) -> Latencies {
    let template = EventTemplate::load();
    let http = reqwest::Client::new();
    let urls: Vec<String> = hosts.iter().map(|host| format!("{}/v1/events", host.url)).collect();
    let cpu_time = || hosts.iter().map(|host| host.cpu_time()).sum::<Duration>();
    let total = (rate * seconds) as usize;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let cpu_before = cpu_time();
    for i in 0..total {
        ticker.tick().await;
        let (http, url, sent) = (http.clone(), urls[i % urls.len()].clone(), sent.clone());
        let id = format!("{prefix}-{i}");
        let body = template.body(&id);
        tasks.spawn(async move {
            sent.lock().unwrap().insert(id, Instant::now());
            let response = http.post(&url).header("content-type", "application/json").body(body).send().await.unwrap();
            assert_eq!(response.status(), 202);
        });
    }
    while tasks.join_next().await.is_some() {}
    let before: usize = arrivals.lock().unwrap().keys().filter(|id| !id.starts_with(prefix)).count();
    wait_for(arrivals, before + total, Duration::from_secs(120)).await;
    let host_cpu_per_event = (cpu_time() - cpu_before) / total as u32;
    let sent = sent.lock().unwrap();
    let arrivals = arrivals.lock().unwrap();
    let mut sorted: Vec<Duration> = sent.iter().map(|(id, at)| arrivals[id].1.saturating_duration_since(*at)).collect();
    sorted.sort();
    Latencies { sorted, host_cpu_per_event }
}

/// What one burst measured.
pub struct Burst {
    /// Events delivered per second, from the first post to the last arrival.
    pub rate: f64,
    ingest_rate: f64,
    seconds: f64,
    host_cpu_per_event: Duration,
    bench_cpu_per_event: Duration,
}

impl Burst {
    pub fn summary(&self, host: &Host) -> String {
        format!(
            "ingest {:.0} events/s, end to end {:.0} events/s ({:.2} s); host CPU {:.0} µs/event, peak RSS {:.0} MiB; load generator and receiver CPU {:.0} µs/event",
            self.ingest_rate,
            self.rate,
            self.seconds,
            self.host_cpu_per_event.as_secs_f64() * 1e6,
            host.peak_rss_mib(),
            self.bench_cpu_per_event.as_secs_f64() * 1e6,
        )
    }
}

/// `events` events posted as fast as `clients` keep-alive producers can, until the receiver
/// has all of them.
pub async fn burst(host: &Host, arrivals: &Arrivals, events: usize, clients: usize) -> Burst {
    burst_across(&[host], arrivals, events, clients).await
}

/// As [`burst`], the producers spread over `hosts`; CPU is theirs together.
pub async fn burst_across(hosts: &[&Host], arrivals: &Arrivals, events: usize, clients: usize) -> Burst {
    let cpu_time = || hosts.iter().map(|host| host.cpu_time()).sum::<Duration>();
    let template = EventTemplate::load();
    let (cpu_before, bench_cpu_before) = (cpu_time(), process_cpu_time("self"));
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let address = hosts[client % hosts.len()].address();
            let (template, next) = (template.clone(), next.clone());
            tokio::spawn(async move {
                let mut producer = Producer::connect(&address).await;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= events {
                        break;
                    }
                    assert_eq!(producer.post_event(template.body(&format!("load-{i}"))).await, 202);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let ingested = started.elapsed();
    wait_for(arrivals, events, Duration::from_secs(300)).await;
    let delivered = started.elapsed();
    Burst {
        rate: events as f64 / delivered.as_secs_f64(),
        ingest_rate: events as f64 / ingested.as_secs_f64(),
        seconds: delivered.as_secs_f64(),
        host_cpu_per_event: (cpu_time() - cpu_before) / events as u32,
        bench_cpu_per_event: (process_cpu_time("self") - bench_cpu_before) / events as u32,
    }
}
