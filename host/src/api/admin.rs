//! The operator API: events (with why each webhook did or did not get a delivery),
//! deliveries (list, show, retry, replay), plugins. Behind [`super::require_admin`].

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::types::{
    Delivery, DeliveryCount, DeliveryQuery, EventExplained, Replayed, RotatedSecret, TestOutcome, WebhookList,
    WebhookOutcome, WebhookSecret, WebhookSource, WebhookView,
};
use super::{ApiError, AppState};
use super::{DeliveryPage, ErrorBody};
use crate::config::WebhookConfig;
use crate::store::{DeliveryFilter, DeliveryState};
use crate::webhooks::StoredWebhook;

fn store_error(error: anyhow::Error) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", error.to_string())
}

/// `GET /v1/events/{id}`: the event, its deliveries, and for every webhook why it did or did
/// not get one.
#[utoipa::path(get, path = "/v1/events/{id}", tag = "events", params(("id" = String, Path, description = "Event id")), responses((status = 200, description = "The event, its deliveries, and for every webhook why it did or did not get one", body = EventExplained), (status = 404, description = "Unknown id", body = ErrorBody), (status = 503, description = "Store unavailable", body = ErrorBody)))]
pub async fn get_event(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let Some(event) = state.store.event(&id).await.map_err(store_error)? else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no event {id}")));
    };
    let filter =
        DeliveryFilter { event_id: Some(id.clone()), limit: Some(crate::store::MAX_PAGE), ..DeliveryFilter::default() };
    let deliveries = state.store.list_deliveries(filter).await.map_err(store_error)?;
    let webhooks: Vec<WebhookOutcome> = state
        .webhooks
        .all()
        .iter()
        .map(|webhook| {
            let id = &webhook.config.id;
            let why = match deliveries.iter().find(|d| &d.webhook_id == id) {
                Some(delivery) => match (delivery.state, &delivery.reason) {
                    (DeliveryState::Delivered, _) => "delivered".to_string(),
                    (DeliveryState::Filtered, Some(reason)) => {
                        match reason.strip_prefix(crate::delivery::worker::FILTER_REASON) {
                            Some(why) => format!(
                                "rejected by its filter `{}`:{why}",
                                webhook.config.filter.as_deref().unwrap_or_default()
                            ),
                            None => format!("skipped by its plugin: {reason}"),
                        }
                    }
                    (DeliveryState::Held, Some(reason)) => format!("held: {reason}"),
                    (DeliveryState::Dead, reason) => {
                        let last = delivery.attempts.last().map(|a| match (a.status, &a.error) {
                            (Some(status), _) => format!("last answer HTTP {status}"),
                            (None, Some(error)) => format!("last error: {error}"),
                            _ => String::new(),
                        });
                        format!("gave up: {}; {}", reason.clone().unwrap_or_default(), last.unwrap_or_default())
                    }
                    (other, _) => format!("in progress: {}", other.as_str()),
                },
                None if !webhook.config.subscribes_to(&event.event_type) => {
                    format!("not subscribed to {} (events: {})", event.event_type, webhook.config.events.join(", "))
                }
                None if !state.webhooks.is_active(webhook) => state
                    .webhooks
                    .disabled_reason(webhook)
                    .map(|reason| format!("disabled: {reason}"))
                    .unwrap_or_else(|| "disabled in its configuration".into()),
                None => "not configured (or disabled) when the event arrived".to_string(),
            };
            WebhookOutcome {
                webhook: id.clone(),
                delivery: deliveries.iter().find(|d| &d.webhook_id == id).map(|d| d.id.clone()),
                why,
            }
        })
        .collect();
    let deliveries: Vec<Delivery> = deliveries.into_iter().map(Delivery::from).collect();
    let event = super::types::Event::from(event);
    Ok(Json(EventExplained { event, deliveries, webhooks }).into_response())
}

