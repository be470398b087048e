//! The HTTP surface: routes, shared state, JSON errors, and the admin guard.
//!
//! Public: `POST /v1/events` (its own optional token), `/healthz`, `/readyz`. Everything else
//! is the admin API: it needs `Authorization: Bearer <admin_token>`, or, when no admin token
//! is configured, a client on a loopback address.

pub mod admin;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::Notify;

use crate::plugins::Registry;
use crate::store::Store;
use crate::webhooks::Webhooks;

/// What request handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub webhooks: Arc<Webhooks>,
    pub registry: Arc<Registry>,
    /// Wakes the delivery worker when new deliveries are committed.
    pub wake: Arc<Notify>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub worker: Arc<crate::delivery::worker::Worker>,
    /// The delivery rules webhooks are validated against.
    pub delivery: crate::config::DeliveryConfig,
    pub data_dir: std::path::PathBuf,
    pub ingest_token: Option<String>,
    pub admin_token: Option<String>,
    pub max_body_bytes: usize,
}

pub fn router(state: AppState) -> Router {
    let admin = Router::new()
        .route("/v1/events/{id}", get(admin::get_event))
        .route("/v1/deliveries", get(admin::list_deliveries))
        .route("/v1/deliveries/replay", post(admin::replay))
        .route("/v1/deliveries/{id}", get(admin::get_delivery))
        .route("/v1/deliveries/{id}/retry", post(admin::retry_delivery))
        .route("/v1/plugins", get(plugins))
        .route("/v1/webhooks", get(admin::list_webhooks).post(admin::create_webhook))
        .route("/v1/webhooks/{id}", get(admin::get_webhook).put(admin::replace_webhook).delete(admin::delete_webhook))
        .route("/v1/webhooks/{id}/test", post(admin::test_webhook))
        .route("/v1/webhooks/{id}/rotate-secret", post(admin::rotate_secret))
        .route("/v1/webhooks/{id}/enable", post(admin::enable_webhook))
        .route("/v1/webhooks/{id}/disable", post(admin::disable_webhook))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_admin));
    Router::new()
        .merge(admin)
        .route("/v1/events", post(crate::ingest::post_event))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(state)
}

/// Lets a request through with the admin token, or from loopback when none is configured.
pub async fn require_admin(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let allowed = match &state.admin_token {
        Some(token) => crate::ingest::bearer_matches(request.headers(), token),
        None => peer.ip().is_loopback() || peer.ip().to_canonical().is_loopback(),
    };
    if allowed {
        next.run(request).await
    } else if state.admin_token.is_some() {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong admin bearer token").into_response()
    } else {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the admin API is served only to loopback clients when no admin_token is configured",
        )
        .into_response()
    }
}

async fn ready(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    match state.store.next_due_ms().await {
        Ok(_) => Json(json!({"status": "ready"})).into_response(),
        Err(error) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", error.to_string()).into_response()
        }
    }
}

async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    if let Ok((depth, oldest_due)) = state.store.queue_stats().await {
        state.metrics.queue_depth.set(depth as i64);
        let overdue_ms = oldest_due.map_or(0, |due| (crate::store::now_ms() - due).max(0));
        state.metrics.oldest_due_seconds.set(overdue_ms as f64 / 1000.0);
    }
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
        .into_response()
}

async fn plugins(axum::extract::State(state): axum::extract::State<AppState>) -> Json<serde_json::Value> {
    let users = state.webhooks.plugin_users();
    let plugins: Vec<serde_json::Value> = state
        .registry
        .statuses()
        .into_iter()
        .map(|status| {
            let mut value = serde_json::to_value(&status).unwrap_or_default();
            value["webhooks"] = json!(users.get(&status.name).cloned().unwrap_or_default());
            value
        })
        .collect();
    Json(json!({ "plugins": plugins }))
}

/// A JSON error: `{"error": message, "code": code, "field"?: field}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), field: None }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message, "code": self.code });
        if let Some(field) = self.field {
            body["field"] = json!(field);
        }
        (self.status, Json(body)).into_response()
    }
}
