//! `POST /v1/events`: validate, fan out to subscribed webhooks, store durably, answer 202;
//! or 503 while the delivery backlog is at `[delivery] max_backlog` or the disk is full, so
//! producers retry later and nothing already accepted is affected.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::api::types::{Accepted, Envelope};
use crate::api::{ApiError, AppState};
use crate::delivery::worker::Reservation;
use crate::metrics::Metrics;
use crate::model::{Event, new_id};
use crate::store::{Change, DueDelivery, IngestOutcome, NewDelivery, Store, StoreError};

/// How often the backlog is counted.
const RECOUNT_EVERY: Duration = Duration::from_secs(1);
/// What a refused producer is told to wait, in seconds.
const BACKLOG_RETRY_AFTER: u64 = 5;
const STORAGE_FULL_RETRY_AFTER: u64 = 30;
const STORE_UNAVAILABLE_RETRY_AFTER: u64 = 5;
/// A full disk refuses every event: its error is logged at most this often.
const FULL_DISK_LOG_EVERY_MS: i64 = 10_000;

/// The delivery backlog (pending and retrying deliveries: those waiting to go out) against
/// `[delivery] max_backlog`. `held` deliveries are not counted: they leave that state only
/// when a plugin loads or an operator acts, so counting them would let one missing plugin
/// stop ingest for every webhook (they are the `hookwasm_deliveries_held` gauge instead).
/// It is counted on a read connection every [`RECOUNT_EVERY`] and raised by every delivery
/// stored meanwhile, so between counts it errs high: a producer may be refused up to a
/// second after the backlog drained, never admitted past the limit by much.
pub struct Backlog {
    max: u64,
    estimate: AtomicU64,
}

/// When a full disk was last logged (ms since the epoch).
static FULL_DISK_LOGGED_MS: AtomicI64 = AtomicI64::new(0);

impl Backlog {
    pub fn new(max: u64) -> Backlog {
        Backlog { max, estimate: AtomicU64::new(0) }
    }

    fn is_full(&self) -> bool {
        self.estimate.load(Ordering::Relaxed) >= self.max
    }

    fn added(&self, deliveries: usize) {
        self.estimate.fetch_add(deliveries as u64, Ordering::Relaxed);
    }

    /// Counts the backlog (and the queue metrics) until `shutdown` turns true.
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        while !*shutdown.borrow() {
            match store.queue_stats().await {
                Ok(stats) => {
                    self.estimate.store(stats.due, Ordering::Relaxed);
                    metrics.set_queue(&stats);
                }
                Err(error) => tracing::warn!(%error, "counting the delivery backlog failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(RECOUNT_EVERY) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

#[utoipa::path(post, path = "/v1/events", tag = "events",
    request_body(content = Envelope, description = "An event envelope", content_type = "application/json"),
    responses(
        (status = 202, description = "Stored with one delivery per subscribed webhook (or a duplicate id: nothing new)", body = crate::api::types::Accepted),
        (status = 400, description = "Malformed JSON or an invalid or missing field (named)", body = crate::api::ErrorBody),
        (status = 401, description = "Missing or wrong ingest token", body = crate::api::ErrorBody),
        (status = 413, description = "Body over server.max_body_bytes", body = crate::api::ErrorBody),
        (status = 415, description = "Not application/json", body = crate::api::ErrorBody),
        (status = 503, description = "Not stored: `backlog_full` (over delivery.max_backlog), `storage_full` (the disk is full) or `store_unavailable`; retry after `Retry-After` seconds", body = crate::api::ErrorBody),
    ))]
pub async fn post_event(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    if let Some(token) = &state.ingest_token {
        check_bearer(&headers, token)?;
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if essence != "application/json" && !(essence.starts_with("application/") && essence.ends_with("+json")) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content-type must be application/json, got {:?}", content_type),
        ));
    }
    let too_large = format!("request body is larger than the {}-byte limit", state.max_body_bytes);
    let bytes = crate::api::read_body(body, state.max_body_bytes, too_large).await?;
    let event = Event::parse_envelope(&bytes)?;
    if event.event_type.starts_with(crate::ops::PREFIX) {
        return Err(ApiError::invalid_field(
            "type",
            format!("event types starting with {:?} are hookwasm's own operational events", crate::ops::PREFIX),
        ));
    }
    accept(&state, event).await
}

