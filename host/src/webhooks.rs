//! The webhooks in effect: configuration plus resolved secrets and runtime state (disabled
//! by a `410 Gone`). Ingest asks it who subscribes to an event type; delivery asks it where
//! and how to send. Swapped whole when the configuration changes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;

use crate::config::WebhookConfig;
use crate::delivery::sign::Secret;
use crate::plugins::PluginConfig;

/// Where a webhook is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The config file's `[[webhooks]]`: read-only through the API.
    Config,
    /// Created through the admin API and stored in the database.
    Api,
}

/// One webhook, ready to use.
#[derive(Debug)]
pub struct Webhook {
    pub config: WebhookConfig,
    pub source: Source,
    /// `config.url`, parsed once rather than for every delivery.
    pub url: hyper::http::Uri,
    /// Signing secrets, current first; the previous one follows while a rotation's grace
    /// period lasts (see [`Webhook::signing_secrets`]).
    pub secrets: Vec<Secret>,
    /// When the previous secret stops being used (ms since the epoch).
    pub previous_expires_ms: Option<i64>,
    pub plugin_config: PluginConfig,
    pub headers: Vec<(String, String)>,
    /// The delivery settings it overrides.
    pub policy: crate::config::WebhookPolicy,
    /// Its `filter`, compiled.
    pub filter: Option<crate::filter::Filter>,
}

/// The current set of webhooks.
#[derive(Default)]
pub struct Webhooks {
    current: RwLock<Arc<Vec<Arc<Webhook>>>>,
    /// Disabled at runtime: id -> (url it was disabled for, reason).
    disabled: Mutex<BTreeMap<String, (String, String)>>,
    /// Counts changes, so a snapshot read from a shared store before a change made on this
    /// host is not put in effect after it (see [`Webhooks::replace_from_store`]).
    generation: AtomicU64,
}

/// A webhook created through the API as the store keeps it. With a shared store (PostgreSQL)
/// its secrets live here, not in files: `webhook.secret` always holds the current one, and a
/// rotation's previous secret follows until it expires, so every host signs alike.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredWebhook {
    pub webhook: WebhookConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<PreviousSecret>,
}

/// The secret a rotation replaced, and when it stops signing (ms since the epoch).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PreviousSecret {
    pub secret: String,
    pub expires_ms: i64,
}

impl StoredWebhook {
    /// Reads a stored definition: this form, or a bare [`WebhookConfig`] (what a single host
    /// stores, and what every host stored before secrets moved into the database).
    /// Its secrets are opened ([`crate::sealing`]).
    pub fn parse(json: &str) -> anyhow::Result<StoredWebhook> {
        let value: serde_json::Value = serde_json::from_str(json)?;
        let mut stored = if value.get("webhook").is_some() {
            serde_json::from_value(value)?
        } else {
            StoredWebhook { webhook: serde_json::from_value(value)?, previous_secret: None }
        };
        for secret in stored.secrets_mut() {
            *secret = crate::sealing::open(secret).context("the webhook's stored secret")?;
        }
        Ok(stored)
    }

    /// The JSON the store keeps, secrets sealed: a bare definition when there is nothing else
    /// to keep.
    pub fn to_json(&self) -> String {
        let mut sealed = self.clone();
        for secret in sealed.secrets_mut() {
            *secret = crate::sealing::seal(secret);
        }
        let json = match &sealed.previous_secret {
            None => serde_json::to_string(&sealed.webhook),
            Some(_) => serde_json::to_string(&sealed),
        };
        json.expect("a webhook definition serializes")
    }

    fn secrets_mut(&mut self) -> impl Iterator<Item = &mut String> {
        self.webhook.secret.iter_mut().chain(self.previous_secret.iter_mut().map(|previous| &mut previous.secret))
    }
}

