//! Retention: final deliveries (`delivered`, `filtered`, `dead`), their attempts, and events
//! no delivery refers to any more are deleted once they are older than `[store] retention`.
//! `pending`, `retrying` and `held` deliveries are kept whatever their age.
//!
//! The sweep runs every [`SWEEP_EVERY`] in small batches with a pause between them, so each
//! batch shares the writer with ingest for a millisecond or so and never holds it up for
//! long; an expired delivery is gone within `retention` plus one sweep interval, plus the
//! time to delete whatever expired before it. A sweep still running after one interval is
//! falling behind (a burst, or the first sweep after a long stop): its batches double every
//! interval, up to [`MAX_BATCH`], so it catches up at the price of some ingest latency
//! instead of letting the store grow.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{EventCursor, Store, now_ms};
use crate::metrics::Metrics;

/// How often the sweep looks for expired rows.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Deliveries (and as many events) deleted per write batch: about a millisecond of the
/// writer's time, which ingests committed in the same transaction wait for.
const BATCH: usize = 50;
/// The largest batch of a sweep that has fallen behind.
const MAX_BATCH: usize = 400;
/// Room for ingest between two batches of one sweep.
const BATCH_PAUSE: Duration = Duration::from_millis(10);

/// Sweeps until `shutdown` turns true.
pub async fn run(
    store: Arc<dyn Store>,
    retention: Duration,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut cursor = EventCursor::default();
    while !*shutdown.borrow() {
        let (deliveries, events) = sweep(store.as_ref(), retention, &mut cursor, &metrics, &shutdown).await;
        if deliveries + events > 0 {
            tracing::debug!(deliveries, events, "retention: expired rows deleted");
            reclaim(store.as_ref(), &shutdown).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Returns free space to the file system a step at a time, with room for ingest between.
async fn reclaim(store: &dyn Store, shutdown: &watch::Receiver<bool>) {
    let mut released = 0;
    while !*shutdown.borrow() {
        match store.reclaim_space().await {
            Ok(0) => break,
            Ok(bytes) => released += bytes,
            Err(error) => {
                tracing::warn!(%error, "retention: returning free space failed");
                break;
            }
        }
        tokio::time::sleep(BATCH_PAUSE).await;
    }
    if released > 0 {
        tracing::info!(bytes = released, "retention: returned free space to the file system");
    }
}

/// One sweep: batches until nothing expired is left. Returns (deliveries, events) deleted.
async fn sweep(
    store: &dyn Store,
    retention: Duration,
    cursor: &mut EventCursor,
    metrics: &Metrics,
    shutdown: &watch::Receiver<bool>,
) -> (u64, u64) {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let cutoff = now_ms().saturating_sub(retention_ms);
    let started = std::time::Instant::now();
    let (mut deliveries, mut events) = (0, 0);
    loop {
        let intervals_behind = (started.elapsed().as_secs() / SWEEP_EVERY.as_secs()).min(8) as u32;
        let batch = (BATCH << intervals_behind).min(MAX_BATCH);
        match store.expire(cutoff, batch, *cursor).await {
            Ok(expired) => {
                metrics.expired_deliveries.inc_by(expired.deliveries);
                metrics.expired_events.inc_by(expired.events);
                deliveries += expired.deliveries;
                events += expired.events;
                *cursor = expired.events_cursor;
                if !expired.more || *shutdown.borrow() {
                    return (deliveries, events);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "retention: deleting expired rows failed; trying again at the next sweep");
                return (deliveries, events);
            }
        }
        tokio::time::sleep(BATCH_PAUSE).await;
    }
}
