//! The delivery worker: a claim loop plus one task per delivery.
//!
//! Deliveries reach a task two ways. Ingest reserves a slot for each fresh delivery, leases it
//! to this worker in the same transaction that stores it, and starts it once committed (no
//! claim, no re-read of the event). Everything else (retries, deliveries ingested while the
//! worker was full, leases a crash left behind) is claimed from the store by the loop.
//!
//! Concurrency is bounded globally (`max_in_flight` deliveries being worked on) and per
//! webhook, by the same slots on both paths: `max_in_flight_per_webhook` requests on the
//! wire, and [`PIPELINE_DEPTH`] times that many deliveries being worked on (transformed,
//! waiting for the wire, sent, their results committed), so a webhook's requests do not wait
//! on its plugin calls or its commits, and a claim skips webhooks at their bound: a slow or
//! dead endpoint ties up only its own share of the slots.
//!
//! Ingest takes any free slot, so under sustained overload fresh events win the slots that
//! free up and queued deliveries (retries among them) wait until the load drops. Leaving
//! the claim loop a share of the slots was measured and not kept: with a backlog every fresh
//! delivery then went through the claim, at 8% more CPU per event (BENCHMARKS.md).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::task::TaskTracker;

use super::client::{AddressPolicy, AttemptResult, Client};
use super::pace::Pace;
use super::report::{TestOutcome, TestRequest};
use super::request::{self, Outgoing};
use super::retry::{self, Verdict};
use crate::config::DeliveryConfig;
use crate::metrics::{Metrics, StateLabel};
use crate::model::Event;
use crate::plugins::{Action, LogLevel, Outcome, PluginErrorKind, Registry};
use crate::store::{Attempt, DeliveryState, DeliveryUpdate, DueDelivery, Lease, Store, Transformed, now_ms};
use crate::webhooks::{Webhook, Webhooks};

/// How long a disabled webhook's deliveries wait before being looked at again.
const DISABLED_RECHECK: Duration = Duration::from_secs(60);
/// Longest idle wait between claims when nothing is due.
/// How soon a delivery for a webhook stored but not yet known here is tried again.
const UNKNOWN_WEBHOOK_RECHECK: Duration = Duration::from_secs(1);
const IDLE_POLL: Duration = Duration::from_millis(500);

/// The pauses before trying a plugin call again after it timed out: longer each time, so a
/// CPU burst can pass.
const TIMEOUT_RETRIES: [Duration; 2] = [Duration::from_millis(50), Duration::from_millis(250)];
/// How often a loop with a webhook at its bound (or held back) looks for other work.
const SATURATED_POLL: Duration = Duration::from_millis(100);
/// Longest a delivery waits in its task for its webhook's turn (rate limit, 429 pause); a
/// longer wait puts it back in the queue, due when the turn comes.
const MAX_TURN_WAIT: Duration = Duration::from_secs(1);
/// How often, at most, a delivering webhook's failure record is cleared in the store.
const CLEAR_FAILURES_EVERY: Duration = Duration::from_secs(10);
/// How long every attempt to a webhook must fail before it counts as failing (or half its
/// `disable_after`, when that is shorter): then the streak is stored (for `disable_after`,
/// across hosts and restarts) and, once the webhook delivers again, announced as recovered.
/// A shorter streak, say one 500 among successes, is a blip: a webhook failing one request in
/// five would otherwise write the store and announce a recovery several times a second.
const FAILING_AFTER: Duration = Duration::from_secs(60);

/// A run of failed attempts to one webhook, with no success since.
#[derive(Debug, Clone, Copy)]
struct FailingStreak {
    since_ms: i64,
    /// Long enough to count: recorded in the store.
    stored: bool,
}
/// How long a webhook is held back after a 429 without `Retry-After`.
const PAUSE_AFTER_429: Duration = Duration::from_secs(1);
const CLAIM_BATCH: usize = 256;
/// Deliveries of one webhook worked on at once, per request it may have on the wire: the
/// others are being transformed or having their results committed meanwhile.
pub const PIPELINE_DEPTH: usize = 4;

pub struct Worker {
    store: Arc<dyn Store>,
    webhooks: Arc<Webhooks>,
    registry: Arc<Registry>,
    client: Client,
    config: DeliveryConfig,
    owner: String,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    /// Deliveries being worked on, per webhook (at most `PIPELINE_DEPTH` times its wire bound).
    in_flight: Mutex<HashMap<String, usize>>,
    /// Requests on the wire, per webhook: its bound and a semaphore of that many permits.
    on_wire: Mutex<HashMap<String, (usize, Arc<Semaphore>)>>,
    /// Per webhook: its rate limit and any pause its endpoint asked for.
    paces: Mutex<HashMap<String, Arc<Pace>>>,
    /// Webhooks whose every attempt from this host has failed, and since when (ms); once a
    /// streak is stored, since when as last read from the store (which holds it across hosts
    /// and restarts).
    failing: Mutex<HashMap<String, FailingStreak>>,
    /// When this host last told the store a webhook delivered.
    cleared: Mutex<HashMap<String, std::time::Instant>>,
    ops: crate::ops::Ops,
    /// Each webhook's latest attempts, for operators.
    health: super::report::Health,
    slots: Arc<Semaphore>,
    /// Signalled when a slot frees up, for a claim loop that found every slot taken.
    freed: Notify,
    /// Every delivery task, from either path, so shutdown can wait for them.
    tasks: TaskTracker,
    closing: AtomicBool,
}

