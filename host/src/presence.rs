//! Hosts sharing a store report themselves every [`REPORT_EVERY`]: alive, and the plugin
//! versions they serve, so `GET /v1/plugins` on any host shows, per plugin, the sha256 every
//! live host serves (drift is visible). A host unseen for [`LIVE_WITHIN`] is no longer
//! listed; a host that stops removes its report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::plugins::Registry;
use crate::store::Store;

pub const REPORT_EVERY: Duration = Duration::from_secs(2);
pub const LIVE_WITHIN: Duration = Duration::from_secs(10);

/// Plugin name -> sha256 of the version serving on this host (`None`: known, not serving).
pub fn serving(registry: &Registry) -> BTreeMap<String, Option<String>> {
    registry.statuses().into_iter().map(|status| (status.name, status.sha256)).collect()
}

/// Reports `host` until `shutdown` turns true, then removes its report.
pub async fn run(store: Arc<dyn Store>, registry: Arc<Registry>, host: String, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(REPORT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    while !*shutdown.borrow() {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.changed() => continue,
        }
        match store.report_host(&host, &serving(&registry)).await {
            Ok(()) => failing = false,
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "reporting this host to the shared store failed; other hosts may not list it");
            }
            Err(_) => {}
        }
    }
    if let Err(error) = store.forget_host(&host).await {
        tracing::debug!(%error, "removing this host's report failed; it ages out");
    }
}
