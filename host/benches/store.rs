//! The store for the long run, end to end against the real binary with the default
//! `[delivery]` settings (only plain HTTP to the local receiver allowed):
//! - ingest-to-delivery latency at `LOAD_RATE` events/s (1000) for `LOAD_SECONDS` (10) with
//!   field-map, in `STORE_ROUNDS` (2) alternating rounds of four runs: alone; while a client
//!   lists 500 deliveries in a loop and `/metrics` is scraped every 100 ms; the same over a
//!   history of `SEEDED` (200,000) deliveries with a filter that makes every listing read all
//!   of it; while the retention sweep deletes `SEEDED` expired deliveries seeded into the
//!   data dir;
//! - throughput of one host with slack-notify and `max_in_flight_per_webhook = 128` on SQLite
//!   and on PostgreSQL (a throwaway server on the same cores; needs root), `LOAD_EVENTS`
//!   (20,000) events from 64 producers, alternating;
//! - two hosts on one PostgreSQL database: the same burst spread over both, and latency at
//!   `LOAD_RATE` posted to each in turn, with PostgreSQL's CPU per event;
//! - how long a webhook change made through one of two hosts on PostgreSQL takes to be in
//!   effect on the other (`CHANGES`, 40);
//! - the store's size on disk (database + WAL) every 5 s for `GROWTH_SECONDS` (60) at
//!   `GROWTH_RATE` events/s (1000) with `retention = "10s"`: it must level off.
//!
//! `cargo bench -p hookwasm --bench store`; figures in BENCHMARKS.md. `HOOKWASM_BIN` runs
//! another build of the host; `STORE_RUNS` picks runs (`alone,readers,slow-readers,sweep,backends,two-hosts,propagation`) and
//! `GROWTH_SECONDS=0` skips the size run, for a build without retention.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../../tests/it/support.rs"]
mod support;

#[allow(dead_code)]
mod common;

use common::{
    Host, Latencies, burst, burst_across, env, paced_latency, paced_latency_across, process_cpu_time, start_receiver,
};
use hookwasm::store::postgres::throwaway::Database;

/// A plugin whose body carries the event id, so each arrival is matched to its post.
const FIELD_MAP: (&str, &str) = ("field-map", r#"{ map = "$id=id, conversation.id=conversation, message.body=text" }"#);

/// What runs beside the paced load.
#[derive(Clone, Copy, PartialEq)]
enum Beside {
    Nothing,
    /// A client listing the newest 500 deliveries in a loop, `/metrics` every 100 ms.
    Readers,
    /// The same, over `SEEDED` delivered deliveries an hour old, listing with a filter
    /// (`state=dead`) that matches none of them: each listing reads the whole history.
    SlowReaders,
    Sweep,
}

/// Seeded rows' age: an hour (kept), or eight days (past the default seven-day retention).
const HOUR_MS: i64 = 3600 * 1000;
const EIGHT_DAYS_MS: i64 = 8 * 24 * HOUR_MS;

async fn latency_run(beside: Beside, rate: u64, seconds: u64, seeded: usize) -> Latencies {
    let (receiver, arrivals) = start_receiver().await;
    let host = match beside {
        Beside::Sweep => Host::start_with(&receiver, Some(FIELD_MAP), "", |data| seed(data, seeded, EIGHT_DAYS_MS)),
        Beside::SlowReaders => Host::start_with(&receiver, Some(FIELD_MAP), "", |data| seed(data, seeded, HOUR_MS)),
        _ => Host::start_with(&receiver, Some(FIELD_MAP), "", |_| {}),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let lists = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    if matches!(beside, Beside::Readers | Beside::SlowReaders) {
        let query = if beside == Beside::Readers { "limit=500" } else { "state=dead&limit=500" };
        let http = reqwest::Client::new();
        let (url, stop_list, listed) = (host.url.clone(), stop.clone(), lists.clone());
        let list = http.clone();
        readers.push(tokio::spawn(async move {
            while !stop_list.load(Ordering::Relaxed) {
                let page = list.get(format!("{url}/v1/deliveries?{query}")).send().await.unwrap();
                assert_eq!(page.status(), 200);
                page.bytes().await.unwrap();
                listed.fetch_add(1, Ordering::Relaxed);
            }
        }));
        let (url, stop_scrape) = (host.url.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(100));
            while !stop_scrape.load(Ordering::Relaxed) {
                every.tick().await;
                http.get(format!("{url}/metrics")).send().await.unwrap().bytes().await.unwrap();
            }
        }));
    }
    let expired_before = expired_deliveries(&host).await;
    let started = Instant::now();
    let latencies = paced_latency(&host, &arrivals, rate, seconds, "lat").await;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    let label = match beside {
        Beside::Nothing => "alone".to_string(),
        Beside::Readers => {
            format!(
                "with readers ({} listings of 500 deliveries, /metrics every 100 ms)",
                lists.load(Ordering::Relaxed)
            )
        }
        Beside::SlowReaders => format!(
            "with slow readers ({} listings with state=dead over {seeded} delivered deliveries, /metrics every 100 ms)",
            lists.load(Ordering::Relaxed)
        ),
        Beside::Sweep => format!(
            "with a retention sweep ({} of {seeded} expired deliveries deleted in the {:.1} s run)",
            expired_deliveries(&host).await - expired_before,
            elapsed.as_secs_f64()
        ),
    };
    println!("latency {rate} events/s for {seconds} s, {label}: {}", latencies.summary());
    latencies
}