/// A delivery slot taken before the delivery is stored. Ingest leases the delivery to this
/// worker with [`Reservation::lease`] and, once the transaction commits, hands it over with
/// [`Reservation::start`]. Dropped unused (a duplicate event, a failed commit), it frees the slot.
pub struct Reservation {
    worker: Arc<Worker>,
    webhook_id: String,
    permit: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    pub fn webhook_id(&self) -> &str {
        &self.webhook_id
    }

    /// The lease to store with the delivery, so no claim takes it while this worker has it.
    pub fn lease(&self) -> Lease {
        Lease { owner: self.worker.owner.clone(), until_ms: now_ms() + self.worker.lease().as_millis() as i64 }
    }

    /// Works on `delivery`, whose lease this worker must hold: stored with it at ingest
    /// ([`Reservation::lease`]) or taken by a claim.
    pub fn start(self, delivery: DueDelivery) {
        let worker = self.worker.clone();
        worker.tasks.spawn(async move {
            let mut this = self;
            let worker = this.worker.clone();
            worker.process(delivery, &mut this.permit).await;
            drop(this);
        });
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // The permit goes back before the claim loop hears of it, so the loop sees it free.
        drop(self.permit.take());
        self.worker.free_slot(&self.webhook_id);
    }
}

/// What the transform step decided.
enum Transform {
    /// The body to send: the plugin's (`Deliver`) or the envelope (`Pass`, or no plugin).
    Send(Transformed, SendAction),
    Filtered {
        reason: String,
        plugin_sha: Option<String>,
    },
    Held {
        reason: String,
        plugin_sha: Option<String>,
    },
}

/// Why a body is sent, as `test_send` reports it.
#[derive(Clone, Copy)]
enum SendAction {
    Deliver,
    Pass,
}

impl Worker {
    #[allow(clippy::too_many_arguments)] // each is a separate collaborator, named at the call
    pub fn new(
        store: Arc<dyn Store>,
        webhooks: Arc<Webhooks>,
        registry: Arc<Registry>,
        config: DeliveryConfig,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
        owner: String,
        ops: crate::ops::Ops,
    ) -> anyhow::Result<Worker> {
        Ok(Worker {
            metrics,
            client: Client::new(
                config.timeout,
                AddressPolicy {
                    allow_private_networks: config.allow_private_networks,
                    allowed_networks: config.allowed_networks.clone(),
                },
            )?,
            slots: Arc::new(Semaphore::new(config.max_in_flight)),
            store,
            webhooks,
            registry,
            config,
            owner,
            wake,
            in_flight: Mutex::default(),
            on_wire: Mutex::default(),
            paces: Mutex::default(),
            failing: Mutex::default(),
            health: super::report::Health::default(),
            cleared: Mutex::default(),
            ops,
            freed: Notify::new(),
            tasks: TaskTracker::new(),
            closing: AtomicBool::new(false),
        })
    }

    /// A lease comfortably longer than one delivery can take: waiting behind its webhook's
    /// other deliveries for the wire (up to `PIPELINE_DEPTH - 1` timeouts), its own request,
    /// and a timeout's worth and 30 s to spare, with the longest timeout of any webhook.
    fn lease(&self) -> Duration {
        let webhooks = self.webhooks.all();
        let longest = webhooks.iter().filter_map(|w| w.policy.timeout).fold(self.config.timeout, Duration::max);
        longest * (PIPELINE_DEPTH as u32 + 1) + Duration::from_secs(30)
    }

