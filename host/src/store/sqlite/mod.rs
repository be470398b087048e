//! The embedded store: one SQLite file in WAL mode with `synchronous = FULL`, used by one
//! process at a time.
//!
//! | module | owns |
//! |---|---|
//! | [`schema`] | file settings, versioned migrations, refusing a newer file |
//! | [`writer`] | the writer thread: group commit, replay of a failed batch, full-disk errors |
//! | [`writes`] | every statement that writes |
//! | [`reader`] | the read connections |
//! | [`reads`] | every query that only reads |

mod reader;
mod reads;
pub mod schema;
mod writer;
mod writes;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use rusqlite::Connection;

use self::reader::Readers;
use self::writer::Writer;
use super::{
    DeliveryFilter, DeliveryRecord, DeliveryState, DeliveryUpdate, DisabledWebhook, DueDelivery, EventCursor,
    EventRecord, Expired, IngestOutcome, MAX_PAGE, NewDelivery, PluginActivation, PluginVersion, QueueStats, Store,
    Transformed,
};
use crate::model::Event;

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// WAL size past which the writer finishes a checkpoint itself, so the WAL starts over.
const WAL_WRAP_BYTES: i64 = 16 << 20;
/// Read connections: listings, `/metrics` and `/readyz` at once without waiting on each other.
const READERS: usize = 4;

