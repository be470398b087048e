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
//!
//! Each plugin change runs as its own task: a slow first compile (low priority while
//! deliveries use the CPU) is logged and never delays later changes; of two loads of the same
//! file, the one that read it last decides. The folder is also compared with what the watcher
//! reported every [`RESCAN_EVERY`] and when the watcher says it lost events, so a lost event
//! delays a change instead of losing it.

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

/// How often the plugins folder is compared with what the watcher reported.
pub const RESCAN_EVERY: Duration = Duration::from_secs(10);

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

/// What the file watcher saw.
enum Seen {
    /// A change to a path, to act on once it has settled for the given time.
    Path(PathBuf, Duration),
    /// The watcher lost events: every plugin file is looked at again.
    Rescan,
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
    let (sender, mut changes) = mpsc::unbounded_channel::<Seen>();
    let handler = move |event: notify::Result<notify::Event>| match event {
        Ok(event) => {
            if event.need_rescan() {
                let _ = sender.send(Seen::Rescan);
            }
            let Some(settle) = settle_time(&event.kind) else { return };
            for path in event.paths {
                let _ = sender.send(Seen::Path(path, settle));
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
        let mut folder = FolderState::read(&plugins_dir);
        let mut rescan = tokio::time::interval_at((Instant::now() + RESCAN_EVERY).into(), RESCAN_EVERY);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Dropped on shutdown, which aborts the reloads still running.
        let mut reloads = tokio::task::JoinSet::new();
        loop {
            let next = pending.values().min().copied();
            tokio::select! {
                Some(seen) = changes.recv() => {
                    match seen {
                        Seen::Path(path, settle) => {
                            pending.insert(path, Instant::now() + settle);
                        }
                        Seen::Rescan => {
                            tracing::warn!(dir = %plugins_dir.display(), "the file watcher lost events; looking at every plugin file again");
                            for path in folder.every_path(&plugins_dir) {
                                pending.insert(path, Instant::now());
                            }
                        }
                    }
                    continue;
                }
                _ = rescan.tick() => {
                    for path in folder.unannounced_changes(&plugins_dir) {
                        // A change the watcher reported that is still settling is not missed.
                        if pending.contains_key(&path) {
                            continue;
                        }
                        tracing::warn!(file = %path.display(), "plugin file changed without a watcher event; applying it");
                        pending.insert(path, Instant::now());
                    }
                    continue;
                }
                Some(_) = reloads.join_next(), if !reloads.is_empty() => continue,
                _ = sleep_until(next) => {}
                _ = shutdown.changed() => return,
            }
            let now = Instant::now();
            let due: HashSet<PathBuf> = pending.iter().filter(|(_, at)| **at <= now).map(|(p, _)| p.clone()).collect();
            pending.retain(|path, _| !due.contains(path));
            for path in due {
                match classify(&path, &plugins_dir, config_file.as_deref()) {
                    Some(Change::Plugin(path)) => {
                        folder.note(&path);
                        let reloader = reloader.clone();
                        reloads.spawn(async move { reloader.plugin_changed(&path).await });
                    }
                    Some(Change::Config) => reloader.config_changed().await,
                    None => {}
                }
            }
        }
    }))
}

/// The plugin files of the folder as last looked at: what tells a change the watcher did
/// not report from one it did.
struct FolderState {
    files: HashMap<PathBuf, FileStamp>,
    /// Why the folder could not be read at the last rescan, if it could not: logged when that
    /// starts, not at every rescan.
    unreadable: Option<String>,
}

/// Size, modification time and inode: a rename into place changes the inode even when the
/// other two match.
#[derive(PartialEq)]
struct FileStamp(u64, Option<std::time::SystemTime>, u64);

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path).ok()?;
        Some(FileStamp(metadata.len(), metadata.modified().ok(), metadata.ino()))
    }
}

impl FolderState {
    fn read(dir: &Path) -> FolderState {
        match crate::plugins::list_plugin_files(dir) {
            Ok(files) => FolderState {
                files: files.into_iter().filter_map(|(_, path)| Some((path.clone(), FileStamp::of(&path)?))).collect(),
                unreadable: None,
            },
            Err(error) => FolderState { files: HashMap::new(), unreadable: Some(error.to_string()) },
        }
    }

    /// `path` is being acted on as it is now.
    fn note(&mut self, path: &Path) {
        match FileStamp::of(path) {
            Some(stamp) => self.files.insert(path.to_path_buf(), stamp),
            None => self.files.remove(path),
        };
    }

    /// The plugin files known or present now.
    fn every_path(&self, dir: &Path) -> HashSet<PathBuf> {
        let present = crate::plugins::plugin_files(dir).into_iter().map(|(_, path)| path);
        self.files.keys().cloned().chain(present).collect()
    }

    /// The plugin files added, changed or removed since they were last noted, now noted.
    fn unannounced_changes(&mut self, dir: &Path) -> Vec<PathBuf> {
        let now = FolderState::read(dir);
        if let Some(error) = now.unreadable {
            // Nothing is known of the files then: the loaded versions keep serving, and
            // the files as last seen are compared again once the folder can be read.
            if self.unreadable.is_none() {
                tracing::warn!(dir = %dir.display(), %error, "cannot read the plugins directory; the loaded plugins keep serving");
            }
            self.unreadable = Some(error);
            return Vec::new();
        }
        let changed: Vec<PathBuf> = self
            .files
            .keys()
            .chain(now.files.keys())
            .filter(|path| self.files.get(*path) != now.files.get(*path))
            .cloned()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        *self = now;
        changed
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_that_cannot_be_read_changes_nothing_until_it_can() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("plugins.d");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("kept.wasm"), b"one").unwrap();
        std::fs::write(dir.join("changed.wasm"), b"one").unwrap();
        let mut folder = FolderState::read(&dir);

        let moved = root.path().join("elsewhere");
        std::fs::rename(&dir, &moved).unwrap();
        assert_eq!(folder.unannounced_changes(&dir), Vec::<PathBuf>::new(), "nothing is known of the files");
        assert!(folder.unreadable.is_some());

        std::fs::write(moved.join("changed.wasm"), b"two, longer").unwrap();
        std::fs::rename(&moved, &dir).unwrap();
        assert_eq!(folder.unannounced_changes(&dir), vec![dir.join("changed.wasm")]);
        assert!(folder.unreadable.is_none());
    }
}
