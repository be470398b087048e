//! `POST /v1/events`: validate, fan out to subscribed webhooks, store durably, answer 202.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::api::{ApiError, AppState};
use crate::delivery::worker::Reservation;
use crate::model::{Event, new_id};
use crate::store::{DueDelivery, IngestOutcome, NewDelivery};

#[utoipa::path(post, path = "/v1/events", tag = "events",
    request_body(content = Object, description = "An event envelope: {\"id\"?, \"type\", \"timestamp\"?, \"data\"}", content_type = "application/json"),
    responses(
        (status = 202, description = "Stored with one delivery per subscribed webhook (or a duplicate id: nothing new)", body = Object),
        (status = 400, description = "Malformed JSON or an invalid or missing field (named)", body = crate::api::ErrorBody),
        (status = 401, description = "Missing or wrong ingest token", body = crate::api::ErrorBody),
        (status = 413, description = "Body over server.max_body_bytes", body = crate::api::ErrorBody),
        (status = 415, description = "Not application/json", body = crate::api::ErrorBody),
        (status = 503, description = "Store unavailable: retry", body = crate::api::ErrorBody),
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
    let bytes = axum::body::to_bytes(body, state.max_body_bytes).await.map_err(|error| {
        let too_large =
            std::error::Error::source(&error).is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body is larger than the {}-byte limit", state.max_body_bytes),
            )
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("reading the request body: {error}"))
        }
    })?;
    let event = Event::parse_envelope(&bytes)?;
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
            state.metrics.events_accepted.inc();
            if deliveries > handed_over.len() {
                state.wake.notify_one();
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
            Ok((StatusCode::ACCEPTED, Json(json!({ "id": id, "deliveries": deliveries }))).into_response())
        }
        Ok(IngestOutcome::Duplicate) => {
            state.metrics.events_duplicate.inc();
            Ok((StatusCode::ACCEPTED, Json(json!({ "id": id, "duplicate": true }))).into_response())
        }
        Err(error) => {
            tracing::error!(event = id, %error, "storing an event failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the event could not be stored; retry",
            ))
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
