//! End-to-end load: `POST /v1/events` -> durable store -> slack-notify plugin -> signed POST
//! -> 2xx at a local receiver, all on this machine, against the real `hookwasm` binary.
//!
//! `cargo bench -p hookwasm --bench pipeline` prints (figures in BENCHMARKS.md):
//! - throughput: N events posted by C concurrent clients, events/s until the receiver has
//!   all of them, through hookwasm with slack-notify, through hookwasm without a plugin, and
//!   through a baseline relay (the same HTTP stack with nothing in between: the most any host
//!   can do here while the load generator and receiver share the cores);
//! - latency: events posted at a fixed rate, ingest-to-delivery p50/p99 (post sent ->
//!   receiver got it);
//! - the host's CPU time (user + system) per event, steadier than events/s on a noisy VM, and
//!   the bench process's own (load generator + receiver), which shares the two cores;
//! - the host's peak RSS (VmHWM);
//! - throughput while a new plugin version is deployed every second, against steady state;
//! - reload latency: from the `mv` of a new version to the first delivery it made.
//!
//! Environment: `LOAD_EVENTS` (default 20000), `LOAD_CLIENTS` (64), `LOAD_RATE` (1000/s),
//! `LOAD_SECONDS` (10), `RELOAD_ROUNDS` (20), `LOAD_PAIRS` (2: rounds of the four throughput
//! runs, alternating: relay, no plugin, slack-notify steady, slack-notify reloading),
//! `HOOKWASM_BIN` (another build of the host, to compare against), `PIPELINE_RUNS` (default
//! `throughput,slots,latency,reload`; `slots`: one webhook with the default `[delivery]`
//! against `max_in_flight_per_webhook = 128`, alternating).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;

#[allow(dead_code)]
#[path = "../../tests/it/support.rs"]
mod support;

#[allow(dead_code)]
mod common;

use common::{EventTemplate, Host, burst, deploy, env, paced_latency, start_receiver};

/// What the load goes through.
#[derive(Clone, Copy)]
enum Target {
    /// The floor: [`relay`], the same HTTP stack with nothing in between.
    Relay,
    /// hookwasm, the webhook without a plugin.
    NoPlugin,
    /// hookwasm, slack-notify on every delivery: the scenario the target is set for.
    SlackNotify,
}

impl Target {
    fn start(self, receiver: &str) -> Host {
        match self {
            Target::Relay => relay_host(receiver),
            Target::NoPlugin => Host::start(receiver, None),
            Target::SlackNotify => {
                Host::start(receiver, Some(("slack-notify", r#"{ base_url = "https://desk.example.com" }"#)))
            }
        }
    }

    fn label(self) -> &'static str {
        match self {
            Target::Relay => "relay baseline (no store, plugin or signature)",
            Target::NoPlugin => "hookwasm, no plugin",
            Target::SlackNotify => "hookwasm + slack-notify",
        }
    }
}

/// All events as fast as `clients` concurrent producers can post them through `target`; with
/// `reload_every`, a freshly compiled version of the plugin is deployed that often meanwhile.
async fn throughput(target: Target, events: usize, clients: usize, reload_every: Option<Duration>) -> f64 {
    let (receiver, arrivals) = start_receiver().await;
    let host = Arc::new(target.start(&receiver));
    let reloads = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reloader = reload_every.map(|every| {
        let (host, reloads, stop) = (host.clone(), reloads.clone(), stop.clone());
        let bytes = std::fs::read(support::plugin_path("slack-notify")).unwrap();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(every);
                let n = reloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                deploy(&host, "slack-notify", &support::variant(&bytes, n));
            }
        })
    });
    let burst = burst(&host, &arrivals, events, clients).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(reloader) = reloader {
        reloader.join().unwrap();
    }
    println!(
        "throughput, {}{}: {events} events, {clients} clients: {}",
        target.label(),
        match reload_every {
            Some(every) => format!(
                " while reloading every {every:?} ({} reloads)",
                reloads.load(std::sync::atomic::Ordering::Relaxed)
            ),
            None => String::new(),
        },
        burst.summary(&host),
    );
    burst.rate
}

