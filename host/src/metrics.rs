//! Prometheus metrics, served at `GET /metrics` (OpenMetrics text).
//!
//! Counters and histograms are updated where things happen (ingest, worker, reload); queue
//! depth and the age of the oldest due delivery are read from the store at scrape time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLoadLabels {
    pub plugin: String,
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub events_accepted: Counter,
    pub events_duplicate: Counter,
    /// Events answered 503 and not stored: backlog_full, storage_full.
    pub events_refused: Family<ReasonLabel, Counter>,
    /// Deliveries reaching a final state: delivered, filtered, held, dead.
    pub deliveries_final: Family<StateLabel, Counter>,
    /// Attempts by status class: 2xx, 3xx, 4xx, 5xx, error.
    pub attempts: Family<ClassLabel, Counter>,
    pub attempt_seconds: Histogram,
    /// The sum of attempt latencies, in µs (the histogram does not expose its sum).
    attempt_micros: std::sync::atomic::AtomicU64,
    pub plugin_seconds: Histogram,
    /// Plugin calls tried again after timing out.
    pub plugin_timeout_retries: Counter,
    pub plugin_loads: Family<PluginLoadLabels, Counter>,
    pub queue_depth: Gauge,
    /// Delivery slots taken: deliveries being transformed or sent, or about to be.
    pub deliveries_in_flight: Gauge,
    pub oldest_due_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Deliveries held until their plugin loads.
    pub held: Gauge,
    /// Deleted by retention.
    pub expired_deliveries: Counter,
    pub expired_events: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("hookwasm"),
            events_accepted: Counter::default(),
            events_duplicate: Counter::default(),
            events_refused: Family::default(),
            deliveries_final: Family::default(),
            attempts: Family::default(),
            attempt_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            attempt_micros: Default::default(),
            plugin_seconds: Histogram::new(exponential_buckets(0.000_01, 2.0, 16)),
            plugin_timeout_retries: Counter::default(),
            plugin_loads: Family::default(),
            queue_depth: Gauge::default(),
            deliveries_in_flight: Gauge::default(),
            oldest_due_seconds: Gauge::default(),
            held: Gauge::default(),
            expired_deliveries: Counter::default(),
            expired_events: Counter::default(),
        };
        let registry = &mut metrics.registry;
        registry.register("events_accepted", "Events stored by POST /v1/events", metrics.events_accepted.clone());
        registry.register("events_duplicate", "Events posted again with a known id", metrics.events_duplicate.clone());
        registry.register(
            "events_refused",
            "Events answered 503 and not stored, by reason (backlog_full, storage_full)",
            metrics.events_refused.clone(),
        );
        registry.register(
            "deliveries",
            "Deliveries reaching a final state, by state",
            metrics.deliveries_final.clone(),
        );
        registry.register("delivery_attempts", "HTTP attempts by status class", metrics.attempts.clone());
        registry.register("delivery_attempt_duration_seconds", "HTTP attempt latency", metrics.attempt_seconds.clone());
        registry.register(
            "plugin_execution_duration_seconds",
            "Plugin call time, fresh instance included",
            metrics.plugin_seconds.clone(),
        );
        registry.register(
            "plugin_timeout_retries",
            "Plugin calls tried again after timing out (the host's CPU was busy, or the plugin is slow)",
            metrics.plugin_timeout_retries.clone(),
        );
        registry.register(
            "plugin_loads",
            "Plugin loads by plugin and result (ok, failed)",
            metrics.plugin_loads.clone(),
        );
        registry.register("queue_depth", "Deliveries pending or retrying", metrics.queue_depth.clone());
        registry.register(
            "deliveries_in_flight",
            "Delivery slots taken (at most delivery.max_in_flight)",
            metrics.deliveries_in_flight.clone(),
        );
        registry.register(
            "queue_oldest_due_age_seconds",
            "How overdue the oldest due delivery is",
            metrics.oldest_due_seconds.clone(),
        );
        registry.register("deliveries_held", "Deliveries held until their plugin loads", metrics.held.clone());
        registry.register(
            "expired_deliveries",
            "Final deliveries deleted by retention",
            metrics.expired_deliveries.clone(),
        );
        registry.register("expired_events", "Events deleted by retention", metrics.expired_events.clone());
        metrics
    }

    /// The queue gauges, from a count of the store.
    pub fn set_queue(&self, stats: &crate::store::QueueStats) {
        self.queue_depth.set(stats.due as i64);
        self.held.set(stats.held as i64);
        let overdue_ms = stats.earliest_due_ms.map_or(0, |due| (crate::store::now_ms() - due).max(0));
        self.oldest_due_seconds.set(overdue_ms as f64 / 1000.0);
    }

    /// Deliveries that reached `state` (delivered, filtered, held, dead) since start.
    pub fn final_count(&self, state: &'static str) -> u64 {
        self.deliveries_final.get_or_create(&StateLabel { state }).get()
    }

    /// Attempts since start that got no 2xx.
    pub fn failed_attempts(&self) -> u64 {
        ["3xx", "4xx", "5xx", "error"]
            .iter()
            .map(|class| self.attempts.get_or_create(&ClassLabel { class }).get())
            .sum()
    }

    /// The sum of attempt latencies (seconds) and the number of attempts, since start.
    pub fn attempt_totals(&self) -> (f64, u64) {
        let count = ["2xx", "3xx", "4xx", "5xx", "error"]
            .iter()
            .map(|class| self.attempts.get_or_create(&ClassLabel { class }).get())
            .sum();
        (self.attempt_micros.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6, count)
    }

    /// Counts an attempt by its status class.
    pub fn attempt(&self, status: Option<u16>, seconds: f64) {
        let class = match status {
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(_) => "5xx",
            None => "error",
        };
        self.attempts.get_or_create(&ClassLabel { class }).inc();
        self.attempt_seconds.observe(seconds);
        self.attempt_micros.fetch_add((seconds * 1e6) as u64, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn plugin_load(&self, plugin: &str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.plugin_loads.get_or_create(&PluginLoadLabels { plugin: plugin.to_string(), result }).inc();
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}