/// `GET /v1/deliveries?webhook=&state=&event_type=&event_id=&since_ms=&until_ms=&before=&limit=`
#[utoipa::path(get, path = "/v1/deliveries", tag = "deliveries", params(DeliveryQuery), responses((status = 200, description = "One page, newest first", body = DeliveryPage), (status = 400, description = "Bad filter", body = ErrorBody)))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    query: Result<Query<DeliveryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let limit = query.limit.unwrap_or(50).clamp(1, crate::store::MAX_PAGE) as usize;
    let deliveries = state.store.list_deliveries(query.into()).await.map_err(store_error)?;
    let next_before = (deliveries.len() == limit).then(|| deliveries.last().map(|d| d.id.clone())).flatten();
    let deliveries = deliveries.into_iter().map(Delivery::from).collect();
    Ok(Json(DeliveryPage { deliveries, next_before }).into_response())
}

/// `GET /v1/deliveries/count?...`: how many deliveries a filter covers (what a bulk replay
/// would take), with the same filter as the listing.
#[utoipa::path(get, path = "/v1/deliveries/count", tag = "deliveries", params(DeliveryQuery), responses((status = 200, description = "How many match", body = DeliveryCount), (status = 400, description = "Bad filter", body = ErrorBody), (status = 503, description = "Store unavailable", body = ErrorBody)))]
pub async fn count_deliveries(
    State(state): State<AppState>,
    query: Result<Query<DeliveryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let filter = DeliveryFilter { limit: None, before: None, ..query.into() };
    let count = state.store.count_deliveries(filter).await.map_err(store_error)?;
    Ok(Json(DeliveryCount { count }).into_response())
}

/// `GET /v1/deliveries/{id}`: one delivery with every attempt.
#[utoipa::path(get, path = "/v1/deliveries/{id}", tag = "deliveries", params(("id" = String, Path, description = "Delivery id (the webhook-id header)")), responses((status = 200, description = "The delivery with every attempt, and the body and headers it sends", body = Delivery), (status = 404, description = "Unknown id", body = ErrorBody), (status = 503, description = "Store unavailable", body = ErrorBody)))]
pub async fn get_delivery(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match state.store.delivery(&id).await.map_err(store_error)? {
        Some(delivery) => {
            let mut delivery = Delivery::from(delivery);
            if let Some(sent) = state.store.delivery_body(&id).await.map_err(store_error)? {
                delivery.body = Some(String::from_utf8_lossy(&sent.body).into_owned());
                delivery.headers = Some(sent.headers.into_iter().collect());
            }
            Ok(Json(delivery).into_response())
        }
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no delivery {id}"))),
    }
}

/// `POST /v1/deliveries/{id}/retry`: send it again now.
#[utoipa::path(post, path = "/v1/deliveries/{id}/retry", tag = "deliveries", params(("id" = String, Path, description = "Delivery id")), responses((status = 202, description = "Due again now", body = Replayed), (status = 404, description = "Unknown id", body = ErrorBody), (status = 503, description = "Store unavailable", body = ErrorBody)))]
pub async fn retry_delivery(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let filter = DeliveryFilter { id: Some(id.clone()), ..DeliveryFilter::default() };
    match state.store.replay(filter).await.map_err(store_error)? {
        0 => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no delivery {id}"))),
        _ => {
            state.wake.notify_one();
            Ok((StatusCode::ACCEPTED, Json(Replayed { id: Some(id), replayed: 1 })).into_response())
        }
    }
}

/// `POST /v1/deliveries/replay` with a JSON filter; `webhook` and `state` are required so a
/// replay is always deliberate.
#[utoipa::path(post, path = "/v1/deliveries/replay", tag = "deliveries", request_body = DeliveryQuery, responses((status = 202, description = "How many were replayed", body = Replayed), (status = 400, description = "Missing webhook or state", body = ErrorBody)))]
pub async fn replay(
    State(state): State<AppState>,
    body: Result<Json<DeliveryQuery>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(filter) = body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    for (field, missing) in [("webhook", filter.webhook.is_none()), ("state", filter.state.is_none())] {
        if missing {
            return Err(ApiError::invalid_field(field, format!("missing required field `{field}`")));
        }
    }
    let filter = DeliveryFilter { limit: None, before: None, ..filter.into() };
    let replayed = state.store.replay(filter).await.map_err(store_error)?;
    if replayed > 0 {
        state.wake.notify_one();
    }
    Ok((StatusCode::ACCEPTED, Json(Replayed { id: None, replayed })).into_response())
}