/// `hookwasm_expired_deliveries_total` from the host's `/metrics`.
async fn expired_deliveries(host: &Host) -> u64 {
    let text = reqwest::get(format!("{}/metrics", host.url)).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("hookwasm_expired_deliveries_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A data dir holding `count` delivered deliveries (each with its event and one attempt),
/// `age_ms` old.
fn seed(data: &Path, count: usize, age_ms: i64) {
    drop(hookwasm::store::sqlite::SqliteStore::open(data).unwrap());
    // The writer thread releases the data dir's lock once its queue is gone.
    std::thread::sleep(Duration::from_millis(200));
    let event = std::fs::read_to_string(support::sample_path("message.created")).unwrap();
    let envelope: serde_json::Value = serde_json::from_str(&event).unwrap();
    let data_json = envelope["data"].to_string();
    let old = hookwasm::store::now_ms() - age_ms;
    let mut db = rusqlite::Connection::open(data.join("hookwasm.db")).unwrap();
    let transaction = db.transaction().unwrap();
    {
        let mut events = transaction
            .prepare("INSERT INTO events (id, type, timestamp, data, received_at) VALUES (?1, 'message.created', '2026-01-01T00:00:00Z', ?2, ?3)")
            .unwrap();
        let mut deliveries = transaction
            .prepare("INSERT INTO deliveries (id, event_id, webhook_id, state, attempts, next_attempt_at, body, headers, created_at, updated_at) VALUES (?1, ?2, 'load', 'delivered', 1, ?3, ?4, '[]', ?3, ?3)")
            .unwrap();
        let mut attempts = transaction
            .prepare("INSERT INTO attempts (delivery_id, at, status, latency_ms, response_excerpt) VALUES (?1, ?2, 200, 3, 'ok')")
            .unwrap();
        for i in 0..count {
            let (event_id, delivery_id) = (format!("old-{i}"), format!("msg_old{i:08}"));
            events.execute(rusqlite::params![event_id, data_json, old + i as i64]).unwrap();
            deliveries.execute(rusqlite::params![delivery_id, event_id, old + i as i64, event.as_bytes()]).unwrap();
            attempts.execute(rusqlite::params![delivery_id, old + i as i64]).unwrap();
        }
    }
    transaction.commit().unwrap();
}

/// CPU time used so far by every process of the `postgres` user (the throwaway server's).
fn postgres_cpu_time() -> Duration {
    let uid = std::process::Command::new("id").args(["-u", "postgres"]).output().unwrap();
    let uid = String::from_utf8_lossy(&uid.stdout).trim().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|pid| pid.chars().all(|c| c.is_ascii_digit()))
        .filter(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            status
                .lines()
                .any(|line| line.strip_prefix("Uid:").is_some_and(|ids| ids.split_whitespace().next() == Some(&uid)))
        })
        .map(|pid| process_cpu_time(&pid))
        .sum()
}