/// Writes again every secret the host stores that is plain or sealed with a key other than the
/// current one ([`crate::sealing::needs_reseal`]): the webhooks in the store, and the data
/// dir's secret files. Run at start, so setting or rotating the key takes effect at once.
pub async fn reseal_stored_secrets(store: &dyn crate::store::Store, data_dir: &Path) -> anyhow::Result<()> {
    let mut resealed = 0;
    for (id, json) in store.stored_webhooks().await? {
        let raw: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        let definition = raw.get("webhook").unwrap_or(&raw);
        let plain = [&definition["secret"], &raw["previous_secret"]["secret"]]
            .into_iter()
            .filter_map(|value| value.as_str())
            .any(crate::sealing::needs_reseal);
        if !plain {
            continue;
        }
        // One that cannot be read is reported where webhooks are loaded.
        let Ok(stored) = StoredWebhook::parse(&json) else { continue };
        if store.replace_webhook(&id, &json, stored.to_json()).await? {
            resealed += 1;
        }
    }
    let dir = data_dir.join("secrets");
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let is_secret = path.extension().is_none() || path.extension().is_some_and(|e| e == "previous");
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let (secret, rest) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
        if !is_secret || !crate::sealing::needs_reseal(secret) {
            continue;
        }
        let opened = crate::sealing::open(secret).with_context(|| format!("secret file {}", path.display()))?;
        let sealed = crate::sealing::seal(&opened);
        replace_private(&path, &if rest.is_empty() { sealed } else { format!("{sealed} {rest}") })?;
        resealed += 1;
    }
    if resealed > 0 {
        tracing::info!(resealed, "sealed stored webhook secrets with the current secret key");
    }
    Ok(())
}

/// The webhooks created through the API, from the store's `(id, definition)` rows, ready to
/// use. A row that cannot be read (say, written by a newer binary) is logged and left out:
/// that webhook's deliveries wait, never lost, until it can be read. So is one whose id is in
/// `config_ids`: the config file's webhook wins.
pub fn from_stored_rows(
    rows: &[(String, String)],
    config_ids: &std::collections::HashSet<String>,
    secret_files: Option<&Path>,
) -> Vec<Webhook> {
    let mut webhooks = Vec::new();
    for (id, definition) in rows {
        if config_ids.contains(id) {
            tracing::error!(
                webhook = id,
                "a webhook created through the API has the id of one in the config file; the config file's wins"
            );
            continue;
        }
        match StoredWebhook::parse(definition).and_then(|stored| Webhook::from_store(stored, secret_files)) {
            Ok(webhook) => webhooks.push(webhook),
            Err(error) => {
                tracing::error!(
                    webhook = id,
                    error = format!("{error:#}"),
                    "a stored webhook cannot be read; it is left out"
                )
            }
        }
    }
    webhooks
}

impl Webhook {
    /// Builds a webhook, taking its secret from the config, else from
    /// `<data_dir>/secrets/<id>`, else generating one and writing it there (mode 0600).
    pub fn resolve(config: WebhookConfig, source: Source, data_dir: &Path) -> anyhow::Result<Webhook> {
        Webhook::build(config, source, Some(data_dir), None)
    }

    /// Builds a webhook created through the API from its stored form. `secret_files` is the
    /// data dir on a single host, where a definition without `secret` signs with a file;
    /// `None` for a shared store, where the secrets are in the stored form and never in a
    /// file (a file left on one host must not make it sign differently).
    pub fn from_store(stored: StoredWebhook, secret_files: Option<&Path>) -> anyhow::Result<Webhook> {
        Webhook::build(stored.webhook, Source::Api, secret_files, stored.previous_secret)
    }

