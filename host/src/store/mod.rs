//! Durable storage of events, deliveries and attempts, behind the [`Store`] trait.
//!
//! The embedded default is SQLite ([`sqlite::SqliteStore`]). Claims take a lease
//! (`lease_owner`, `lease_until`), so several workers, or several hosts sharing a PostgreSQL
//! backend later, never work on one delivery at once, and a crashed worker's claims expire.
//!
//! The store knows nothing of the HTTP API or the config file: the API turns these types
//! into its own response types, and webhooks created through the API are stored as opaque
//! JSON documents. Every backend runs the same tests ([`suite`]).

pub mod postgres;
pub mod retention;
pub mod sqlite;
#[cfg(test)]
pub mod suite;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

use crate::model::Event;

/// A delivery to create at ingest: one per subscribed webhook.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// `msg_<ulid>`: also the `webhook-id` header, stable across retries.
    pub id: String,
    pub webhook_id: String,
    /// Leased at insert to a local worker that starts the delivery as soon as it commits,
    /// skipping the claim; `None` leaves it pending for the next claim.
    pub lease: Option<Lease>,
}

/// A worker's hold on a delivery: no other worker claims it before `until_ms`.
#[derive(Debug, Clone)]
pub struct Lease {
    pub owner: String,
    /// Milliseconds since the Unix epoch.
    pub until_ms: i64,
}

/// What ingest did with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Stored with this many deliveries.
    Accepted { deliveries: usize },
    /// An event with this id was already stored; nothing new was created.
    Duplicate,
}

/// Why a store operation failed, where the caller answers differently per cause. Other
/// failures are plain `anyhow` errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk (or the file system's quota) is full: nothing of the operation was stored.
    #[error("storage is full: {0}")]
    StorageFull(String),
}

impl StoreError {
    /// Whether `error` (anywhere in its chain) is a full disk.
    pub fn is_storage_full(error: &anyhow::Error) -> bool {
        error.chain().any(|cause| matches!(cause.downcast_ref::<StoreError>(), Some(StoreError::StorageFull(_))))
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeliveryState {
    /// Not yet transformed; due at `next_attempt_at`.
    Pending,
    /// Transformed, at least one attempt failed; due again at `next_attempt_at`.
    Retrying,
    Delivered,
    /// The plugin skipped the event.
    Filtered,
    /// The plugin failed or is missing: kept, re-run when the plugin loads.
    Held,
    /// The retry schedule is exhausted (or the endpoint is gone).
    Dead,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 6] = [
        DeliveryState::Pending,
        DeliveryState::Retrying,
        DeliveryState::Delivered,
        DeliveryState::Filtered,
        DeliveryState::Held,
        DeliveryState::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Retrying => "retrying",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Filtered => "filtered",
            DeliveryState::Held => "held",
            DeliveryState::Dead => "dead",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryState> {
        DeliveryState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A claimed delivery, with its event, ready for a worker.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: String,
    pub webhook_id: String,
    pub event: Event,
    /// Attempts made so far.
    pub attempts: u32,
    /// The transformed request, once the plugin has run (retries resend it).
    pub transformed: Option<Transformed>,
}

/// The output of the transform step, stored so retries resend the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transformed {
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
    /// sha256 of the plugin version that produced it; `None` without a plugin.
    pub plugin_sha: Option<String>,
}

/// One HTTP attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// The first bytes of the response body.
    pub response_excerpt: String,
    pub error: Option<String>,
}

/// The result of working on a claimed delivery.
#[derive(Debug, Clone)]
pub struct DeliveryUpdate {
    pub id: String,
    pub state: DeliveryState,
    /// When it is due again (pending/retrying only).
    pub next_attempt_at_ms: i64,
    /// Set the first time the delivery is transformed.
    pub transformed: Option<Transformed>,
    /// Why it was filtered, held or dead.
    pub reason: Option<String>,
    pub attempt: Option<Attempt>,
    /// Also set on a filtered or held delivery.
    pub plugin_sha: Option<String>,
}

/// A delivery as stored, for inspection.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub webhook_id: String,
    pub state: DeliveryState,
    pub created_at_ms: i64,
    pub attempts: Vec<Attempt>,
    pub reason: Option<String>,
    pub plugin_sha: Option<String>,
    pub next_attempt_at_ms: i64,
}