/// Stores `event` with one delivery per subscribed webhook and starts those the worker has
/// slots for: the part of `POST /v1/events` after the request is read, shared with hookwasm's
/// own operational events.
pub async fn accept(state: &AppState, event: Event) -> Result<Response, ApiError> {
    // `events_accepted` counts what producers posted.
    let event_type_is_operational = event.event_type.starts_with(crate::ops::PREFIX);
    // Operational events report trouble, often exactly when the backlog is full.
    if state.backlog.is_full() && !event_type_is_operational {
        // A producer retrying an event that was stored still gets its duplicate answer.
        if let Ok(Some(_)) = state.store.event(&event.id).await {
            state.metrics.events_duplicate.inc();
            return Ok((
                StatusCode::ACCEPTED,
                Json(Accepted { id: event.id, deliveries: None, duplicate: Some(true) }),
            )
                .into_response());
        }
        state.metrics.events_refused.get_or_create(&crate::metrics::ReasonLabel { reason: "backlog_full" }).inc();
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "backlog_full",
            format!(
                "{} or more deliveries are waiting to go out (delivery.max_backlog); the event was not stored, retry later",
                state.backlog.max
            ),
        )
        .retry_after(BACKLOG_RETRY_AFTER));
    }
    // A delivery the worker has a slot for is leased to it in the same transaction and started
    // once committed; the others wait, pending, for the worker's next claim.
    let mut handed_over = Vec::new();
    let deliveries: Vec<NewDelivery> = state
        .webhooks
        .subscribed(&event.event_type)
        .iter()
        .map(|webhook| {
            let id = new_id("msg");
            let reservation = state.worker.reserve(&webhook.config.id);
            let lease = reservation.as_ref().map(Reservation::lease);
            handed_over.extend(reservation.map(|reservation| (id.clone(), reservation)));
            NewDelivery { id, webhook_id: webhook.config.id.clone(), lease }
        })
        .collect();
    let handed_over_event = (!handed_over.is_empty()).then(|| event.clone());
    let id = event.id.clone();
    match state.store.ingest(event, deliveries).await {
        Ok(IngestOutcome::Accepted { deliveries }) => {
            if !event_type_is_operational {
                state.metrics.events_accepted.inc();
            }
            state.backlog.added(deliveries);
            if deliveries > handed_over.len() {
                // Waiting for a slot: whichever host has one first sends them.
                state.wake.notify_one();
                state.store.announce(Change::Queue);
            }
            if let Some(event) = handed_over_event {
                for (id, reservation) in handed_over {
                    let webhook_id = reservation.webhook_id().to_string();
                    reservation.start(DueDelivery {
                        id,
                        webhook_id,
                        event: event.clone(),
                        attempts: 0,
                        transformed: None,
                    });
                }
            }
            Ok((StatusCode::ACCEPTED, Json(Accepted { id, deliveries: Some(deliveries as u64), duplicate: None }))
                .into_response())
        }
        Ok(IngestOutcome::Duplicate) => {
            state.metrics.events_duplicate.inc();
            Ok((StatusCode::ACCEPTED, Json(Accepted { id, deliveries: None, duplicate: Some(true) })).into_response())
        }
        Err(error) if StoreError::is_storage_full(&error) => {
            let now = crate::store::now_ms();
            let last = FULL_DISK_LOGGED_MS.load(Ordering::Relaxed);
            if now - last >= FULL_DISK_LOG_EVERY_MS
                && FULL_DISK_LOGGED_MS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                tracing::error!(event = id, %error, "the disk is full: refusing events until there is room (logged every 10 s; hookwasm_events_refused_total counts them)");
            }
            state.metrics.events_refused.get_or_create(&crate::metrics::ReasonLabel { reason: "storage_full" }).inc();
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_full",
                "the disk holding the store is full; the event was not stored, retry later",
            )
            .retry_after(STORAGE_FULL_RETRY_AFTER))
        }
        Err(error) => {
            tracing::error!(event = id, %error, "storing an event failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the event could not be stored; retry",
            )
            .retry_after(STORE_UNAVAILABLE_RETRY_AFTER))
        }
    }
}

fn check_bearer(headers: &HeaderMap, token: &str) -> Result<(), ApiError> {
    if bearer_matches(headers, token) {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong bearer token"))
    }
}

/// Whether `Authorization: Bearer <token>` is present, compared in constant time.
pub fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    bool::from(presented.as_bytes().ct_eq(token.as_bytes()))
}
