//! The HTTP surface: routes, shared state, JSON errors, and the admin guard.
//!
//! Public: `POST /v1/events` (its own optional token), `/healthz`, `/readyz` and
//! `/v1/openapi.json`. Everything else is the admin API: it needs
//! `Authorization: Bearer <admin_token>`, or, when no admin token is configured, a client on
//! a loopback address.

pub mod admin;
pub mod plugins;
pub mod types;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
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
    /// Plugin versions: deploy, activate, canary.
    pub deployer: Arc<crate::deploy::Deployer>,
    /// Wakes the delivery worker when new deliveries are committed.
    pub wake: Arc<Notify>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The undelivered backlog ingest checks against `delivery.max_backlog`.
    pub backlog: Arc<crate::ingest::Backlog>,
    pub worker: Arc<crate::delivery::worker::Worker>,
    /// The delivery rules webhooks are validated against.
    pub delivery: crate::config::DeliveryConfig,
    /// Whether other hosts share the store (PostgreSQL): secrets then cannot be per-host files.
    pub shared_store: bool,
    /// How hosts sharing the store name this one (`store.host_id`, else generated).
    pub host_name: String,
    pub data_dir: std::path::PathBuf,
    pub ingest_token: Option<String>,
    pub admin_token: Option<String>,
    pub max_body_bytes: usize,
    /// The largest plugin upload accepted (`plugins.max_file_mib`).
    pub max_plugin_bytes: usize,
    /// The last hour of activity, for the console's charts.
    pub timeline: Arc<crate::timeline::Timeline>,
}

impl AppState {
    /// Where webhooks without a `secret` in their definition keep it: files in the data dir
    /// on a single host; `None` with a shared store, whose secrets are in the database.
    pub fn secret_files(&self) -> Option<&std::path::Path> {
        (!self.shared_store).then_some(self.data_dir.as_path())
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "hookwasm", description = "Webhook transformer host: ingest events, deliver them through Wasm plugins, operate it."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(
            "admin_token for the admin API (without one configured: loopback clients only); ingest_token for POST /v1/events",
        ));
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme.build()));
    }
}

/// The routes and the OpenAPI document that describes them, built from the same handlers.
pub fn router(state: AppState) -> Router {
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;

    let admin = OpenApiRouter::new()
        .routes(routes!(admin::get_event))
        .routes(routes!(admin::list_deliveries))
        .routes(routes!(admin::count_deliveries))
        .routes(routes!(admin::replay))
        .routes(routes!(admin::get_delivery))
        .routes(routes!(admin::retry_delivery))
        .routes(routes!(plugins))
        .routes(routes!(self::plugins::deploy))
        .routes(routes!(self::plugins::versions))
        .routes(routes!(self::plugins::activate))
        .routes(routes!(self::plugins::promote))
        .routes(routes!(self::plugins::dry_run))
        .routes(routes!(admin::list_webhooks, admin::create_webhook))
        .routes(routes!(admin::get_webhook, admin::replace_webhook, admin::delete_webhook))
        .routes(routes!(admin::test_webhook))
        .routes(routes!(admin::rotate_secret))
        .routes(routes!(admin::get_secret))
        .routes(routes!(admin::enable_webhook))
        .routes(routes!(admin::disable_webhook))
        .routes(routes!(metrics))
        .routes(routes!(stats))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_admin));
    let (router, openapi) = OpenApiRouter::with_openapi(<ApiDoc as utoipa::OpenApi>::openapi())
        .merge(admin)
        .routes(routes!(crate::ingest::post_event))
        .routes(routes!(health))
        .routes(routes!(ready))
        .split_for_parts();
    let openapi = std::sync::Arc::new(openapi);
    router
        .route("/v1/openapi.json", get(move || std::future::ready(Json(openapi.as_ref().clone()))))
        .merge(crate::console::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(state)
}

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "The process is up", body = types::Status)))]
async fn health() -> Json<types::Status> {
    Json(types::Status { status: "ok".into() })
}

/// The JSON body of every error.
#[derive(utoipa::ToSchema, serde::Serialize)]
pub struct ErrorBody {
    pub error: String,
    /// Stable machine-readable cause, e.g. `invalid_field`, `not_found`, `unauthorized`.
    pub code: String,
    /// The request field at fault, when there is one.
    pub field: Option<String>,
}

/// One page of deliveries.
#[derive(utoipa::ToSchema, serde::Serialize, serde::Deserialize)]
pub struct DeliveryPage {
    pub deliveries: Vec<types::Delivery>,
    /// Pass as `before` for the next page; null on the last one.
    pub next_before: Option<String>,
}