/// Which deliveries a listing or a replay covers. Every field set must match.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub id: Option<String>,
    pub webhook: Option<String>,
    pub state: Option<DeliveryState>,
    pub event_type: Option<String>,
    pub event_id: Option<String>,
    /// Created at or after (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Created before (ms since the epoch).
    pub until_ms: Option<i64>,
    /// Only deliveries older than this delivery id (listings are newest first).
    pub before: Option<String>,
    /// Transformed by a plugin version whose sha256 starts with this (lower-case hex).
    pub plugin_sha: Option<String>,
    /// Page size for listings (default 50, at most [`MAX_PAGE`]).
    pub limit: Option<u32>,
}

/// A value a [`DeliveryFilter`] condition compares with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterValue {
    Text(String),
    Integer(i64),
}

impl DeliveryFilter {
    /// The conditions of the fields set, over `deliveries d JOIN events e`, each with one `?`
    /// for its value: every backend numbers placeholders and binds values its own way.
    pub fn conditions(&self) -> Vec<(&'static str, FilterValue)> {
        let text = |value: &Option<String>| value.clone().map(FilterValue::Text);
        [
            ("d.id = ?", text(&self.id)),
            ("d.webhook_id = ?", text(&self.webhook)),
            ("d.state = ?", self.state.map(|state| FilterValue::Text(state.as_str().into()))),
            ("e.type = ?", text(&self.event_type)),
            ("d.event_id = ?", text(&self.event_id)),
            ("d.created_at >= ?", self.since_ms.map(FilterValue::Integer)),
            ("d.created_at < ?", self.until_ms.map(FilterValue::Integer)),
            ("d.id < ?", text(&self.before)),
            ("d.plugin_sha LIKE ?", self.plugin_sha.as_ref().map(|prefix| FilterValue::Text(format!("{prefix}%")))),
        ]
        .into_iter()
        .filter_map(|(condition, value)| Some((condition, value?)))
        .collect()
    }
}

/// The most deliveries one listing returns.
pub const MAX_PAGE: u32 = 500;

/// A stored event.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub id: String,
    pub event_type: String,
    pub timestamp: String,
    pub received_at_ms: i64,
    pub data: Box<serde_json::value::RawValue>,
}

/// A webhook disabled at runtime (a `410 Gone`, or an operator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisabledWebhook {
    /// The URL it was disabled for: a new URL enables it again.
    pub url: String,
    pub reason: String,
}

/// Deliveries waiting to go out, for `/metrics` and the backlog limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Pending or retrying.
    pub due: u64,
    /// The earliest `next_attempt_at` among them.
    pub earliest_due_ms: Option<i64>,
    /// Held until their plugin loads.
    pub held: u64,
}

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    pub deliveries: u64,
    pub events: u64,
    /// Where the scan for events without deliveries stopped; pass it to the next pass.
    pub events_cursor: EventCursor,
    /// Whether this pass hit its batch limit, so more may be due.
    pub more: bool,
}

/// A position in the events' `received_at` order (ties broken by insertion order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCursor {
    pub received_at_ms: i64,
    pub seq: i64,
}

/// What one host sharing the store last reported serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostReport {
    pub host: String,
    /// On this host's clock.
    pub seen_at_ms: i64,
    /// Plugin name -> sha256 of the version serving (`None`: known but not serving).
    pub plugins: BTreeMap<String, Option<String>>,
}

/// A stored plugin version, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginVersion {
    pub plugin: String,
    pub sha256: String,
    pub size: u64,
    /// On this host's clock.
    pub uploaded_at_ms: i64,
    /// `file`, or how the API caller was admitted.
    pub uploaded_by: String,
}

/// Which versions of a plugin serve, on every host sharing the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginActivation {
    pub plugin: String,
    /// The version serving every delivery not given to the canary.
    pub sha256: String,
    pub canary: Option<Canary>,
    /// Whether a file in the plugins folder made `sha256` serve (removing the file then
    /// withdraws the plugin).
    pub by_file: bool,
}

/// A version served to a share of a plugin's deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canary {
    pub sha256: String,
    /// 1 to 99.
    pub percent: u8,
    /// On this host's clock.
    pub since_ms: i64,
}

/// A change other hosts sharing the store should hear about now rather than at their next
/// poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Deliveries became due that this host will not send itself.
    Queue,
    /// A webhook was created, replaced, deleted, disabled or enabled.
    Webhooks,
    /// A plugin's serving version or canary changed.
    Plugins,
}

