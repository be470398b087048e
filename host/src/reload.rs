//! Hot reload: watches `plugins_dir` and the config file (their folders, not the files:
//! editors and `mv` replace the inode), debounces bursts, and applies changes without ever
//! breaking delivery.
//!
//! - A plugin file that appears or changes is deployed ([`crate::deploy`]): compiled off the
//!   async runtime, validated, checked against every webhook configuration that uses it,
//!   stored as a version and only then swapped in; deliveries already running finish on the
//!   old version. A failed load keeps the previous version serving and is reported (log line
//!   naming the file, plugin status, counter). A good load re-queues the `held` deliveries of
//!   the webhooks that use the plugin.
//! - A removed plugin file withdraws the plugin if the file's version is the one serving:
//!   its deliveries are held until a version serves again.
//! - An edited config file replaces the `[[webhooks]]` as a whole, or not at all.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::Watcher;
use tokio::sync::{Notify, mpsc, watch};

use crate::config::{Config, WatchMode};
use crate::plugins::{Registry, plugin_name};
use crate::store::Store;
use crate::webhooks::{Source, Webhook, Webhooks};

/// Quiet time after the last change to a file before it is acted on, for changes that may
/// be part of a burst (create, write).
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// How long after `kind` of event to act on a file: at once when the event says the file is
/// complete (a rename into place, the documented way to deploy, or the close of a file
/// opened for writing), after [`DEBOUNCE`] for other changes, never for reads (reading the
/// config would loop).
fn settle_time(kind: &notify::EventKind) -> Option<Duration> {
    use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
    match kind {
        notify::EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
        | notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(Duration::ZERO),
        notify::EventKind::Access(_) => None,
        _ => Some(DEBOUNCE),
    }
}

pub struct Reloader {
    pub deployer: Arc<crate::deploy::Deployer>,
    pub registry: Arc<Registry>,
    pub webhooks: Arc<Webhooks>,
    pub store: Arc<dyn Store>,
    pub wake: Arc<Notify>,
    pub config: std::sync::Mutex<Config>,
    pub config_path: Option<PathBuf>,
}

impl Reloader {
    /// Acts on a change to `path` in the plugins directory: a deploy by `file` (see
    /// [`crate::deploy`]).
    pub async fn plugin_changed(&self, path: &Path) {
        let Some(name) = plugin_name(path) else { return };
        self.deployer.file_changed(&name, path).await;
    }

    /// Re-reads the config file and applies its `[[webhooks]]` if they are all valid.
    pub async fn config_changed(&self) {
        let Some(path) = &self.config_path else { return };
        match self.apply_config(path).await {
            Ok(Some(count)) => tracing::info!(webhooks = count, file = %path.display(), "webhooks reloaded"),
            Ok(None) => tracing::debug!("config file unchanged"),
            Err(error) => {
                tracing::error!(file = %path.display(), error = format!("{error:#}"), "config edit rejected; the running webhooks stay")
            }
        }
    }

    async fn apply_config(&self, path: &Path) -> anyhow::Result<Option<usize>> {
        let new = Config::load(Some(path), std::env::vars())?;
        let old = self.config.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if new.webhooks == old.webhooks {
            return Ok(None);
        }
        if format!("{:?}{:?}{:?}", new.server, new.delivery, new.plugins)
            != format!("{:?}{:?}{:?}", old.server, old.delivery, old.plugins)
        {
            tracing::warn!("only [[webhooks]] apply without a restart; other changes wait for the next start");
        }
        let data_dir = old.server.data_dir.clone();
        let resolved = new
            .webhooks
            .iter()
            .cloned()
            .map(|w| Webhook::resolve(w, Source::Config, &data_dir))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let stored = self.webhooks.all();
        if let Some(clash) =
            resolved.iter().find(|w| stored.iter().any(|s| s.source == Source::Api && s.config.id == w.config.id))
        {
            anyhow::bail!("webhook id {:?} is already used by a webhook created through the API", clash.config.id);
        }
        // Every plugin version serving (a canary too) must accept its new webhook configurations.
        for webhook in &resolved {
            let name = webhook.config.plugin.as_deref();
            for plugin in name.map(|name| self.registry.serving_versions(name)).unwrap_or_default() {
                let config = webhook.plugin_config.clone();
                let check = tokio::task::spawn_blocking(move || plugin.check_config(&config)).await?;
                if let Err(error) = check.result {
                    anyhow::bail!("webhook `{}`: {error}", webhook.config.id);
                }
            }
        }
        let changed: Vec<String> =
            new.webhooks.iter().filter(|w| !old.webhooks.contains(w)).map(|w| w.id.clone()).collect();
        let count = resolved.len();
        self.webhooks.replace_source(Source::Config, resolved);
        self.config.lock().unwrap_or_else(|e| e.into_inner()).webhooks = new.webhooks;
        self.requeue_held(changed).await;
        Ok(Some(count))
    }