/// From the rename of a new plugin version into place to the first delivery it made, with
/// events flowing at 200/s. Each version is new code to the host (a new sha256: compiled).
async fn reload_latency(rounds: u64) {
    let (receiver, arrivals) = start_receiver().await;
    let config = r#"{ map = "$id=id, $type=variant" }"#;
    let host = Arc::new(Host::start(&receiver, Some(("field-map", config))));
    let bytes = std::fs::read(support::plugin_path("field-map")).unwrap();
    let pass = std::fs::read(support::plugin_path("pass-through")).unwrap();
    let template = EventTemplate::load();
    let http = reqwest::Client::new();
    let url = format!("{}/v1/events", host.url);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (http, url, template, stop) = (http.clone(), url.clone(), template.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(template.body(&format!("r-{i}")))
                    .send()
                    .await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // field-map's body is {"id", "variant"}; pass-through's is the envelope (it has "type").
    let mut latencies = Vec::new();
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let to_pass = round % 2 == 0;
        let seen_before: std::collections::HashSet<String> = arrivals.lock().unwrap().keys().cloned().collect();
        let started = Instant::now();
        deploy(&host, "field-map", &support::variant(if to_pass { &pass } else { &bytes }, round));
        let first = loop {
            let found = {
                let arrivals = arrivals.lock().unwrap();
                arrivals
                    .iter()
                    .filter(|(id, (envelope, _))| !seen_before.contains(*id) && *envelope == to_pass)
                    .map(|(_, (_, at))| *at)
                    .min()
            };
            if let Some(at) = found {
                break at;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "reload {round} never delivered");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        latencies.push(first.saturating_duration_since(started));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    producer.await.unwrap();
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "reload latency ({rounds} reloads, each a new sha256 of known code): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        p(0.5),
        p(0.99),
        p(1.0)
    );
}

/// Events at a fixed rate; ingest-to-delivery latency percentiles. Uses field-map, whose
/// body carries the event id, so each arrival is matched to its post.
async fn latency(rate: u64, seconds: u64) {
    let (receiver, arrivals) = start_receiver().await;
    let host = Host::start(
        &receiver,
        Some(("field-map", r#"{ map = "$id=id, conversation.id=conversation, message.body=text" }"#)),
    );
    let latencies = paced_latency(&host, &arrivals, rate, seconds, "lat").await;
    println!(
        "latency: {rate} events/s for {seconds} s ({} events): ingest-to-delivery {}, peak RSS {:.0} MiB",
        rate * seconds,
        latencies.summary(),
        host.peak_rss_mib()
    );
}

/// Set in the environment of the bench re-run as the relay baseline: the receiver's URL.
const RELAY_TO: &str = "PIPELINE_BENCH_RELAY_TO";

/// The baseline: this bench re-run as [`relay`] to `receiver`.
fn relay_host(receiver: &str) -> Host {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.env(RELAY_TO, receiver);
    Host::spawn(command, tempfile::tempdir().unwrap())
}

/// The baseline every webhook host on this machine stands on: `POST /v1/events` answered 202
/// once the body is known to be JSON, then POSTed on to `receiver`, on the same HTTP stack as
/// the host (hyper's server under axum, hyper-util's pooled client, one multi-threaded Tokio
/// runtime) and in its own process like the host. No store, no plugin, no signature, no retry.
fn relay(receiver: String) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<http_body_util::Full<Bytes>>();
        let receiver: axum::http::Uri = receiver.parse().unwrap();
        let in_flight = Arc::new(tokio::sync::Semaphore::new(128));
        let forward = move |body: Bytes| {
            let (http, receiver, in_flight) = (http.clone(), receiver.clone(), in_flight.clone());
            async move {
                if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
                    return axum::http::StatusCode::BAD_REQUEST;
                }
                let permit = in_flight.acquire_owned().await.unwrap();
                tokio::spawn(async move {
                    let _permit = permit;
                    let request = axum::http::Request::post(receiver)
                        .header("content-type", "application/json")
                        .body(http_body_util::Full::new(body))
                        .unwrap();
                    if let Ok(response) = http.request(request).await {
                        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                    }
                });
                axum::http::StatusCode::ACCEPTED
            }
        };
        let app = axum::Router::new().route("/v1/events", axum::routing::post(forward));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("hookwasm listening on http://{}", listener.local_addr().unwrap());
        axum::serve(listener, app).await.unwrap();
    });
}

