//! Plugin versions for operators: deploying a version (an upload, or a file in the plugins
//! folder), activating one (a rollback is activating an earlier one), canaries, and bringing
//! this host's registry in line with the versions the store says serve.
//!
//! The store is the source: every deployed version is stored by its sha256, and which one
//! serves (and which one is a canary, for what share) is a row every host sharing the store
//! reads. This host writes the row, then puts the version in effect itself; other hosts
//! follow on the store's announcement or their next poll ([`follow`]).
//!
//! A file in the plugins folder is a deploy by `file`: a changed file is activated; at start
//! a file is activated unless it is the file last deployed for that plugin (the store keeps
//! that sha256 however many versions are pruned) and some version serves, so a restart does
//! not undo a version activated since. Removing a file withdraws the plugin only if that
//! file's deploy is what made the serving version serve.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::Digest;
use tokio::sync::{Notify, watch};

use crate::metrics::Metrics;
use crate::ops::{Happening, Ops};
use crate::plugins::{LoadError, Plugin, Registry, RegistryError};
use crate::store::{Canary, PluginActivation, PluginVersion, Store, now_ms};
use crate::webhooks::Webhooks;

/// How often a host re-reads the serving versions and checks its canaries, announcement or
/// not.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// A plugin load still running after this long is logged.
pub const SLOW_LOAD: Duration = Duration::from_secs(10);

/// When a canary is rolled back by itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CanaryPolicy {
    /// The most its share of held deliveries may exceed the serving version's.
    pub max_extra_held: f64,
    /// Calls before it is judged.
    pub min_calls: u64,
}

/// Why a deploy or an activation was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The version does not load, or a webhook's config is refused by it.
    #[error(transparent)]
    Invalid(#[from] RegistryError),
    /// A malformed request (a sha256 prefix that is not one).
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    NotFound(String),
    /// A request that cannot apply as asked (an ambiguous sha prefix, a canary with nothing
    /// serving).
    #[error("{0}")]
    Conflict(String),
    #[error("the store is unavailable: {0:#}")]
    Store(anyhow::Error),
}

/// What a deploy did.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub version: PluginVersion,
    /// False when the store already had this version.
    pub new: bool,
    pub activated: bool,
}

pub struct Deployer {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    webhooks: Arc<Webhooks>,
    metrics: Arc<Metrics>,
    ops: Ops,
    /// Woken when held deliveries were re-queued.
    wake: Arc<Notify>,
    keep_versions: usize,
    canary_policy: CanaryPolicy,
    /// Deploys, activations and applying the store's state one at a time, so an apply that
    /// read the store before a deploy cannot put the older version back after it.
    turn: tokio::sync::Mutex<()>,
    /// Plugin name -> sha256 of its file in the plugins folder, as last read.
    files: Mutex<HashMap<String, String>>,
    /// Plugin name (and ` canary` for its canary) -> the stored version that did not load
    /// on this host, and the webhooks' generation then: not tried again every poll until
    /// either changes.
    failed_loads: Mutex<HashMap<String, (String, u64)>>,
}

