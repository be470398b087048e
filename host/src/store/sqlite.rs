//! The embedded store: one SQLite file in WAL mode with `synchronous = FULL`.
//!
//! Every operation runs on one writer thread that owns the connection. It takes whatever
//! operations are queued (up to [`MAX_BATCH`]) and runs them in one transaction, so one fsync
//! commits many ingests and updates (group commit). If one of them fails, the batch is rolled
//! back and each operation runs again on its own, so a failing operation stores nothing and
//! does not affect its neighbours. Replies are sent only after the commit.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

use super::{
    Attempt, DeliveryFilter, DeliveryRecord, DeliveryState, DeliveryUpdate, DueDelivery, EventRecord, IngestOutcome,
    NewDelivery, Store, Transformed, now_ms,
};
use crate::config::WebhookConfig;
use crate::model::Event;

const MAX_BATCH: usize = 512;
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
const EXCERPT_BYTES: usize = 512;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    data TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL REFERENCES events(id),
    webhook_id TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER NOT NULL DEFAULT 0,
    body BLOB,
    headers TEXT,
    plugin_sha TEXT,
    reason TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (next_attempt_at) WHERE state IN ('pending', 'retrying');
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_id);
CREATE INDEX IF NOT EXISTS deliveries_held ON deliveries (webhook_id) WHERE state = 'held';
CREATE TABLE IF NOT EXISTS attempts (
    delivery_id TEXT NOT NULL REFERENCES deliveries(id),
    at INTEGER NOT NULL,
    status INTEGER,
    latency_ms INTEGER NOT NULL,
    response_excerpt TEXT NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS attempts_delivery ON attempts (delivery_id);
CREATE TABLE IF NOT EXISTS webhooks (
    id TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS disabled_webhooks (
    webhook_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    reason TEXT NOT NULL,
    disabled_at INTEGER NOT NULL
);
"#;

/// One store operation: its work (run again if its batch is replayed) and where its result goes.
trait Operation: Send {
    /// Runs the work inside the writer's open transaction and keeps the result; returns
    /// whether it succeeded.
    fn run(&mut self, db: &Connection) -> bool;
    /// Sends the kept result, or `commit_error` if the transaction it ran in was not stored.
    fn finish(self: Box<Self>, commit_error: Option<&str>);
}

struct Pending<T, F> {
    work: F,
    result: Option<anyhow::Result<T>>,
    reply: oneshot::Sender<anyhow::Result<T>>,
}

impl<T, F> Operation for Pending<T, F>
where
    T: Send,
    F: FnMut(&Connection) -> anyhow::Result<T> + Send,
{
    fn run(&mut self, db: &Connection) -> bool {
        let result = (self.work)(db);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit_error: Option<&str>) {
        let result = match (commit_error, self.result) {
            (Some(error), _) => Err(anyhow!("store commit failed: {error}")),
            (None, Some(result)) => result,
            (None, None) => Err(anyhow!("the store did not run the request")),
        };
        let _ = self.reply.send(result);
    }
}

type Job = Box<dyn Operation>;

/// The SQLite store. Cloning shares the writer thread.
#[derive(Clone)]
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/hookwasm.db`. The embedded store belongs to one
    /// process at a time (a lock file enforces it), so leases left by a previous run of
    /// that process (a crash) are released at once instead of waiting for them to expire.
    pub fn open(dir: &Path) -> anyhow::Result<SqliteStore> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating data directory {}", dir.display()))?;
        let lock_path = dir.join("hookwasm.lock");
        let lock = std::fs::File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
        lock.try_lock().map_err(|_| {
            anyhow!("{} is in use by another hookwasm process (the embedded store serves one process)", dir.display())
        })?;
        let path = dir.join("hookwasm.db");
        let connection = Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        // 1 KiB pages (a new database only; an existing one keeps its page size): each commit
        // writes every page it touched to the WAL, and most are index pages that gained one
        // small entry. Eight alternating pairs: ahead in seven (see BENCHMARKS.md).
        connection
            .execute_batch("PRAGMA page_size = 1024; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")
            .context("configuring SQLite")?;
        connection.execute_batch(SCHEMA).context("creating the schema")?;
        // Room for every statement the writer runs, including one claim per busy-list length.
        connection.set_prepared_statement_cache_capacity(64);
        let released = connection
            .execute("UPDATE deliveries SET lease_owner = NULL, lease_until = 0 WHERE lease_owner IS NOT NULL", [])
            .context("releasing leases of a previous run")?;
        if released > 0 {
            tracing::info!(released, "released deliveries claimed by a previous run");
        }
        // Checkpoints run beside the writer, not inside one of its commits: an automatic
        // checkpoint fsyncs the database file while every ingest waits (measured: p99
        // ingest-to-delivery 279 ms with it, see BENCHMARKS.md).
        connection.execute_batch("PRAGMA wal_autocheckpoint = 0;").context("configuring SQLite")?;
        let checkpointer = Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        checkpointer.execute_batch("PRAGMA busy_timeout = 5000;").context("configuring SQLite")?;
        let running = Arc::new(AtomicBool::new(true));
        let (jobs, receiver) = mpsc::channel(4096);
        let writer_running = running.clone();
        std::thread::Builder::new()
            .name("hookwasm-store".into())
            .spawn(move || {
                let _lock = lock;
                writer_loop(connection, receiver);
                writer_running.store(false, Ordering::Relaxed);
            })
            .context("starting the store thread")?;
        std::thread::Builder::new()
            .name("hookwasm-checkpoint".into())
            .spawn(move || {
                while running.load(Ordering::Relaxed) {
                    std::thread::sleep(CHECKPOINT_EVERY);
                    if let Err(error) = checkpointer.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
                        tracing::warn!(%error, "WAL checkpoint failed");
                    }
                }
            })
            .context("starting the checkpoint thread")?;
        Ok(SqliteStore { jobs })
    }

    /// Runs `work` on the writer thread; answers once its batch has committed.
    async fn call<T, F>(&self, work: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> anyhow::Result<T> + Send + 'static,
    {
        let (reply, response) = oneshot::channel();
        let job: Job = Box::new(Pending { work, result: None, reply });
        self.jobs.send(job).await.map_err(|_| anyhow!("the store has shut down"))?;
        response.await.map_err(|_| anyhow!("the store dropped a request"))?
    }
}

fn writer_loop(mut connection: Connection, mut receiver: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = receiver.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&mut connection, &mut batch);
    }
}

/// Runs `batch` in one transaction and, once it has committed, sends every result. If one
/// operation fails, or the commit does, the transaction is rolled back and every operation
/// runs again in a transaction of its own, so a failure stores nothing of the failed
/// operation and costs its neighbours only time. (The usual alternative, a savepoint per
/// operation, copies every page each operation touches into a statement journal and runs
/// two more statements per operation; BENCHMARKS.md has what replacing it saved.)
fn run_batch(connection: &mut Connection, batch: &mut Vec<Job>) {
    let committed = match run_together(connection, batch) {
        Ok(()) => true,
        Err(error) if batch.len() == 1 => {
            // Nothing to separate: its own result (or the commit's error) is the answer.
            let job = batch.pop().expect("one job");
            job.finish(error.as_deref());
            return;
        }
        Err(_) => false,
    };
    for mut job in batch.drain(..) {
        if committed {
            job.finish(None);
        } else {
            let error = run_together(connection, std::slice::from_mut(&mut job)).err().flatten();
            job.finish(error.as_deref());
        }
    }
}

/// Runs `jobs` in one transaction and commits it if all of them succeeded. `Err(None)`: a
/// job failed (its error is its result) and nothing was stored; `Err(Some(error))`: the
/// transaction could not be begun or committed.
fn run_together(connection: &mut Connection, jobs: &mut [Job]) -> Result<(), Option<String>> {
    let transaction = connection.transaction().map_err(|error| Some(error.to_string()))?;
    for job in jobs.iter_mut() {
        if !job.run(&transaction) {
            if let Err(error) = transaction.rollback() {
                tracing::error!(%error, "rolling back a store batch failed");
            }
            return Err(None);
        }
    }
    transaction.commit().map_err(|error| {
        tracing::error!(%error, "store commit failed");
        Some(error.to_string())
    })
}

fn ingest(db: &Connection, event: &Event, deliveries: &[NewDelivery]) -> anyhow::Result<IngestOutcome> {
    let now = now_ms();
    let inserted = db
        .prepare_cached(
            "INSERT OR IGNORE INTO events (id, type, timestamp, data, received_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![event.id, event.event_type, event.timestamp, event.data, now])?;
    if inserted == 0 {
        return Ok(IngestOutcome::Duplicate);
    }
    let mut insert = db.prepare_cached(
        "INSERT INTO deliveries (id, event_id, webhook_id, state, next_attempt_at, created_at, updated_at, lease_owner, lease_until)
         VALUES (?1, ?2, ?3, 'pending', ?4, ?4, ?4, ?5, ?6)",
    )?;
    for delivery in deliveries {
        let (owner, until) = match &delivery.lease {
            Some(lease) => (Some(lease.owner.as_str()), lease.until_ms),
            None => (None, 0),
        };
        insert.execute(params![delivery.id, event.id, delivery.webhook_id, now, owner, until])?;
    }
    Ok(IngestOutcome::Accepted { deliveries: deliveries.len() })
}

fn claim(
    db: &Connection,
    owner: &str,
    limit: usize,
    busy: &[String],
    lease: Duration,
) -> anyhow::Result<Vec<DueDelivery>> {
    let now = now_ms();
    // The busy webhooks are spliced in as one placeholder each, so the statement for each
    // count is prepared once. (Passed as one JSON array through `json_each(?)`, SQLite
    // re-prepared the statement on every claim: over a third of the writer thread's time.)
    let skip_busy = match busy.len() {
        0 => String::new(),
        n => format!("AND webhook_id NOT IN ({})", (5..5 + n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")),
    };
    let mut claimed = db.prepare_cached(&format!(
        "UPDATE deliveries SET lease_owner = ?1, lease_until = ?2
         WHERE id IN (
             SELECT id FROM deliveries
             WHERE state IN ('pending', 'retrying') AND next_attempt_at <= ?3 AND lease_until <= ?3 {skip_busy}
             ORDER BY next_attempt_at LIMIT ?4)
         RETURNING id, webhook_id, event_id, attempts, body, headers, plugin_sha",
    ))?;
    let until = now + lease.as_millis() as i64;
    let fixed: [&dyn rusqlite::ToSql; 4] = [&owner, &until, &now, &(limit as i64)];
    let parameters = fixed.into_iter().chain(busy.iter().map(|id| id as &dyn rusqlite::ToSql));
    let rows = claimed.query_map(rusqlite::params_from_iter(parameters), |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, u32>(3)?,
            row.get::<_, Option<Vec<u8>>>(4)?,
            row.get::<_, Option<String>>(5)?,
            row.get::<_, Option<String>>(6)?,
        ))
    })?;
    let rows: Vec<_> = rows.collect::<Result<_, _>>()?;
    let mut event_query = db.prepare_cached("SELECT type, timestamp, data FROM events WHERE id = ?1")?;
    let mut due = Vec::with_capacity(rows.len());
    for (id, webhook_id, event_id, attempts, body, headers, plugin_sha) in rows {
        let event = event_query.query_row([&event_id], |row| {
            Ok(Event { id: event_id.clone(), event_type: row.get(0)?, timestamp: row.get(1)?, data: row.get(2)? })
        })?;
        let transformed = match body {
            Some(body) => Some(Transformed {
                body,
                headers: headers.map(|h| serde_json::from_str(&h)).transpose()?.unwrap_or_default(),
                plugin_sha,
            }),
            None => None,
        };
        due.push(DueDelivery { id, webhook_id, event, attempts, transformed });
    }
    Ok(due)
}

fn apply_update(db: &Connection, owner: &str, update: &DeliveryUpdate) -> anyhow::Result<bool> {
    let now = now_ms();
    let (body, headers, transformed_sha) = match &update.transformed {
        Some(t) => (Some(t.body.as_slice()), Some(serde_json::to_string(&t.headers)?), t.plugin_sha.as_deref()),
        None => (None, None, None),
    };
    let plugin_sha = transformed_sha.or(update.plugin_sha.as_deref());
    let changed = db
        .prepare_cached(
            "UPDATE deliveries SET state = ?1, next_attempt_at = ?2, attempts = attempts + ?3,
                 body = COALESCE(?4, body), headers = COALESCE(?5, headers), plugin_sha = COALESCE(?6, plugin_sha),
                 reason = ?7, lease_owner = NULL, lease_until = 0, updated_at = ?8
             WHERE id = ?9 AND lease_owner = ?10",
        )?
        .execute(params![
            update.state.as_str(),
            update.next_attempt_at_ms,
            update.attempt.is_some() as i64,
            body,
            headers,
            plugin_sha,
            update.reason,
            now,
            update.id,
            owner,
        ])?;
    if changed == 0 {
        return Ok(false);
    }
    if let Some(attempt) = &update.attempt {
        let mut excerpt = attempt.response_excerpt.clone();
        if excerpt.len() > EXCERPT_BYTES {
            let cut = (0..=EXCERPT_BYTES).rev().find(|&i| excerpt.is_char_boundary(i)).unwrap_or(0);
            excerpt.truncate(cut);
        }
        db.prepare_cached("INSERT INTO attempts (delivery_id, at, status, latency_ms, response_excerpt, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
            .execute(params![update.id, attempt.at_ms, attempt.status, attempt.latency_ms as i64, excerpt, attempt.error])?;
    }
    Ok(true)
}

fn release(db: &Connection, owner: &str, ids: &[String]) -> anyhow::Result<()> {
    let mut statement = db.prepare_cached(
        "UPDATE deliveries SET lease_owner = NULL, lease_until = 0 WHERE id = ?1 AND lease_owner = ?2",
    )?;
    for id in ids {
        statement.execute(params![id, owner])?;
    }
    Ok(())
}

fn requeue_held(db: &Connection, webhooks: &[String]) -> anyhow::Result<u64> {
    let mut statement = db.prepare_cached(
        "UPDATE deliveries SET state = 'pending', next_attempt_at = ?2, reason = NULL, updated_at = ?2 WHERE webhook_id = ?1 AND state = 'held'",
    )?;
    let mut total = 0;
    for webhook in webhooks {
        total += statement.execute(params![webhook, now_ms()])? as u64;
    }
    Ok(total)
}

/// `WHERE` clause and parameters for a filter (over `deliveries d JOIN events e`).
fn filter_sql(filter: &DeliveryFilter) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut conditions = vec!["1 = 1".to_string()];
    let mut values: Vec<Value> = Vec::new();
    let mut add = |condition: &str, value: Value| {
        values.push(value);
        conditions.push(condition.replace('?', &format!("?{}", values.len())));
    };
    if let Some(id) = &filter.id {
        add("d.id = ?", Value::Text(id.clone()));
    }
    if let Some(webhook) = &filter.webhook {
        add("d.webhook_id = ?", Value::Text(webhook.clone()));
    }
    if let Some(state) = filter.state {
        add("d.state = ?", Value::Text(state.as_str().into()));
    }
    if let Some(event_type) = &filter.event_type {
        add("e.type = ?", Value::Text(event_type.clone()));
    }
    if let Some(event_id) = &filter.event_id {
        add("d.event_id = ?", Value::Text(event_id.clone()));
    }
    if let Some(since) = filter.since_ms {
        add("d.created_at >= ?", Value::Integer(since));
    }
    if let Some(until) = filter.until_ms {
        add("d.created_at < ?", Value::Integer(until));
    }
    if let Some(before) = &filter.before {
        add("d.id < ?", Value::Text(before.clone()));
    }
    (conditions.join(" AND "), values)
}

fn delivery_records(
    db: &Connection,
    filter: &DeliveryFilter,
    limit: Option<u32>,
) -> anyhow::Result<Vec<DeliveryRecord>> {
    let (condition, values) = filter_sql(filter);
    let limit = limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
    let mut statement = db.prepare_cached(&format!(
        "SELECT d.id, d.event_id, e.type, d.webhook_id, d.state, d.created_at, d.reason, d.plugin_sha, d.next_attempt_at
         FROM deliveries d JOIN events e ON e.id = d.event_id WHERE {condition} ORDER BY d.id DESC{limit}"
    ))?;
    let mut records: Vec<DeliveryRecord> = statement
        .query_map(rusqlite::params_from_iter(values), |row| {
            let state: String = row.get(4)?;
            Ok(DeliveryRecord {
                id: row.get(0)?,
                event_id: row.get(1)?,
                event_type: row.get(2)?,
                webhook_id: row.get(3)?,
                state: DeliveryState::parse(&state).unwrap_or(DeliveryState::Held),
                created_at_ms: row.get(5)?,
                attempts: Vec::new(),
                reason: row.get(6)?,
                plugin_sha: row.get(7)?,
                next_attempt_at_ms: row.get(8)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut attempts = db.prepare_cached(
        "SELECT at, status, latency_ms, response_excerpt, error FROM attempts WHERE delivery_id = ?1 ORDER BY rowid",
    )?;
    for record in &mut records {
        record.attempts = attempts
            .query_map([&record.id], |row| {
                Ok(Attempt {
                    at_ms: row.get(0)?,
                    status: row.get(1)?,
                    latency_ms: row.get::<_, i64>(2)? as u64,
                    response_excerpt: row.get(3)?,
                    error: row.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
    }
    Ok(records)
}

fn replay(db: &Connection, filter: &DeliveryFilter) -> anyhow::Result<u64> {
    let (condition, values) = filter_sql(filter);
    let now = now_ms();
    let changed = db.execute(
        &format!(
            "UPDATE deliveries SET
                 state = CASE WHEN state IN ('held', 'filtered') OR body IS NULL THEN 'pending' ELSE 'retrying' END,
                 body = CASE WHEN state IN ('held', 'filtered') THEN NULL ELSE body END,
                 headers = CASE WHEN state IN ('held', 'filtered') THEN NULL ELSE headers END,
                 plugin_sha = CASE WHEN state IN ('held', 'filtered') THEN NULL ELSE plugin_sha END,
                 attempts = 0, next_attempt_at = {now}, reason = NULL, lease_owner = NULL, lease_until = 0, updated_at = {now}
             WHERE id IN (SELECT d.id FROM deliveries d JOIN events e ON e.id = d.event_id WHERE {condition})"
        ),
        rusqlite::params_from_iter(values),
    )?;
    Ok(changed as u64)
}

fn event(db: &Connection, id: &str) -> anyhow::Result<Option<EventRecord>> {
    let row = db.query_row("SELECT id, type, timestamp, received_at, data FROM events WHERE id = ?1", [id], |row| {
        Ok((row.get::<_, String>(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get::<_, String>(4)?))
    });
    match row {
        Ok((id, event_type, timestamp, received_at_ms, data)) => Ok(Some(EventRecord {
            id,
            event_type,
            timestamp,
            received_at_ms,
            data: serde_json::value::RawValue::from_string(data)?,
        })),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

fn state_counts(db: &Connection) -> anyhow::Result<BTreeMap<DeliveryState, u64>> {
    let mut statement = db.prepare_cached("SELECT state, COUNT(*) FROM deliveries GROUP BY state")?;
    let rows = statement.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?;
    let mut counts = BTreeMap::new();
    for row in rows {
        let (state, count) = row?;
        if let Some(state) = DeliveryState::parse(&state) {
            counts.insert(state, count as u64);
        }
    }
    Ok(counts)
}

fn stored_webhooks(db: &Connection) -> anyhow::Result<Vec<WebhookConfig>> {
    let mut statement = db.prepare_cached("SELECT config FROM webhooks ORDER BY id")?;
    let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
    rows.map(|config| Ok(serde_json::from_str(&config?)?)).collect()
}

fn disabled(db: &Connection) -> anyhow::Result<BTreeMap<String, (String, String)>> {
    let mut statement = db.prepare_cached("SELECT webhook_id, url, reason FROM disabled_webhooks")?;
    let rows = statement.query_map([], |row| Ok((row.get::<_, String>(0)?, (row.get(1)?, row.get(2)?))))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ingest(&self, event: Event, deliveries: Vec<NewDelivery>) -> anyhow::Result<IngestOutcome> {
        self.call(move |db| ingest(db, &event, &deliveries)).await
    }

    async fn claim_due(
        &self,
        owner: &str,
        limit: usize,
        busy: Vec<String>,
        lease: Duration,
    ) -> anyhow::Result<Vec<DueDelivery>> {
        let owner = owner.to_string();
        self.call(move |db| claim(db, &owner, limit, &busy, lease)).await
    }

    async fn update(&self, owner: &str, update: DeliveryUpdate) -> anyhow::Result<bool> {
        let owner = owner.to_string();
        self.call(move |db| apply_update(db, &owner, &update)).await
    }

    async fn release(&self, owner: &str, ids: Vec<String>) -> anyhow::Result<()> {
        let owner = owner.to_string();
        self.call(move |db| release(db, &owner, &ids)).await
    }

    async fn next_due_ms(&self) -> anyhow::Result<Option<i64>> {
        self.call(|db| {
            Ok(db.query_row(
                "SELECT MIN(next_attempt_at) FROM deliveries WHERE state IN ('pending', 'retrying')",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }

    async fn queue_stats(&self) -> anyhow::Result<(u64, Option<i64>)> {
        self.call(|db| {
            Ok(db.query_row(
                "SELECT COUNT(*), MIN(next_attempt_at) FROM deliveries WHERE state IN ('pending', 'retrying')",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )?)
        })
        .await
    }

    async fn requeue_held(&self, webhook_ids: Vec<String>) -> anyhow::Result<u64> {
        self.call(move |db| requeue_held(db, &webhook_ids)).await
    }

    async fn delivery(&self, id: &str) -> anyhow::Result<Option<DeliveryRecord>> {
        let filter = DeliveryFilter { id: Some(id.to_string()), ..DeliveryFilter::default() };
        self.call(move |db| Ok(delivery_records(db, &filter, Some(1))?.pop())).await
    }

    async fn list_deliveries(&self, filter: DeliveryFilter) -> anyhow::Result<Vec<DeliveryRecord>> {
        let limit = filter.limit.unwrap_or(50).clamp(1, 500);
        self.call(move |db| delivery_records(db, &filter, Some(limit))).await
    }

    async fn replay(&self, filter: DeliveryFilter) -> anyhow::Result<u64> {
        self.call(move |db| replay(db, &filter)).await
    }

    async fn event(&self, id: &str) -> anyhow::Result<Option<EventRecord>> {
        let id = id.to_string();
        self.call(move |db| event(db, &id)).await
    }

    async fn state_counts(&self) -> anyhow::Result<BTreeMap<DeliveryState, u64>> {
        self.call(state_counts).await
    }

    async fn disable_webhook(&self, webhook_id: &str, url: &str, reason: &str) -> anyhow::Result<()> {
        let (webhook_id, url, reason) = (webhook_id.to_string(), url.to_string(), reason.to_string());
        self.call(move |db| {
            db.execute(
                "INSERT OR REPLACE INTO disabled_webhooks (webhook_id, url, reason, disabled_at) VALUES (?1, ?2, ?3, ?4)",
                params![webhook_id, url, reason, now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    async fn stored_webhooks(&self) -> anyhow::Result<Vec<WebhookConfig>> {
        self.call(stored_webhooks).await
    }

    async fn put_webhook(&self, webhook: WebhookConfig) -> anyhow::Result<()> {
        let config = serde_json::to_string(&webhook)?;
        self.call(move |db| {
            db.execute(
                "INSERT OR REPLACE INTO webhooks (id, config, updated_at) VALUES (?1, ?2, ?3)",
                params![webhook.id, config, now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_webhook(&self, id: &str) -> anyhow::Result<bool> {
        let id = id.to_string();
        self.call(move |db| Ok(db.execute("DELETE FROM webhooks WHERE id = ?1", [&id])? > 0)).await
    }

    async fn enable_webhook(&self, webhook_id: &str) -> anyhow::Result<()> {
        let id = webhook_id.to_string();
        self.call(move |db| {
            db.execute("DELETE FROM disabled_webhooks WHERE webhook_id = ?1", [&id])?;
            Ok(())
        })
        .await
    }

    async fn disabled_webhooks(&self) -> anyhow::Result<BTreeMap<String, (String, String)>> {
        self.call(disabled).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn event(id: &str) -> Event {
        Event { id: id.into(), event_type: "a.b".into(), timestamp: "2026-01-01T00:00:00Z".into(), data: "{}".into() }
    }

    /// A result that marks delivery `id` delivered, with no attempt recorded.
    fn delivered(id: &str) -> DeliveryUpdate {
        DeliveryUpdate {
            id: id.into(),
            state: DeliveryState::Delivered,
            next_attempt_at_ms: 0,
            transformed: None,
            reason: None,
            attempt: None,
            plugin_sha: None,
        }
    }

    fn delivery(id: &str) -> NewDelivery {
        NewDelivery { id: id.into(), webhook_id: "w".into(), lease: None }
    }

    #[tokio::test]
    async fn ingest_is_idempotent_and_claims_are_leased() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(
            store.ingest(event("e1"), vec![delivery("m1")]).await.unwrap(),
            IngestOutcome::Accepted { deliveries: 1 }
        );
        assert_eq!(store.ingest(event("e1"), vec![delivery("m2")]).await.unwrap(), IngestOutcome::Duplicate);

        let lease = Duration::from_secs(60);
        let claimed = store.claim_due("a", 10, vec![], lease).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert!(store.claim_due("b", 10, vec![], lease).await.unwrap().is_empty(), "leased to a");
        let update = delivered("m1");
        assert!(!store.update("b", update.clone()).await.unwrap(), "b holds no lease");
        assert!(store.update("a", update).await.unwrap());
        assert_eq!(store.state_counts().await.unwrap()[&DeliveryState::Delivered], 1);
    }

    #[tokio::test]
    async fn expired_leases_are_reclaimed_and_busy_webhooks_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store.ingest(event("e1"), vec![delivery("m1")]).await.unwrap();
        assert!(store.claim_due("a", 10, vec!["w".into()], Duration::ZERO).await.unwrap().is_empty());
        assert_eq!(store.claim_due("a", 10, vec![], Duration::ZERO).await.unwrap().len(), 1);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(store.claim_due("b", 10, vec![], Duration::from_secs(60)).await.unwrap().len(), 1);

        let to = |id: &str, webhook: &str| NewDelivery { webhook_id: webhook.into(), ..delivery(id) };
        store.ingest(event("e2"), vec![to("m2", "x"), to("m3", "y"), to("m4", "z")]).await.unwrap();
        let busy = vec!["x".to_string(), "z".to_string()];
        let claimed = store.claim_due("b", 10, busy, Duration::from_secs(60)).await.unwrap();
        assert_eq!(claimed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["m3"], "x and z are busy");
    }

    #[tokio::test]
    async fn a_delivery_leased_at_ingest_is_its_owners_until_the_lease_expires() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let leased = |id: &str, until_ms| NewDelivery {
            lease: Some(crate::store::Lease { owner: "a".into(), until_ms }),
            ..delivery(id)
        };
        store.ingest(event("e1"), vec![leased("m1", now_ms() + 60_000), delivery("m2")]).await.unwrap();
        store.ingest(event("e2"), vec![leased("m3", now_ms() - 1)]).await.unwrap();

        let mut claimed: Vec<String> = store
            .claim_due("b", 10, vec![], Duration::from_secs(60))
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        claimed.sort();
        assert_eq!(claimed, ["m2", "m3"], "m1 is leased to a; m3's lease has expired");
        let update = delivered("m1");
        assert!(store.update("a", update).await.unwrap(), "a holds m1's lease from ingest");
    }

    #[tokio::test]
    async fn a_new_database_has_small_pages_and_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store.ingest(event("e1"), vec![delivery("m1")]).await.unwrap();
        let reader = Connection::open(dir.path().join("hookwasm.db")).unwrap();
        let page_size: i64 = reader.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        let journal: String = reader.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!((page_size, journal.as_str()), (1024, "wal"));
    }

    #[tokio::test]
    async fn concurrent_ingests_share_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(
                    async move { store.ingest(event(&format!("e{i}")), vec![delivery(&format!("m{i}"))]).await },
                )
            })
            .collect();
        for task in tasks {
            assert!(matches!(task.await.unwrap().unwrap(), IngestOutcome::Accepted { .. }));
        }
        assert_eq!(store.state_counts().await.unwrap()[&DeliveryState::Pending], 200);
    }

    #[tokio::test]
    async fn a_failing_command_leaves_nothing_and_its_batch_neighbours_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let store = store.clone();
                // Every third ingest repeats a delivery id: its second insert fails after the
                // event row was written.
                let deliveries = match i % 3 {
                    0 => vec![delivery(&format!("m{i}")), delivery(&format!("m{i}"))],
                    _ => vec![delivery(&format!("m{i}"))],
                };
                tokio::spawn(async move { (i, store.ingest(event(&format!("e{i}")), deliveries).await) })
            })
            .collect();
        for task in tasks {
            let (i, outcome) = task.await.unwrap();
            let stored = store.event(&format!("e{i}")).await.unwrap();
            if i % 3 == 0 {
                assert!(outcome.is_err() && stored.is_none(), "e{i}: {outcome:?}");
            } else {
                assert!(outcome.is_ok() && stored.is_some(), "e{i}: {outcome:?}");
            }
        }
        assert_eq!(store.state_counts().await.unwrap()[&DeliveryState::Pending], 33);
    }
}