/// One webhook with slack-notify to a fast local receiver: a burst of `events` from `clients`
/// producers, with the default `[delivery]` (16 requests in flight per webhook) or with
/// `max_in_flight_per_webhook = 128`.
async fn one_webhook(tuned: bool, events: usize, clients: usize) -> f64 {
    let (receiver, arrivals) = start_receiver().await;
    let slack = ("slack-notify", r#"{ base_url = "https://desk.example.com" }"#);
    let delivery = if tuned { "max_in_flight_per_webhook = 128\n" } else { "" };
    let host = Host::start_with(&receiver, Some(slack), delivery, |_| {});
    let result = burst(&host, &arrivals, events, clients).await;
    let setting = if tuned { "max_in_flight_per_webhook = 128" } else { "default [delivery]" };
    println!("one webhook, slack-notify, {setting}: {events} events, {clients} clients: {}", result.summary(&host));
    result.rate
}

fn main() {
    if let Ok(receiver) = std::env::var(RELAY_TO) {
        return relay(receiver);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    support::plugin_dir();
    let (events, clients) = (env("LOAD_EVENTS", 20_000) as usize, env("LOAD_CLIENTS", 64) as usize);
    let runs = std::env::var("PIPELINE_RUNS").unwrap_or_else(|_| "throughput,slots,latency,reload".into());
    let run = |name: &str| runs.split(',').any(|run| run == name);
    runtime.block_on(async {
        if run("slots") {
            let (mut default, mut tuned) = (Vec::new(), Vec::new());
            for _ in 0..env("LOAD_PAIRS", 2) {
                default.push(one_webhook(false, events, clients).await);
                tuned.push(one_webhook(true, events, clients).await);
            }
            let mean = |runs: &[f64]| runs.iter().sum::<f64>() / runs.len() as f64;
            println!(
                "one webhook, default [delivery] against max_in_flight_per_webhook = 128, means of {} alternating runs: {:.0} against {:.0} events/s = {:.1}%",
                default.len(),
                mean(&default),
                mean(&tuned),
                mean(&default) / mean(&tuned) * 100.0
            );
        }
        if !run("throughput") {
            if run("latency") {
                latency(env("LOAD_RATE", 1000), env("LOAD_SECONDS", 10)).await;
            }
            if run("reload") {
                reload_latency(env("RELOAD_ROUNDS", 20)).await;
            }
            return;
        }
        // All runs alternate, so machine noise hits each alike.
        let (mut relayed, mut bare, mut steady, mut reloading) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..env("LOAD_PAIRS", 2) {
            relayed.push(throughput(Target::Relay, events, clients, None).await);
            bare.push(throughput(Target::NoPlugin, events, clients, None).await);
            steady.push(throughput(Target::SlackNotify, events, clients, None).await);
            reloading.push(throughput(Target::SlackNotify, events, clients, Some(Duration::from_secs(1))).await);
        }
        let mean = |runs: &[f64]| runs.iter().sum::<f64>() / runs.len() as f64;
        println!(
            "throughput against the relay baseline ({:.0} events/s), means of {} alternating runs: hookwasm + slack-notify {:.0} events/s = {:.1}%, hookwasm without a plugin {:.0} events/s = {:.1}%",
            mean(&relayed),
            relayed.len(),
            mean(&steady),
            mean(&steady) / mean(&relayed) * 100.0,
            mean(&bare),
            mean(&bare) / mean(&relayed) * 100.0,
        );
        println!(
            "throughput while reloading every second: {:.0} events/s = {:.1}% of steady state ({:.0} events/s), means of {} alternating runs",
            mean(&reloading),
            mean(&reloading) / mean(&steady) * 100.0,
            mean(&steady),
            steady.len()
        );
        if run("latency") {
            latency(env("LOAD_RATE", 1000), env("LOAD_SECONDS", 10)).await;
        }
        if run("reload") {
            reload_latency(env("RELOAD_ROUNDS", 20)).await;
        }
    });
}
