//! The admin API's own types for what it shows of the store: the JSON (and OpenAPI schema)
//! of deliveries, attempts and events, and the query that selects deliveries. The store has
//! its own types and knows nothing of HTTP; these convert from them.

use serde::{Deserialize, Serialize};

use crate::store;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Not yet transformed; due at `next_attempt_at_ms`.
    Pending,
    /// Transformed, at least one attempt failed; due again at `next_attempt_at_ms`.
    Retrying,
    Delivered,
    /// Skipped by its plugin.
    Filtered,
    /// Its plugin failed or is missing: kept, re-run when the plugin loads.
    Held,
    /// The retry schedule is exhausted (or the endpoint is gone).
    Dead,
}

impl From<store::DeliveryState> for DeliveryState {
    fn from(state: store::DeliveryState) -> DeliveryState {
        match state {
            store::DeliveryState::Pending => DeliveryState::Pending,
            store::DeliveryState::Retrying => DeliveryState::Retrying,
            store::DeliveryState::Delivered => DeliveryState::Delivered,
            store::DeliveryState::Filtered => DeliveryState::Filtered,
            store::DeliveryState::Held => DeliveryState::Held,
            store::DeliveryState::Dead => DeliveryState::Dead,
        }
    }
}

impl From<DeliveryState> for store::DeliveryState {
    fn from(state: DeliveryState) -> store::DeliveryState {
        match state {
            DeliveryState::Pending => store::DeliveryState::Pending,
            DeliveryState::Retrying => store::DeliveryState::Retrying,
            DeliveryState::Delivered => store::DeliveryState::Delivered,
            DeliveryState::Filtered => store::DeliveryState::Filtered,
            DeliveryState::Held => store::DeliveryState::Held,
            DeliveryState::Dead => store::DeliveryState::Dead,
        }
    }
}

/// One HTTP attempt.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// The first bytes of the response body.
    pub response_excerpt: String,
    pub error: Option<String>,
}

impl From<store::Attempt> for Attempt {
    fn from(attempt: store::Attempt) -> Attempt {
        let store::Attempt { at_ms, status, latency_ms, response_excerpt, error } = attempt;
        Attempt { at_ms, status, latency_ms, response_excerpt, error }
    }
}

/// A delivery with every attempt.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delivery {
    /// `msg_<ulid>`: also the `webhook-id` header.
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub webhook_id: String,
    pub state: DeliveryState,
    pub created_at_ms: i64,
    pub attempts: Vec<Attempt>,
    /// Why it was filtered, held or dead.
    pub reason: Option<String>,
    /// sha256 of the plugin version that transformed it.
    pub plugin_sha: Option<String>,
    pub next_attempt_at_ms: i64,
    /// What it sends (`GET /v1/deliveries/{id}` only, once transformed): the body as text
    /// (invalid UTF-8 replaced) ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// ... and its plugin's extra headers (signature headers are added per attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<std::collections::BTreeMap<String, String>>,
}

impl From<store::DeliveryRecord> for Delivery {
    fn from(record: store::DeliveryRecord) -> Delivery {
        Delivery {
            id: record.id,
            event_id: record.event_id,
            event_type: record.event_type,
            webhook_id: record.webhook_id,
            state: record.state.into(),
            created_at_ms: record.created_at_ms,
            attempts: record.attempts.into_iter().map(Attempt::from).collect(),
            reason: record.reason,
            plugin_sha: record.plugin_sha,
            next_attempt_at_ms: record.next_attempt_at_ms,
            body: None,
            headers: None,
        }
    }
}

/// A stored event.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub timestamp: String,
    pub received_at_ms: i64,
    #[schema(value_type = Object)]
    pub data: Box<serde_json::value::RawValue>,
}

impl From<store::EventRecord> for Event {
    fn from(event: store::EventRecord) -> Event {
        let store::EventRecord { id, event_type, timestamp, received_at_ms, data } = event;
        Event { id, event_type, timestamp, received_at_ms, data }
    }
}