    fn build(
        config: WebhookConfig,
        source: Source,
        secret_files: Option<&Path>,
        previous: Option<PreviousSecret>,
    ) -> anyhow::Result<Webhook> {
        let url: hyper::http::Uri = config
            .url
            .parse()
            .with_context(|| format!("webhook {:?}: `url` {:?} is not a URL", config.id, config.url))?;
        let secret = match &config.secret {
            Some(text) => Secret::parse(text)?,
            None => match secret_files {
                Some(data_dir) => persisted_secret(&config.id, data_dir)?,
                None => anyhow::bail!("webhook {:?} is stored without its secret", config.id),
            },
        };
        let mut secrets = vec![secret];
        let previous = match previous {
            Some(PreviousSecret { secret, expires_ms }) => {
                let secret =
                    Secret::parse(&secret).with_context(|| format!("webhook {:?}: previous secret", config.id))?;
                (expires_ms > crate::store::now_ms()).then_some((secret, expires_ms))
            }
            None => match secret_files {
                Some(data_dir) => previous_secret(&config.id, data_dir)?,
                None => None,
            },
        };
        let policy = config.policy().map_err(|e| anyhow::anyhow!("webhook {:?}: {e}", config.id))?;
        let filter = config
            .filter
            .as_deref()
            .map(crate::filter::Filter::compile)
            .transpose()
            .map_err(|e| anyhow::anyhow!("webhook {:?}: `filter` {e}", config.id))?;
        let previous_expires_ms = previous.map(|(secret, expires)| {
            secrets.push(secret);
            expires
        });
        Ok(Webhook {
            url,
            plugin_config: Arc::new(config.plugin_config.clone()),
            headers: config.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect(),
            secrets,
            previous_expires_ms,
            policy,
            filter,
            config,
            source,
        })
    }

    /// The secrets to sign with at `now_ms`: the current one, and the previous one until its
    /// grace period ends (receivers accept either signature).
    pub fn signing_secrets(&self, now_ms: i64) -> &[Secret] {
        match self.previous_expires_ms {
            Some(expires) if now_ms < expires => &self.secrets,
            _ => &self.secrets[..1],
        }
    }

    /// The stored form after a rotation in a shared store: a new random secret, and the current
    /// one signing too until `grace` has passed.
    pub fn rotated(&self, grace: std::time::Duration) -> StoredWebhook {
        let mut webhook = self.config.clone();
        webhook.secret = Some(Secret::generate().expose());
        let expires_ms = crate::store::now_ms() + grace.as_millis() as i64;
        StoredWebhook {
            webhook,
            previous_secret: Some(PreviousSecret { secret: self.secrets[0].expose(), expires_ms }),
        }
    }

    /// The stored form of this webhook as it signs now (its previous secret while it is valid).
    pub fn stored(&self) -> StoredWebhook {
        let mut webhook = self.config.clone();
        webhook.secret = Some(self.secrets[0].expose());
        let previous_secret = self
            .previous_expires_ms
            .filter(|_| self.secrets.len() > 1)
            .map(|expires_ms| PreviousSecret { secret: self.secrets[1].expose(), expires_ms });
        StoredWebhook { webhook, previous_secret }
    }

    /// Replaces the current secret with a new random one in `<data_dir>/secrets/<id>`; the
    /// current one stays valid for `grace` (recorded in `<id>.previous`). Returns the path
    /// of the new secret's file and when the previous one expires.
    pub fn rotate_secret(
        &self,
        data_dir: &Path,
        grace: std::time::Duration,
    ) -> anyhow::Result<(std::path::PathBuf, i64)> {
        let dir = data_dir.join("secrets");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let expires = crate::store::now_ms() + grace.as_millis() as i64;
        let previous = format!("{} {expires}", crate::sealing::seal(&self.secrets[0].expose()));
        replace_private(&dir.join(format!("{}.previous", self.config.id)), &previous)?;
        let path = dir.join(&self.config.id);
        replace_private(&path, &crate::sealing::seal(&Secret::generate().expose()))?;
        Ok((path, expires))
    }
}

/// The previous secret of a rotation and its expiry, if it has not expired.
fn previous_secret(id: &str, data_dir: &Path) -> anyhow::Result<Option<(Secret, i64)>> {
    let path = data_dir.join("secrets").join(format!("{id}.previous"));
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
    let parsed = text.split_once(' ').and_then(|(secret, expires)| {
        Some((Secret::parse(&crate::sealing::open(secret).ok()?).ok()?, expires.trim().parse::<i64>().ok()?))
    });
    let (secret, expires) = parsed.with_context(|| format!("{} is not `whsec_... <expiry ms>`", path.display()))?;
    Ok((expires > crate::store::now_ms()).then_some((secret, expires)))
}

