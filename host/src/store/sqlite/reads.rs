//! Every query that only reads, each run on a read connection.

use std::collections::{BTreeMap, HashMap};

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row};

use crate::store::{
    Attempt, Canary, DeliveryFilter, DeliveryRecord, DeliveryState, DisabledWebhook, EventRecord, FilterValue,
    PluginActivation, PluginVersion, QueueStats, Transformed, now_ms,
};

/// A `state` column as a [`DeliveryState`]; a value this binary does not know is an error,
/// never guessed.
pub fn state_column(row: &Row, index: usize) -> rusqlite::Result<DeliveryState> {
    let text: String = row.get(index)?;
    DeliveryState::parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            format!("unknown delivery state {text:?} in the database").into(),
        )
    })
}

/// `WHERE` clause and parameters for a filter (over `deliveries d JOIN events e`), numbered
/// from `?{first}`.
pub fn filter_sql(filter: &DeliveryFilter, first: usize) -> (String, Vec<Value>) {
    let mut conditions = vec!["1 = 1".to_string()];
    let mut values: Vec<Value> = Vec::new();
    for (condition, value) in filter.conditions() {
        conditions.push(condition.replace('?', &format!("?{}", first + values.len())));
        values.push(match value {
            FilterValue::Text(text) => Value::Text(text),
            FilterValue::Integer(number) => Value::Integer(number),
        });
    }
    (conditions.join(" AND "), values)
}

