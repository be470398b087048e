//! Configuration: embedded defaults, then the TOML file, then `HOOKWASM_<SECTION>_<KEY>`
//! environment variables; validated as a whole with errors that name the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Deserializer};

use crate::delivery::sign::Secret;
use crate::plugins::Limits;

/// The embedded defaults, also the documented reference (`hookwasm config defaults`).
pub const DEFAULTS: &str = include_str!("defaults.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub delivery: DeliveryConfig,
    pub plugins: PluginLimitsConfig,
    pub store: StoreConfig,
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// How long a delivery in a final state (delivered, filtered, dead) is kept, with its
    /// attempts and its event; also how long an event id is remembered for idempotent ingest.
    #[serde(deserialize_with = "duration")]
    pub retention: Duration,
    pub backend: StoreBackend,
    /// PostgreSQL connection string (`postgres://...` or `key=value` pairs).
    #[serde(default)]
    pub url: Option<String>,
    /// PostgreSQL connections per host.
    pub pool: usize,
    /// Names this host in delivery leases (default: generated at each start). Stable per
    /// host: at start a host releases what its earlier runs left leased.
    #[serde(default)]
    pub host_id: Option<String>,
}

/// The connection string is shown only as set or not: it may carry a password.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("retention", &self.retention)
            .field("backend", &self.backend)
            .field("url", &self.url.as_ref().map(|_| "<redacted>"))
            .field("pool", &self.pool)
            .field("host_id", &self.host_id)
            .finish()
    }
}

/// Where events and deliveries are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// One SQLite file in `server.data_dir`, for one host.
    Sqlite,
    /// A PostgreSQL database that several hosts share.
    Postgres,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub plugins_dir: PathBuf,
    /// Bearer token required on `POST /v1/events` when set.
    pub ingest_token: Option<String>,
    /// Bearer token for the admin API; without one it answers loopback clients only.
    pub admin_token: Option<String>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// How plugin and config changes are noticed.
    pub watch: WatchMode,
    /// How often `watch = "poll"` looks.
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// The key that seals the webhook secrets the host stores (else `HOOKWASM_SECRET_KEY`).
    #[serde(default)]
    pub secret_key_file: Option<PathBuf>,
    /// During a key rotation, the key being replaced (else `HOOKWASM_PREVIOUS_SECRET_KEY`).
    #[serde(default)]
    pub previous_secret_key_file: Option<PathBuf>,
}

/// The tokens are shown only as set or not.
impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |token: &Option<String>| token.as_ref().map(|_| "<redacted>");
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("plugins_dir", &self.plugins_dir)
            .field("ingest_token", &shown(&self.ingest_token))
            .field("admin_token", &shown(&self.admin_token))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("watch", &self.watch)
            .field("poll_interval", &self.poll_interval)
            .field("secret_key_file", &self.secret_key_file)
            .field("previous_secret_key_file", &self.previous_secret_key_file)
            .finish()
    }
}

/// How `plugins_dir` and the config file are watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchMode {
    /// OS change events (inotify, FSEvents, ...).
    Notify,
    /// Compare the folder every `poll_interval`: for file systems without change events.
    Poll,
    /// No hot reload.
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(deserialize_with = "durations")]
    pub retry_schedule: Vec<Duration>,
    pub allow_http: bool,
    pub allow_private_networks: bool,
    /// Internal networks an operator trusts even when `allow_private_networks` is false.
    pub allowed_networks: Vec<ipnet::IpNet>,
    /// Requests in flight at once, all webhooks together.
    pub max_in_flight: usize,
    /// Requests in flight at once to one webhook: a slow endpoint delays only itself.
    pub max_in_flight_per_webhook: usize,
    /// How long the previous secret keeps signing after a rotation.
    #[serde(deserialize_with = "duration")]
    pub secret_rotation_grace: Duration,
    /// Longest `Retry-After` honoured.
    #[serde(deserialize_with = "duration")]
    pub max_retry_after: Duration,
    /// Deliveries waiting to go out (pending, retrying) past which ingest answers 503.
    pub max_backlog: u64,
    /// A webhook whose every attempt has failed for this long is disabled.
    #[serde(deserialize_with = "duration")]
    pub disable_after: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginLimitsConfig {
    #[serde(deserialize_with = "duration")]
    pub deadline: Duration,
    pub memory_mib: usize,
    /// A memory cap of its own for a plugin (by name) that needs more (or less) than
    /// `memory_mib`: a JavaScript or Python plugin holding large payloads, say.
    #[serde(default)]
    pub memory_mib_by_plugin: std::collections::BTreeMap<String, usize>,
    pub output_kib: usize,
    pub max_concurrent: u32,
    pub max_file_mib: usize,
    /// Stored versions kept per plugin (those serving are always kept).
    pub keep_versions: usize,
    /// A canary is rolled back when its share of held deliveries exceeds the serving
    /// version's by more than this (0.05: five percentage points) ...
    pub canary_max_extra_held: f64,
    /// ... once it has transformed at least this many deliveries.
    pub canary_min_calls: u64,
}

