//! The registry: plugin name -> the version currently serving, plus each plugin's status.
//!
//! A load validates the component and runs `check-config` for every webhook configuration
//! that uses the plugin before the new version is swapped in; on failure the previous
//! version keeps serving and the error is recorded. Calls run on the registry's
//! [`CallThreads`], at most `Limits::max_concurrent` at once (the size of the instance pool).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde::Serialize;
use sha2::Digest;

use super::threads::CallThreads;
use super::{Execution, LoadError, Plugin, PluginConfig, PluginEvent, Runtime};

/// Whether a plugin is serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginState {
    Loaded,
    /// The last load failed; a previous version may still be serving (`sha256`).
    Failed,
    /// The file was removed.
    Unloaded,
}

/// What operators see for a plugin.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    pub name: String,
    pub state: PluginState,
    /// The version serving now, if any.
    pub sha256: Option<String>,
    #[serde(with = "system_time_ms")]
    pub loaded_at: Option<SystemTime>,
    pub last_error: Option<String>,
    pub file: PathBuf,
    /// Successful loads since start.
    pub loads: u64,
    /// Failed loads since start.
    pub failures: u64,
}

/// What a reload did.
#[derive(Debug)]
pub enum Reload {
    /// The file's content is the version already serving.
    Unchanged,
    Loaded(Plugin),
    /// The previous version (if any) keeps serving.
    Failed(RegistryError),
    /// The file is gone; the plugin no longer serves.
    Unloaded,
}

mod system_time_ms {
    use std::time::{SystemTime, UNIX_EPOCH};

    pub fn serialize<S: serde::Serializer>(time: &Option<SystemTime>, serializer: S) -> Result<S::Ok, S::Error> {
        let ms = time.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_millis() as u64);
        serde::Serialize::serialize(&ms, serializer)
    }
}

struct Entry {
    current: Option<Plugin>,
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

    /// The version of `name` serving now.
    pub fn current(&self, name: &str) -> Option<Plugin> {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).get(name).and_then(|e| e.current.clone())
    }

    /// The last load error of `name`, if its last load failed.
    pub fn last_error(&self, name: &str) -> Option<String> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(name).and_then(|e| e.status.last_error.clone())
    }

    pub fn statuses(&self) -> Vec<PluginStatus> {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).values().map(|e| e.status.clone()).collect()
    }

    /// Loads `path` as plugin `name`, checks it against `configs` (webhook id, its
    /// plugin_config), and swaps it in. Blocking: compiles on a cache miss.
    pub fn load_file(
        &self,
        name: &str,
        path: &Path,
        configs: &[(String, PluginConfig)],
    ) -> Result<Plugin, RegistryError> {
        let loaded = self.runtime.read_file(name, path).and_then(|bytes| self.runtime.load(name, &bytes));
        self.install(name, path, loaded, configs)
    }

    /// Brings `name` in line with `path`: unloads it if the file is gone, does nothing if the
    /// content is the version serving, else loads it as [`Registry::load_file`] does.
    pub fn reload_file(&self, name: &str, path: &Path, configs: &[(String, PluginConfig)]) -> Reload {
        let bytes = match self.runtime.read_file(name, path) {
            Ok(bytes) => bytes,
            Err(LoadError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return if self.unload(name) { Reload::Unloaded } else { Reload::Unchanged };
            }
            Err(error) => {
                return self.install(name, path, Err(error), configs).map_or_else(Reload::Failed, Reload::Loaded);
            }
        };
        let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
        {
            let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = entries.get_mut(name)
                && entry.current.as_ref().is_some_and(|p| p.sha256() == sha256)
            {
                // The file is the serving version again (a bad deploy put back): whatever
                // failed in between no longer describes the plugin.
                entry.status.state = PluginState::Loaded;
                entry.status.last_error = None;
                return Reload::Unchanged;
            }
        }
        let loaded = self.runtime.load(name, &bytes);
        self.install(name, path, loaded, configs).map_or_else(Reload::Failed, Reload::Loaded)
    }

    /// Checks a freshly loaded version against every config, then swaps it in or records why not.
    fn install(
        &self,
        name: &str,
        path: &Path,
        loaded: Result<Plugin, LoadError>,
        configs: &[(String, PluginConfig)],
    ) -> Result<Plugin, RegistryError> {
        let outcome = loaded.map_err(RegistryError::from).and_then(|plugin| {
            for (webhook, config) in configs {
                if let Err(error) = plugin.check_config(config).result {
                    let message = match error.kind {
                        super::PluginErrorKind::Returned(message) => message,
                        other => other.to_string(),
                    };
                    return Err(RegistryError::ConfigRejected {
                        plugin: name.into(),
                        webhook: webhook.clone(),
                        message,
                    });
                }
            }
            Ok(plugin)
        });
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let entry = entries.entry(name.to_string()).or_insert_with(|| Entry {
            current: None,
            status: PluginStatus {
                name: name.into(),
                state: PluginState::Failed,
                sha256: None,
                loaded_at: None,
                last_error: None,
                file: path.into(),
                loads: 0,
                failures: 0,
            },
        });
        entry.status.file = path.into();
        match &outcome {
            Ok(plugin) => {
                entry.current = Some(plugin.clone());
                entry.status.state = PluginState::Loaded;
                entry.status.sha256 = Some(plugin.sha256().to_string());
                entry.status.loaded_at = Some(plugin.loaded_at());
                entry.status.last_error = None;
                entry.status.loads += 1;
            }
            Err(error) => {
                // The previous version, if any, keeps serving; `sha256` still names it.
                entry.status.state = PluginState::Failed;
                entry.status.last_error = Some(error.to_string());
                entry.status.failures += 1;
            }
        }
        outcome
    }

    /// Stops serving `name` (its file was removed). Returns whether it was serving.
    pub fn unload(&self, name: &str) -> bool {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        match entries.get_mut(name) {
            Some(entry) if entry.status.state != PluginState::Unloaded => {
                let was_serving = entry.current.take().is_some();
                entry.status.state = PluginState::Unloaded;
                entry.status.sha256 = None;
                was_serving
            }
            _ => false,
        }
    }

    /// Loads every `*.wasm` in `dir` (plugin name = file stem). Failures are recorded and
    /// logged; they do not stop the others.
    pub fn load_dir(
        &self,
        dir: &Path,
        configs_for: impl Fn(&str) -> Vec<(String, PluginConfig)>,
    ) -> Vec<(String, Result<Plugin, RegistryError>)> {
        let mut files: Vec<(String, PathBuf)> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter_map(|path| Some((plugin_name(&path)?, path)))
                .collect(),
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "cannot read the plugins directory; no plugins loaded");
                return Vec::new();
            }
        };
        files.sort();
        files
            .into_iter()
            .map(|(name, path)| {
                let result = self.load_file(&name, &path, &configs_for(&name));
                match &result {
                    Ok(plugin) => tracing::info!(plugin = name, sha256 = plugin.sha256(), source = ?plugin.load_source(), load_ms = plugin.load_time().as_millis() as u64, "plugin loaded"),
                    Err(error) => tracing::error!(plugin = name, file = %path.display(), %error, "plugin failed to load"),
                }
                (name, result)
            })
            .collect()
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
        })
    }
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
}