impl Deployer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        webhooks: Arc<Webhooks>,
        metrics: Arc<Metrics>,
        ops: Ops,
        wake: Arc<Notify>,
        keep_versions: usize,
        canary_policy: CanaryPolicy,
    ) -> Deployer {
        Deployer {
            store,
            registry,
            webhooks,
            metrics,
            ops,
            wake,
            keep_versions,
            canary_policy,
            turn: tokio::sync::Mutex::new(()),
            files: Mutex::default(),
            failed_loads: Mutex::default(),
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Validates `wasm` as a version of plugin `name` (it loads, and accepts the config of
    /// every webhook that uses the plugin), stores it, and makes it serve if `activate`. A
    /// refused version is the caller's error; the serving version keeps serving.
    pub async fn deploy(
        &self,
        name: &str,
        wasm: Vec<u8>,
        uploaded_by: &str,
        activate: bool,
    ) -> Result<Deployed, DeployError> {
        // Compiled before taking the turn: a first compile can take seconds at low priority,
        // and other deploys, reloads and the store's state must not wait for it.
        let loaded = self.load_checked(name, wasm.clone()).await;
        let _turn = self.turn.lock().await;
        self.commit(name, wasm, loaded, uploaded_by, activate, None).await
    }

    /// Stores a loaded version and makes it serve if `activate`; a version that did not
    /// load is reported. Called holding the turn.
    async fn commit(
        &self,
        name: &str,
        wasm: Vec<u8>,
        loaded: Result<Plugin, RegistryError>,
        uploaded_by: &str,
        activate: bool,
        file: Option<&Path>,
    ) -> Result<Deployed, DeployError> {
        let sha256 = hex::encode(sha2::Sha256::digest(&wasm));
        let plugin = match loaded {
            Ok(plugin) => plugin,
            Err(error) => {
                // A file has no caller to answer: its failure is the plugin's status, a
                // metric and an operational event.
                if file.is_some() {
                    self.registry.record_failure(name, &error, file);
                    self.metrics.plugin_load(name, false);
                    self.ops.emit(Happening::PluginLoadFailed { plugin: name.into(), error: error.to_string() });
                }
                tracing::error!(
                    plugin = name,
                    file = file.map(|f| f.display().to_string()),
                    sha256,
                    %error,
                    serving = ?self.registry.current(name).map(|p| p.sha256().to_string()),
                    "plugin failed to load; the serving version (if any) keeps serving"
                );
                return Err(error.into());
            }
        };
        let version = PluginVersion {
            plugin: name.into(),
            sha256: sha256.clone(),
            size: wasm.len() as u64,
            uploaded_at_ms: now_ms(),
            uploaded_by: uploaded_by.into(),
        };
        let new = self.store.put_plugin_version(version.clone(), wasm).await.map_err(DeployError::Store)?;
        if activate {
            let activation =
                PluginActivation { plugin: name.into(), sha256: sha256.clone(), canary: None, by_file: file.is_some() };
            self.store.activate_plugin(activation).await.map_err(DeployError::Store)?;
            // A new serving version ends any canary.
            self.registry.set_canary(name, None);
            self.serve(name, plugin, file).await;
        }
        self.prune(name).await;
        tracing::info!(plugin = name, sha256, new, activated = activate, uploaded_by, "plugin version deployed");
        Ok(Deployed { version, new, activated: activate })
    }

    /// Makes the stored version of `name` whose sha256 starts with `sha256_prefix` serve:
    /// all deliveries, or `percent` of them as a canary beside the serving version.
    pub async fn activate(
        &self,
        name: &str,
        sha256_prefix: &str,
        percent: Option<u8>,
    ) -> Result<PluginActivation, DeployError> {
        let turn = self.turn.lock().await;
        let activation = self.activate_locked(name, sha256_prefix, percent).await?;
        drop(turn);
        if let Err(error) = self.apply().await {
            tracing::warn!(plugin = name, error = format!("{error:#}"), "applying the stored plugin versions failed");
        }
        Ok(activation)
    }

    async fn activate_locked(
        &self,
        name: &str,
        sha256_prefix: &str,
        percent: Option<u8>,
    ) -> Result<PluginActivation, DeployError> {
        let sha256 = self.resolve(name, sha256_prefix).await?;
        let plugin = self.load_stored(name, &sha256).await?;
        let canary_percent = percent.filter(|p| *p < 100);
        let activation = match canary_percent {
            None => PluginActivation { plugin: name.into(), sha256: sha256.clone(), canary: None, by_file: false },
            Some(percent) => {
                let Some(serving) = self.activation(name).await? else {
                    return Err(DeployError::Conflict(format!(
                        "plugin `{name}` has no serving version for a canary to run beside; activate one first"
                    )));
                };
                if serving.sha256 == sha256 {
                    return Err(DeployError::Conflict(format!("{sha256} is the serving version of `{name}` already")));
                }
                let since_ms = match &serving.canary {
                    Some(canary) if canary.sha256 == sha256 => canary.since_ms,
                    _ => now_ms(),
                };
                PluginActivation { canary: Some(Canary { sha256: sha256.clone(), percent, since_ms }), ..serving }
            }
        };
        self.store.activate_plugin(activation.clone()).await.map_err(DeployError::Store)?;
        match &activation.canary {
            None => {
                self.registry.set_canary(name, None);
                self.serve(name, plugin, None).await;
            }
            Some(canary) => {
                self.registry.set_canary(name, Some((plugin, canary.percent, canary.since_ms)));
                tracing::info!(plugin = name, canary = sha256, percent = canary.percent, "plugin canary started");
            }
        }
        self.prune(name).await;
        Ok(activation)
    }

    /// Deletes the versions of `name` beyond `keep_versions`, except those serving: after a
    /// deploy or an activation, so the version it replaced counts as an old one.
    async fn prune(&self, name: &str) {
        if let Err(error) = self.store.prune_plugin_versions(name, self.keep_versions).await {
            tracing::warn!(plugin = name, %error, "pruning old plugin versions failed");
        }
    }

    /// Makes the canary of `name` serve every delivery.
    pub async fn promote(&self, name: &str) -> Result<PluginActivation, DeployError> {
        let turn = self.turn.lock().await;
        let canary = self.activation(name).await?.and_then(|a| a.canary);
        let Some(canary) = canary else {
            return Err(DeployError::Conflict(format!("plugin `{name}` has no canary to promote")));
        };
        let activation = self.activate_locked(name, &canary.sha256, None).await?;
        drop(turn);
        Ok(activation)
    }

    /// What the store says serves for `name`.
    async fn activation(&self, name: &str) -> Result<Option<PluginActivation>, DeployError> {
        let activations = self.store.plugin_activations().await.map_err(DeployError::Store)?;
        Ok(activations.into_iter().find(|a| a.plugin == name))
    }

    /// A version to try without serving it (a dry run's candidate): `wasm` if given, else
    /// the stored version `sha256_prefix` names. Checked as a deploy is.
    pub async fn candidate(
        &self,
        name: &str,
        wasm: Option<Vec<u8>>,
        sha256_prefix: Option<&str>,
    ) -> Result<Plugin, DeployError> {
        match (wasm, sha256_prefix) {
            (Some(wasm), _) => Ok(self.load_checked(name, wasm).await?),
            (None, Some(prefix)) => {
                let sha256 = self.resolve(name, prefix).await?;
                self.load_stored(name, &sha256).await
            }
            (None, None) => Err(DeployError::Conflict("give a candidate: a component as the body, or `sha256`".into())),
        }
    }

    /// The stored version of `name` that `prefix` names.
    async fn resolve(&self, name: &str, prefix: &str) -> Result<String, DeployError> {
        let prefix = prefix.to_ascii_lowercase();
        if prefix.len() < 4 || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DeployError::BadInput(format!(
                "{prefix:?} is not a sha256 or a prefix of one (at least 4 hex digits)"
            )));
        }
        let versions = self.store.plugin_versions(name).await.map_err(DeployError::Store)?;
        let matching: Vec<&PluginVersion> = versions.iter().filter(|v| v.sha256.starts_with(&prefix)).collect();
        match matching.as_slice() {
            [] if versions.is_empty() => Err(DeployError::NotFound(format!("plugin `{name}` has no stored versions"))),
            [] => Err(DeployError::NotFound(format!("plugin `{name}` has no stored version {prefix}"))),
            [one] => Ok(one.sha256.clone()),
            many => Err(DeployError::Conflict(format!(
                "{prefix} names {} versions of `{name}`; give more of the sha256",
                many.len()
            ))),
        }
    }

    /// A stored version, loaded (from the compile cache when it is there) and checked
    /// against the configs of the webhooks that use it.
    async fn load_stored(&self, name: &str, sha256: &str) -> Result<Plugin, DeployError> {
        let wasm = self.store.plugin_wasm(name, sha256).await.map_err(DeployError::Store)?;
        let wasm =
            wasm.ok_or_else(|| DeployError::NotFound(format!("plugin `{name}` has no stored version {sha256}")))?;
        Ok(self.load_checked(name, wasm).await?)
    }

    /// Loads `wasm` off the async runtime and checks it against every webhook's config. A
    /// load still running after [`SLOW_LOAD`] is logged (it goes on: nothing else waits for
    /// it).
    async fn load_checked(&self, name: &str, wasm: Vec<u8>) -> Result<Plugin, RegistryError> {
        let (registry, configs, plugin) = (self.registry.clone(), self.webhooks.plugin_configs(name), name.to_string());
        let started = std::time::Instant::now();
        let mut checked = tokio::task::spawn_blocking(move || {
            let plugin = registry.runtime().load(&plugin, &wasm)?;
            registry.check(&plugin, &configs)?;
            Ok(plugin)
        });
        let checked = tokio::select! {
            checked = &mut checked => checked,
            () = tokio::time::sleep(SLOW_LOAD) => {
                tracing::warn!(
                    plugin = name,
                    after = ?SLOW_LOAD,
                    "plugin load still running (compiles run at low priority while deliveries use the CPU); other reloads go on"
                );
                let checked = checked.await;
                tracing::warn!(plugin = name, took = ?started.elapsed(), "slow plugin load finished");
                checked
            }
        };
        checked.unwrap_or_else(|error| {
            Err(RegistryError::Load(LoadError::Invalid {
                plugin: name.into(),
                reason: format!("the load did not complete: {error}"),
            }))
        })
    }

    /// Puts a checked version in effect and re-queues what was held for lack of it.
    async fn serve(&self, name: &str, plugin: Plugin, file: Option<&Path>) {
        let sha256 = plugin.sha256().to_string();
        let (load_source, load_ms) = (plugin.load_source(), plugin.load_time().as_millis() as u64);
        if self.registry.install(name, Ok(plugin), &[], file).is_ok() {
            self.metrics.plugin_load(name, true);
            tracing::info!(plugin = name, sha256, source = ?load_source, load_ms, "plugin serving");
        }
        self.requeue_held(name).await;
    }

    /// Sends the held deliveries of the webhooks that use `name` back to the queue, to be
    /// transformed by the version serving now.
    async fn requeue_held(&self, name: &str) {
        let users: Vec<String> = self.webhooks.using_plugin(name).iter().map(|w| w.config.id.clone()).collect();
        if users.is_empty() {
            return;
        }
        match self.store.requeue_held(users).await {
            Ok(0) => {}
            Ok(count) => {
                tracing::info!(plugin = name, count, "re-queued held deliveries");
                self.wake.notify_one();
            }
            Err(error) => tracing::error!(%error, "re-queueing held deliveries failed"),
        }
    }

    /// Brings the registry in line with the versions the store says serve: loads what it
    /// lacks (from the compile cache when it is there), starts, changes or ends canaries,
    /// and withdraws plugins the store no longer serves. A plugin that cannot be brought in
    /// line is logged and left as it is; the others go on.
    pub async fn apply(&self) -> anyhow::Result<()> {
        let _turn = self.turn.lock().await;
        let activations = self.store.plugin_activations().await?;
        for activation in &activations {
            let name = activation.plugin.as_str();
            let serving = self.registry.current(name).map(|p| p.sha256().to_string());
            if serving.as_deref() != Some(activation.sha256.as_str())
                && let Some(plugin) = self.load_once(name, &activation.sha256, false).await
            {
                self.serve(name, plugin, None).await;
            }
            let running = self.registry.canary(name);
            let wanted = activation.canary.as_ref().map(|c| (c.sha256.clone(), c.percent, c.since_ms));
            if running == wanted {
                continue;
            }
            match &activation.canary {
                None => {
                    self.registry.set_canary(name, None);
                    tracing::info!(plugin = name, "plugin canary ended");
                    // What it held here goes out through the serving version.
                    self.requeue_held(name).await;
                }
                // A new canary, or a new share for this one (its counts go on).
                Some(canary) => {
                    if let Some(plugin) = self.load_once(name, &canary.sha256, true).await {
                        self.registry.set_canary(name, Some((plugin, canary.percent, canary.since_ms)));
                        tracing::info!(
                            plugin = name,
                            canary = canary.sha256,
                            percent = canary.percent,
                            "plugin canary serving"
                        );
                    }
                }
            }
        }
        for status in self.registry.statuses() {
            if status.sha256.is_some() && !activations.iter().any(|a| a.plugin == status.name) {
                self.registry.unload(&status.name);
                tracing::warn!(
                    plugin = status.name,
                    "plugin withdrawn: its deliveries are held until a version serves"
                );
            }
        }
        Ok(())
    }

    /// Loads stored version `sha256` of `name` for [`Deployer::apply`], unless it already
    /// failed here with the webhooks as they are: a version this host cannot load is
    /// reported once, not every poll.
    async fn load_once(&self, name: &str, sha256: &str, canary: bool) -> Option<Plugin> {
        let key = if canary { format!("{name} canary") } else { name.to_string() };
        let attempt = (sha256.to_string(), self.webhooks.generation());
        if self.failed_loads.lock().unwrap_or_else(|e| e.into_inner()).get(&key) == Some(&attempt) {
            return None;
        }
        match self.load_stored(name, sha256).await {
            Ok(plugin) => {
                self.failed_loads.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
                Some(plugin)
            }
            Err(error) => {
                if let DeployError::Invalid(error) = &error
                    && !canary
                {
                    self.registry.record_failure(name, error, None);
                    self.metrics.plugin_load(name, false);
                }
                tracing::error!(plugin = name, sha256, canary, %error, "a stored version that should serve does not load here");
                self.failed_loads.lock().unwrap_or_else(|e| e.into_inner()).insert(key, attempt);
                None
            }
        }
    }

    /// Acts on `path` in the plugins folder: a new or changed file is deployed by `file` and
    /// activated, unless it is the file last deployed for the plugin and some version serves
    /// (a host restarting, or a file touched, must not undo an activation since). A removed
    /// file withdraws the plugin if that file's deploy made the serving version serve.
    pub async fn file_changed(&self, name: &str, path: &Path) {
        let bytes = match self.registry.runtime().read_file(name, path) {
            Ok(bytes) => bytes,
            Err(LoadError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return self.file_removed(name, path).await;
            }
            Err(error) => {
                let error = RegistryError::from(error);
                self.registry.record_failure(name, &error, Some(path));
                self.metrics.plugin_load(name, false);
                self.ops.emit(Happening::PluginLoadFailed { plugin: name.into(), error: error.to_string() });
                tracing::error!(plugin = name, file = %path.display(), %error, "plugin failed to load; the serving version (if any) keeps serving");
                return;
            }
        };
        let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
        // The newest read names what the folder holds: a load of an older read that ends
        // after it is dropped, not deployed over it.
        self.files.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), sha256.clone());
        if !self.file_needs_deploy(name, path, &sha256).await {
            return;
        }
        let loaded = self.load_checked(name, bytes.clone()).await;
        let _turn = self.turn.lock().await;
        if self.files.lock().unwrap_or_else(|e| e.into_inner()).get(name) != Some(&sha256) {
            tracing::info!(
                plugin = name,
                sha256,
                "plugin file replaced or removed while it loaded; the newer state applies"
            );
            return;
        }
        if self.registry.confirm(name, &sha256) {
            return;
        }
        match self.commit(name, bytes, loaded, "file", true, Some(path)).await {
            Ok(_) => {
                if let Err(error) = self.store.set_plugin_file(name, &sha256).await {
                    tracing::warn!(plugin = name, %error, "recording the deployed file failed");
                }
            }
            // A refused version is logged and reported by the deploy itself.
            Err(DeployError::Store(error)) => {
                tracing::error!(plugin = name, file = %path.display(), error = format!("{error:#}"), "storing the plugin version failed")
            }
            Err(_) => {}
        }
    }

    /// Whether plugin file `path` (of `sha256`) is to be deployed: not when it is the serving
    /// version, nor when it is the file last deployed for the plugin and some version serves.
    async fn file_needs_deploy(&self, name: &str, path: &Path, sha256: &str) -> bool {
        let _turn = self.turn.lock().await;
        if self.registry.confirm(name, sha256) {
            tracing::debug!(plugin = name, "plugin file is the serving version");
            return false;
        }
        let known = async {
            let last_file = self.store.plugin_file(name).await?;
            let served = self.activation(name).await?.is_some();
            anyhow::Ok(served && last_file.as_deref() == Some(sha256))
        };
        match known.await {
            Ok(true) => {
                tracing::info!(plugin = name, file = %path.display(), sha256, "plugin file was deployed before; the version activated since serves");
                false
            }
            Ok(false) => true,
            Err(error) => {
                tracing::error!(
                    plugin = name,
                    error = format!("{error:#}"),
                    "reading stored plugin versions failed; the file is not deployed"
                );
                false
            }
        }
    }

    async fn file_removed(&self, name: &str, path: &Path) {
        let _turn = self.turn.lock().await;
        let file_sha = self.files.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
        let activation = match self.activation(name).await {
            Ok(activation) => activation,
            Err(error) => {
                tracing::error!(plugin = name, %error, "reading the serving version failed; the plugin keeps serving");
                return;
            }
        };
        let by_this_file = activation.is_some_and(|a| a.by_file && Some(&a.sha256) == file_sha.as_ref());
        if !by_this_file {
            tracing::info!(plugin = name, file = %path.display(), "plugin file removed; its deploy is not what serves, which keeps serving");
            return;
        }
        if let Err(error) = self.store.deactivate_plugin(name).await {
            tracing::error!(plugin = name, %error, "withdrawing the plugin in the store failed; it keeps serving");
            return;
        }
        if self.registry.unload(name) {
            tracing::warn!(plugin = name, file = %path.display(), "plugin file removed: unloaded; its deliveries are held until it returns");
        }
    }

    /// Rolls back every canary of this host whose share of held deliveries exceeds the
    /// serving version's by more than the policy allows.
    pub async fn judge_canaries(&self) {
        for status in self.registry.statuses() {
            let Some(canary) = &status.canary else { continue };
            let (candidate, serving) = (canary.candidate, canary.serving);
            if candidate.transforms < self.canary_policy.min_calls {
                continue;
            }
            let extra = candidate.held_rate() - serving.held_rate();
            if extra <= self.canary_policy.max_extra_held {
                continue;
            }
            let reason = format!(
                "held {} of {} deliveries ({:.1}%) against {} of {} ({:.1}%) for the serving version",
                candidate.held,
                candidate.transforms,
                100.0 * candidate.held_rate(),
                serving.held,
                serving.transforms,
                100.0 * serving.held_rate()
            );
            let _turn = self.turn.lock().await;
            match self.store.end_canary(&status.name, &canary.sha256).await {
                // Another host ended it, or a newer canary replaced it: applying the store's
                // state brings this host in line.
                Ok(false) => {}
                Ok(true) => {
                    self.registry.set_canary(&status.name, None);
                    tracing::warn!(plugin = status.name, canary = canary.sha256, reason, "plugin canary rolled back");
                    self.ops.emit(Happening::PluginRolledBack {
                        plugin: status.name.clone(),
                        candidate: canary.sha256.clone(),
                        serving: status.sha256.clone().unwrap_or_default(),
                        reason,
                    });
                    self.requeue_held(&status.name).await;
                }
                Err(error) => {
                    tracing::error!(plugin = status.name, %error, "rolling the canary back failed; trying again")
                }
            }
        }
    }
}

/// Follows the store's serving versions (on another host's announcement, and every
/// [`FOLLOW_EVERY`]) and judges canaries, until `shutdown` turns true.
pub async fn follow(deployer: Arc<Deployer>, changed: Option<Arc<Notify>>, mut shutdown: watch::Receiver<bool>) {
    let mut poll = tokio::time::interval(FOLLOW_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let announced = async |changed: &Option<Arc<Notify>>| match changed {
        Some(changed) => changed.notified().await,
        None => std::future::pending().await,
    };
    while !*shutdown.borrow() {
        tokio::select! {
            _ = poll.tick() => {}
            _ = announced(&changed) => {}
            _ = shutdown.changed() => continue,
        }
        if let Err(error) = deployer.apply().await {
            tracing::warn!(error = format!("{error:#}"), "reading the serving plugin versions failed; trying again");
        }
        deployer.judge_canaries().await;
    }
}