/// A webhook as operators see it: never its secret.
fn webhook_view(state: &AppState, webhook: &crate::webhooks::Webhook) -> WebhookView {
    let config = &webhook.config;
    WebhookView {
        id: config.id.clone(),
        url: config.url.clone(),
        events: config.events.clone(),
        plugin: config.plugin.clone(),
        plugin_config: config.plugin_config.clone(),
        headers: config.headers.clone(),
        enabled: config.enabled,
        filter: config.filter.clone(),
        rate_limit: config.rate_limit.clone(),
        disable_after: config.disable_after.clone(),
        timeout: config.timeout.clone(),
        retry_schedule: config.retry_schedule.clone(),
        max_in_flight: config.max_in_flight,
        active: state.webhooks.is_active(webhook),
        disabled_reason: state.webhooks.disabled_reason(webhook),
        source: match webhook.source {
            crate::webhooks::Source::Config => WebhookSource::Config,
            crate::webhooks::Source::Api => WebhookSource::Api,
        },
        read_only: webhook.source == crate::webhooks::Source::Config,
        health: state.worker.health(&config.id),
    }
}

fn find_webhook(state: &AppState, id: &str) -> Result<std::sync::Arc<crate::webhooks::Webhook>, ApiError> {
    state.webhooks.get(id).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no webhook {id}")))
}

/// `GET /v1/webhooks`
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", responses((status = 200, description = "Every webhook, with its recent health; secrets are never shown", body = WebhookList)))]
pub async fn list_webhooks(State(state): State<AppState>) -> Json<WebhookList> {
    let webhooks = state.webhooks.all().iter().map(|w| webhook_view(&state, w)).collect();
    Json(WebhookList { webhooks })
}

/// `GET /v1/webhooks/{id}`
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)), responses((status = 200, description = "The webhook", body = WebhookView), (status = 404, description = "Unknown id", body = ErrorBody), (status = 503, description = "Store unavailable", body = ErrorBody)))]
pub async fn get_webhook(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let webhook = find_webhook(&state, &id)?;
    Ok(Json(webhook_view(&state, &webhook)).into_response())
}

/// `POST /v1/webhooks/{id}/test` with an optional event envelope (default: a sample
/// `message.created`): runs the webhook's plugin and sends the result now, outside the queue.
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks", params(("id" = String, Path)), request_body(content = Option<super::types::Envelope>, description = "Optional event envelope; default a sample message.created"), responses((status = 200, description = "The request sent and the endpoint's answer", body = TestOutcome), (status = 404, description = "Unknown id", body = ErrorBody), (status = 503, description = "Store unavailable", body = ErrorBody)))]
pub async fn test_webhook(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let webhook = find_webhook(&state, &id)?;
    let envelope: &[u8] = if body.is_empty() { SAMPLE_EVENT.as_bytes() } else { &body };
    let mut event = crate::model::Event::parse_envelope(envelope)?;
    if body.is_empty() {
        event.id = crate::model::new_id("evt_test");
    }
    Ok(Json(state.worker.test_send(&webhook, &event).await).into_response())
}

const SAMPLE_EVENT: &str = include_str!("../../../examples/events/message.created.json");