/// One `[[webhooks]]` entry (and the body of `POST /v1/webhooks`).
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub plugin: Option<String>,
    #[serde(default)]
    pub plugin_config: BTreeMap<String, String>,
    pub secret: Option<String>,
    #[serde(default = "enabled")]
    pub enabled: bool,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A CEL expression over the event (`id`, `type`, `timestamp`, `data`); only events it
    /// is true for are delivered, e.g. `data.conversation.priority == "urgent"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// At most this many requests per second or minute, e.g. "50/s" or "100/m": deliveries
    /// wait for their turn, none is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    /// Disable this webhook once every attempt has failed for this long, e.g. "2d"
    /// (default `delivery.disable_after`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_after: Option<String>,
    /// This webhook's request timeout, e.g. "5s" (default `delivery.timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// This webhook's retry schedule, e.g. ["0s", "1m", "1h"] (default
    /// `delivery.retry_schedule`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_schedule: Option<Vec<String>>,
    /// This webhook's requests on the wire at once, per host (default
    /// `delivery.max_in_flight_per_webhook`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
}

/// `rate_limit`: `requests` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: std::num::NonZeroU32,
    pub per: Duration,
}

impl std::str::FromStr for RateLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<RateLimit, String> {
        let invalid = || format!("`rate_limit` {text:?} is not like \"50/s\" or \"100/m\"");
        let (count, unit) = text.trim().split_once('/').ok_or_else(invalid)?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            _ => return Err(invalid()),
        };
        let requests = count.trim().parse::<std::num::NonZeroU32>().map_err(|_| invalid())?;
        if requests.get() > 1_000_000 {
            return Err("`rate_limit` allows at most 1000000 requests per unit".into());
        }
        Ok(RateLimit { requests, per })
    }
}

/// A webhook's own delivery settings, where it overrides `[delivery]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebhookPolicy {
    pub rate_limit: Option<RateLimit>,
    pub disable_after: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retry_schedule: Option<Vec<Duration>>,
    pub max_in_flight: Option<usize>,
}

/// The longest per-webhook `timeout`: past it a delivery's lease (five timeouts) would span
/// most of an hour.
const MAX_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest retry delay or `disable_after` accepted: past it the arithmetic on times would
/// overflow, and "never" is what is meant.
const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);
/// The most requests one webhook may have on the wire at once.
const MAX_WEBHOOK_IN_FLIGHT: usize = 1024;

fn enabled() -> bool {
    true
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration like \"5s\" or \"2h\": {e}")))
}

fn durations<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Duration>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|text| {
            humantime::parse_duration(text)
                .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration: {e}")))
        })
        .collect()
}

/// The longest `store.retention` accepted: past it, keep-forever is what is meant, and the
/// arithmetic on timestamps would overflow.
const MAX_RETENTION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

const SECTIONS: &[&str] = &["server", "delivery", "plugins", "store"];

