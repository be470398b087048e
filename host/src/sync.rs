//! Hosts sharing a store (PostgreSQL): every [`SYNC_EVERY`] this host brings its webhooks
//! created through the API, and the runtime-disabled state of all webhooks (410 Gone, an
//! operator's disable), in line with the database, so a change made on any host takes effect
//! on every host within about a second. Polling, not notifications: a missed change cannot
//! be lost, only seen at the next poll.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::store::{DisabledWebhook, Store};
use crate::webhooks::{Source, StoredWebhook, Webhook, Webhooks};

pub const SYNC_EVERY: Duration = Duration::from_secs(1);

type Snapshot = (Vec<(String, String)>, BTreeMap<String, DisabledWebhook>);

/// Polls until `shutdown` turns true.
pub async fn run(
    store: Arc<dyn Store>,
    webhooks: Arc<Webhooks>,
    data_dir: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last: Option<Snapshot> = None;
    while !*shutdown.borrow() {
        tokio::select! {
            _ = tokio::time::sleep(SYNC_EVERY) => {}
            _ = shutdown.changed() => continue,
        }
        let snapshot = match (store.stored_webhooks().await, store.disabled_webhooks().await) {
            (Ok(stored), Ok(disabled)) => (stored, disabled),
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%error, "reading webhooks from the shared store failed; trying again");
                continue;
            }
        };
        if last.as_ref() == Some(&snapshot) {
            continue;
        }
        apply(&webhooks, &snapshot, &data_dir);
        last = Some(snapshot);
    }
}

fn apply(webhooks: &Webhooks, (stored, disabled): &Snapshot, data_dir: &std::path::Path) {
    let from_config: HashSet<String> =
        webhooks.all().iter().filter(|w| w.source == Source::Config).map(|w| w.config.id.clone()).collect();
    let mut api = Vec::new();
    for (id, definition) in stored {
        if from_config.contains(id) {
            continue;
        }
        let resolved = StoredWebhook::parse(definition).and_then(|stored| Webhook::from_store(stored, data_dir));
        match resolved {
            Ok(webhook) => api.push(webhook),
            Err(error) => {
                tracing::error!(webhook = id, error = %format!("{error:#}"), "a webhook stored by another host is not valid here")
            }
        }
    }
    webhooks.replace_source(Source::Api, api);
    webhooks.set_disabled(disabled.iter().map(|(id, d)| (id.clone(), (d.url.clone(), d.reason.clone()))).collect());
}
