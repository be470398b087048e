//! The PostgreSQL store (`[store] backend = "postgres"`), for several hosts sharing one
//! database: events, deliveries, leases, webhooks (with their secrets) and runtime disables.
//!
//! Ingests and delivery results are group-committed by a writer task (`writer.rs`); every
//! other operation runs in a transaction of its own on a pooled connection. Claims lock the
//! rows they take with `FOR UPDATE SKIP LOCKED` inside a materialized CTE, so concurrent
//! claims from several hosts never take the same delivery and `LIMIT` cannot touch extra
//! rows. Leases and due times are on the database's clock (`clock.rs`). Migrations run under
//! an advisory lock, so hosts starting at once apply them once. Changes other hosts should
//! act on at once are announced with NOTIFY (`notify.rs`); hosts poll as well.

mod clock;
mod notify;
mod sql;
pub mod throwaway;
mod writer;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

use super::{
    Change, ChangeSignals, DeliveryFilter, DeliveryRecord, DeliveryState, DeliveryUpdate, DisabledWebhook, DueDelivery,
    EventCursor, EventRecord, Expired, HostReport, IngestOutcome, MAX_PAGE, NewDelivery, PluginActivation,
    PluginVersion, QueueStats, Store, StoreError, Transformed,
};
use crate::model::Event;

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// Longest a new connection may take, unless `store.url` says otherwise (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the server may leave sent data unacknowledged, or an idle connection unprobed,
/// before the connection counts as dead.
const DEAD_PEER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest an operation waits for a pooled connection when all are busy.
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Held while migrations run: one host migrates, the others wait and then find nothing to do.
const MIGRATION_LOCK: i64 = 0x686f_6f6b_7761_736d; // "hookwasm"

/// The PostgreSQL store. Cloning shares the pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    writer: writer::Writer,
    clock: clock::Clock,
    config: tokio_postgres::Config,
    /// Names this store in its announcements, so its own listener ignores them.
    instance: String,
    announcer: std::sync::Arc<notify::Announcer>,
    signals: std::sync::Arc<std::sync::OnceLock<ChangeSignals>>,
}

impl PgStore {
    /// Connects to `url` (a `postgres://` URL or `key=value` pairs) with up to `pool_size`
    /// connections and brings the schema up to date.
    pub async fn open(url: &str, pool_size: usize) -> anyhow::Result<PgStore> {
        PgStore::open_with_skew(url, pool_size, 0).await
    }