impl Config {
    /// Defaults, then `file` (if any), then `HOOKWASM_*` from `env`.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Config> {
        let mut table: toml::Table = DEFAULTS.parse().context("embedded defaults")?;
        if let Some(path) = file {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
            let overlay: toml::Table = text.parse().with_context(|| format!("config file {}", path.display()))?;
            merge(&mut table, overlay);
        }
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("HOOKWASM_") else { continue };
            let rest = rest.to_ascii_lowercase();
            let Some((section, key)) =
                SECTIONS.iter().find_map(|s| rest.strip_prefix(&format!("{s}_")).map(|k| (*s, k)))
            else {
                continue;
            };
            let value = parse_env_value(&value);
            let section = table.entry(section).or_insert_with(|| toml::Value::Table(Default::default()));
            if let toml::Value::Table(section) = section {
                section.insert(key.to_string(), value);
            }
        }
        Config::from_table(table)
    }

    /// Parses a complete document (defaults already merged).
    pub fn from_table(table: toml::Table) -> anyhow::Result<Config> {
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let path = e.path().to_string();
            anyhow::anyhow!("invalid config at `{path}`: {}", e.into_inner().message().trim())
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.delivery.retry_schedule.is_empty() {
            bail!("invalid config at `delivery.retry_schedule`: needs at least one attempt");
        }
        if self.delivery.max_in_flight == 0 || self.delivery.max_in_flight_per_webhook == 0 {
            bail!("invalid config at `delivery.max_in_flight`: must be at least 1");
        }
        if self.plugins.keep_versions == 0 {
            bail!("invalid config at `plugins.keep_versions`: must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.plugins.canary_max_extra_held) {
            bail!("invalid config at `plugins.canary_max_extra_held`: must be between 0 and 1 (a share of deliveries)");
        }
        if self.plugins.canary_min_calls == 0 {
            bail!("invalid config at `plugins.canary_min_calls`: must be at least 1");
        }
        if self.plugins.memory_mib == 0 || self.plugins.memory_mib > 4096 {
            bail!("invalid config at `plugins.memory_mib`: must be 1-4096");
        }
        for (plugin, &mib) in &self.plugins.memory_mib_by_plugin {
            if mib == 0 || mib > 4096 {
                bail!("invalid config at `plugins.memory_mib_by_plugin.{plugin}`: must be 1-4096");
            }
        }
        if self.store.retention < Duration::from_secs(1) || self.store.retention > MAX_RETENTION {
            bail!("invalid config at `store.retention`: must be between 1s and 100 years");
        }
        if self.store.backend == StoreBackend::Postgres && self.store.url.as_deref().unwrap_or("").is_empty() {
            bail!("invalid config at `store.url`: backend = \"postgres\" needs a connection string");
        }
        if self.store.backend == StoreBackend::Postgres && !self.webhooks.is_empty() {
            bail!(
                "invalid config at `webhooks`: with store.backend = \"postgres\" webhooks live in the database, \
                 shared by every host, so that no two hosts send one webhook to different URLs or with different \
                 secrets. Move the [[webhooks]] entries into a file of their own and load it once with \
                 `hookwasm webhooks apply FILE` (or create them with POST /v1/webhooks)"
            );
        }
        if let Some(host_id) = &self.store.host_id
            && (host_id.is_empty() || !host_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
        {
            bail!("invalid config at `store.host_id`: letters, digits, `-` and `.` only");
        }
        if self.store.pool == 0 {
            bail!("invalid config at `store.pool`: must be at least 1");
        }
        if self.delivery.disable_after < Duration::from_secs(1) || self.delivery.disable_after > MAX_DELAY {
            bail!("invalid config at `delivery.disable_after`: must be between 1s and 365d");
        }
        if self.delivery.retry_schedule.iter().any(|delay| *delay > MAX_DELAY) {
            bail!("invalid config at `delivery.retry_schedule`: delays must be at most 365d");
        }
        if self.delivery.max_backlog == 0 {
            bail!("invalid config at `delivery.max_backlog`: must be at least 1");
        }
        if self.plugins.deadline.is_zero() {
            bail!("invalid config at `plugins.deadline`: must be positive");
        }
        for (key, token) in [("ingest_token", &self.server.ingest_token), ("admin_token", &self.server.admin_token)] {
            if token.as_deref().is_some_and(|t| t.len() < 16) {
                bail!("invalid config at `server.{key}`: at least 16 characters; remove it to disable the token");
            }
        }
        if self.server.ingest_token.is_some() && self.server.ingest_token == self.server.admin_token {
            bail!("invalid config at `server.admin_token`: must differ from ingest_token");
        }
        // Without a token the admin API trusts loopback clients; listening beyond loopback
        // would hand it to whoever can reach the port.
        if self.server.admin_token.is_none() && !self.server.listen.ip().is_loopback() {
            bail!(
                "invalid config at `server.listen`: {} is not a loopback address and `server.admin_token` is not set; \
                 set an admin token (HOOKWASM_SERVER_ADMIN_TOKEN), or listen on 127.0.0.1 behind a reverse proxy",
                self.server.listen
            );
        }
        self.validate_webhooks(&self.webhooks)
    }

    /// Checks webhook entries against this config's delivery rules (used for hot reload too).
    pub fn validate_webhooks(&self, webhooks: &[WebhookConfig]) -> anyhow::Result<()> {
        let mut seen = std::collections::HashSet::new();
        for (index, webhook) in webhooks.iter().enumerate() {
            let at = format!("webhooks[{index}]");
            webhook
                .validate(&self.delivery)
                .map_err(|e| anyhow::anyhow!("invalid config at `{at}` (id {:?}): {e}", webhook.id))?;
            if !seen.insert(webhook.id.as_str()) {
                bail!("invalid config at `{at}`: duplicate webhook id {:?}", webhook.id);
            }
        }
        Ok(())
    }

    pub fn plugin_limits(&self) -> Limits {
        Limits {
            deadline: self.plugins.deadline,
            memory_bytes: self.plugins.memory_mib << 20,
            memory_bytes_by_plugin: self
                .plugins
                .memory_mib_by_plugin
                .iter()
                .map(|(name, mib)| (name.clone(), mib << 20))
                .collect(),
            output_bytes: self.plugins.output_kib << 10,
            max_concurrent: self.plugins.max_concurrent,
            plugin_file_bytes: self.plugins.max_file_mib << 20,
            ..Limits::default()
        }
    }
}

impl WebhookConfig {
    /// Every field of a definition but `secret`: what `GET /v1/webhooks/{id}` shows of it
    /// (`null` where unset), and what `hookwasm webhooks apply` compares.
    pub const SHOWN_FIELDS: &[&str] = &[
        "id",
        "url",
        "events",
        "plugin",
        "plugin_config",
        "headers",
        "enabled",
        "filter",
        "rate_limit",
        "disable_after",
        "timeout",
        "retry_schedule",
        "max_in_flight",
    ];

    /// Checks the entry against the delivery rules; the message names the field at fault.
    pub fn validate(&self, delivery: &DeliveryConfig) -> Result<(), String> {
        if self.id.is_empty()
            || self.id.len() > 64
            || !self.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("`id` must be 1-64 characters of A-Z a-z 0-9 - _".into());
        }
        let url = reqwest::Url::parse(&self.url).map_err(|e| format!("`url` {:?} is not a URL: {e}", self.url))?;
        match url.scheme() {
            "https" => {}
            "http" if delivery.allow_http => {}
            "http" => return Err("`url` must be https (set delivery.allow_http = true for local development)".into()),
            other => return Err(format!("`url` scheme {other:?} is not http(s)")),
        }
        if url.host_str().is_none() {
            return Err("`url` has no host".into());
        }
        if self.events.is_empty() {
            return Err("`events` is empty; list event types like \"message.created\" or \"conversation.*\"".into());
        }
        for pattern in &self.events {
            let body = pattern.strip_suffix('*').unwrap_or(pattern);
            let valid = pattern == "*"
                || (!body.is_empty()
                    && body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')));
            if !valid || (pattern.ends_with('*') && pattern != "*" && !body.ends_with('.')) {
                return Err(format!("`events` entry {pattern:?} must be an event type or a prefix ending in \".*\""));
            }
        }
        if let Some(plugin) = &self.plugin
            && (plugin.is_empty() || plugin.contains(['/', '\\', '.']))
        {
            return Err(format!("`plugin` {plugin:?} must be a plugin name (the .wasm file's stem)"));
        }
        if let Some(secret) = &self.secret {
            Secret::parse(secret).map_err(|e| format!("`secret`: {e}"))?;
        }
        self.policy()?;
        if let Some(filter) = &self.filter {
            crate::filter::Filter::compile(filter).map_err(|e| format!("`filter` {e}"))?;
        }
        for (name, value) in &self.headers {
            if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || axum::http::HeaderValue::from_str(value).is_err()
            {
                return Err(format!("`headers.{name}` is not a valid HTTP header"));
            }
            if crate::model::is_reserved_header(name) {
                return Err(format!("`headers.{name}` is reserved by hookwasm"));
            }
        }
        Ok(())
    }

    /// The delivery settings this webhook overrides, parsed; the message names the field at
    /// fault.
    pub fn policy(&self) -> Result<WebhookPolicy, String> {
        let parse = |field: &str, text: &str| {
            humantime::parse_duration(text)
                .map_err(|e| format!("`{field}` {text:?} is not a duration like \"5s\": {e}"))
        };
        let timeout = self.timeout.as_deref().map(|text| parse("timeout", text)).transpose()?;
        if let Some(timeout) = timeout
            && (timeout.is_zero() || timeout > MAX_WEBHOOK_TIMEOUT)
        {
            return Err(format!(
                "`timeout` must be between 1ms and {}",
                humantime::format_duration(MAX_WEBHOOK_TIMEOUT)
            ));
        }
        let retry_schedule: Option<Vec<Duration>> = match &self.retry_schedule {
            Some(schedule) if schedule.is_empty() => return Err("`retry_schedule` needs at least one attempt".into()),
            Some(schedule) => {
                Some(schedule.iter().map(|text| parse("retry_schedule", text)).collect::<Result<_, _>>()?)
            }
            None => None,
        };
        if retry_schedule.iter().flatten().any(|delay| *delay > MAX_DELAY) {
            return Err("`retry_schedule` delays must be at most 365d".into());
        }
        if let Some(n) = self.max_in_flight
            && !(1..=MAX_WEBHOOK_IN_FLIGHT).contains(&n)
        {
            return Err(format!("`max_in_flight` must be 1-{MAX_WEBHOOK_IN_FLIGHT}"));
        }
        let rate_limit = self.rate_limit.as_deref().map(str::parse).transpose()?;
        let disable_after = self.disable_after.as_deref().map(|text| parse("disable_after", text)).transpose()?;
        if disable_after.is_some_and(|d| d < Duration::from_secs(1) || d > MAX_DELAY) {
            return Err("`disable_after` must be between 1s and 365d".into());
        }
        Ok(WebhookPolicy { rate_limit, disable_after, timeout, retry_schedule, max_in_flight: self.max_in_flight })
    }

    /// Whether this webhook subscribes to `event_type`.
    pub fn subscribes_to(&self, event_type: &str) -> bool {
        // Operational events go only to webhooks that name them: `*` is the product's events.
        let operational = event_type.starts_with(crate::ops::PREFIX);
        let patterns = self.events.iter().filter(|pattern| !operational || pattern.starts_with(crate::ops::PREFIX));
        patterns.into_iter().any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => event_type.starts_with(prefix),
            None => pattern == event_type,
        })
    }
}

fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base)), toml::Value::Table(overlay)) => merge(base, overlay),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// `true`, `42` and `["a", "b"]` keep their TOML type; anything else is a string.
fn parse_env_value(text: &str) -> toml::Value {
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookwasm.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path), env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_alone_are_valid() {
        let config = Config::load(None, []).unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.delivery.retry_schedule.len(), 10);
        assert_eq!(config.delivery.retry_schedule[3], Duration::from_secs(1800));
        assert!(!config.delivery.allow_http);
    }

    #[test]
    fn file_then_env_override() {
        let config = load(
            "[server]\nlisten = \"127.0.0.1:9000\"\n[[webhooks]]\nid = \"a\"\nurl = \"https://x.example/h\"\nevents = [\"conversation.*\"]\n",
            &[("HOOKWASM_SERVER_LISTEN", "127.0.0.1:9001"), ("HOOKWASM_DELIVERY_ALLOW_HTTP", "true"), ("PATH", "/bin")],
        )
        .unwrap();
        assert_eq!(config.server.listen.port(), 9001);
        assert!(config.delivery.allow_http);
        assert!(config.webhooks[0].subscribes_to("conversation.created"));
        assert!(!config.webhooks[0].subscribes_to("message.created"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(64))]
        /// Any file text and any value of a known key gives a config or an error, never a panic.
        #[test]
        fn any_input_gives_a_config_or_an_error(
            text in "(\\[[a-z]{1,10}\\]\n|[a-z_]{1,16} = [-\"0-9a-z.\\[\\], ]{0,24}\n|[ -~]{0,40}\n){0,8}",
            key in proptest::sample::select(vec![
                "HOOKWASM_SERVER_LISTEN", "HOOKWASM_DELIVERY_TIMEOUT", "HOOKWASM_DELIVERY_RETRY_SCHEDULE",
                "HOOKWASM_PLUGINS_MEMORY_MIB", "HOOKWASM_STORE_RETENTION", "HOOKWASM_DELIVERY_MAX_IN_FLIGHT_PER_WEBHOOK",
                "HOOKWASM_PLUGINS_DEADLINE", "HOOKWASM_STORE_BACKEND", "HOOKWASM_SERVER_ADMIN_TOKEN",
            ]),
            value in "[ -~]{0,24}",
        ) {
            let _ = load(&text, &[(key, value.as_str())]);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(128))]
        /// Any `[[webhooks]]` entry, its fields random text where they are text, gives a config
        /// or an error naming the webhook, never a panic; what is accepted resolves.
        #[test]
        fn any_webhook_entry_is_accepted_whole_or_refused_by_name(
            id in "[a-z0-9_.-]{0,12}",
            url in proptest::prop_oneof![proptest::strategy::Just("https://x.example/h".to_string()), proptest::string::string_regex("[ -~]{0,30}").unwrap()],
            events in proptest::collection::vec("[a-z.*_-]{0,12}", 0..3),
            header in ("[ -~]{0,10}", "[ -~]{0,10}"),
            filter in proptest::option::of("[ -~]{0,30}"),
            rate_limit in proptest::option::of("[0-9a-z/ ]{0,10}"),
            timeout in proptest::option::of("[0-9a-z]{0,6}"),
            retry in proptest::option::of(proptest::collection::vec("[0-9a-z]{0,5}", 0..3)),
            max_in_flight in proptest::option::of(0usize..5000),
        ) {
            let mut webhook = toml::Table::new();
            webhook.insert("id".into(), id.into());
            webhook.insert("url".into(), url.into());
            webhook.insert("events".into(), events.into());
            webhook.insert("headers".into(), toml::Value::Table([(header.0, toml::Value::from(header.1))].into_iter().collect()));
            for (key, value) in [("filter", filter), ("rate_limit", rate_limit), ("timeout", timeout)] {
                if let Some(value) = value {
                    webhook.insert(key.into(), value.into());
                }
            }
            if let Some(retry) = retry {
                webhook.insert("retry_schedule".into(), retry.into());
            }
            if let Some(max) = max_in_flight {
                webhook.insert("max_in_flight".into(), (max as i64).into());
            }
            let mut file = toml::Table::new();
            file.insert("webhooks".into(), toml::Value::Array(vec![toml::Value::Table(webhook)]));
            let entry = toml::to_string(&file).unwrap();
            match load(&entry, &[]) {
                Ok(config) => {
                    let webhook = &config.webhooks[0];
                    proptest::prop_assert!(webhook.policy().is_ok(), "{entry}");
                }
                Err(error) => proptest::prop_assert!(format!("{error:#}").contains("webhooks"), "{error:#}\n{entry}"),
            }
        }
    }

    #[test]
    fn tokens_never_show_in_debug_output() {
        let tokens = [
            ("HOOKWASM_SERVER_ADMIN_TOKEN", "admin-token-0123456789"),
            ("HOOKWASM_SERVER_INGEST_TOKEN", "ingest-token-0123456789"),
            ("HOOKWASM_STORE_BACKEND", "postgres"),
            ("HOOKWASM_STORE_URL", "postgres://hookwasm:db-password@db.internal/hookwasm"),
        ];
        let shown = format!("{:?}", load("", &tokens).unwrap());
        assert!(!shown.contains("token-0123456789") && !shown.contains("db-password"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn listening_beyond_loopback_needs_an_admin_token() {
        let open = load("", &[("HOOKWASM_SERVER_LISTEN", "0.0.0.0:8080")]).unwrap_err().to_string();
        assert!(open.contains("server.listen") && open.contains("server.admin_token"), "{open}");
        assert!(load("", &[("HOOKWASM_SERVER_LISTEN", "[::]:8080")]).is_err());
        let token =
            [("HOOKWASM_SERVER_LISTEN", "0.0.0.0:8080"), ("HOOKWASM_SERVER_ADMIN_TOKEN", "a-long-enough-token")];
        assert!(load("", &token).is_ok());
        assert!(load("", &[("HOOKWASM_SERVER_LISTEN", "[::1]:8080")]).is_ok());
    }

    #[test]
    fn retention_defaults_to_a_week_and_the_environment_sets_it() {
        assert_eq!(load("", &[]).unwrap().store.retention, Duration::from_secs(7 * 24 * 3600));
        let config = load("", &[("HOOKWASM_STORE_RETENTION", "36h")]).unwrap();
        assert_eq!(config.store.retention, Duration::from_secs(36 * 3600));
        assert_eq!(config.delivery.max_backlog, 1_000_000);
    }

    /// What the API shows of a webhook is every field of its definition but its secret.
    #[test]
    fn shown_fields_are_the_definition_but_its_secret() {
        let full: WebhookConfig = serde_json::from_value(serde_json::json!({
            "id": "a", "url": "https://x.example", "events": ["a.b"], "plugin": "p", "plugin_config": {},
            "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "enabled": true, "headers": {}, "filter": "true",
            "rate_limit": "1/s", "disable_after": "1d", "timeout": "1s", "retry_schedule": ["0s"], "max_in_flight": 1,
        }))
        .unwrap();
        let serialized = serde_json::to_value(&full).unwrap();
        let mut fields: Vec<&str> = serialized.as_object().unwrap().keys().map(String::as_str).collect();
        fields.retain(|field| *field != "secret");
        let mut shown = WebhookConfig::SHOWN_FIELDS.to_vec();
        fields.sort();
        shown.sort();
        assert_eq!(fields, shown);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[server]\nlisten_on = \"x\"\n", vec![], "server"),
            ("[delivery]\ntimeout = \"soon\"\n", vec![], "delivery.timeout"),
            ("", vec![("HOOKWASM_SERVER_BOGUS", "1")], "server"),
            ("[store]\nretention = \"0s\"\n", vec![], "store.retention"),
            ("", vec![("HOOKWASM_STORE_RETENTION", "a week")], "store.retention"),
            ("[delivery]\nmax_backlog = 0\n", vec![], "delivery.max_backlog"),
            ("[store]\nretention = \"1000000000y\"\n", vec![], "store.retention"),
            ("[store]\nhost_id = \"hw 1\"\n", vec![], "store.host_id"),
            ("[store]\nbackend = \"postgres\"\n", vec![], "store.url"),
            (
                "[store]\nbackend = \"postgres\"\nurl = \"postgres://db/h\"\n[[webhooks]]\nid = \"a\"\nurl = \"https://x.example\"\nevents = [\"a.b\"]\n",
                vec![],
                "webhooks",
            ),
            ("[[webhooks]]\nid = \"a\"\nurl = \"http://x.example\"\nevents = [\"a.b\"]\n", vec![], "webhooks[0]"),
            ("[[webhooks]]\nid = \"a\"\nurl = \"https://x.example\"\nevents = [\"a*\"]\n", vec![], "webhooks[0]"),
            (
                "[[webhooks]]\nid = \"a\"\nurl = \"https://x.example\"\nevents = [\"a.b\"]\nsecret = \"nope\"\n",
                vec![],
                "webhooks[0]",
            ),
            (
                "[[webhooks]]\nid = \"a\"\nurl = \"https://x.example\"\nevents = [\"a.b\"]\ncolor = 1\n",
                vec![],
                "webhooks[0]",
            ),
            (
                "[[webhooks]]\nid = \"a\"\nurl = \"https://x.example\"\nevents = [\"a.b\"]\ntimeout = \"soon\"\n",
                vec![],
                "webhooks[0]",
            ),
            (
                "[[webhooks]]\nid = \"a\"\nurl = \"https://x.example\"\nevents = [\"a.b\"]\nretry_schedule = []\n",
                vec![],
                "webhooks[0]",
            ),
            (
                "[[webhooks]]\nid = \"a\"\nurl = \"https://x.example\"\nevents = [\"a.b\"]\nmax_in_flight = 0\n",
                vec![],
                "webhooks[0]",
            ),
        ];
        for (text, env, key) in cases {
            let error = format!("{:#}", load(text, &env).unwrap_err());
            assert!(error.contains(&format!("`{key}")), "{key}: {error}");
        }
        let unknown = format!("{:#}", load("[server]\nlisten_on = \"x\"\n", &[]).unwrap_err());
        assert!(unknown.contains("listen_on"), "{unknown}");
    }
}