/// Writes `contents` to `path` (mode 0600) by renaming a temporary file over it.
fn replace_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    write_private(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

fn persisted_secret(id: &str, data_dir: &Path) -> anyhow::Result<Secret> {
    let dir = data_dir.join("secrets");
    let path = dir.join(id);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let opened = crate::sealing::open(text.trim()).with_context(|| format!("secret file {}", path.display()))?;
        return Secret::parse(&opened).with_context(|| format!("secret file {}", path.display()));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let secret = Secret::generate();
    write_private(&path, &crate::sealing::seal(&secret.expose()))
        .with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(webhook = id, path = %path.display(), "generated a signing secret; give it to the receiver");
    Ok(secret)
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

impl Webhooks {
    pub fn new(webhooks: Vec<Webhook>, disabled: BTreeMap<String, (String, String)>) -> Webhooks {
        let set =
            Webhooks { current: RwLock::default(), disabled: Mutex::new(disabled), generation: AtomicU64::new(0) };
        *set.current.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(webhooks.into_iter().map(Arc::new).collect());
        set
    }

    /// Replaces every webhook of `source` (a config reload replaces the file's webhooks).
    pub fn replace_source(&self, source: Source, webhooks: Vec<Webhook>) {
        self.update(|all| {
            all.retain(|w| w.source != source);
            all.extend(webhooks.into_iter().map(Arc::new));
        });
    }

    /// Adds or replaces one webhook (by id).
    pub fn upsert(&self, webhook: Webhook) {
        self.update(|all| match all.iter().position(|w| w.config.id == webhook.config.id) {
            Some(index) => all[index] = Arc::new(webhook),
            None => all.push(Arc::new(webhook)),
        });
    }

    /// Removes one webhook.
    pub fn remove(&self, id: &str) {
        self.update(|all| all.retain(|w| w.config.id != id));
    }

    fn update(&self, change: impl FnOnce(&mut Vec<Arc<Webhook>>)) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let mut next: Vec<Arc<Webhook>> = current.as_ref().clone();
        change(&mut next);
        *current = Arc::new(ordered(next));
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// How many changes this set has seen; pass it to [`Webhooks::replace_from_store`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Puts a shared store's webhooks (`api`) and runtime disables in effect, unless this
    /// set changed since `generation` was read before reading the store: then the snapshot
    /// may miss that change, and `false` says to read it again.
    pub fn replace_from_store(
        &self,
        generation: u64,
        api: Vec<Webhook>,
        disabled: BTreeMap<String, (String, String)>,
    ) -> bool {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let mut disabled_now = self.disabled.lock().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::SeqCst) != generation {
            return false;
        }
        let mut next: Vec<Arc<Webhook>> = current.iter().filter(|w| w.source != Source::Api).cloned().collect();
        next.extend(api.into_iter().map(Arc::new));
        *current = Arc::new(ordered(next));
        *disabled_now = disabled;
        self.generation.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// Every webhook: the config file's in file order, then the API's by id.
    pub fn all(&self) -> Arc<Vec<Arc<Webhook>>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Webhook>> {
        self.all().iter().find(|w| w.config.id == id).cloned()
    }

    /// Enabled webhooks subscribed to `event_type`.
    pub fn subscribed(&self, event_type: &str) -> Vec<Arc<Webhook>> {
        self.all().iter().filter(|w| self.is_active(w) && w.config.subscribes_to(event_type)).cloned().collect()
    }

    /// Enabled in config and not disabled at runtime for its current URL.
    pub fn is_active(&self, webhook: &Webhook) -> bool {
        webhook.config.enabled && self.disabled_reason(webhook).is_none()
    }

    /// Why the webhook was disabled at runtime, if it was (for its current URL).
    pub fn disabled_reason(&self, webhook: &Webhook) -> Option<String> {
        let disabled = self.disabled.lock().unwrap_or_else(|e| e.into_inner());
        disabled.get(&webhook.config.id).filter(|(url, _)| *url == webhook.config.url).map(|(_, reason)| reason.clone())
    }

    /// Disables a webhook at runtime; it stays disabled until its URL changes.
    /// Returns whether it was not disabled already (for its current URL).
    pub fn disable(&self, webhook: &Webhook, reason: &str) -> bool {
        let mut disabled = self.disabled.lock().unwrap_or_else(|e| e.into_inner());
        let entry = (webhook.config.url.clone(), reason.to_string());
        let previous = disabled.insert(webhook.config.id.clone(), entry);
        self.generation.fetch_add(1, Ordering::SeqCst);
        previous.is_none_or(|(url, _)| url != webhook.config.url)
    }

    /// Clears a runtime disable. Returns whether there was one.
    pub fn enable(&self, id: &str) -> bool {
        let removed = self.disabled.lock().unwrap_or_else(|e| e.into_inner()).remove(id).is_some();
        self.generation.fetch_add(1, Ordering::SeqCst);
        removed
    }

    /// Webhooks using `plugin`, by id.
    pub fn using_plugin(&self, plugin: &str) -> Vec<Arc<Webhook>> {
        self.all().iter().filter(|w| w.config.plugin.as_deref() == Some(plugin)).cloned().collect()
    }

    /// `(webhook id, plugin_config)` of every webhook that uses `plugin`.
    pub fn plugin_configs(&self, plugin: &str) -> Vec<(String, PluginConfig)> {
        self.using_plugin(plugin).iter().map(|w| (w.config.id.clone(), w.plugin_config.clone())).collect()
    }

    /// Plugin name -> webhooks that use it.
    pub fn plugin_users(&self) -> HashMap<String, Vec<String>> {
        let mut users: HashMap<String, Vec<String>> = HashMap::new();
        for webhook in self.all().iter() {
            if let Some(plugin) = &webhook.config.plugin {
                users.entry(plugin.clone()).or_default().push(webhook.config.id.clone());
            }
        }
        users
    }
}

/// The file's webhooks in file order, then the API's by id, as every host reads them back.
fn ordered(mut webhooks: Vec<Arc<Webhook>>) -> Vec<Arc<Webhook>> {
    webhooks.sort_by(|a, b| {
        let by_id = if a.source == Source::Api { a.config.id.cmp(&b.config.id) } else { std::cmp::Ordering::Equal };
        a.source.cmp(&b.source).then(by_id)
    });
    webhooks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_webhook(id: &str) -> Webhook {
        let config = WebhookConfig {
            id: id.into(),
            url: "https://example.com/hook".into(),
            events: vec!["*".into()],
            plugin: None,
            plugin_config: BTreeMap::new(),
            secret: Some(Secret::generate().expose()),
            enabled: true,
            headers: BTreeMap::new(),
            timeout: None,
            retry_schedule: None,
            max_in_flight: None,
            filter: None,
            rate_limit: None,
            disable_after: None,
        };
        Webhook::resolve(config, Source::Api, Path::new("/nonexistent")).unwrap()
    }

    fn ids(webhooks: &Webhooks) -> Vec<String> {
        webhooks.all().iter().map(|w| w.config.id.clone()).collect()
    }

    /// A snapshot read from the store before this host created a webhook must not remove it.
    #[test]
    fn a_snapshot_older_than_a_local_change_is_refused() {
        let webhooks = Webhooks::new(vec![], BTreeMap::new());
        let before_read = webhooks.generation();
        webhooks.upsert(api_webhook("created-here"));
        assert!(!webhooks.replace_from_store(before_read, vec![api_webhook("b")], BTreeMap::new()));
        assert_eq!(ids(&webhooks), ["created-here"]);

        let fresh = webhooks.generation();
        let snapshot = vec![api_webhook("z"), api_webhook("created-here")];
        assert!(webhooks.replace_from_store(fresh, snapshot, BTreeMap::new()));
        assert_eq!(ids(&webhooks), ["created-here", "z"], "ordered by id, as every host reads them");
    }
}