/// Which deliveries a listing or a replay covers. Every field set must match.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// One delivery.
    pub id: Option<String>,
    pub webhook: Option<String>,
    pub state: Option<DeliveryState>,
    pub event_type: Option<String>,
    pub event_id: Option<String>,
    /// Created at or after (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Created before (ms since the epoch).
    pub until_ms: Option<i64>,
    /// Pagination cursor: only deliveries older than this delivery id (listings are newest first).
    pub before: Option<String>,
    /// Page size for listings (default 50, at most 500).
    pub limit: Option<u32>,
    /// Transformed by the plugin version whose sha256 starts with this (hex).
    #[serde(default, deserialize_with = "sha256_prefix")]
    pub plugin_sha: Option<String>,
}

/// A sha256 or a prefix of one: hex digits, lower-cased.
fn sha256_prefix<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let Some(prefix) = Option::<String>::deserialize(deserializer)? else { return Ok(None) };
    if prefix.is_empty() || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(serde::de::Error::custom(format!(
            "plugin_sha {prefix:?} is not a sha256 or a prefix of one (hex)"
        )));
    }
    Ok(Some(prefix.to_ascii_lowercase()))
}

impl From<DeliveryQuery> for store::DeliveryFilter {
    fn from(query: DeliveryQuery) -> store::DeliveryFilter {
        let DeliveryQuery { id, webhook, state, event_type, event_id, since_ms, until_ms, before, limit, plugin_sha } =
            query;
        store::DeliveryFilter {
            id,
            webhook,
            state: state.map(Into::into),
            event_type,
            event_id,
            since_ms,
            until_ms,
            before,
            limit,
            plugin_sha,
        }
    }
}

/// A webhook's signing secrets (`GET /v1/webhooks/{id}/secret`): give `secret` to the
/// receiver.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookSecret {
    /// `whsec_...`: signs every request.
    pub secret: String,
    /// While a rotation's grace period lasts, the previous secret signs too, until then
    /// (milliseconds since the Unix epoch).
    pub previous_valid_until_ms: Option<i64>,
}

/// The answer to `POST /v1/webhooks/{id}/rotate-secret`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RotatedSecret {
    pub id: String,
    /// Where the new secret is on this host, when secrets are files (a single host on
    /// SQLite); with PostgreSQL it is in the database: read it with `GET
    /// /v1/webhooks/{id}/secret`.
    pub secret_file: Option<String>,
    /// Until when the previous secret signs too (milliseconds since the Unix epoch).
    pub previous_valid_until_ms: i64,
}

/// One stored version of a plugin (`GET /v1/plugins/{name}/versions`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PluginVersionInfo {
    pub sha256: String,
    pub size: u64,
    /// Milliseconds since the Unix epoch.
    pub uploaded_at_ms: i64,
    /// `file` (the plugins folder), `admin token` or `loopback` (how the API caller was admitted).
    pub uploaded_by: String,
    /// Serves every delivery not given to a canary.
    pub serving: bool,
    /// The share of deliveries it serves as a canary, if it is one.
    pub canary_percent: Option<u8>,
}

/// A plugin's stored versions, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PluginVersions {
    pub plugin: String,
    pub versions: Vec<PluginVersionInfo>,
}

/// The answer to `PUT /v1/plugins/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeployedVersion {
    pub plugin: String,
    pub sha256: String,
    pub size: u64,
    /// False when this version was stored already.
    pub new: bool,
    /// Whether it serves now.
    pub activated: bool,
}

/// The body of `POST /v1/plugins/{name}/activate`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    /// A stored version's sha256, or a prefix naming one version.
    pub sha256: String,
    /// Serve it to this share of deliveries as a canary beside the serving version (1-99);
    /// absent or 100: to every delivery.
    pub percent: Option<u8>,
}

/// Which versions of a plugin serve (the answer to activate and promote).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PluginActivation {
    pub plugin: String,
    pub sha256: String,
    pub canary: Option<CanaryActivation>,
}

/// A canary: a version serving a share of deliveries.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CanaryActivation {
    pub sha256: String,
    pub percent: u8,
    /// Milliseconds since the Unix epoch.
    pub since_ms: i64,
}

impl From<store::PluginActivation> for PluginActivation {
    fn from(activation: store::PluginActivation) -> PluginActivation {
        let store::PluginActivation { plugin, sha256, canary, by_file: _ } = activation;
        let canary = canary.map(|c| CanaryActivation { sha256: c.sha256, percent: c.percent, since_ms: c.since_ms });
        PluginActivation { plugin, sha256, canary }
    }
}

