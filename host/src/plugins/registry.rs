//! The registry: plugin name -> the version serving now (and a canary serving a share of
//! the deliveries), plus each plugin's status.
//!
//! [`Registry::install`] swaps a version in only after it loaded and `check-config` accepted
//! every webhook configuration that uses the plugin; on failure the previous version keeps
//! serving and the error is recorded. Which version should serve is decided elsewhere (the
//! deployer, from the store); the registry only holds what serves. Calls run on the
//! registry's [`CallThreads`], at most `Limits::max_concurrent` at once (the size of the
//! instance pool).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde::Serialize;
use sha2::Digest;

use super::threads::CallThreads;
use super::{Execution, LoadError, Plugin, PluginConfig, PluginEvent, Runtime};

/// Whether a plugin is serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PluginState {
    Loaded,
    /// The last load failed; a previous version may still be serving (`sha256`).
    Failed,
    /// The plugin was withdrawn (its file removed).
    Unloaded,
    /// Listed because other hosts sharing the store have it; this host has not loaded it.
    Absent,
}

/// What operators see for a plugin.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PluginStatus {
    pub name: String,
    pub state: PluginState,
    /// The version serving now, if any.
    pub sha256: Option<String>,
    /// When the serving version was loaded (milliseconds since the Unix epoch).
    pub loaded_at: Option<u64>,
    pub last_error: Option<String>,
    /// The file in the plugins folder the plugin was last loaded from, if any (uploaded
    /// versions have none).
    #[schema(value_type = Option<String>)]
    pub file: Option<PathBuf>,
    /// Successful loads since start.
    pub loads: u64,
    /// Failed loads since start.
    pub failures: u64,
    /// A version serving a share of the deliveries, with what each version did since it began
    /// (on this host).
    pub canary: Option<CanaryStatus>,
}

/// A canary as operators see it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CanaryStatus {
    pub sha256: String,
    /// The share of deliveries it serves.
    pub percent: u8,
    /// Milliseconds since the Unix epoch.
    pub since_ms: i64,
    /// What the serving version did since the canary began.
    pub serving: VersionCounts,
    /// What the canary did.
    pub candidate: VersionCounts,
}

/// What one version did since a canary began, on this host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct VersionCounts {
    /// Plugin calls for deliveries.
    pub transforms: u64,
    /// Calls that failed (trap, deadline, bad output): the delivery is held.
    pub held: u64,
    /// Attempts with its output that the endpoint accepted.
    pub delivered: u64,
    /// Attempts with its output that failed (an error status or no answer).
    pub errors: u64,
}

impl VersionCounts {
    /// The share of calls that failed.
    pub fn held_rate(&self) -> f64 {
        if self.transforms == 0 { 0.0 } else { self.held as f64 / self.transforms as f64 }
    }
}

/// What happened to a delivery with a version's output, for a canary's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Transformed,
    Held,
    Delivered,
    Failed,
}

#[derive(Default)]
struct Counters([AtomicU64; 4]);

impl Counters {
    fn add(&self, outcome: Outcome) {
        self.0[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn read(&self) -> VersionCounts {
        let [transforms, held, delivered, errors] = [0, 1, 2, 3].map(|i| self.0[i].load(Ordering::Relaxed));
        VersionCounts { transforms, held, delivered, errors }
    }
}

struct CanaryEntry {
    plugin: Plugin,
    percent: u8,
    since_ms: i64,
    serving: Counters,
    candidate: Counters,
}

/// Whether `delivery_id` goes to a canary serving `percent`: a hash of the id, so every
/// attempt of a delivery (a retry, a re-queued held one, on any host) gets the same version.
pub fn in_canary(delivery_id: &str, percent: u8) -> bool {
    let digest = sha2::Sha256::digest(delivery_id.as_bytes());
    u16::from_be_bytes([digest[0], digest[1]]) % 100 < u16::from(percent)
}

struct Entry {
    current: Option<Plugin>,
    canary: Option<CanaryEntry>,
    status: PluginStatus,
}

/// Why a load was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("plugin `{plugin}`: rejected the plugin_config of webhook `{webhook}`: {message}")]
    ConfigRejected { plugin: String, webhook: String, message: String },
}

/// `name` for `<plugins_dir>/name.wasm`; `None` for anything else (hidden or temporary files
/// included, so writing `.name.wasm.tmp` and renaming it into place is one change).
pub fn plugin_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let name = file.strip_suffix(".wasm")?;
    (!name.is_empty() && !name.starts_with('.')).then(|| name.to_string())
}

/// `(plugin name, path)` of every `*.wasm` in `dir`, by name; a folder that cannot be read is
/// logged and taken as empty.
pub fn plugin_files(dir: &std::path::Path) -> Vec<(String, std::path::PathBuf)> {
    list_plugin_files(dir).unwrap_or_else(|error| {
        tracing::warn!(dir = %dir.display(), %error, "cannot read the plugins directory; no plugins loaded from it");
        Vec::new()
    })
}