/// The SQLite store. Cloning shares the writer thread and the read connections.
#[derive(Clone)]
pub struct SqliteStore {
    writer: Writer,
    readers: Arc<Readers>,
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/hookwasm.db` and brings its schema up to date. The
    /// embedded store belongs to one process at a time (a lock file enforces it).
    pub fn open(dir: &Path) -> anyhow::Result<SqliteStore> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating data directory {}", dir.display()))?;
        let lock_path = dir.join("hookwasm.lock");
        let lock = std::fs::File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
        lock.try_lock().map_err(|_| {
            anyhow!("{} is in use by another hookwasm process (the embedded store serves one process)", dir.display())
        })?;
        let path = dir.join("hookwasm.db");
        let mut connection = Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        schema::configure(&connection)?;
        schema::migrate(&mut connection, &path)?;
        // Room for every statement the writer runs, including one claim per busy-list length.
        connection.set_prepared_statement_cache_capacity(64);
        let released = writes::release_all(&connection).context("releasing leases of a previous run")?;
        if released > 0 {
            tracing::info!(released, "released deliveries claimed by a previous run");
        }
        let readers = Readers::open(&path, READERS)?;
        let checkpointer = Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        checkpointer.execute_batch("PRAGMA busy_timeout = 5000;").context("configuring SQLite")?;
        let page_size: i64 = checkpointer.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let running = Arc::new(AtomicBool::new(true));
        let wal_full = Arc::new(AtomicBool::new(false));
        let (writer_running, writer_wal_full) = (running.clone(), wal_full.clone());
        let writer = Writer::start(connection, writer_wal_full, move || {
            drop(lock);
            writer_running.store(false, Ordering::Relaxed);
        })
        .context("starting the store thread")?;
        std::thread::Builder::new()
            .name("hookwasm-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpointer, page_size, &running, &wal_full))
            .context("starting the checkpoint thread")?;
        Ok(SqliteStore { writer, readers })
    }
}

/// Copies the WAL back into the database file beside the writer, so its commits never wait
/// for a checkpoint's copy and fsync. Under a steady stream of commits this never reaches
/// the end of the WAL, and SQLite starts a WAL over only once all of it was copied: past
/// [`WAL_WRAP_BYTES`] the writer is asked to finish the job between two batches.
fn checkpoint_loop(checkpointer: &Connection, page_size: i64, running: &AtomicBool, wal_full: &AtomicBool) {
    let mut failing = false;
    while running.load(Ordering::Relaxed) {
        std::thread::sleep(CHECKPOINT_EVERY);
        let checkpoint = checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1));
        match checkpoint {
            Ok(wal_frames) => {
                if wal_frames * page_size >= WAL_WRAP_BYTES {
                    wal_full.store(true, Ordering::Relaxed);
                }
                if failing {
                    tracing::info!("WAL checkpoints work again");
                    failing = false;
                }
            }
            // Logged once per run of failures: a full disk fails every checkpoint.
            Err(error) if !failing => {
                tracing::warn!(%error, "WAL checkpoint failed; retrying every {CHECKPOINT_EVERY:?}");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ingest(&self, event: Event, deliveries: Vec<NewDelivery>) -> anyhow::Result<IngestOutcome> {
        self.writer.call(move |db| writes::ingest(db, &event, &deliveries)).await
    }

    async fn claim_due(
        &self,
        owner: &str,
        limit: usize,
        busy: Vec<String>,
        lease: Duration,
    ) -> anyhow::Result<Vec<DueDelivery>> {
        let owner = owner.to_string();
        self.writer.call(move |db| writes::claim(db, &owner, limit, &busy, lease)).await
    }

    async fn update(&self, owner: &str, update: DeliveryUpdate) -> anyhow::Result<bool> {
        let owner = owner.to_string();
        self.writer.call(move |db| writes::apply_update(db, &owner, &update)).await
    }

    async fn release(&self, owner: &str, ids: Vec<String>) -> anyhow::Result<()> {
        let owner = owner.to_string();
        self.writer.call(move |db| writes::release(db, &owner, &ids)).await
    }

    async fn next_due_ms(&self) -> anyhow::Result<Option<i64>> {
        self.readers.read(reads::next_due).await
    }

    async fn requeue_held(&self, webhook_ids: Vec<String>) -> anyhow::Result<u64> {
        self.writer.call(move |db| writes::requeue_held(db, &webhook_ids)).await
    }

    async fn delivery(&self, id: &str) -> anyhow::Result<Option<DeliveryRecord>> {
        let filter = DeliveryFilter { id: Some(id.to_string()), ..DeliveryFilter::default() };
        self.readers.read(move |db| Ok(reads::delivery_records(db, &filter, 1)?.pop())).await
    }

    async fn list_deliveries(&self, filter: DeliveryFilter) -> anyhow::Result<Vec<DeliveryRecord>> {
        let limit = filter.limit.unwrap_or(50).clamp(1, MAX_PAGE);
        self.readers.read(move |db| reads::delivery_records(db, &filter, limit)).await
    }

    async fn delivery_body(&self, id: &str) -> anyhow::Result<Option<Transformed>> {
        let id = id.to_string();
        self.readers.read(move |db| reads::delivery_body(db, &id)).await
    }

    async fn count_deliveries(&self, filter: DeliveryFilter) -> anyhow::Result<u64> {
        let filter = DeliveryFilter { limit: None, before: None, ..filter };
        self.readers.read(move |db| reads::count_deliveries(db, &filter)).await
    }

    async fn replay(&self, filter: DeliveryFilter) -> anyhow::Result<u64> {
        self.writer.call(move |db| writes::replay(db, &filter)).await
    }

    async fn event(&self, id: &str) -> anyhow::Result<Option<EventRecord>> {
        let id = id.to_string();
        self.readers.read(move |db| reads::event(db, &id)).await
    }

    async fn queue_stats(&self) -> anyhow::Result<QueueStats> {
        self.readers.read(reads::queue_stats).await
    }

    async fn ready(&self) -> anyhow::Result<()> {
        if !self.writer.is_running() {
            return Err(anyhow!("the store's writer has stopped"));
        }
        self.readers.read(|db| Ok(db.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }

    async fn state_counts(&self) -> anyhow::Result<BTreeMap<DeliveryState, u64>> {
        self.readers.read(reads::state_counts).await
    }

    async fn expire(&self, cutoff_ms: i64, batch: usize, events_from: EventCursor) -> anyhow::Result<Expired> {
        self.writer.call(move |db| writes::expire(db, cutoff_ms, batch, events_from)).await
    }

    async fn reclaim_space(&self) -> anyhow::Result<u64> {
        self.writer.call(writes::reclaim_space).await
    }

    async fn disable_webhook(&self, webhook_id: &str, url: &str, reason: &str) -> anyhow::Result<()> {
        let (webhook_id, url, reason) = (webhook_id.to_string(), url.to_string(), reason.to_string());
        self.writer.call(move |db| writes::disable_webhook(db, &webhook_id, &url, &reason)).await
    }

    async fn put_plugin_version(&self, version: PluginVersion, wasm: Vec<u8>) -> anyhow::Result<bool> {
        self.writer.call(move |db| writes::put_plugin_version(db, &version, &wasm)).await
    }

    async fn prune_plugin_versions(&self, plugin: &str, keep: usize) -> anyhow::Result<()> {
        let plugin = plugin.to_string();
        self.writer.call(move |db| writes::prune_plugin_versions(db, &plugin, keep)).await
    }

    async fn plugin_versions(&self, plugin: &str) -> anyhow::Result<Vec<PluginVersion>> {
        let plugin = plugin.to_string();
        self.readers.read(move |db| reads::plugin_versions(db, &plugin)).await
    }

    async fn plugin_wasm(&self, plugin: &str, sha256: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let (plugin, sha256) = (plugin.to_string(), sha256.to_string());
        self.readers.read(move |db| reads::plugin_wasm(db, &plugin, &sha256)).await
    }

    async fn plugin_activations(&self) -> anyhow::Result<Vec<PluginActivation>> {
        self.readers.read(reads::plugin_activations).await
    }

    async fn activate_plugin(&self, activation: PluginActivation) -> anyhow::Result<()> {
        self.writer.call(move |db| writes::activate_plugin(db, &activation)).await
    }

    async fn end_canary(&self, plugin: &str, canary_sha256: &str) -> anyhow::Result<bool> {
        let (plugin, canary_sha256) = (plugin.to_string(), canary_sha256.to_string());
        self.writer.call(move |db| writes::end_canary(db, &plugin, &canary_sha256)).await
    }

    async fn deactivate_plugin(&self, plugin: &str) -> anyhow::Result<()> {
        let plugin = plugin.to_string();
        self.writer.call(move |db| writes::deactivate_plugin(db, &plugin)).await
    }

    async fn plugin_file(&self, plugin: &str) -> anyhow::Result<Option<String>> {
        let plugin = plugin.to_string();
        self.readers.read(move |db| reads::plugin_file(db, &plugin)).await
    }

    async fn set_plugin_file(&self, plugin: &str, sha256: &str) -> anyhow::Result<()> {
        let (plugin, sha256) = (plugin.to_string(), sha256.to_string());
        self.writer.call(move |db| writes::set_plugin_file(db, &plugin, &sha256)).await
    }

    async fn webhook_event_ids(
        &self,
        webhook_ids: &[String],
        since_ms: Option<i64>,
        limit: u32,
    ) -> anyhow::Result<Vec<(String, String)>> {
        if webhook_ids.is_empty() {
            return Ok(Vec::new());
        }
        let webhook_ids = webhook_ids.to_vec();
        self.readers.read(move |db| reads::webhook_event_ids(db, &webhook_ids, since_ms, limit)).await
    }

    async fn stored_webhooks(&self) -> anyhow::Result<Vec<(String, String)>> {
        self.readers.read(reads::stored_webhooks).await
    }

    async fn put_webhook(&self, id: &str, definition: String) -> anyhow::Result<()> {
        let id = id.to_string();
        self.writer.call(move |db| writes::put_webhook(db, &id, &definition)).await
    }

    async fn replace_webhook(&self, id: &str, expected: &str, definition: String) -> anyhow::Result<bool> {
        let (id, expected) = (id.to_string(), expected.to_string());
        self.writer.call(move |db| writes::replace_webhook(db, &id, &expected, &definition)).await
    }

    async fn webhook_failed(&self, webhook_id: &str, since_ms: i64) -> anyhow::Result<i64> {
        let id = webhook_id.to_string();
        self.writer.call(move |db| writes::webhook_failed(db, &id, since_ms)).await
    }

    async fn webhook_succeeded(&self, webhook_id: &str) -> anyhow::Result<()> {
        let id = webhook_id.to_string();
        self.writer.call(move |db| writes::webhook_succeeded(db, &id)).await
    }

    async fn stored_webhook(&self, id: &str) -> anyhow::Result<Option<String>> {
        let id = id.to_string();
        self.readers.read(move |db| reads::stored_webhook(db, &id)).await
    }

    async fn create_webhook(&self, id: &str, definition: String) -> anyhow::Result<bool> {
        let id = id.to_string();
        self.writer.call(move |db| writes::create_webhook(db, &id, &definition)).await
    }

    async fn delete_webhook(&self, id: &str) -> anyhow::Result<bool> {
        let id = id.to_string();
        self.writer.call(move |db| writes::delete_webhook(db, &id)).await
    }

    async fn enable_webhook(&self, webhook_id: &str) -> anyhow::Result<()> {
        let id = webhook_id.to_string();
        self.writer.call(move |db| writes::enable_webhook(db, &id)).await
    }

    async fn disabled_webhooks(&self) -> anyhow::Result<BTreeMap<String, DisabledWebhook>> {
        self.readers.read(reads::disabled).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suite;

    fn open_now() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        (dir, store)
    }

    async fn open() -> Option<(tempfile::TempDir, SqliteStore)> {
        Some(open_now())
    }

    crate::store_suite!(open);

    #[tokio::test]
    async fn a_new_database_has_small_pages_incremental_vacuum_and_the_wal() {
        let (dir, store) = open_now();
        store.ingest(suite::event("e1"), vec![suite::delivery("m1")]).await.unwrap();
        let reader = Connection::open(dir.path().join("hookwasm.db")).unwrap();
        let pragma = |name: &str| {
            reader.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, rusqlite::types::Value>(0)).unwrap()
        };
        assert_eq!(pragma("page_size"), 1024.into());
        assert_eq!(pragma("journal_mode"), rusqlite::types::Value::Text("wal".into()));
        assert_eq!(pragma("auto_vacuum"), 2.into(), "incremental");
        assert_eq!(schema::current_version(&reader).unwrap(), schema::latest_version());
    }

    #[tokio::test]
    async fn a_data_dir_from_a_newer_binary_is_refused_by_name() {
        let (dir, store) = open_now();
        drop(store);
        // The writer releases the lock once its queue is gone.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let db = Connection::open(dir.path().join("hookwasm.db")).unwrap();
        db.execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) VALUES (999, 'future', '', '0')",
            [],
        )
        .unwrap();
        drop(db);
        let error = format!("{:#}", SqliteStore::open(dir.path()).err().expect("refused"));
        assert!(error.contains("schema version 999") && error.contains("newer hookwasm"), "{error}");
    }

    #[tokio::test]
    async fn an_unknown_state_in_the_database_is_an_error_not_a_guess() {
        let (dir, store) = open_now();
        store.ingest(suite::event("e1"), vec![suite::delivery("m1")]).await.unwrap();
        let db = Connection::open(dir.path().join("hookwasm.db")).unwrap();
        db.execute("UPDATE deliveries SET state = 'paused' WHERE id = 'm1'", []).unwrap();
        let error = format!("{:#}", store.delivery("m1").await.expect_err("an error"));
        assert!(error.contains("unknown delivery state \"paused\""), "{error}");
        assert!(store.state_counts().await.is_err());
    }
}