/// Which stored events a dry run replays, and the candidate when it is not the body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DryRunQuery {
    /// Only this webhook's events (default: every webhook that uses the plugin).
    pub webhook: Option<String>,
    /// The newest this many events (default 500, at most 10,000).
    pub limit: Option<u32>,
    /// Only events received since (milliseconds since the Unix epoch).
    pub since_ms: Option<i64>,
    /// A stored version as the candidate (a sha256 or a unique prefix), when the body is empty.
    pub sha256: Option<String>,
}

/// An event as producers post it (`POST /v1/events`). Only the schema: ingest parses the
/// body itself, to name the field at fault.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Envelope {
    /// Unique per event (a repeat is recognised as a duplicate); generated if absent.
    pub id: Option<String>,
    /// The event type, e.g. `message.created`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// RFC 3339; now if absent.
    pub timestamp: Option<String>,
    /// The event's payload: a JSON object.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// `GET /healthz`, `GET /readyz`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Status {
    /// `ok` (the process is up), `ready` (the store answers) or `not_ready`.
    pub status: String,
}

/// The answer to `POST /v1/events` (202).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Accepted {
    pub id: String,
    /// Deliveries created, one per subscribed webhook (absent for a duplicate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<u64>,
    /// The id was seen before: nothing new was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
}

/// `GET /v1/events/{id}`: the event, its deliveries, and for every webhook why it did or did
/// not get one.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventExplained {
    pub event: Event,
    pub deliveries: Vec<Delivery>,
    pub webhooks: Vec<WebhookOutcome>,
}

/// What became of an event for one webhook.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookOutcome {
    pub webhook: String,
    /// Its delivery, if it got one.
    pub delivery: Option<String>,
    /// Delivered, in progress, or why not (not subscribed, disabled, filtered, skipped by its
    /// plugin, held, gave up).
    pub why: String,
}

/// The answer to `POST /v1/deliveries/{id}/retry` and `POST /v1/deliveries/replay`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Replayed {
    /// The delivery retried (retry only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub replayed: u64,
}

/// `GET /v1/deliveries/count`: how many deliveries a filter covers.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryCount {
    pub count: u64,
}

/// Where a webhook is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookSource {
    /// The config file's `[[webhooks]]`: read-only through the API.
    Config,
    /// Created through the admin API.
    Api,
}

/// A webhook as operators see it: its definition (never its secret), whether it is active,
/// and how its recent attempts went.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub plugin: Option<String>,
    pub plugin_config: std::collections::BTreeMap<String, String>,
    pub headers: std::collections::BTreeMap<String, String>,
    pub enabled: bool,
    pub filter: Option<String>,
    pub rate_limit: Option<String>,
    pub disable_after: Option<String>,
    pub timeout: Option<String>,
    pub retry_schedule: Option<Vec<String>>,
    pub max_in_flight: Option<usize>,
    /// Enabled and not disabled at runtime.
    pub active: bool,
    /// Why it is disabled at runtime (a `410 Gone`, failing for `disable_after`, an operator).
    pub disabled_reason: Option<String>,
    pub source: WebhookSource,
    /// Defined in the config file: change it there.
    pub read_only: bool,
    pub health: WebhookHealth,
}

/// `GET /v1/webhooks`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}

/// `GET /v1/plugins`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PluginList {
    pub plugins: Vec<PluginView>,
}

/// A plugin as operators see it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PluginView {
    #[serde(flatten)]
    pub status: crate::plugins::PluginStatus,
    /// The webhooks that use it.
    pub webhooks: Vec<String>,
    /// With a shared store: the version each live host serves (`null` where a host lacks it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<HostServing>>,
    /// With a shared store: whether the live hosts serve different versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<bool>,
    /// With a shared store: why the other hosts' reports could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts_error: Option<String>,
}

/// The version one host serves.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostServing {
    pub host: String,
    pub sha256: Option<String>,
}

pub use crate::delivery::report::{TestOutcome, TestRequest, WebhookHealth};