/// `events` slack-notify events as fast as 64 producers post them, on one host with
/// `max_in_flight_per_webhook = 128`, storing in SQLite or in PostgreSQL (a throwaway server
/// with its default, durable settings, on the same two cores).
async fn backend_burst(postgres: bool, events: usize) -> f64 {
    let (receiver, arrivals) = start_receiver().await;
    let mut delivery = "max_in_flight_per_webhook = 128\n".to_string();
    let database = match postgres {
        true => Some(Database::create().await.expect("a PostgreSQL server for the backend comparison")),
        false => None,
    };
    if let Some(database) = &database {
        delivery += &format!("[store]\nbackend = \"postgres\"\nurl = \"{}\"\n", database.url);
    }
    let slack = ("slack-notify", r#"{ base_url = "https://desk.example.com" }"#);
    let host = Host::start_with(&receiver, Some(slack), &delivery, |_| {});
    let postgres_before = postgres_cpu_time();
    let result = burst(&host, &arrivals, events, 64).await;
    let postgres_cpu = (postgres_cpu_time() - postgres_before) / events as u32;
    println!(
        "throughput on {}, slack-notify, max_in_flight_per_webhook = 128: {events} events, 64 clients: {}{}",
        if postgres { "PostgreSQL" } else { "SQLite" },
        result.summary(&host),
        if postgres {
            format!("; PostgreSQL CPU {:.0} µs/event", postgres_cpu.as_secs_f64() * 1e6)
        } else {
            String::new()
        }
    );
    result.rate
}

/// Two hosts on one PostgreSQL database: slack-notify throughput with producers spread over
/// both, then ingest-to-delivery latency at `rate` events/s posted to each in turn
/// (field-map), with the server's CPU per event.
async fn two_hosts(events: usize, rate: u64, seconds: u64) {
    let database = Database::create().await.expect("a PostgreSQL server for the two-host runs");
    let store =
        format!("max_in_flight_per_webhook = 128\n[store]\nbackend = \"postgres\"\nurl = \"{}\"\n", database.url);
    let (receiver, arrivals) = start_receiver().await;
    let slack = ("slack-notify", r#"{ base_url = "https://desk.example.com" }"#);
    let (a, b) = (
        Host::start_with(&receiver, Some(slack), &store, |_| {}),
        Host::start_with(&receiver, Some(slack), &store, |_| {}),
    );
    let postgres_before = postgres_cpu_time();
    let result = burst_across(&[&a, &b], &arrivals, events, 64).await;
    let postgres_cpu = (postgres_cpu_time() - postgres_before) / events as u32;
    println!(
        "throughput, two hosts on PostgreSQL, slack-notify: {events} events, 64 clients over both: {}; PostgreSQL CPU {:.0} µs/event",
        result.summary(&a),
        postgres_cpu.as_secs_f64() * 1e6
    );
    drop((a, b));

    let database = Database::create().await.expect("a PostgreSQL server for the two-host runs");
    let store = format!("[store]\nbackend = \"postgres\"\nurl = \"{}\"\n", database.url);
    let (receiver, arrivals) = start_receiver().await;
    let (a, b) = (
        Host::start_with(&receiver, Some(FIELD_MAP), &store, |_| {}),
        Host::start_with(&receiver, Some(FIELD_MAP), &store, |_| {}),
    );
    let postgres_before = postgres_cpu_time();
    let latencies = paced_latency_across(&[&a, &b], &arrivals, rate, seconds, "lat").await;
    let postgres_cpu = (postgres_cpu_time() - postgres_before) / (rate * seconds) as u32;
    println!(
        "latency, two hosts on PostgreSQL (default [delivery]), {rate} events/s for {seconds} s: {}; PostgreSQL CPU {:.0} µs/event",
        latencies.summary(),
        postgres_cpu.as_secs_f64() * 1e6
    );
}

/// How long a webhook change made through one host takes to be in effect on another:
/// `changes` times, disable or enable on host a, then poll host b's view every 2 ms.
async fn propagation(changes: usize) {
    let database = Database::create().await.expect("a PostgreSQL server for the propagation run");
    let store = format!("[store]\nbackend = \"postgres\"\nurl = \"{}\"\n", database.url);
    let (receiver, _) = start_receiver().await;
    let a = Host::start_with(&receiver, None, &store, |_| {});
    let b = Host::start_with(&receiver, None, &store, |_| {});
    let http = reqwest::Client::new();
    let mut took = Vec::new();
    for i in 0..changes {
        let (action, active) = if i % 2 == 0 { ("disable", false) } else { ("enable", true) };
        // Changes at random points of the other host's poll interval.
        tokio::time::sleep(Duration::from_millis(100 + (i as u64 * 37) % 400)).await;
        let started = Instant::now();
        let answer = http.post(format!("{}/v1/webhooks/load/{action}", a.url)).send().await.unwrap();
        assert!(answer.status().is_success());
        loop {
            let webhook: serde_json::Value =
                http.get(format!("{}/v1/webhooks/load", b.url)).send().await.unwrap().json().await.unwrap();
            if webhook["active"] == active {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        took.push(started.elapsed());
    }
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "webhook change on one host in effect on the other, {changes} changes: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        ms(took[took.len() / 2]),
        ms(took[took.len() * 9 / 10]),
        ms(took[took.len() - 1])
    );
}

/// Bytes the store takes on disk: the database file and its WAL.
fn store_size(data: &Path) -> (u64, u64) {
    let size = |file: &str| std::fs::metadata(data.join(file)).map_or(0, |meta| meta.len());
    (size("hookwasm.db"), size("hookwasm.db-wal"))
}

/// Steady ingest with a short retention: the store's size must level off once deletes keep
/// pace with ingest (freed pages are reused).
async fn file_growth(rate: u64, seconds: u64) {
    let (receiver, arrivals) = start_receiver().await;
    let host = Host::start_with(&receiver, Some(FIELD_MAP), "[store]\nretention = \"10s\"\n", |_| {});
    let data = host.dir.path().join("data");
    let sampler = {
        let data = data.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut samples = Vec::new();
            let mut every = tokio::time::interval(Duration::from_secs(5));
            while started.elapsed() < Duration::from_secs(seconds + 15) {
                every.tick().await;
                samples.push((started.elapsed().as_secs(), store_size(&data)));
            }
            samples
        })
    };
    paced_latency(&host, &arrivals, rate, seconds, "grow").await;
    let samples = sampler.await.unwrap();
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    let series: Vec<String> =
        samples.iter().map(|(at, (db, wal))| format!("{at}s {:.1}+{:.1}", mib(*db), mib(*wal))).collect();
    println!(
        "store size with retention 10 s at {rate} events/s for {seconds} s (MiB, database + WAL, every 5 s): {}",
        series.join(", ")
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    support::plugin_dir();
    let (rate, seconds) = (env("LOAD_RATE", 1000), env("LOAD_SECONDS", 10));
    let seeded = env("SEEDED", 200_000) as usize;
    runtime.block_on(async {
        let runs = std::env::var("STORE_RUNS")
            .unwrap_or_else(|_| "alone,readers,slow-readers,sweep,backends,two-hosts,propagation".into());
        let mut p99 = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..env("STORE_ROUNDS", 2) {
            for (i, (name, beside)) in [
                ("alone", Beside::Nothing),
                ("readers", Beside::Readers),
                ("slow-readers", Beside::SlowReaders),
                ("sweep", Beside::Sweep),
            ]
            .into_iter()
            .enumerate()
            {
                if runs.split(',').any(|run| run == name) {
                    let latencies = latency_run(beside, rate, seconds, seeded).await;
                    p99[i].push(latencies.percentile(0.99).as_secs_f64() * 1e3);
                }
            }
        }
        let show = |runs: &[f64]| runs.iter().map(|ms| format!("{ms:.1}")).collect::<Vec<_>>().join(", ");
        if runs.split(',').any(|run| run == "backends") {
            let events = env("LOAD_EVENTS", 20_000) as usize;
            let (mut sqlite, mut postgres) = (Vec::new(), Vec::new());
            for _ in 0..env("STORE_ROUNDS", 2) {
                sqlite.push(backend_burst(false, events).await);
                postgres.push(backend_burst(true, events).await);
            }
            let mean = |runs: &[f64]| runs.iter().sum::<f64>() / runs.len() as f64;
            println!(
                "PostgreSQL against SQLite, means of {} alternating runs: {:.0} against {:.0} events/s = {:.1}%",
                sqlite.len(),
                mean(&postgres),
                mean(&sqlite),
                mean(&postgres) / mean(&sqlite) * 100.0
            );
        }
        println!(
            "p99 ms per round: alone [{}], with readers [{}], with slow readers [{}], with a retention sweep [{}]",
            show(&p99[0]),
            show(&p99[1]),
            show(&p99[2]),
            show(&p99[3])
        );
        if runs.split(',').any(|run| run == "two-hosts") {
            two_hosts(env("LOAD_EVENTS", 20_000) as usize, rate, seconds).await;
        }
        if runs.split(',').any(|run| run == "propagation") {
            propagation(env("CHANGES", 40) as usize).await;
        }
        let growth_seconds = env("GROWTH_SECONDS", 60);
        if growth_seconds > 0 {
            file_growth(env("GROWTH_RATE", 1000), growth_seconds).await;
        }
    });
}