/// Signalled when another host announces a [`Change`] (and after the listening connection
/// is re-established, when changes may have been missed). A signal carries no data: the
/// receiver re-reads the store.
#[derive(Debug, Clone, Default)]
pub struct ChangeSignals {
    pub queue: std::sync::Arc<tokio::sync::Notify>,
    pub webhooks: std::sync::Arc<tokio::sync::Notify>,
    pub plugins: std::sync::Arc<tokio::sync::Notify>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Tells the other hosts sharing this store about `change` (coalesced, best effort:
    /// they poll as well). A store that only one host uses has no one to tell.
    fn announce(&self, _change: Change) {}

    /// Signals for the changes other hosts announce; `None` for a store only one host uses.
    /// The first call starts listening.
    fn change_signals(&self) -> Option<ChangeSignals> {
        None
    }

    /// Stores the event and its deliveries in one durable transaction; a known event id
    /// creates nothing.
    async fn ingest(&self, event: Event, deliveries: Vec<NewDelivery>) -> anyhow::Result<IngestOutcome>;

    /// Leases up to `limit` due deliveries to `owner` for `lease`, skipping `busy_webhooks`.
    async fn claim_due(
        &self,
        owner: &str,
        limit: usize,
        busy_webhooks: Vec<String>,
        lease: Duration,
    ) -> anyhow::Result<Vec<DueDelivery>>;

    /// Records the outcome of a claimed delivery (only if `owner` still holds the lease).
    /// Returns false when the lease was lost. A replay requested while the lease was held
    /// takes effect now.
    async fn update(&self, owner: &str, update: DeliveryUpdate) -> anyhow::Result<bool>;

    /// Gives claimed deliveries back without an attempt (shutdown, or capacity).
    async fn release(&self, owner: &str, ids: Vec<String>) -> anyhow::Result<()>;

    /// When the earliest pending or retrying delivery that no one holds is due (ms since the
    /// epoch).
    async fn next_due_ms(&self) -> anyhow::Result<Option<i64>>;

    /// Makes `held` deliveries of these webhooks pending again, due now. Returns how many.
    async fn requeue_held(&self, webhook_ids: Vec<String>) -> anyhow::Result<u64>;

    /// One delivery with its attempts.
    async fn delivery(&self, id: &str) -> anyhow::Result<Option<DeliveryRecord>>;

    /// Deliveries matching `filter`, newest first, one page, each with its attempts.
    async fn list_deliveries(&self, filter: DeliveryFilter) -> anyhow::Result<Vec<DeliveryRecord>>;

    /// What delivery `id` sends (its plugin's body and headers, stored with its first
    /// attempt), if it has been transformed.
    async fn delivery_body(&self, id: &str) -> anyhow::Result<Option<Transformed>>;

    /// How many deliveries `filter` matches (its `limit` and `before` aside).
    async fn count_deliveries(&self, filter: DeliveryFilter) -> anyhow::Result<u64>;

    /// Sends the deliveries matching `filter` again, now, on a fresh retry schedule: `held`
    /// and `filtered` ones are transformed again by the current plugin version; the others
    /// resend their stored body. A delivery a worker holds under a live lease is replayed
    /// once that worker records its result (never sent twice at once). Returns how many.
    async fn replay(&self, filter: DeliveryFilter) -> anyhow::Result<u64>;

    /// One stored event.
    async fn event(&self, id: &str) -> anyhow::Result<Option<EventRecord>>;

    /// Deliveries waiting to go out.
    async fn queue_stats(&self) -> anyhow::Result<QueueStats>;

    /// Whether the store answers reads and takes writes, cheaply (for `/readyz`).
    async fn ready(&self) -> anyhow::Result<()>;

    /// Number of deliveries in each state.
    async fn state_counts(&self) -> anyhow::Result<BTreeMap<DeliveryState, u64>>;

    /// Deletes up to `batch` final deliveries (with their attempts) last changed before
    /// `cutoff_ms`, and events received before it that no delivery refers to any more,
    /// scanning the latter from `events_from`. Never touches pending, retrying or held ones.
    async fn expire(&self, cutoff_ms: i64, batch: usize, events_from: EventCursor) -> anyhow::Result<Expired>;

    /// Returns free space to the file system once deletes have left much of it unused.
    /// Returns how many bytes were released.
    async fn reclaim_space(&self) -> anyhow::Result<u64>;

    /// Marks a webhook disabled (e.g. its endpoint answered 410 Gone) for this URL.
    async fn disable_webhook(&self, webhook_id: &str, url: &str, reason: &str) -> anyhow::Result<()>;

    /// Webhooks created through the API: (id, definition as JSON).
    async fn stored_webhooks(&self) -> anyhow::Result<Vec<(String, String)>>;

    /// Replaces webhook `id`'s definition if it is still `expected`; `false`, changing
    /// nothing, if another host changed or deleted it since it was read.
    async fn replace_webhook(&self, id: &str, expected: &str, definition: String) -> anyhow::Result<bool>;

    /// One webhook created through the API (its definition as JSON), as stored now.
    async fn stored_webhook(&self, id: &str) -> anyhow::Result<Option<String>>;

    /// Stores a new webhook created through the API; `false`, changing nothing, when the id
    /// is taken (by any host, at the same moment too).
    async fn create_webhook(&self, id: &str, definition: String) -> anyhow::Result<bool>;

    /// Creates or replaces a webhook created through the API (its definition as JSON).
    async fn put_webhook(&self, id: &str, definition: String) -> anyhow::Result<()>;

    /// Deletes a webhook created through the API. Returns whether it existed.
    async fn delete_webhook(&self, id: &str) -> anyhow::Result<bool>;

    /// Clears a runtime disable.
    async fn enable_webhook(&self, webhook_id: &str) -> anyhow::Result<()>;

    /// Webhooks disabled at runtime, by id.
    async fn disabled_webhooks(&self) -> anyhow::Result<BTreeMap<String, DisabledWebhook>>;

    /// Records that every attempt to `webhook_id` has failed since `since_ms` (this host's
    /// clock), unless the store already knows of an earlier start; returns since when every
    /// attempt to it has failed (the first failure after its last success, on any host).
    async fn webhook_failed(&self, webhook_id: &str, since_ms: i64) -> anyhow::Result<i64>;

    /// Records that an attempt to `webhook_id` succeeded: it is no longer failing.
    async fn webhook_succeeded(&self, webhook_id: &str) -> anyhow::Result<()>;

    /// Records that `host` is alive and serves `plugins` (hosts sharing a store; a store only
    /// one host uses keeps nothing).
    /// Stores a plugin version (a version already stored is left as it was: returns false).
    async fn put_plugin_version(&self, version: PluginVersion, wasm: Vec<u8>) -> anyhow::Result<bool>;

    /// Deletes the plugin's versions beyond the newest `keep`, except those serving.
    async fn prune_plugin_versions(&self, plugin: &str, keep: usize) -> anyhow::Result<()>;

    /// A plugin's stored versions, newest first.
    async fn plugin_versions(&self, plugin: &str) -> anyhow::Result<Vec<PluginVersion>>;

    /// A stored version's component bytes.
    async fn plugin_wasm(&self, plugin: &str, sha256: &str) -> anyhow::Result<Option<Vec<u8>>>;

    /// Every plugin's serving versions.
    async fn plugin_activations(&self) -> anyhow::Result<Vec<PluginActivation>>;

    /// Makes `activation` the plugin's serving versions.
    async fn activate_plugin(&self, activation: PluginActivation) -> anyhow::Result<()>;

    /// Ends the plugin's canary if it is `canary_sha256`, leaving the serving version alone;
    /// whether it was (so one host of several acts on a rollback).
    async fn end_canary(&self, plugin: &str, canary_sha256: &str) -> anyhow::Result<bool>;

    /// Stops serving the plugin (its file was removed); its versions stay stored.
    async fn deactivate_plugin(&self, plugin: &str) -> anyhow::Result<()>;

    /// The content (sha256) of plugin `plugin`'s file in the plugins folder as last deployed.
    async fn plugin_file(&self, plugin: &str) -> anyhow::Result<Option<String>>;

    /// Records `sha256` as the content of plugin `plugin`'s file as deployed.
    async fn set_plugin_file(&self, plugin: &str, sha256: &str) -> anyhow::Result<()>;

    /// `(webhook id, event id)` of the newest deliveries to any of `webhook_ids`, newest
    /// first: at most `limit`, and none of events received before `since_ms`.
    async fn webhook_event_ids(
        &self,
        webhook_ids: &[String],
        since_ms: Option<i64>,
        limit: u32,
    ) -> anyhow::Result<Vec<(String, String)>>;

    async fn report_host(&self, _host: &str, _plugins: &BTreeMap<String, Option<String>>) -> anyhow::Result<()> {
        Ok(())
    }

    /// Removes `host`'s report (it is stopping).
    async fn forget_host(&self, _host: &str) -> anyhow::Result<()> {
        Ok(())
    }

    /// The reports of hosts seen within `seen_within`, by host.
    async fn live_hosts(&self, _seen_within: Duration) -> anyhow::Result<Vec<HostReport>> {
        Ok(Vec::new())
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}