    async fn requeue_held(&self, webhook_ids: Vec<String>) {
        if webhook_ids.is_empty() {
            return;
        }
        match self.store.requeue_held(webhook_ids).await {
            Ok(0) => {}
            Ok(count) => {
                tracing::info!(count, "re-queued held deliveries");
                self.wake.notify_one();
            }
            Err(error) => tracing::error!(%error, "re-queueing held deliveries failed"),
        }
    }
}

enum Change {
    Plugin(PathBuf),
    Config,
}

/// Watches the plugins directory and the config file until `shutdown`, applying changes.
/// Returns the watcher task; the watchers live inside it.
pub fn spawn(
    reloader: Arc<Reloader>,
    plugins_dir: PathBuf,
    mode: WatchMode,
    poll_interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (sender, mut changes) = mpsc::unbounded_channel::<(PathBuf, Duration)>();
    let handler = move |event: notify::Result<notify::Event>| match event {
        Ok(event) => {
            let Some(settle) = settle_time(&event.kind) else { return };
            for path in event.paths {
                let _ = sender.send((path, settle));
            }
        }
        Err(error) => tracing::warn!(%error, "file watcher error"),
    };
    let mut watcher: Box<dyn Watcher + Send> = match mode {
        WatchMode::Off => return Ok(tokio::spawn(async {})),
        WatchMode::Notify => Box::new(notify::recommended_watcher(handler)?),
        WatchMode::Poll => Box::new(notify::PollWatcher::new(
            handler,
            notify::Config::default().with_poll_interval(poll_interval).with_compare_contents(true),
        )?),
    };
    std::fs::create_dir_all(&plugins_dir)?;
    watcher.watch(&plugins_dir, notify::RecursiveMode::NonRecursive)?;
    let plugins_dir = plugins_dir.canonicalize()?;
    let config_file = match &reloader.config_path {
        Some(path) => {
            let path = path.canonicalize()?;
            let folder = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
            if folder != plugins_dir {
                watcher.watch(&folder, notify::RecursiveMode::NonRecursive)?;
            }
            Some(path)
        }
        None => None,
    };
    tracing::info!(dir = %plugins_dir.display(), mode = ?mode, "watching for plugin and config changes");

    Ok(tokio::spawn(async move {
        let _watcher = watcher;
        let mut pending: HashMap<PathBuf, Instant> = HashMap::new();
        loop {
            let next = pending.values().min().copied();
            tokio::select! {
                Some((path, settle)) = changes.recv() => {
                    pending.insert(path, Instant::now() + settle);
                    continue;
                }
                _ = sleep_until(next) => {}
                _ = shutdown.changed() => return,
            }
            let now = Instant::now();
            let due: HashSet<PathBuf> = pending.iter().filter(|(_, at)| **at <= now).map(|(p, _)| p.clone()).collect();
            pending.retain(|path, _| !due.contains(path));
            for path in due {
                match classify(&path, &plugins_dir, config_file.as_deref()) {
                    Some(Change::Plugin(path)) => reloader.plugin_changed(&path).await,
                    Some(Change::Config) => reloader.config_changed().await,
                    None => {}
                }
            }
        }
    }))
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

fn classify(path: &Path, plugins_dir: &Path, config_file: Option<&Path>) -> Option<Change> {
    let folder = path.parent()?;
    if Some(path) == config_file {
        return Some(Change::Config);
    }
    let same_folder = folder == plugins_dir || folder.canonicalize().ok().as_deref() == Some(plugins_dir);
    let file = path.file_name()?;
    (same_folder && plugin_name(path).is_some()).then(|| Change::Plugin(plugins_dir.join(file)))
}
