//! Hosts sharing a store (PostgreSQL): this host brings its webhooks and their runtime
//! disabled state (410 Gone, an operator's disable) in line with the database when another
//! host announces a change, and every [`SYNC_EVERY`] in any case, so a lost announcement
//! delays a change by a second at most. It also wakes the delivery worker when another host
//! announces deliveries it will not send itself.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::store::{ChangeSignals, DisabledWebhook, Store};
use crate::webhooks::{Source, Webhooks};

pub const SYNC_EVERY: Duration = Duration::from_secs(1);

type Snapshot = (Vec<(String, String)>, BTreeMap<String, DisabledWebhook>);

/// Follows the store until `shutdown` turns true.
pub async fn run(
    store: Arc<dyn Store>,
    webhooks: Arc<Webhooks>,
    signals: ChangeSignals,
    wake_worker: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    // The snapshot last put in effect, and the set's generation right after: a change made
    // on this host since then (a write that failed to reach the store, a reply that landed
    // after a newer snapshot) is undone by the next poll even when the store has not changed.
    let mut last: Option<(Snapshot, u64)> = None;
    // An interval, not a sleep per turn: queue signals must not postpone the poll.
    let mut poll = tokio::time::interval(SYNC_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*shutdown.borrow() {
        tokio::select! {
            _ = poll.tick() => {}
            _ = signals.webhooks.notified() => {}
            _ = signals.queue.notified() => {
                wake_worker.notify_one();
                continue;
            }
            _ = shutdown.changed() => continue,
        }
        // A change made on this host while the store is read is missing from what was
        // read: then read again.
        loop {
            let generation = webhooks.generation();
            let snapshot = match (store.stored_webhooks().await, store.disabled_webhooks().await) {
                (Ok(stored), Ok(disabled)) => (stored, disabled),
                (Err(error), _) | (_, Err(error)) => {
                    tracing::warn!(%error, "reading webhooks from the shared store failed; trying again");
                    break;
                }
            };
            if last.as_ref().is_some_and(|(seen, applied)| *seen == snapshot && *applied == generation) {
                break;
            }
            if apply(&webhooks, generation, &snapshot) {
                last = Some((snapshot, webhooks.generation()));
                break;
            }
        }
    }
}

/// Whether the snapshot was put in effect (see [`Webhooks::replace_from_store`]).
fn apply(webhooks: &Webhooks, generation: u64, (stored, disabled): &Snapshot) -> bool {
    let from_config: HashSet<String> =
        webhooks.all().iter().filter(|w| w.source == Source::Config).map(|w| w.config.id.clone()).collect();
    let api = crate::webhooks::from_stored_rows(stored, &from_config, None);
    let disabled = disabled.iter().map(|(id, d)| (id.clone(), (d.url.clone(), d.reason.clone()))).collect();
    webhooks.replace_from_store(generation, api, disabled)
}
