//! The last hour of the host's activity, for the console's charts: every [`EVERY`] the
//! counters of [`Metrics`] are sampled and the change since the previous sample kept, at
//! most an hour's worth, in memory (this host only; a restart starts it again).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// How often a point is taken.
pub const EVERY: Duration = Duration::from_secs(10);
/// Points kept: an hour.
const KEPT: usize = 360;

/// What happened in one interval, and the queue at its end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Point {
    /// The interval's end, milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub events_accepted: u64,
    pub delivered: u64,
    pub filtered: u64,
    pub held: u64,
    pub dead: u64,
    /// Attempts that got no 2xx.
    pub failed_attempts: u64,
    /// Mean attempt latency in the interval (ms), if there were attempts.
    pub attempt_latency_ms: Option<f64>,
    /// Deliveries pending or retrying at the interval's end.
    pub queue_depth: i64,
}

/// `GET /v1/stats`: the last hour, oldest first; the last point runs up to now.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Stats {
    /// Seconds each point covers.
    pub interval_s: u64,
    pub points: Vec<Point>,
}

/// The counters' totals at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    events_accepted: u64,
    states: [u64; 4],
    failed_attempts: u64,
    latency_sum_s: f64,
    attempts: u64,
}

impl Totals {
    fn read(metrics: &Metrics) -> Totals {
        let (latency_sum_s, attempts) = metrics.attempt_totals();
        Totals {
            events_accepted: metrics.events_accepted.get(),
            states: ["delivered", "filtered", "held", "dead"].map(|state| metrics.final_count(state)),
            failed_attempts: metrics.failed_attempts(),
            latency_sum_s,
            attempts,
        }
    }

    /// The point for the interval from `before` to `self`.
    fn since(&self, before: &Totals, at_ms: i64, queue_depth: i64) -> Point {
        let [delivered, filtered, held, dead] = [0, 1, 2, 3].map(|i| self.states[i].saturating_sub(before.states[i]));
        let attempts = self.attempts.saturating_sub(before.attempts);
        Point {
            at_ms,
            events_accepted: self.events_accepted.saturating_sub(before.events_accepted),
            delivered,
            filtered,
            held,
            dead,
            failed_attempts: self.failed_attempts.saturating_sub(before.failed_attempts),
            attempt_latency_ms: (attempts > 0)
                .then(|| (self.latency_sum_s - before.latency_sum_s) * 1000.0 / attempts as f64),
            queue_depth,
        }
    }
}

pub struct Timeline {
    metrics: Arc<Metrics>,
    state: Mutex<(VecDeque<Point>, Totals)>,
}

impl Timeline {
    pub fn new(metrics: Arc<Metrics>) -> Timeline {
        let totals = Totals::read(&metrics);
        Timeline { metrics, state: Mutex::new((VecDeque::new(), totals)) }
    }

    /// The kept points and one for the interval in progress.
    pub fn stats(&self) -> Stats {
        let (points, last) = &*self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Totals::read(&self.metrics).since(last, crate::store::now_ms(), self.metrics.queue_depth.get());
        Stats { interval_s: EVERY.as_secs(), points: points.iter().cloned().chain([now]).collect() }
    }

    fn sample(&self) {
        let totals = Totals::read(&self.metrics);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let point = totals.since(&state.1, crate::store::now_ms(), self.metrics.queue_depth.get());
        if state.0.len() == KEPT {
            state.0.pop_front();
        }
        state.0.push_back(point);
        state.1 = totals;
    }

    /// Samples every [`EVERY`] until `shutdown`.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + EVERY, EVERY);
        while !*shutdown.borrow() {
            tokio::select! {
                _ = every.tick() => self.sample(),
                _ = shutdown.changed() => {}
            }
        }
    }
}