/// As [`plugin_files`], with the error of a folder that cannot be read.
pub fn list_plugin_files(dir: &std::path::Path) -> std::io::Result<Vec<(String, std::path::PathBuf)>> {
    let mut files: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|path| Some((plugin_name(&path)?, path)))
        .collect();
    files.sort();
    Ok(files)
}

pub struct Registry {
    runtime: Arc<Runtime>,
    entries: RwLock<BTreeMap<String, Entry>>,
    calls: CallThreads,
}

impl Registry {
    pub fn new(runtime: Arc<Runtime>) -> Registry {
        // One running call per core: measured against two per core, 7% less host CPU per
        // event at saturation (BENCHMARKS.md).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let calls = CallThreads::new(runtime.limits().max_concurrent as usize, cores);
        Registry { runtime, entries: RwLock::default(), calls }
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The version of `name` serving now (the canary aside).
    pub fn current(&self, name: &str) -> Option<Plugin> {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).get(name).and_then(|e| e.current.clone())
    }

    /// Every version of `name` serving now: the serving one and its canary, if any. A
    /// webhook config must suit all of them.
    pub fn serving_versions(&self, name: &str) -> Vec<Plugin> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = entries.get(name) else { return Vec::new() };
        entry.current.iter().cloned().chain(entry.canary.as_ref().map(|c| c.plugin.clone())).collect()
    }

    /// The version of `name` that transforms `delivery_id`: the canary for its share of
    /// deliveries, else the serving version.
    pub fn for_delivery(&self, name: &str, delivery_id: &str) -> Option<Plugin> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(name)?;
        match &entry.canary {
            Some(canary) if in_canary(delivery_id, canary.percent) => Some(canary.plugin.clone()),
            _ => entry.current.clone(),
        }
    }

    /// Counts `outcome` for version `sha256` of `name`, if a canary of `name` is running and
    /// the version is one of its two.
    pub fn count(&self, name: &str, sha256: &str, outcome: Outcome) {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let Some(Entry { canary: Some(canary), current, .. }) = entries.get(name) else { return };
        if canary.plugin.sha256() == sha256 {
            canary.candidate.add(outcome);
        } else if current.as_ref().is_some_and(|p| p.sha256() == sha256) {
            canary.serving.add(outcome);
        }
    }

    /// The last load error of `name`, if its last load failed.
    pub fn last_error(&self, name: &str) -> Option<String> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(name).and_then(|e| e.status.last_error.clone())
    }

    pub fn statuses(&self) -> Vec<PluginStatus> {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).values().map(Entry::status).collect()
    }

    pub fn status(&self, name: &str) -> Option<PluginStatus> {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).get(name).map(Entry::status)
    }

    /// Whether `plugin` accepts every `(webhook id, plugin_config)` in `configs`. Blocking:
    /// runs the plugin.
    pub fn check(&self, plugin: &Plugin, configs: &[(String, PluginConfig)]) -> Result<(), RegistryError> {
        for (webhook, config) in configs {
            if let Err(error) = plugin.check_config(config).result {
                let message = match error.kind {
                    super::PluginErrorKind::Returned(message) => message,
                    other => other.to_string(),
                };
                return Err(RegistryError::ConfigRejected {
                    plugin: plugin.name().into(),
                    webhook: webhook.clone(),
                    message,
                });
            }
        }
        Ok(())
    }

    /// Checks a loaded version against every config, then makes it the serving version of
    /// `name` or records why not (the previous version keeps serving). `file` is where it
    /// came from, if from the plugins folder. Blocking: runs the plugin.
    pub fn install(
        &self,
        name: &str,
        loaded: Result<Plugin, LoadError>,
        configs: &[(String, PluginConfig)],
        file: Option<&Path>,
    ) -> Result<Plugin, RegistryError> {
        let outcome =
            loaded.map_err(RegistryError::from).and_then(|plugin| self.check(&plugin, configs).map(|()| plugin));
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let entry = entries.entry(name.to_string()).or_insert_with(|| Entry::new(name));
        if file.is_some() {
            entry.status.file = file.map(Path::to_path_buf);
        }
        match &outcome {
            Ok(plugin) => {
                if entry.canary.as_ref().is_some_and(|c| c.plugin.sha256() == plugin.sha256()) {
                    entry.canary = None;
                }
                entry.current = Some(plugin.clone());
                entry.status.state = PluginState::Loaded;
                entry.status.sha256 = Some(plugin.sha256().to_string());
                entry.status.loaded_at = Some(epoch_ms(plugin.loaded_at()));
                entry.status.last_error = None;
                entry.status.loads += 1;
            }
            Err(error) => self.failed(entry, error),
        }
        outcome
    }

    /// Records that a version of `name` could not be loaded; the serving one keeps serving.
    pub fn record_failure(&self, name: &str, error: &RegistryError, file: Option<&Path>) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let entry = entries.entry(name.to_string()).or_insert_with(|| Entry::new(name));
        if file.is_some() {
            entry.status.file = file.map(Path::to_path_buf);
        }
        self.failed(entry, error);
    }

    fn failed(&self, entry: &mut Entry, error: &RegistryError) {
        // The previous version, if any, keeps serving; `sha256` still names it.
        entry.status.state = PluginState::Failed;
        entry.status.last_error = Some(error.to_string());
        entry.status.failures += 1;
    }

    /// The serving version of `name` is `sha256` again (a bad deploy put back): what failed
    /// in between no longer describes the plugin. Returns whether it was serving.
    pub fn confirm(&self, name: &str, sha256: &str) -> bool {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        match entries.get_mut(name) {
            Some(entry) if entry.current.as_ref().is_some_and(|p| p.sha256() == sha256) => {
                entry.status.state = PluginState::Loaded;
                entry.status.last_error = None;
                true
            }
            _ => false,
        }
    }

    /// Serves `canary` (a checked version, its share, since when) to part of `name`'s
    /// deliveries, or ends the canary (`None`). The counts start over when the canary changes.
    pub fn set_canary(&self, name: &str, canary: Option<(Plugin, u8, i64)>) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = entries.get_mut(name) else { return };
        match canary {
            None => entry.canary = None,
            Some((plugin, percent, since_ms)) => {
                let same = entry
                    .canary
                    .as_ref()
                    .is_some_and(|c| c.plugin.sha256() == plugin.sha256() && c.since_ms == since_ms);
                match &mut entry.canary {
                    Some(current) if same => current.percent = percent,
                    _ => {
                        entry.canary = Some(CanaryEntry {
                            plugin,
                            percent,
                            since_ms,
                            serving: Counters::default(),
                            candidate: Counters::default(),
                        })
                    }
                }
            }
        }
    }

    /// The canary of `name`, if one is running: its sha256, share and since when.
    pub fn canary(&self, name: &str) -> Option<(String, u8, i64)> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let canary = entries.get(name)?.canary.as_ref()?;
        Some((canary.plugin.sha256().to_string(), canary.percent, canary.since_ms))
    }

    /// Stops serving `name` (withdrawn). Returns whether it was serving.
    pub fn unload(&self, name: &str) -> bool {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        match entries.get_mut(name) {
            Some(entry) if entry.status.state != PluginState::Unloaded => {
                let was_serving = entry.current.take().is_some();
                entry.canary = None;
                entry.status.state = PluginState::Unloaded;
                entry.status.sha256 = None;
                was_serving
            }
            _ => false,
        }
    }

    /// Runs `plugin` on `event` on a plugin thread, once one is free.
    pub async fn transform(&self, plugin: Plugin, event: PluginEvent, config: PluginConfig) -> Execution {
        let started = std::time::Instant::now();
        let call = plugin.clone();
        self.calls.run(move || call.transform(&event, &config)).await.unwrap_or_else(|| Execution {
            result: Err(plugin
                .error(super::PluginErrorKind::Instantiate("the plugin call did not complete (host bug)".to_string()))),
            logs: Vec::new(),
            duration: started.elapsed(),
            memory_bytes: 0,
        })
    }
}