/// Lets a request through with the admin token, or from loopback when none is configured.
pub async fn require_admin(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if admin_allowed(state.admin_token.as_deref(), request.headers(), peer.ip()) {
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

/// The admin token when one is configured, else a loopback client that is not a web page of
/// another site: without a token, a browser on this machine could otherwise be made to call
/// the API by any site it visits (a form posting here, or DNS rebinding a name to 127.0.0.1),
/// so the request must name a loopback `Host` and must not come from another origin.
fn admin_allowed(token: Option<&str>, headers: &axum::http::HeaderMap, peer: std::net::IpAddr) -> bool {
    match token {
        Some(token) => crate::ingest::bearer_matches(headers, token),
        None => peer.to_canonical().is_loopback() && names_loopback(headers) && !from_another_site(headers),
    }
}

/// Whether the `Host` header (absent: HTTP/1.0 or a client that omits it) names this machine.
fn names_loopback(headers: &axum::http::HeaderMap) -> bool {
    let Some(host) = headers.get(axum::http::header::HOST) else { return true };
    let Ok(host) = host.to_str() else { return false };
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether a browser says the request comes from a page of another site.
fn from_another_site(headers: &axum::http::HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    match (header("origin"), header("host")) {
        (Some(origin), Some(host)) => origin.split_once("://").map(|(_, authority)| authority) != Some(host),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_token_only_loopback_clients_are_admins() {
        let none = axum::http::HeaderMap::new();
        assert!(admin_allowed(None, &none, "127.0.0.1".parse().unwrap()));
        assert!(admin_allowed(None, &none, "::1".parse().unwrap()));
        assert!(admin_allowed(None, &none, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(!admin_allowed(None, &none, "10.0.0.7".parse().unwrap()));
        assert!(!admin_allowed(None, &none, "192.168.1.2".parse().unwrap()));
        let mut bearer = axum::http::HeaderMap::new();
        bearer.insert("authorization", "Bearer admin-token-0123456789".parse().unwrap());
        assert!(admin_allowed(Some("admin-token-0123456789"), &bearer, "10.0.0.7".parse().unwrap()));
        assert!(
            !admin_allowed(Some("admin-token-0123456789"), &none, "127.0.0.1".parse().unwrap()),
            "a token is required even on loopback"
        );
        let loopback = "127.0.0.1".parse().unwrap();
        let with = |pairs: &[(&'static str, &str)]| {
            let mut headers = axum::http::HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(*name, value.parse().unwrap());
            }
            headers
        };
        assert!(admin_allowed(None, &with(&[("host", "127.0.0.1:8080")]), loopback));
        assert!(admin_allowed(None, &with(&[("host", "localhost:8080"), ("sec-fetch-site", "same-origin")]), loopback));
        assert!(admin_allowed(None, &with(&[("host", "[::1]:8080"), ("origin", "http://[::1]:8080")]), loopback));
        assert!(!admin_allowed(None, &with(&[("host", "evil.example:8080")]), loopback), "DNS rebinding");
        assert!(!admin_allowed(None, &with(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")]), loopback));
        assert!(!admin_allowed(
            None,
            &with(&[("host", "127.0.0.1:8080"), ("origin", "https://evil.example")]),
            loopback
        ));
    }
}

#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, description = "The store answers (on a read connection) and its writer runs", body = types::Status), (status = 503, description = "It does not (`not_ready`; the cause is in the log)", body = types::Status)))]
async fn ready(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    match state.store.ready().await {
        Ok(()) => Json(types::Status { status: "ready".into() }).into_response(),
        // The endpoint is public: the store's error (hosts, paths, database names) goes to
        // the log only.
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "not ready: the store does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, Json(types::Status { status: "not_ready".into() })).into_response()
        }
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus metrics (OpenMetrics text)", content_type = "application/openmetrics-text")))]
async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    if let Ok(stats) = state.store.queue_stats().await {
        state.metrics.set_queue(&stats);
    }
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
        .into_response()
}

/// `GET /v1/stats`: the last hour of this host's activity, in 10 s points.
#[utoipa::path(get, path = "/v1/stats", tag = "metrics", responses((status = 200, description = "Events accepted, deliveries by final state, failed attempts, mean attempt latency and queue depth per 10 s, oldest first; the last point runs up to now", body = crate::timeline::Stats)))]
async fn stats(axum::extract::State(state): axum::extract::State<AppState>) -> Json<crate::timeline::Stats> {
    Json(state.timeline.stats())
}

#[utoipa::path(get, path = "/v1/plugins", tag = "plugins", responses((status = 200, description = "Every plugin: state, sha256, loaded at, last error, load counters, canary and its counts, webhooks; with a shared store, the sha256 each live host serves and whether they differ", body = types::PluginList)))]
async fn plugins(axum::extract::State(state): axum::extract::State<AppState>) -> Json<types::PluginList> {
    let users = state.webhooks.plugin_users();
    let mut plugins: Vec<types::PluginView> = state
        .registry
        .statuses()
        .into_iter()
        .map(|status| types::PluginView {
            webhooks: users.get(&status.name).cloned().unwrap_or_default(),
            status,
            hosts: None,
            drift: None,
            hosts_error: None,
        })
        .collect();
    if state.shared_store {
        add_hosts(&state, &mut plugins).await;
    }
    Json(types::PluginList { plugins })
}

/// Adds to each plugin the sha256 every live host serves (`null` where a host lacks it) and
/// whether they differ (`drift`); plugins that only other hosts have are listed as `absent`.
/// If the reports cannot be read, each plugin says so in `hosts_error`.
async fn add_hosts(state: &AppState, plugins: &mut Vec<types::PluginView>) {
    let mut reports = match state.store.live_hosts(crate::presence::LIVE_WITHIN).await {
        Ok(reports) => reports,
        Err(error) => {
            // Said, not left out: a missing `hosts` would read as "no drift".
            for plugin in plugins.iter_mut() {
                plugin.hosts_error = Some(format!("reading the other hosts' reports failed: {error:#}"));
            }
            return;
        }
    };
    // This host's own report may be seconds old: use what it serves now.
    reports.retain(|report| report.host != state.host_name);
    let own = crate::presence::serving(&state.registry);
    let mut hosts: Vec<(&str, &std::collections::BTreeMap<String, Option<String>>)> =
        reports.iter().map(|report| (report.host.as_str(), &report.plugins)).collect();
    hosts.push((&state.host_name, &own));
    hosts.sort_by_key(|(host, _)| *host);
    let users = state.webhooks.plugin_users();
    for (_, served) in &hosts {
        for name in served.keys() {
            if !plugins.iter().any(|plugin| &plugin.status.name == name) {
                plugins.push(types::PluginView {
                    status: crate::plugins::PluginStatus::absent(name),
                    webhooks: users.get(name).cloned().unwrap_or_default(),
                    hosts: None,
                    drift: None,
                    hosts_error: None,
                });
            }
        }
    }
    for plugin in plugins.iter_mut() {
        let name = &plugin.status.name;
        let serving: Vec<Option<&String>> =
            hosts.iter().map(|(_, served)| served.get(name).and_then(Option::as_ref)).collect();
        plugin.hosts = Some(
            hosts
                .iter()
                .zip(&serving)
                .map(|((host, _), sha)| types::HostServing { host: host.to_string(), sha256: sha.cloned() })
                .collect(),
        );
        plugin.drift = Some(serving.iter().any(|sha| *sha != serving[0]));
    }
}

/// The request body, at most `limit` bytes; over it, a 413 saying `too_large`, which names
/// the limit and the setting behind it.
pub async fn read_body(body: axum::body::Body, limit: usize, too_large: String) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let over_limit =
            std::error::Error::source(&error).is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if over_limit {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", too_large)
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("reading the request body: {error}"))
        }
    })
}

/// A JSON error: `{"error": message, "code": code, "field"?: field}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<&'static str>,
    /// Seconds for a `Retry-After` header (503s that pass by themselves).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), field: None, retry_after: None }
    }

    /// 400 `invalid_field`, naming the field.
    pub fn invalid_field(field: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { field: Some(field), ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", message) }
    }

    pub fn retry_after(self, seconds: u64) -> ApiError {
        ApiError { retry_after: Some(seconds), ..self }
    }
}

/// 400, naming the field at fault when there is one.
impl From<crate::model::EnvelopeError> for ApiError {
    fn from(error: crate::model::EnvelopeError) -> ApiError {
        ApiError {
            field: error.field(),
            ..ApiError::new(
                StatusCode::BAD_REQUEST,
                if error.field().is_some() { "invalid_field" } else { "malformed_json" },
                error.to_string(),
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message, "code": self.code });
        if let Some(field) = self.field {
            body["field"] = json!(field);
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}