/// The deliveries matching `filter`, newest first, with their attempts: two queries
/// whatever the page size.
pub fn delivery_records(db: &Connection, filter: &DeliveryFilter, limit: u32) -> anyhow::Result<Vec<DeliveryRecord>> {
    let (condition, mut values) = filter_sql(filter, 2);
    values.insert(0, Value::Integer(limit.into()));
    // One read transaction for both queries, so the attempts match the rows.
    let snapshot = db.unchecked_transaction()?;
    let mut statement = snapshot.prepare_cached(&format!(
        "SELECT d.id, d.event_id, e.type, d.webhook_id, d.state, d.created_at, d.reason, d.plugin_sha, d.next_attempt_at
         FROM deliveries d JOIN events e ON e.id = d.event_id WHERE {condition} ORDER BY d.id DESC LIMIT ?1"
    ))?;
    let mut records: Vec<DeliveryRecord> = statement
        .query_map(rusqlite::params_from_iter(values), |row| {
            Ok(DeliveryRecord {
                id: row.get(0)?,
                event_id: row.get(1)?,
                event_type: row.get(2)?,
                webhook_id: row.get(3)?,
                state: state_column(row, 4)?,
                created_at_ms: row.get(5)?,
                attempts: Vec::new(),
                reason: row.get(6)?,
                plugin_sha: row.get(7)?,
                next_attempt_at_ms: row.get(8)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    if records.is_empty() {
        return Ok(records);
    }
    let ids = serde_json::to_string(&records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())?;
    let mut attempts = snapshot.prepare_cached(
        "SELECT delivery_id, at, status, latency_ms, response_excerpt, error FROM attempts
         WHERE delivery_id IN (SELECT value FROM json_each(?1)) ORDER BY rowid",
    )?;
    let mut by_delivery: HashMap<String, Vec<Attempt>> = HashMap::new();
    let rows = attempts.query_map([ids], |row| {
        Ok((
            row.get::<_, String>(0)?,
            Attempt {
                at_ms: row.get(1)?,
                status: row.get(2)?,
                latency_ms: row.get::<_, i64>(3)? as u64,
                response_excerpt: row.get(4)?,
                error: row.get(5)?,
            },
        ))
    })?;
    for row in rows {
        let (id, attempt) = row?;
        by_delivery.entry(id).or_default().push(attempt);
    }
    for record in &mut records {
        record.attempts = by_delivery.remove(&record.id).unwrap_or_default();
    }
    Ok(records)
}

pub fn event(db: &Connection, id: &str) -> anyhow::Result<Option<EventRecord>> {
    let row = db
        .prepare_cached("SELECT id, type, timestamp, received_at, data FROM events WHERE id = ?1")?
        .query_row([id], |row| {
            Ok((row.get::<_, String>(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get::<_, String>(4)?))
        })
        .optional()?;
    let Some((id, event_type, timestamp, received_at_ms, data)) = row else { return Ok(None) };
    let data = serde_json::value::RawValue::from_string(data)?;
    Ok(Some(EventRecord { id, event_type, timestamp, received_at_ms, data }))
}

pub fn state_counts(db: &Connection) -> anyhow::Result<BTreeMap<DeliveryState, u64>> {
    let mut statement = db.prepare_cached("SELECT state, COUNT(*) FROM deliveries GROUP BY state")?;
    let rows = statement.query_map([], |row| Ok((state_column(row, 0)?, row.get::<_, i64>(1)? as u64)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn queue_stats(db: &Connection) -> anyhow::Result<QueueStats> {
    let (due, earliest_due_ms) = db
        .prepare_cached("SELECT COUNT(*), MIN(next_attempt_at) FROM deliveries WHERE state IN ('pending', 'retrying')")?
        .query_row([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?;
    let held = db
        .prepare_cached("SELECT COUNT(*) FROM deliveries WHERE state = 'held'")?
        .query_row([], |r| r.get::<_, i64>(0))? as u64;
    Ok(QueueStats { due, earliest_due_ms, held })
}

/// The earliest `next_attempt_at` of a pending or retrying delivery no one holds. Walks the
/// due index in order past the leased ones (at most the deliveries in flight).
pub fn next_due(db: &Connection) -> anyhow::Result<Option<i64>> {
    Ok(db
        .prepare_cached(
            "SELECT next_attempt_at FROM deliveries
             WHERE state IN ('pending', 'retrying') AND lease_until <= ?1
             ORDER BY next_attempt_at LIMIT 1",
        )?
        .query_row([now_ms()], |r| r.get(0))
        .optional()?)
}

pub fn stored_webhooks(db: &Connection) -> anyhow::Result<Vec<(String, String)>> {
    let mut statement = db.prepare_cached("SELECT id, config FROM webhooks ORDER BY id")?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn stored_webhook(db: &Connection, id: &str) -> anyhow::Result<Option<String>> {
    let mut statement = db.prepare_cached("SELECT config FROM webhooks WHERE id = ?1")?;
    Ok(statement.query_row([id], |row| row.get(0)).optional()?)
}

pub fn disabled(db: &Connection) -> anyhow::Result<BTreeMap<String, DisabledWebhook>> {
    let mut statement = db.prepare_cached("SELECT webhook_id, url, reason FROM disabled_webhooks")?;
    let rows =
        statement.query_map([], |row| Ok((row.get(0)?, DisabledWebhook { url: row.get(1)?, reason: row.get(2)? })))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn plugin_versions(db: &Connection, plugin: &str) -> anyhow::Result<Vec<PluginVersion>> {
    let mut statement = db.prepare_cached(
        "SELECT plugin, sha256, size, uploaded_at, uploaded_by FROM plugin_versions WHERE plugin = ?1
         ORDER BY uploaded_at DESC, rowid DESC",
    )?;
    let rows = statement.query_map([plugin], |row| {
        Ok(PluginVersion {
            plugin: row.get(0)?,
            sha256: row.get(1)?,
            size: row.get::<_, i64>(2)? as u64,
            uploaded_at_ms: row.get(3)?,
            uploaded_by: row.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn plugin_wasm(db: &Connection, plugin: &str, sha256: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let mut statement = db.prepare_cached("SELECT wasm FROM plugin_versions WHERE plugin = ?1 AND sha256 = ?2")?;
    Ok(statement.query_row([plugin, sha256], |row| row.get(0)).optional()?)
}

pub fn plugin_activations(db: &Connection) -> anyhow::Result<Vec<PluginActivation>> {
    let mut statement = db.prepare_cached(
        "SELECT plugin, sha256, canary_sha256, canary_percent, canary_since, activated_by FROM plugin_activations
         ORDER BY plugin",
    )?;
    let rows = statement.query_map([], |row| {
        let canary = match (row.get::<_, Option<String>>(2)?, row.get::<_, Option<u8>>(3)?, row.get(4)?) {
            (Some(sha256), Some(percent), Some(since_ms)) => Some(Canary { sha256, percent, since_ms }),
            _ => None,
        };
        let by_file = row.get::<_, String>(5)? == "file";
        Ok(PluginActivation { plugin: row.get(0)?, sha256: row.get(1)?, canary, by_file })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn webhook_event_ids(
    db: &Connection,
    webhook_ids: &[String],
    since_ms: Option<i64>,
    limit: u32,
) -> anyhow::Result<Vec<(String, String)>> {
    let placeholders = vec!["?"; webhook_ids.len()].join(", ");
    let sql = format!(
        "SELECT d.webhook_id, d.event_id FROM deliveries d JOIN events e ON e.id = d.event_id
         WHERE d.webhook_id IN ({placeholders}) AND e.received_at >= ? ORDER BY d.created_at DESC, d.id DESC LIMIT ?"
    );
    let mut values: Vec<Value> = webhook_ids.iter().map(|id| Value::Text(id.clone())).collect();
    values.push(Value::Integer(since_ms.unwrap_or(i64::MIN)));
    values.push(Value::Integer(i64::from(limit)));
    let mut statement = db.prepare(&sql)?;
    let rows = statement.query_map(rusqlite::params_from_iter(values), |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn plugin_file(db: &Connection, plugin: &str) -> anyhow::Result<Option<String>> {
    let mut statement = db.prepare_cached("SELECT sha256 FROM plugin_files WHERE plugin = ?1")?;
    Ok(statement.query_row([plugin], |row| row.get(0)).optional()?)
}

pub fn count_deliveries(db: &Connection, filter: &DeliveryFilter) -> anyhow::Result<u64> {
    let (condition, values) = filter_sql(filter, 1);
    let mut statement = db.prepare_cached(&format!(
        "SELECT COUNT(*) FROM deliveries d JOIN events e ON e.id = d.event_id WHERE {condition}"
    ))?;
    Ok(statement.query_row(rusqlite::params_from_iter(values), |row| row.get::<_, i64>(0))? as u64)
}

pub fn delivery_body(db: &Connection, id: &str) -> anyhow::Result<Option<Transformed>> {
    let mut statement =
        db.prepare_cached("SELECT body, headers, plugin_sha FROM deliveries WHERE id = ?1 AND body IS NOT NULL")?;
    let row: Option<(Vec<u8>, Option<String>, Option<String>)> =
        statement.query_row([id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?))).optional()?;
    let Some((body, headers, plugin_sha)) = row else { return Ok(None) };
    let headers = headers.map(|h| serde_json::from_str(&h)).transpose()?.unwrap_or_default();
    Ok(Some(Transformed { body, headers, plugin_sha }))
}