    /// Claims and processes deliveries until `shutdown` turns true, then lets in-flight
    /// deliveries finish (up to the delivery timeout); what remains keeps its lease, which
    /// the next start releases (or another worker takes once it expires).
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            let free = self.slots.available_permits().min(CLAIM_BATCH);
            let (busy, open) = self.webhook_slots();
            // No more than the webhooks can start: a claim past a webhook's free slots would
            // only be released again (plus one, for webhooks this host does not know).
            let limit = free.min(open + 1);
            let claimed = if limit == 0 {
                Vec::new()
            } else {
                match self.store.claim_due(&self.owner, limit, busy.clone(), self.lease()).await {
                    Ok(claimed) => claimed,
                    Err(error) => {
                        tracing::error!(%error, "claiming deliveries failed");
                        Vec::new()
                    }
                }
            };
            if claimed.is_empty() {
                // With a webhook at its bound, what is due may be its deliveries: wait for a
                // slot to free rather than poll for them every millisecond.
                let wait_for_slot = free == 0 || !busy.is_empty();
                let idle = self.idle_wait(wait_for_slot).await;
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(idle) => {}
                    _ = self.freed.notified(), if wait_for_slot => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let mut overflow = Vec::new();
            for delivery in claimed {
                match self.reserve(&delivery.webhook_id) {
                    Some(reservation) => reservation.start(delivery),
                    None => overflow.push(delivery.id),
                }
            }
            if !overflow.is_empty()
                && let Err(error) = self.store.release(&self.owner, overflow).await
            {
                tracing::error!(%error, "releasing deliveries failed");
            }
        }
        self.closing.store(true, Ordering::SeqCst);
        self.tasks.close();
        let drain = tokio::time::timeout(self.config.timeout + Duration::from_secs(1), self.tasks.wait());
        if drain.await.is_err() {
            tracing::warn!(
                in_flight = self.tasks.len(),
                "shutdown: abandoning in-flight deliveries; their leases will expire and they will be retried"
            );
        }
    }

    async fn idle_wait(&self, saturated: bool) -> Duration {
        if saturated {
            // What is due may be only the busy webhooks' deliveries; a freed slot wakes the
            // loop sooner, and others' retries wait at most this long.
            return SATURATED_POLL;
        }
        match self.store.next_due_ms().await {
            Ok(Some(due)) => Duration::from_millis((due - now_ms()).clamp(1, IDLE_POLL.as_millis() as i64) as u64),
            _ => IDLE_POLL,
        }
    }

    /// The webhooks at their bound, and how many more deliveries the others can start.
    fn webhook_slots(&self) -> (Vec<String>, usize) {
        let webhooks = self.webhooks.all();
        let bound = |webhook: Option<&Webhook>| self.wire_bound(webhook) * PIPELINE_DEPTH;
        let bounds: HashMap<&str, usize> = webhooks.iter().map(|w| (w.config.id.as_str(), bound(Some(w)))).collect();
        let in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let at_bound = |id: &str, n: usize| n >= bounds.get(id).copied().unwrap_or_else(|| bound(None));
        let mut busy: std::collections::BTreeSet<String> =
            in_flight.iter().filter(|(id, n)| at_bound(id, **n)).map(|(id, _)| id.clone()).collect();
        // An endpoint held back (a 429 pause, a far rate-limit turn) gets no claims meanwhile.
        let paces = self.paces.lock().unwrap_or_else(|e| e.into_inner());
        busy.extend(paces.iter().filter(|(_, pace)| pace.held_back_beyond(MAX_TURN_WAIT)).map(|(id, _)| id.clone()));
        drop(paces);
        let open =
            bounds.iter().map(|(id, bound)| bound.saturating_sub(in_flight.get(*id).copied().unwrap_or(0))).sum();
        (busy.into_iter().collect(), open)
    }

    /// A webhook's requests on the wire at once: its own `max_in_flight`, else
    /// `max_in_flight_per_webhook`.
    fn wire_bound(&self, webhook: Option<&Webhook>) -> usize {
        webhook.and_then(|w| w.policy.max_in_flight).unwrap_or(self.config.max_in_flight_per_webhook)
    }

    /// Takes a slot for a delivery to `webhook_id`, unless every slot, or every slot that
    /// webhook may use, is taken, or the worker is shutting down.
    pub fn reserve(self: &Arc<Self>, webhook_id: &str) -> Option<Reservation> {
        if self.closing.load(Ordering::SeqCst) {
            return None;
        }
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let bound = self.wire_bound(self.webhooks.get(webhook_id).as_deref()) * PIPELINE_DEPTH;
        let count = in_flight.entry(webhook_id.to_string()).or_default();
        if *count >= bound {
            return None;
        }
        *count += 1;
        drop(in_flight);
        let reservation =
            Reservation { worker: self.clone(), webhook_id: webhook_id.to_string(), permit: Some(permit) };
        self.count_slots();
        Some(reservation)
    }

    /// The semaphore bounding `webhook`'s requests on the wire, sized for the webhook as it is
    /// now (not as a delivery's older copy has it): made anew once when its bound changed,
    /// requests on the old one finishing under the old bound.
    fn wire(&self, webhook: &Webhook) -> Arc<Semaphore> {
        let current = self.webhooks.get(&webhook.config.id);
        let bound = self.wire_bound(Some(current.as_deref().unwrap_or(webhook)));
        let mut on_wire = self.on_wire.lock().unwrap_or_else(|e| e.into_inner());
        let entry =
            on_wire.entry(webhook.config.id.clone()).or_insert_with(|| (bound, Arc::new(Semaphore::new(bound))));
        if entry.0 != bound {
            *entry = (bound, Arc::new(Semaphore::new(bound)));
        }
        entry.1.clone()
    }

    /// An operator enabled `webhook_id`: its failures so far no longer count.
    /// How `webhook_id`'s latest attempts from this host went.
    pub fn health(&self, webhook_id: &str) -> super::report::WebhookHealth {
        self.health.of(webhook_id)
    }

    pub fn forget_failures(&self, webhook_id: &str) {
        self.failing.lock().unwrap_or_else(|e| e.into_inner()).remove(webhook_id);
    }

    /// An attempt to `webhook` succeeded: it is not failing any more.
    async fn note_success(&self, webhook: &Webhook, operational: bool) {
        let id = &webhook.config.id;
        let streak = self.failing.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        let failing_since = streak.filter(|streak| streak.stored).map(|streak| streak.since_ms);
        // Failures recorded by another host, or by this one before a restart, are cleared
        // too, at most every CLEAR_FAILURES_EVERY per webhook: not a write per delivery.
        let clear = failing_since.is_some() || {
            let mut cleared = self.cleared.lock().unwrap_or_else(|e| e.into_inner());
            let due = cleared.get(id).is_none_or(|at| at.elapsed() >= CLEAR_FAILURES_EVERY);
            if due {
                cleared.insert(id.clone(), std::time::Instant::now());
            }
            due
        };
        if clear && let Err(error) = self.store.webhook_succeeded(id).await {
            tracing::warn!(webhook = id, %error, "recording that the webhook delivered failed");
        }
        if let Some(failing_since_ms) = failing_since
            && !operational
        {
            self.ops.emit(crate::ops::Happening::WebhookRecovered { webhook: id.clone(), failing_since_ms });
        }
    }

    fn emit_disabled(&self, webhook: &Webhook, reason: &str) {
        self.ops.emit(crate::ops::Happening::WebhookDisabled {
            webhook: webhook.config.id.clone(),
            url: webhook.config.url.clone(),
            reason: reason.to_string(),
        });
    }

    /// An attempt to `webhook` failed. Once every attempt has failed for its `disable_after`
    /// (on any host: the store keeps since when), it is disabled, as a `410 Gone` disables
    /// it; its queued deliveries wait.
    async fn note_failure(&self, webhook: &Webhook) {
        let id = &webhook.config.id;
        let limit = webhook.policy.disable_after.unwrap_or(self.config.disable_after);
        let limit_ms = limit.as_millis() as i64;
        let now = now_ms();
        let streak = *self
            .failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.clone())
            .or_insert(FailingStreak { since_ms: now, stored: false });
        let counts_after_ms = (limit_ms / 2).min(FAILING_AFTER.as_millis() as i64);
        if now - streak.since_ms < counts_after_ms || (streak.stored && now - streak.since_ms < limit_ms) {
            return;
        }
        // Long enough to count: tell the store when this streak started. Due to be disabled:
        // ask it again, as another host may have cleared it (a success there starts a new
        // streak, now) or started it earlier.
        let started_ms = if streak.stored { now } else { streak.since_ms };
        let since = match self.store.webhook_failed(id, started_ms).await {
            Ok(since) => since,
            Err(error) => {
                tracing::warn!(webhook = id, %error, "recording a failed attempt failed");
                return;
            }
        };
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), FailingStreak { since_ms: since, stored: true });
        if now_ms() - since < limit_ms || !self.webhooks.is_active(webhook) {
            return;
        }
        let since_text = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(since as u64));
        let reason = format!(
            "every attempt failed for {} (since {since_text}); webhook disabled",
            humantime::format_duration(limit)
        );
        if !self.webhooks.disable(webhook, &reason) {
            return;
        }
        tracing::warn!(webhook = id, url = webhook.config.url, reason, "disabling the webhook");
        if let Err(error) = self.store.disable_webhook(id, &webhook.config.url, &reason).await {
            tracing::error!(%error, "persisting the disabled webhook failed");
        }
        self.emit_disabled(webhook, &reason);
    }

    /// `webhook`'s pace, made anew (keeping any pause) when its current rate limit changed.
    fn pace(&self, webhook: &Webhook) -> Arc<Pace> {
        let current = self.webhooks.get(&webhook.config.id);
        let limit = current.as_deref().unwrap_or(webhook).policy.rate_limit;
        let mut paces = self.paces.lock().unwrap_or_else(|e| e.into_inner());
        let pace = paces.entry(webhook.config.id.clone()).or_insert_with(|| Arc::new(Pace::new(limit)));
        if pace.limit() != limit {
            let renewed = Pace::new(limit);
            renewed.pause(pace.paused_for());
            *pace = Arc::new(renewed);
        }
        pace.clone()
    }

    /// Waits for `webhook`'s turn to send (its rate limit, a pause its endpoint asked for),
    /// with the global slot given back meanwhile. A turn further off than [`MAX_TURN_WAIT`]
    /// is `Err`: how long, and why, for the delivery to wait in the queue instead.
    async fn take_turn(
        &self,
        webhook: &Webhook,
        pace: &Pace,
        permit: &mut Option<OwnedSemaphorePermit>,
    ) -> Result<(), (Duration, String)> {
        let mut waited = Duration::ZERO;
        loop {
            match pace.try_take() {
                Ok(()) => break,
                // In all, never longer than MAX_TURN_WAIT: the lease allows for no more.
                Err(wait) if waited + wait <= MAX_TURN_WAIT => {
                    self.give_back_slot(permit);
                    tokio::time::sleep(wait).await;
                    waited += wait;
                }
                Err(wait) => {
                    let why = match (pace.paused(), webhook.config.rate_limit.as_deref()) {
                        (false, Some(limit)) => format!("waiting for its turn (rate_limit {limit})"),
                        _ => "waiting: the endpoint answered 429 Too Many Requests".to_string(),
                    };
                    self.take_back_slot(permit).await;
                    return Err((wait, why));
                }
            }
        }
        self.take_back_slot(permit).await;
        Ok(())
    }

    /// Gives the global slot back while a delivery waits for something of its webhook's.
    fn give_back_slot(&self, permit: &mut Option<OwnedSemaphorePermit>) {
        if permit.take().is_some() {
            self.count_slots();
            self.freed.notify_one();
        }
    }

    /// Takes a global slot again (if it was given back).
    async fn take_back_slot(&self, permit: &mut Option<OwnedSemaphorePermit>) {
        if permit.is_none() {
            *permit = self.slots.clone().acquire_owned().await.ok();
            self.count_slots();
        }
    }

    /// A request slot of `webhook`. A delivery that has to wait for one gives its global
    /// slot back meanwhile, so a slow endpoint's queue holds no more of the global slots than
    /// its requests on the wire do.
    async fn wait_for_wire(
        &self,
        webhook: &Webhook,
        permit: &mut Option<OwnedSemaphorePermit>,
    ) -> Option<OwnedSemaphorePermit> {
        let wire = self.wire(webhook);
        if let Ok(on_wire) = wire.clone().try_acquire_owned() {
            return Some(on_wire);
        }
        self.give_back_slot(permit);
        let on_wire = wire.acquire_owned().await.ok();
        self.take_back_slot(permit).await;
        on_wire
    }

    fn count_slots(&self) {
        let taken = self.config.max_in_flight.saturating_sub(self.slots.available_permits());
        self.metrics.deliveries_in_flight.set(taken as i64);
    }

    fn free_slot(&self, webhook_id: &str) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = in_flight.get_mut(webhook_id) {
            *count -= 1;
            if *count == 0 {
                in_flight.remove(webhook_id);
            }
        }
        drop(in_flight);
        self.count_slots();
        self.freed.notify_one();
    }

    /// Works on `delivery` under the global slot `permit` (given back while the delivery
    /// waits for its webhook's wire).
    async fn process(&self, delivery: DueDelivery, permit: &mut Option<OwnedSemaphorePermit>) {
        let id = delivery.id.clone();
        let (webhook_id, event_id) = (delivery.webhook_id.clone(), delivery.event.id.clone());
        let operational = delivery.event.event_type.starts_with(crate::ops::PREFIX);
        let update = self.work(delivery, permit).await;
        // Deliveries of operational events never cause more of them.
        if !operational {
            let (delivery, event, reason) = (id.clone(), event_id, update.reason.clone().unwrap_or_default());
            let webhook = webhook_id.clone();
            match update.state {
                DeliveryState::Dead => {
                    self.ops.emit(crate::ops::Happening::DeliveryDead { webhook, delivery, event, reason })
                }
                DeliveryState::Held => {
                    self.ops.emit(crate::ops::Happening::DeliveryHeld { webhook, delivery, event, reason })
                }
                _ => {}
            }
        }
        if let Some(attempt) = &update.attempt {
            self.metrics.attempt(attempt.status, attempt.latency_ms as f64 / 1000.0);
            let succeeded = retry::verdict(attempt.status) == Verdict::Delivered;
            self.health.record(&webhook_id, attempt.status, attempt.error.as_deref(), succeeded);
        }
        let (state, due_ms) = (update.state, update.next_attempt_at_ms);
        match self.store.update(&self.owner, update).await {
            Ok(true) if matches!(state, DeliveryState::Pending | DeliveryState::Retrying) => {
                // The claim loop sleeps until the next due delivery no one holds; this one
                // was held until now, so a retry due soon must wake it.
                if due_ms - now_ms() < IDLE_POLL.as_millis() as i64 {
                    self.wake.notify_one();
                }
            }
            Ok(true) => {
                if matches!(
                    state,
                    DeliveryState::Delivered | DeliveryState::Filtered | DeliveryState::Held | DeliveryState::Dead
                ) {
                    self.metrics.deliveries_final.get_or_create(&StateLabel { state: state.as_str() }).inc();
                }
            }
            Ok(false) => {
                tracing::warn!(delivery = id, "lease lost before the result was recorded; another worker owns it")
            }
            Err(error) => {
                tracing::error!(delivery = id, %error, "recording a delivery result failed; it will be retried when its lease expires")
            }
        }
    }

    async fn work(&self, delivery: DueDelivery, permit: &mut Option<OwnedSemaphorePermit>) -> DeliveryUpdate {
        let mut update = DeliveryUpdate {
            id: delivery.id.clone(),
            state: DeliveryState::Dead,
            next_attempt_at_ms: now_ms(),
            transformed: None,
            reason: None,
            attempt: None,
            plugin_sha: None,
        };
        let Some(webhook) = self.webhooks.get(&delivery.webhook_id) else {
            // A webhook another host sharing the store just created is in the database
            // before it is in this host's copy: wait for it rather than give up on it.
            let stored = self.store.stored_webhook(&delivery.webhook_id).await;
            if !matches!(stored, Ok(None)) {
                update.state =
                    if delivery.transformed.is_some() { DeliveryState::Retrying } else { DeliveryState::Pending };
                update.next_attempt_at_ms = now_ms() + UNKNOWN_WEBHOOK_RECHECK.as_millis() as i64;
                update.reason = Some(format!("webhook `{}` is not known on this host yet", delivery.webhook_id));
                return update;
            }
            update.reason = Some(format!("webhook `{}` is no longer configured", delivery.webhook_id));
            return update;
        };
        if !self.webhooks.is_active(&webhook) {
            update.state =
                if delivery.transformed.is_some() { DeliveryState::Retrying } else { DeliveryState::Pending };
            update.next_attempt_at_ms = now_ms() + DISABLED_RECHECK.as_millis() as i64;
            update.reason =
                Some(self.webhooks.disabled_reason(&webhook).unwrap_or_else(|| "webhook is disabled".into()));
            return update;
        }
        if delivery.transformed.is_none()
            && let Some(rejected) = filter_rejects(&webhook, &delivery.event)
        {
            update.state = DeliveryState::Filtered;
            update.reason = Some(rejected);
            return update;
        }
        let pace = self.pace(&webhook);
        if let Err((wait, why)) = self.take_turn(&webhook, &pace, permit).await {
            update.state =
                if delivery.transformed.is_some() { DeliveryState::Retrying } else { DeliveryState::Pending };
            update.next_attempt_at_ms = now_ms() + wait.as_millis() as i64;
            update.reason = Some(why);
            return update;
        }
        let (transformed, first_time) = match delivery.transformed.clone() {
            Some(transformed) => (transformed, false),
            None => match self.transform(&webhook, &delivery.event, &delivery.id).await {
                Transform::Send(transformed, _) => (transformed, true),
                Transform::Filtered { reason, plugin_sha } => {
                    update.state = DeliveryState::Filtered;
                    update.reason = Some(reason);
                    update.plugin_sha = plugin_sha;
                    return update;
                }
                Transform::Held { reason, plugin_sha } => {
                    update.state = DeliveryState::Held;
                    update.reason = Some(reason);
                    update.plugin_sha = plugin_sha;
                    return update;
                }
            },
        };

        let on_wire = self.wait_for_wire(&webhook, permit).await;
        // The endpoint may have asked for a pause (429) while this one waited for the wire.
        if pace.paused() {
            update.state = DeliveryState::Retrying;
            update.next_attempt_at_ms = now_ms() + pace.paused_for().as_millis() as i64;
            update.reason = Some("waiting: the endpoint answered 429 Too Many Requests".into());
            if first_time {
                update.transformed = Some(transformed);
            }
            return update;
        }
        let (_, result) = self.sign_and_send(&webhook, &delivery.id, &transformed).await;
        drop(on_wire);
        let attempts_made = delivery.attempts + 1;
        tracing::debug!(delivery = delivery.id, webhook = webhook.config.id, event = delivery.event.id, status = ?result.status, latency_ms = result.latency.as_millis() as u64, error = ?result.error, attempt = attempts_made, "attempt");
        update.attempt = Some(Attempt {
            at_ms: now_ms() - result.latency.as_millis() as i64,
            status: result.status,
            latency_ms: result.latency.as_millis() as u64,
            response_excerpt: result.response_excerpt.clone(),
            error: result.error.clone(),
        });
        let transformed_sha = transformed.plugin_sha.clone();
        if first_time {
            update.transformed = Some(transformed);
        }
        let verdict = retry::verdict(result.status);
        if let (Some(plugin), Some(sha)) = (&webhook.config.plugin, &transformed_sha) {
            let outcome = if verdict == Verdict::Delivered { Outcome::Delivered } else { Outcome::Failed };
            self.registry.count(plugin, sha, outcome);
        }
        let operational = delivery.event.event_type.starts_with(crate::ops::PREFIX);
        match verdict {
            Verdict::Delivered => self.note_success(&webhook, operational).await,
            Verdict::Retry => self.note_failure(&webhook).await,
            Verdict::Gone => {}
        }
        match verdict {
            Verdict::Delivered => update.state = DeliveryState::Delivered,
            Verdict::Gone => {
                let reason = "endpoint answered 410 Gone; webhook disabled".to_string();
                tracing::warn!(
                    webhook = webhook.config.id,
                    url = webhook.config.url,
                    "410 Gone: disabling the webhook"
                );
                let newly = self.webhooks.disable(&webhook, &reason);
                if let Err(error) = self.store.disable_webhook(&webhook.config.id, &webhook.config.url, &reason).await {
                    tracing::error!(%error, "persisting the disabled webhook failed");
                }
                // Once per disable, whatever the delivery carried: a disabled webhook gets no
                // more deliveries, so this cannot loop.
                if newly {
                    self.emit_disabled(&webhook, &reason);
                }
                update.state = DeliveryState::Dead;
                update.reason = Some(reason);
            }
            Verdict::Retry => {
                if result.status == Some(429) {
                    let pause = result.retry_after.unwrap_or(PAUSE_AFTER_429).min(self.config.max_retry_after);
                    pace.pause(pause);
                    tracing::info!(
                        webhook = webhook.config.id,
                        pause_ms = pause.as_millis() as u64,
                        "429: holding the webhook back"
                    );
                }
                match retry::next_delay(
                    webhook.policy.retry_schedule.as_deref().unwrap_or(&self.config.retry_schedule),
                    attempts_made,
                    result.retry_after,
                    self.config.max_retry_after,
                ) {
                    Some(delay) => {
                        update.state = DeliveryState::Retrying;
                        update.next_attempt_at_ms = now_ms() + delay.as_millis() as i64;
                    }
                    None => {
                        update.state = DeliveryState::Dead;
                        update.reason = Some(format!("gave up after {attempts_made} attempts"));
                    }
                }
            }
        }
        update
    }

    async fn transform(&self, webhook: &Webhook, event: &Event, delivery_id: &str) -> Transform {
        let Some(name) = &webhook.config.plugin else {
            return Transform::Send(envelope(event), SendAction::Pass);
        };
        let Some(plugin) = self.registry.for_delivery(name, delivery_id) else {
            let cause = self.registry.last_error(name).map(|e| format!(": {e}")).unwrap_or_default();
            return Transform::Held { reason: format!("plugin `{name}` is not loaded{cause}"), plugin_sha: None };
        };
        let sha = Some(plugin.sha256().to_string());
        // The deadline is wall-clock time: on a saturated host a healthy plugin can miss it. A
        // timeout is tried again after a pause before the delivery is held; errors the plugin
        // returns, and traps, are its own and hold at once.
        let mut tries = 1;
        let execution = loop {
            let execution =
                self.registry.transform(plugin.clone(), event.plugin_event(), webhook.plugin_config.clone()).await;
            let timed_out = matches!(&execution.result, Err(e) if matches!(e.kind, PluginErrorKind::Timeout(_)));
            if !timed_out || tries > TIMEOUT_RETRIES.len() {
                break execution;
            }
            self.metrics.plugin_timeout_retries.inc();
            tracing::info!(delivery = delivery_id, plugin = name.as_str(), tries, "plugin timed out; trying again");
            tokio::time::sleep(TIMEOUT_RETRIES[tries - 1]).await;
            tries += 1;
        };
        self.registry.count(name, plugin.sha256(), Outcome::Transformed);
        if execution.result.is_err() {
            self.registry.count(name, plugin.sha256(), Outcome::Held);
        }
        self.metrics.plugin_seconds.observe(execution.duration.as_secs_f64());
        for line in &execution.logs {
            let (plugin, event) = (name.as_str(), event.id.as_str());
            match line.level {
                LogLevel::Error => tracing::error!(plugin, event, message = line.message, "plugin log"),
                LogLevel::Warn => tracing::warn!(plugin, event, message = line.message, "plugin log"),
                LogLevel::Info => tracing::info!(plugin, event, message = line.message, "plugin log"),
                _ => tracing::debug!(plugin, event, level = ?line.level, message = line.message, "plugin log"),
            }
        }
        match execution.result {
            Ok(Action::Deliver { headers, body }) => {
                Transform::Send(Transformed { body, headers, plugin_sha: sha }, SendAction::Deliver)
            }
            Ok(Action::Pass) => Transform::Send(Transformed { plugin_sha: sha, ..envelope(event) }, SendAction::Pass),
            Ok(Action::Skip(reason)) => Transform::Filtered { reason, plugin_sha: sha },
            Err(error) => {
                tracing::warn!(delivery = delivery_id, webhook = webhook.config.id, %error, tries, "plugin failed; delivery held");
                let reason = if tries > 1 { format!("{error} ({tries} tries)") } else { error.to_string() };
                Transform::Held { reason, plugin_sha: sha }
            }
        }
    }

    /// Signs `transformed` as message `msg_id` at this moment and POSTs it to the webhook.
    async fn sign_and_send(
        &self,
        webhook: &Webhook,
        msg_id: &str,
        transformed: &Transformed,
    ) -> (Outgoing, AttemptResult) {
        let now = now_ms();
        let outgoing = request::build(
            msg_id,
            now / 1000,
            webhook.signing_secrets(now),
            &webhook.headers,
            &transformed.headers,
            transformed.body.clone(),
        );
        let result = self.client.send(&webhook.url, &outgoing, webhook.policy.timeout).await;
        (outgoing, result)
    }

    /// Sends `event` to `webhook` now, through its plugin, signed, outside the store: the
    /// "send a test event" step of setting up a webhook. Reports each step.
    pub async fn test_send(&self, webhook: &Webhook, event: &Event) -> TestOutcome {
        let msg_id = crate::model::new_id("msg_test");
        let nothing_sent = |action: &str, plugin_sha: Option<String>| TestOutcome {
            action: action.into(),
            plugin_sha,
            reason: None,
            request: None,
            status: None,
            latency_ms: None,
            response_excerpt: None,
            error: None,
            delivered: false,
        };
        if let Some(rejected) = filter_rejects(webhook, event) {
            return TestOutcome { reason: Some(rejected), ..nothing_sent("skip", None) };
        }
        let (transformed, action) = match self.transform(webhook, event, &msg_id).await {
            Transform::Send(transformed, action) => (transformed, action),
            Transform::Filtered { reason, plugin_sha } => {
                return TestOutcome { reason: Some(reason), ..nothing_sent("skip", plugin_sha) };
            }
            Transform::Held { reason, plugin_sha } => {
                return TestOutcome { error: Some(reason), ..nothing_sent("error", plugin_sha) };
            }
        };
        let (outgoing, result) = self.sign_and_send(webhook, &msg_id, &transformed).await;
        TestOutcome {
            action: match action {
                SendAction::Deliver => "deliver",
                SendAction::Pass => "pass",
            }
            .into(),
            plugin_sha: transformed.plugin_sha,
            reason: None,
            request: Some(TestRequest {
                url: webhook.config.url.clone(),
                headers: outgoing.headers.iter().cloned().collect(),
                body: String::from_utf8_lossy(&outgoing.body).into_owned(),
            }),
            status: result.status,
            latency_ms: Some(result.latency.as_millis() as u64),
            response_excerpt: Some(result.response_excerpt),
            error: result.error,
            delivered: retry::verdict(result.status) == Verdict::Delivered,
        }
    }
}