/// `POST /v1/webhooks/{id}/enable`: clears a runtime disable (a `410 Gone`, or an operator's).
#[utoipa::path(post, path = "/v1/webhooks/{id}/enable", tag = "webhooks", params(("id" = String, Path)), responses((status = 200, description = "The webhook", body = WebhookView), (status = 409, description = "Disabled in its definition", body = ErrorBody), (status = 404, description = "Unknown id", body = ErrorBody), (status = 503, description = "Store unavailable", body = ErrorBody)))]
pub async fn enable_webhook(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let webhook = find_webhook(&state, &id)?;
    if !webhook.config.enabled {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "read_only",
            format!(
                "webhook {id} is defined with enabled = false; change its definition (the config file, or PUT for API webhooks)"
            ),
        ));
    }
    state.store.enable_webhook(&id).await.map_err(store_error)?;
    state.webhooks.enable(&id);
    state.worker.forget_failures(&id);
    Ok(Json(webhook_view(&state, &webhook)).into_response())
}

/// `POST /v1/webhooks/{id}/disable`: stops deliveries to it until it is enabled again.
#[utoipa::path(post, path = "/v1/webhooks/{id}/disable", tag = "webhooks", params(("id" = String, Path)), responses((status = 200, description = "The webhook", body = WebhookView), (status = 404, description = "Unknown id", body = ErrorBody), (status = 503, description = "Store unavailable", body = ErrorBody)))]
pub async fn disable_webhook(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let webhook = find_webhook(&state, &id)?;
    let reason = "disabled by an operator";
    state.store.disable_webhook(&id, &webhook.config.url, reason).await.map_err(store_error)?;
    state.webhooks.disable(&webhook, reason);
    Ok(Json(webhook_view(&state, &webhook)).into_response())
}

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// Validates a webhook definition as the config file's are, checks it with its plugin (if
/// loaded), stores it and puts it in effect.
async fn save_webhook(state: &AppState, config: WebhookConfig, create: bool) -> Result<Response, ApiError> {
    let invalid = |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_webhook", message);
    config.validate(&state.delivery).map_err(invalid)?;
    let versions = config.plugin.as_ref().map(|name| state.registry.serving_versions(name)).unwrap_or_default();
    for plugin in versions {
        let plugin_config = std::sync::Arc::new(config.plugin_config.clone());
        let check = tokio::task::spawn_blocking(move || plugin.check_config(&plugin_config))
            .await
            .map_err(|e| invalid(e.to_string()))?;
        if let Err(error) = check.result {
            return Err(invalid(error.to_string()));
        }
    }
    let (stored, expected) = stored_form(state, config, create).await?;
    let webhook = crate::webhooks::Webhook::from_store(stored.clone(), state.secret_files())
        .map_err(|e| invalid(format!("{e:#}")))?;
    let (id, json) = (&stored.webhook.id, stored.to_json());
    let saved = match (create, expected) {
        (true, _) => state.store.create_webhook(id, json).await.map_err(store_error)?,
        (false, Some(expected)) => state.store.replace_webhook(id, &expected, json).await.map_err(store_error)?,
        (false, None) => state.store.put_webhook(id, json).await.map_err(store_error).map(|()| true)?,
    };
    if !saved {
        return Err(if create { exists(id) } else { changed_meanwhile(id) });
    }
    // A new URL is a new endpoint: the old one's failures do not count against it.
    let url_changed = state.webhooks.get(&webhook.config.id).is_some_and(|old| old.config.url != webhook.config.url);
    if url_changed && let Err(error) = state.store.webhook_succeeded(&webhook.config.id).await {
        tracing::warn!(webhook = webhook.config.id, %error, "clearing the old URL's failures failed");
    }
    let body = webhook_view(state, &webhook);
    state.webhooks.upsert(webhook);
    Ok(Json(body).into_response())
}

