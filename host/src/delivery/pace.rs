//! Per-webhook pacing: the webhook's `rate_limit` (a token bucket holding one second's worth
//! of requests, or one request for per-minute limits), and the pause an endpoint asks for by
//! answering `429 Too Many Requests` with `Retry-After`. Both hold back that webhook only.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};

use crate::config::RateLimit;

/// One webhook's pace.
pub struct Pace {
    limit: Option<RateLimit>,
    limiter: Option<DefaultDirectRateLimiter>,
    paused_until: Mutex<Option<Instant>>,
    /// When the rate limit said the next turn would be, at its last refusal.
    next_turn: Mutex<Option<Instant>>,
}

impl Pace {
    pub fn new(limit: Option<RateLimit>) -> Pace {
        let limiter = limit.map(|limit| {
            let per_request = limit.per / limit.requests.get();
            // A second's worth of requests at once, at least one.
            let burst = (Duration::from_secs(1).as_nanos() / per_request.as_nanos().max(1)).clamp(1, u32::MAX as u128);
            let quota = Quota::with_period(per_request)
                .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
                .allow_burst(NonZeroU32::new(burst as u32).unwrap_or(NonZeroU32::MIN));
            DefaultDirectRateLimiter::direct(quota)
        });
        Pace { limit, limiter, paused_until: Mutex::new(None), next_turn: Mutex::new(None) }
    }

    /// The limit this pace was built for.
    pub fn limit(&self) -> Option<RateLimit> {
        self.limit
    }

    /// Takes a request's turn now, or says how long until one may be free.
    pub fn try_take(&self) -> Result<(), Duration> {
        if let Some(until) = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner()) {
            let now = Instant::now();
            if until > now {
                return Err(until - now);
            }
        }
        match &self.limiter {
            None => Ok(()),
            Some(limiter) => limiter.check().map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                *self.next_turn.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + wait);
                wait
            }),
        }
    }

    /// Whether the endpoint asked to be left alone for now.
    pub fn paused(&self) -> bool {
        !self.paused_for().is_zero()
    }

    /// How long the pause the endpoint asked for still lasts.
    pub fn paused_for(&self) -> Duration {
        let until = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        until.map(|until| until.saturating_duration_since(Instant::now())).unwrap_or_default()
    }

    /// Whether no request may go for longer than `limit`: a pause, or the rate limit's next
    /// turn as its last refusal said.
    pub fn held_back_beyond(&self, limit: Duration) -> bool {
        let next_turn = *self.next_turn.lock().unwrap_or_else(|e| e.into_inner());
        self.paused_for() > limit || next_turn.is_some_and(|at| at.saturating_duration_since(Instant::now()) > limit)
    }

    /// Holds every request back for `duration` (the endpoint answered 429).
    pub fn pause(&self, duration: Duration) {
        if duration.is_zero() {
            return;
        }
        let until = Instant::now() + duration;
        let mut paused = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
        }
    }
}