    /// As [`PgStore::open`], for a host whose clock is `host_skew_ms` off (tests only).
    async fn open_with_skew(url: &str, pool_size: usize, host_skew_ms: i64) -> anyhow::Result<PgStore> {
        let mut config: tokio_postgres::Config =
            url.parse().context("store.url is not a PostgreSQL connection string")?;
        if config.get_connect_timeout().is_none() {
            // An unreachable server must fail requests (503), not hang them.
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            // Nor may a server that stopped answering hold a query (or this host's listener)
            // for the kernel's default of many minutes.
            config.tcp_user_timeout(DEAD_PEER_TIMEOUT);
        }
        if config.get_keepalives_idle() > DEAD_PEER_TIMEOUT {
            config.keepalives_idle(DEAD_PEER_TIMEOUT);
        }
        // A 202 means committed: whatever the role or database says, commits wait for the WAL.
        let options = format!("{} -c synchronous_commit=on", config.get_options().unwrap_or_default());
        config.options(options.trim_start());
        migrate(&config).await?;
        let manager = Manager::from_config(
            config.clone(),
            tokio_postgres::NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .build()
            .context("building the connection pool")?;
        let clock =
            clock::Clock::measure(&**pool.get().await.context("no connection to PostgreSQL")?, host_skew_ms).await?;
        let instance = crate::model::new_id("store");
        Ok(PgStore {
            writer: writer::Writer::start(pool.clone(), clock),
            announcer: notify::Announcer::start(pool.clone(), instance.clone()),
            instance,
            config,
            signals: Default::default(),
            pool,
            clock,
        })
    }

    async fn client(&self) -> anyhow::Result<deadpool_postgres::Client> {
        self.pool.get().await.context("no connection to PostgreSQL")
    }
}

/// Applies the migrations this binary has and the database lacks, in one transaction, under
/// [`MIGRATION_LOCK`]; refuses a database migrated by a newer binary.
async fn migrate(config: &tokio_postgres::Config) -> anyhow::Result<()> {
    let (mut client, connection) =
        config.connect(tokio_postgres::NoTls).await.context("connecting to PostgreSQL to migrate")?;
    let connection = tokio::spawn(connection);
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let runner = embedded::migrations::runner();
    let latest = runner.get_migrations().iter().map(|m| i64::from(m.version())).max().unwrap_or(0);
    let has_history: bool =
        client.query_one("SELECT to_regclass('refinery_schema_history') IS NOT NULL", &[]).await?.get(0);
    let current: Option<i64> = match has_history {
        true => client.query_one("SELECT MAX(version)::bigint FROM refinery_schema_history", &[]).await?.get(0),
        false => None,
    };
    let outcome = match current.unwrap_or(0) {
        current if current > latest => Err(anyhow::anyhow!(
            "the database has store schema version {current}, written by a newer hookwasm; this binary knows \
             versions up to {latest}"
        )),
        current if current == latest => Ok(()),
        current => {
            let report = runner
                .set_grouped(true)
                .set_abort_divergent(true)
                .set_abort_missing(true)
                .run_async(&mut client)
                .await
                .with_context(|| format!("upgrading the store schema from version {current} to {latest}"));
            report.map(|report| {
                for migration in report.applied_migrations() {
                    tracing::info!(
                        version = migration.version(),
                        name = migration.name(),
                        "store schema migration applied"
                    );
                }
            })
        }
    };
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
    drop(client);
    let _ = connection.await;
    outcome
}

/// A full disk becomes [`StoreError::StorageFull`], like SQLite's.
fn classify(error: anyhow::Error) -> anyhow::Error {
    let full = error
        .downcast_ref::<tokio_postgres::Error>()
        .is_some_and(|e| e.code() == Some(&tokio_postgres::error::SqlState::DISK_FULL));
    if full { anyhow::Error::new(StoreError::StorageFull(format!("{error:#}"))) } else { error }
}

/// Runs `work` in a transaction on a connection from `pool` and commits it if the work
/// succeeded; a full disk is reported as such.
async fn in_transaction<T>(
    pool: &Pool,
    work: impl AsyncFnOnce(&tokio_postgres::Transaction<'_>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut client = pool.get().await.context("no connection to PostgreSQL")?;
    let transaction = client.transaction().await.map_err(|e| classify(e.into()))?;
    let value = work(&transaction).await.map_err(classify)?;
    transaction.commit().await.map_err(|e| classify(e.into()))?;
    Ok(value)
}

impl PgStore {
    /// At a host's start: releases what earlier runs of this host (`[store] host_id`) left
    /// leased, so it is sent again at once instead of when the leases expire. Other hosts'
    /// leases are theirs until they expire.
    pub async fn release_host(&self, host_id: &str) -> anyhow::Result<u64> {
        in_transaction(&self.pool, async |transaction| sql::release_host(transaction, self.clock, host_id).await).await
    }
}

#[async_trait]
impl Store for PgStore {
    fn announce(&self, change: Change) {
        self.announcer.announce(change);
    }

    fn change_signals(&self) -> Option<ChangeSignals> {
        Some(self.signals.get_or_init(|| notify::listen(self.config.clone(), self.instance.clone())).clone())
    }

    async fn ingest(&self, event: Event, deliveries: Vec<NewDelivery>) -> anyhow::Result<IngestOutcome> {
        self.writer.ingest(event, deliveries).await
    }

    async fn claim_due(
        &self,
        owner: &str,
        limit: usize,
        busy: Vec<String>,
        lease: Duration,
    ) -> anyhow::Result<Vec<DueDelivery>> {
        let client = self.client().await?;
        sql::claim(&**client, self.clock, owner, limit, &busy, lease).await
    }

    async fn update(&self, owner: &str, update: DeliveryUpdate) -> anyhow::Result<bool> {
        self.writer.update(owner, update).await
    }

    async fn release(&self, owner: &str, ids: Vec<String>) -> anyhow::Result<()> {
        in_transaction(&self.pool, async |transaction| sql::release(transaction, self.clock, owner, &ids).await)
            .await?;
        self.announce(Change::Queue);
        Ok(())
    }

    async fn next_due_ms(&self) -> anyhow::Result<Option<i64>> {
        sql::next_due(&**self.client().await?, self.clock).await
    }

    async fn requeue_held(&self, webhook_ids: Vec<String>) -> anyhow::Result<u64> {
        let requeued = sql::requeue_held(&**self.client().await?, self.clock, &webhook_ids).await?;
        if requeued > 0 {
            self.announce(Change::Queue);
        }
        Ok(requeued)
    }

    async fn delivery(&self, id: &str) -> anyhow::Result<Option<DeliveryRecord>> {
        let filter = DeliveryFilter { id: Some(id.to_string()), ..DeliveryFilter::default() };
        in_transaction(&self.pool, async |transaction| sql::delivery_records(transaction, &filter, 1).await)
            .await
            .map(|mut records: Vec<DeliveryRecord>| records.pop())
    }

    async fn list_deliveries(&self, filter: DeliveryFilter) -> anyhow::Result<Vec<DeliveryRecord>> {
        let limit = filter.limit.unwrap_or(50).clamp(1, MAX_PAGE);
        in_transaction(&self.pool, async |transaction| sql::delivery_records(transaction, &filter, limit).await).await
    }

    async fn delivery_body(&self, id: &str) -> anyhow::Result<Option<Transformed>> {
        sql::delivery_body(&**self.client().await?, id).await
    }

    async fn count_deliveries(&self, filter: DeliveryFilter) -> anyhow::Result<u64> {
        let filter = DeliveryFilter { limit: None, before: None, ..filter };
        sql::count_deliveries(&**self.client().await?, &filter).await
    }

    async fn replay(&self, filter: DeliveryFilter) -> anyhow::Result<u64> {
        let replayed =
            in_transaction(&self.pool, async |transaction| sql::replay(transaction, self.clock, &filter).await).await?;
        if replayed > 0 {
            self.announce(Change::Queue);
        }
        Ok(replayed)
    }

    async fn event(&self, id: &str) -> anyhow::Result<Option<EventRecord>> {
        sql::event(&**self.client().await?, id).await
    }

    async fn queue_stats(&self) -> anyhow::Result<QueueStats> {
        sql::queue_stats(&**self.client().await?, self.clock).await
    }

    async fn ready(&self) -> anyhow::Result<()> {
        self.client().await?.query_one("SELECT 1", &[]).await?;
        Ok(())
    }

    async fn state_counts(&self) -> anyhow::Result<BTreeMap<DeliveryState, u64>> {
        sql::state_counts(&**self.client().await?).await
    }

    async fn expire(&self, cutoff_ms: i64, batch: usize, events_from: EventCursor) -> anyhow::Result<Expired> {
        in_transaction(&self.pool, async |transaction| {
            sql::expire(transaction, self.clock, cutoff_ms, batch, events_from).await
        })
        .await
    }

    /// PostgreSQL's autovacuum makes deleted rows' space reusable; nothing to do here.
    async fn reclaim_space(&self) -> anyhow::Result<u64> {
        Ok(0)
    }

    async fn disable_webhook(&self, webhook_id: &str, url: &str, reason: &str) -> anyhow::Result<()> {
        sql::disable_webhook(&**self.client().await?, self.clock, webhook_id, url, reason).await?;
        self.announce(Change::Webhooks);
        Ok(())
    }

    async fn put_plugin_version(&self, version: PluginVersion, wasm: Vec<u8>) -> anyhow::Result<bool> {
        sql::put_plugin_version(&**self.client().await?, self.clock, &version, &wasm).await
    }

    async fn prune_plugin_versions(&self, plugin: &str, keep: usize) -> anyhow::Result<()> {
        sql::prune_plugin_versions(&**self.client().await?, plugin, keep).await
    }

    async fn plugin_versions(&self, plugin: &str) -> anyhow::Result<Vec<PluginVersion>> {
        sql::plugin_versions(&**self.client().await?, self.clock, plugin).await
    }

    async fn plugin_wasm(&self, plugin: &str, sha256: &str) -> anyhow::Result<Option<Vec<u8>>> {
        sql::plugin_wasm(&**self.client().await?, plugin, sha256).await
    }

    async fn plugin_activations(&self) -> anyhow::Result<Vec<PluginActivation>> {
        sql::plugin_activations(&**self.client().await?, self.clock).await
    }

    async fn activate_plugin(&self, activation: PluginActivation) -> anyhow::Result<()> {
        sql::activate_plugin(&**self.client().await?, self.clock, &activation).await?;
        self.announce(Change::Plugins);
        Ok(())
    }

    async fn end_canary(&self, plugin: &str, canary_sha256: &str) -> anyhow::Result<bool> {
        let ended = sql::end_canary(&**self.client().await?, self.clock, plugin, canary_sha256).await?;
        if ended {
            self.announce(Change::Plugins);
        }
        Ok(ended)
    }

    async fn deactivate_plugin(&self, plugin: &str) -> anyhow::Result<()> {
        sql::deactivate_plugin(&**self.client().await?, plugin).await?;
        self.announce(Change::Plugins);
        Ok(())
    }

    async fn plugin_file(&self, plugin: &str) -> anyhow::Result<Option<String>> {
        sql::plugin_file(&**self.client().await?, plugin).await
    }

    async fn set_plugin_file(&self, plugin: &str, sha256: &str) -> anyhow::Result<()> {
        sql::set_plugin_file(&**self.client().await?, plugin, sha256).await
    }

    async fn webhook_event_ids(
        &self,
        webhook_ids: &[String],
        since_ms: Option<i64>,
        limit: u32,
    ) -> anyhow::Result<Vec<(String, String)>> {
        sql::webhook_event_ids(&**self.client().await?, self.clock, webhook_ids, since_ms, limit).await
    }

    async fn stored_webhooks(&self) -> anyhow::Result<Vec<(String, String)>> {
        sql::stored_webhooks(&**self.client().await?).await
    }

    async fn put_webhook(&self, id: &str, definition: String) -> anyhow::Result<()> {
        sql::put_webhook(&**self.client().await?, self.clock, id, &definition).await?;
        self.announce(Change::Webhooks);
        Ok(())
    }

    async fn replace_webhook(&self, id: &str, expected: &str, definition: String) -> anyhow::Result<bool> {
        let replaced = sql::replace_webhook(&**self.client().await?, self.clock, id, expected, &definition).await?;
        if replaced {
            self.announce(Change::Webhooks);
        }
        Ok(replaced)
    }

    async fn webhook_failed(&self, webhook_id: &str, since_ms: i64) -> anyhow::Result<i64> {
        sql::webhook_failed(&**self.client().await?, self.clock, webhook_id, since_ms).await
    }

    async fn webhook_succeeded(&self, webhook_id: &str) -> anyhow::Result<()> {
        sql::webhook_succeeded(&**self.client().await?, webhook_id).await
    }

    async fn stored_webhook(&self, id: &str) -> anyhow::Result<Option<String>> {
        sql::stored_webhook(&**self.client().await?, id).await
    }

    async fn create_webhook(&self, id: &str, definition: String) -> anyhow::Result<bool> {
        let created = sql::create_webhook(&**self.client().await?, self.clock, id, &definition).await?;
        if created {
            self.announce(Change::Webhooks);
        }
        Ok(created)
    }

    async fn delete_webhook(&self, id: &str) -> anyhow::Result<bool> {
        let deleted = sql::delete_webhook(&**self.client().await?, id).await?;
        self.announce(Change::Webhooks);
        Ok(deleted)
    }

    async fn enable_webhook(&self, webhook_id: &str) -> anyhow::Result<()> {
        sql::enable_webhook(&**self.client().await?, webhook_id).await?;
        self.announce(Change::Webhooks);
        Ok(())
    }

    async fn disabled_webhooks(&self) -> anyhow::Result<BTreeMap<String, DisabledWebhook>> {
        sql::disabled(&**self.client().await?).await
    }

    async fn report_host(&self, host: &str, plugins: &BTreeMap<String, Option<String>>) -> anyhow::Result<()> {
        let plugins = serde_json::to_string(plugins)?;
        sql::report_host(&**self.client().await?, self.clock, host, &plugins).await
    }

    async fn forget_host(&self, host: &str) -> anyhow::Result<()> {
        sql::forget_host(&**self.client().await?, host).await
    }

    async fn live_hosts(&self, seen_within: Duration) -> anyhow::Result<Vec<HostReport>> {
        let rows = sql::live_hosts(&**self.client().await?, self.clock, seen_within.as_millis() as i64).await?;
        rows.into_iter()
            .map(|(host, seen_at_ms, plugins)| {
                let plugins = serde_json::from_str(&plugins)
                    .with_context(|| format!("host {host:?} reported plugins that are not JSON"))?;
                Ok(HostReport { host, seen_at_ms, plugins })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open() -> Option<(throwaway::Database, PgStore)> {
        let database = throwaway::Database::create().await?;
        let store = PgStore::open(&database.url, 4).await.unwrap();
        Some((database, store))
    }

    crate::store_suite!(open);

    /// A change announced through one store reaches a listener on another (and not its
    /// own), also when the listener starts after the announcement was made.
    #[tokio::test]
    async fn changes_announced_by_one_host_reach_the_others() {
        let Some((database, a)) = open().await else { return };
        let b = PgStore::open(&database.url, 2).await.unwrap();
        let (on_a, on_b) = (a.change_signals().unwrap(), b.change_signals().unwrap());
        let heard = |notify: std::sync::Arc<tokio::sync::Notify>| async move {
            tokio::time::timeout(Duration::from_secs(10), notify.notified()).await.is_ok()
        };
        // Each listener signals once when it (re)connects: whatever was missed is re-read.
        assert!(heard(on_a.queue.clone()).await && heard(on_b.queue.clone()).await);
        assert!(heard(on_a.webhooks.clone()).await && heard(on_b.webhooks.clone()).await);

        a.put_webhook("w", "{}".into()).await.unwrap();
        assert!(heard(on_b.webhooks.clone()).await, "b hears a's webhook change");
        a.announce(Change::Queue);
        assert!(heard(on_b.queue.clone()).await, "b hears a's queue change");
        b.announce(Change::Queue);
        assert!(heard(on_a.queue.clone()).await, "a hears b's queue change");
        let own = tokio::time::timeout(Duration::from_millis(500), on_b.queue.notified()).await;
        assert!(own.is_err(), "b does not wake itself");
    }

    /// A host whose clock is ten minutes slow must not hand out leases that the others see
    /// as long expired (the delivery would be sent twice at once).
    #[tokio::test]
    async fn leases_follow_the_databases_clock_whatever_the_hosts_say() {
        let Some((database, store)) = open().await else { return };
        let slow = PgStore::open_with_skew(&database.url, 2, -600_000).await.unwrap();
        let event = Event { id: "e1".into(), event_type: "a.b".into(), timestamp: "t".into(), data: "{}".into() };
        let delivery = NewDelivery { id: "m1".into(), webhook_id: "w".into(), lease: None };
        store.ingest(event, vec![delivery]).await.unwrap();
        assert_eq!(slow.claim_due("slow", 10, vec![], Duration::from_secs(60)).await.unwrap().len(), 1, "due now");
        assert!(
            store.claim_due("other", 10, vec![], Duration::from_secs(60)).await.unwrap().is_empty(),
            "still leased"
        );
        let next_due = slow.next_due_ms().await.unwrap();
        assert_eq!(next_due, None, "nothing else is due, on any clock");
    }

    #[tokio::test]
    async fn a_restarted_host_takes_back_what_its_earlier_run_left_leased() {
        let Some((_database, store)) = open().await else { return };
        let lease =
            |owner: &str| Some(crate::store::Lease { owner: owner.into(), until_ms: crate::store::now_ms() + 60_000 });
        let leased = |id: &str, owner: &str| NewDelivery { id: id.into(), webhook_id: "w".into(), lease: lease(owner) };
        let event =
            |id: &str| Event { id: id.into(), event_type: "a.b".into(), timestamp: "t".into(), data: "{}".into() };
        store
            .ingest(event("e1"), vec![leased("m1", "hw-1_01OLD"), leased("m2", "hw-10_01X"), leased("m3", "hw-2_01Y")])
            .await
            .unwrap();
        assert_eq!(store.release_host("hw-1").await.unwrap(), 1, "only hw-1's own, not hw-10's or hw-2's");
        let claimed = store.claim_due("hw-1_01NEW", 10, vec![], Duration::from_secs(60)).await.unwrap();
        assert_eq!(claimed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["m1"]);
    }

    #[tokio::test]
    async fn hosts_starting_at_once_migrate_once_and_a_newer_schema_is_refused() {
        let Some(database) = throwaway::Database::create().await else { return };
        let opened = futures_util::future::join_all((0..4).map(|_| PgStore::open(&database.url, 2))).await;
        assert!(opened.iter().all(Result::is_ok), "{:?}", opened.iter().map(|o| o.as_ref().err()).collect::<Vec<_>>());
        let store = opened.into_iter().next().unwrap().unwrap();
        store
            .client()
            .await
            .unwrap()
            .execute(
                "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) VALUES (999, 'future', '', '0')",
                &[],
            )
            .await
            .unwrap();
        let error = format!("{:#}", PgStore::open(&database.url, 2).await.err().expect("refused"));
        assert!(error.contains("schema version 999") && error.contains("newer hookwasm"), "{error}");
    }
}