impl PluginStatus {
    /// A plugin this host knows only from other hosts' reports.
    pub fn absent(name: &str) -> PluginStatus {
        PluginStatus { state: PluginState::Absent, ..Entry::new(name).status }
    }
}

impl Entry {
    fn new(name: &str) -> Entry {
        Entry {
            current: None,
            canary: None,
            status: PluginStatus {
                name: name.into(),
                state: PluginState::Failed,
                sha256: None,
                loaded_at: None,
                last_error: None,
                file: None,
                loads: 0,
                failures: 0,
                canary: None,
            },
        }
    }

    fn status(&self) -> PluginStatus {
        let canary = self.canary.as_ref().map(|c| CanaryStatus {
            sha256: c.plugin.sha256().to_string(),
            percent: c.percent,
            since_ms: c.since_ms,
            serving: c.serving.read(),
            candidate: c.candidate.read(),
        });
        PluginStatus { canary, ..self.status.clone() }
    }
}

fn epoch_ms(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_come_from_wasm_file_stems() {
        assert_eq!(plugin_name(Path::new("/p/slack-notify.wasm")).as_deref(), Some("slack-notify"));
        assert_eq!(plugin_name(Path::new("/p/.slack-notify.wasm")), None);
        assert_eq!(plugin_name(Path::new("/p/slack-notify.wasm.tmp")), None);
        assert_eq!(plugin_name(Path::new("/p/readme.md")), None);
    }

    #[test]
    fn a_canary_takes_its_share_of_delivery_ids_and_always_the_same_ones() {
        let ids: Vec<String> = (0..10_000).map(|i| crate::model::new_id(&format!("d{i}"))).collect();
        let taken = ids.iter().filter(|id| in_canary(id, 10)).count();
        assert!((900..=1100).contains(&taken), "10% of 10,000: {taken}");
        assert!(ids.iter().all(|id| in_canary(id, 10) == in_canary(id, 10)));
        assert!(ids.iter().filter(|id| in_canary(id, 10)).all(|id| in_canary(id, 50)), "a wider share keeps them");
        assert!(!ids.iter().any(|id| in_canary(id, 0)));
        assert!(ids.iter().all(|id| in_canary(id, 100)));
    }
}