/// What the store keeps for a webhook saved through the API, and, when it replaces one on a
/// shared store, the stored definition it replaces. On a single host a definition without
/// `secret` signs with a file in the data dir; hosts sharing a store keep the secret in the
/// database: a new one for a new webhook, and the stored one (with a rotation's previous
/// one) for a replacement without `secret`, read from the database rather than this host's
/// copy, which may be a moment behind another host's change.
async fn stored_form(
    state: &AppState,
    config: WebhookConfig,
    create: bool,
) -> Result<(StoredWebhook, Option<String>), ApiError> {
    if !state.shared_store {
        if create || config.secret.is_some() {
            return Ok((StoredWebhook { webhook: config, previous_secret: None }, None));
        }
        // A replacement without a secret keeps the one the webhook was created with, if any
        // (else its secret stays the generated file's).
        let (_, current) = current_stored(state, &config.id).await?;
        let webhook = WebhookConfig { secret: current.webhook.secret, ..config };
        return Ok((StoredWebhook { webhook, previous_secret: current.previous_secret }, None));
    }
    if create {
        let secret = config.secret.clone().unwrap_or_else(|| crate::delivery::sign::Secret::generate().expose());
        return Ok((
            StoredWebhook { webhook: WebhookConfig { secret: Some(secret), ..config }, previous_secret: None },
            None,
        ));
    }
    let (json, current) = current_stored(state, &config.id).await?;
    let stored = match config.secret {
        Some(_) => StoredWebhook { webhook: config, previous_secret: None },
        None => StoredWebhook { webhook: WebhookConfig { secret: current.webhook.secret, ..config }, ..current },
    };
    Ok((stored, Some(json)))
}

/// API webhook `id` as the store holds it now: its JSON and its parsed form.
async fn current_stored(state: &AppState, id: &str) -> Result<(String, StoredWebhook), ApiError> {
    let json = state
        .store
        .stored_webhook(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no webhook {id}")))?;
    let stored = StoredWebhook::parse(&json).map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("stored webhook {id}: {e:#}"))
    })?;
    Ok((json, stored))
}

fn changed_meanwhile(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "changed",
        format!("webhook {id} was changed through another host meanwhile; read it again and retry"),
    )
}

fn json_body<T>(body: JsonBody<T>) -> Result<T, ApiError> {
    body.map(|Json(value)| value).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))
}

/// `POST /v1/webhooks`: the same fields and rules as a `[[webhooks]]` entry. Without a
/// `secret`, one is generated (`GET /v1/webhooks/{id}/secret` shows it).
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = WebhookConfig, responses((status = 201, description = "Created", body = WebhookView), (status = 409, description = "The id exists", body = ErrorBody), (status = 422, description = "Invalid, or refused by its plugin", body = ErrorBody)))]
pub async fn create_webhook(
    State(state): State<AppState>,
    body: JsonBody<crate::config::WebhookConfig>,
) -> Result<Response, ApiError> {
    let config = json_body(body)?;
    if state.webhooks.get(&config.id).is_some() {
        return Err(exists(&config.id));
    }
    let mut response = save_webhook(&state, config, true).await?;
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

/// `PUT /v1/webhooks/{id}`: replaces a webhook created through the API.
#[utoipa::path(put, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)), request_body = WebhookConfig, responses((status = 200, description = "Replaced", body = WebhookView), (status = 409, description = "Defined in the config file, or changed through another host meanwhile", body = ErrorBody), (status = 422, description = "Invalid", body = ErrorBody), (status = 404, description = "Unknown id", body = ErrorBody), (status = 503, description = "Store unavailable", body = ErrorBody)))]
pub async fn replace_webhook(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: JsonBody<crate::config::WebhookConfig>,
) -> Result<Response, ApiError> {
    let config = json_body(body)?;
    api_webhook(&state, &id)?;
    if config.id != id {
        return Err(ApiError::invalid_field("id", format!("`id` {:?} does not match the path's {id:?}", config.id)));
    }
    save_webhook(&state, config, false).await
}

fn exists(id: &str) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "exists", format!("webhook {id} already exists"))
}

/// `DELETE /v1/webhooks/{id}`: deletes a webhook created through the API.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)), responses((status = 204, description = "Deleted"), (status = 409, description = "Defined in the config file", body = ErrorBody), (status = 404, description = "Unknown id", body = ErrorBody), (status = 503, description = "Store unavailable", body = ErrorBody)))]
pub async fn delete_webhook(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    api_webhook(&state, &id)?;
    state.store.delete_webhook(&id).await.map_err(store_error)?;
    state.webhooks.remove(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The webhook `id`, if it was created through the API (config file webhooks are read-only).
fn api_webhook(state: &AppState, id: &str) -> Result<std::sync::Arc<crate::webhooks::Webhook>, ApiError> {
    let webhook = find_webhook(state, id)?;
    if webhook.source == crate::webhooks::Source::Config {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "read_only",
            format!("webhook {id} is defined in the config file; edit the file"),
        ));
    }
    Ok(webhook)
}