/// Why `webhook`'s filter rejects `event` (the reason recorded with the delivery), if it does.
fn filter_rejects(webhook: &Webhook, event: &Event) -> Option<String> {
    match webhook.filter.as_ref()?.matches(event) {
        Ok(true) => None,
        Ok(false) => Some(format!("{FILTER_REASON} did not match")),
        Err(error) => Some(format!("{FILTER_REASON} failed on this event: {error}")),
    }
}

/// How a delivery's reason starts when its webhook's filter rejected the event.
pub const FILTER_REASON: &str = "filter:";

fn envelope(event: &Event) -> Transformed {
    Transformed { body: event.envelope_json(), headers: Vec::new(), plugin_sha: None }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::plugins::{Limits, Runtime};
    use crate::store::sqlite::SqliteStore;

    fn worker(max_in_flight: usize, dir: &std::path::Path) -> Arc<Worker> {
        let mut config = crate::config::Config::load(None, []).unwrap().delivery;
        config.max_in_flight = max_in_flight;
        let registry = Registry::new(Arc::new(Runtime::new(Limits::default(), None).unwrap()));
        let worker = Worker::new(
            Arc::new(SqliteStore::open(dir).unwrap()),
            Arc::new(Webhooks::new(Vec::new(), BTreeMap::new())),
            Arc::new(registry),
            config,
            Arc::default(),
            Arc::default(),
            "worker".into(),
            crate::ops::Ops::new().0,
        );
        Arc::new(worker.unwrap())
    }

    #[tokio::test]
    async fn slots_are_bounded_and_counted_until_reservations_drop() {
        let dir = tempfile::tempdir().unwrap();
        let worker = worker(16, dir.path());
        let taken: Vec<_> = (0..20).map_while(|i| worker.reserve(&format!("w{i}"))).collect();
        assert_eq!(taken.len(), 16);
        assert_eq!(worker.metrics.deliveries_in_flight.get(), 16);
        drop(taken);
        assert_eq!(worker.slots.available_permits(), 16);
        assert_eq!(worker.metrics.deliveries_in_flight.get(), 0);
        assert!(worker.reserve("w0").is_some(), "a freed slot is reusable");
    }
}