/// `GET /v1/webhooks/{id}/secret`: the secret to give the receiver (and, during a rotation's
/// grace period, until when the previous one still signs).
#[utoipa::path(get, path = "/v1/webhooks/{id}/secret", tag = "webhooks", params(("id" = String, Path)), responses((status = 200, description = "The webhook's signing secret", body = WebhookSecret), (status = 404, description = "Unknown id", body = ErrorBody)))]
pub async fn get_secret(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let webhook = find_webhook(&state, &id)?;
    let now_ms = crate::store::now_ms();
    let previous_valid_until_ms = webhook.previous_expires_ms.filter(|_| webhook.signing_secrets(now_ms).len() > 1);
    Ok(Json(WebhookSecret { secret: webhook.secrets[0].expose(), previous_valid_until_ms }).into_response())
}

/// `POST /v1/webhooks/{id}/rotate-secret`: a new random secret replaces the current one,
/// which keeps signing too during `delivery.secret_rotation_grace`. On a single host the new
/// secret goes into `<data_dir>/secrets/<id>`; with a shared store into the database. Either
/// way `GET /v1/webhooks/{id}/secret` shows it.
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", tag = "webhooks", params(("id" = String, Path)), responses((status = 200, description = "Rotated; until when the previous secret signs", body = RotatedSecret), (status = 409, description = "The secret is in the config file, or the webhook changed through another host meanwhile", body = ErrorBody), (status = 404, description = "Unknown id", body = ErrorBody), (status = 503, description = "Store unavailable", body = ErrorBody)))]
pub async fn rotate_secret(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let webhook = find_webhook(&state, &id)?;
    let grace = state.delivery.secret_rotation_grace;
    let failed =
        |e: anyhow::Error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "rotation_failed", format!("{e:#}"));
    if state.shared_store {
        let (json, current) = current_stored(&state, &id).await?;
        let stored = crate::webhooks::Webhook::from_store(current, None).map_err(failed)?.rotated(grace);
        let previous_valid_until_ms = stored.previous_secret.as_ref().map_or(0, |p| p.expires_ms);
        let rotated = crate::webhooks::Webhook::from_store(stored.clone(), None).map_err(failed)?;
        if !state.store.replace_webhook(&id, &json, stored.to_json()).await.map_err(store_error)? {
            return Err(changed_meanwhile(&id));
        }
        state.webhooks.upsert(rotated);
        tracing::info!(webhook = id, previous_valid_until_ms, "signing secret rotated (stored in the database)");
        return Ok(Json(RotatedSecret { id, secret_file: None, previous_valid_until_ms }).into_response());
    }
    let mut config = webhook.config.clone();
    if config.secret.is_some() && webhook.source == crate::webhooks::Source::Config {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "read_only",
            format!("webhook {id} has its secret in the config file; change it there"),
        ));
    }
    let (path, previous_valid_until_ms) = webhook.rotate_secret(&state.data_dir, grace).map_err(failed)?;
    if config.secret.take().is_some() {
        // An API webhook's own secret moves to the secrets file, like a generated one.
        let stored = StoredWebhook { webhook: config.clone(), previous_secret: None };
        state.store.put_webhook(&config.id, stored.to_json()).await.map_err(store_error)?;
    }
    let rotated = crate::webhooks::Webhook::resolve(config, webhook.source, &state.data_dir).map_err(failed)?;
    state.webhooks.upsert(rotated);
    tracing::info!(webhook = id, file = %path.display(), previous_valid_until_ms, "signing secret rotated");
    let secret_file = Some(path.display().to_string());
    Ok(Json(RotatedSecret { id, secret_file, previous_valid_until_ms }).into_response())
}
