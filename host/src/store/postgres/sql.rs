//! Every statement of the PostgreSQL store, with the same meaning as SQLite's (see
//! `store/sqlite/writes.rs` and `reads.rs`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

use crate::model::Event;
use crate::store::{
    Attempt, Canary, DeliveryFilter, DeliveryRecord, DeliveryState, DeliveryUpdate, DisabledWebhook, DueDelivery,
    EventCursor, EventRecord, Expired, FilterValue, IngestOutcome, NewDelivery, PluginActivation, PluginVersion,
    QueueStats, Transformed,
};

use super::clock::Clock;

const EXCERPT_BYTES: usize = 512;
/// Held by the one host whose retention sweep runs (for one batch's transaction).
const RETENTION_LOCK: i64 = 0x686f_6f6b_7265_7465; // "hookrete"

/// What a replay does to a delivery (`$1` is now), as in SQLite.
const REPLAY_SET: &str = "
    state = CASE WHEN state IN ('held', 'filtered') OR body IS NULL THEN 'pending' ELSE 'retrying' END,
    body = CASE WHEN state IN ('held', 'filtered') THEN NULL ELSE body END,
    headers = CASE WHEN state IN ('held', 'filtered') THEN NULL ELSE headers END,
    plugin_sha = CASE WHEN state IN ('held', 'filtered') THEN NULL ELSE plugin_sha END,
    attempts = 0, next_attempt_at = $1, reason = NULL, lease_owner = NULL, lease_until = 0,
    replay_requested = false, updated_at = $1";

type Parameters = Vec<Box<dyn ToSql + Sync + Send>>;

fn refs(parameters: &Parameters) -> Vec<&(dyn ToSql + Sync)> {
    parameters.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
}

fn state(row: &Row, index: usize) -> anyhow::Result<DeliveryState> {
    let text: String = row.try_get(index)?;
    DeliveryState::parse(&text).ok_or_else(|| anyhow::anyhow!("unknown delivery state {text:?} in the database"))
}

pub async fn ingest(
    db: &impl GenericClient,
    clock: Clock,
    event: &Event,
    deliveries: &[NewDelivery],
) -> anyhow::Result<IngestOutcome> {
    let now = clock.now();
    let inserted = db
        .execute(
            "INSERT INTO events (id, type, timestamp, data, received_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO NOTHING",
            &[&event.id, &event.event_type, &event.timestamp, &event.data, &now],
        )
        .await?;
    if inserted == 0 {
        return Ok(IngestOutcome::Duplicate);
    }
    let ids: Vec<&str> = deliveries.iter().map(|d| d.id.as_str()).collect();
    let webhooks: Vec<&str> = deliveries.iter().map(|d| d.webhook_id.as_str()).collect();
    let owners: Vec<Option<&str>> = deliveries.iter().map(|d| d.lease.as_ref().map(|l| l.owner.as_str())).collect();
    let until: Vec<i64> =
        deliveries.iter().map(|d| d.lease.as_ref().map_or(0, |l| clock.to_database(l.until_ms))).collect();
    db.execute(
        "INSERT INTO deliveries (id, event_id, webhook_id, state, next_attempt_at, created_at, updated_at, lease_owner, lease_until)
         SELECT d.id, $2, d.webhook_id, 'pending', $3, $3, $3, d.owner, d.until
         FROM UNNEST($1::text[], $4::text[], $5::text[], $6::bigint[]) AS d(id, webhook_id, owner, until)",
        &[&ids, &event.id, &now, &webhooks, &owners, &until],
    )
    .await?;
    Ok(IngestOutcome::Accepted { deliveries: deliveries.len() })
}

pub async fn claim(
    db: &impl GenericClient,
    clock: Clock,
    owner: &str,
    limit: usize,
    busy: &[String],
    lease: Duration,
) -> anyhow::Result<Vec<DueDelivery>> {
    let now = clock.now();
    let until = now + lease.as_millis() as i64;
    // Locked and skipped in a materialized CTE, so `LIMIT` bounds exactly the rows taken and
    // a concurrent claim passes over them. A replay queued behind a lease that expired is
    // this claim (as in SQLite).
    let rows = db
        .query(
            "WITH due AS MATERIALIZED (
                 SELECT id FROM deliveries
                 WHERE state IN ('pending', 'retrying') AND next_attempt_at <= $3 AND lease_until <= $3
                   AND NOT (webhook_id = ANY($5))
                 ORDER BY next_attempt_at LIMIT $4
                 FOR UPDATE SKIP LOCKED
             ), claimed AS (
                 UPDATE deliveries d SET lease_owner = $1, lease_until = $2,
                     attempts = CASE WHEN d.replay_requested THEN 0 ELSE d.attempts END, replay_requested = false
                 FROM due WHERE d.id = due.id
                 RETURNING d.id, d.webhook_id, d.event_id, d.attempts, d.body, d.headers, d.plugin_sha
             )
             SELECT c.id, c.webhook_id, c.event_id, c.attempts, c.body, c.headers, c.plugin_sha, e.type, e.timestamp, e.data
             FROM claimed c JOIN events e ON e.id = c.event_id",
            &[&owner, &until, &now, &(limit as i64), &busy],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let body: Option<Vec<u8>> = row.try_get(4)?;
            let headers: Option<String> = row.try_get(5)?;
            let transformed = match body {
                Some(body) => Some(Transformed {
                    body,
                    headers: headers.map(|h| serde_json::from_str(&h)).transpose()?.unwrap_or_default(),
                    plugin_sha: row.try_get(6)?,
                }),
                None => None,
            };
            Ok(DueDelivery {
                id: row.try_get(0)?,
                webhook_id: row.try_get(1)?,
                event: Event {
                    id: row.try_get(2)?,
                    event_type: row.try_get(7)?,
                    timestamp: row.try_get(8)?,
                    data: row.try_get(9)?,
                },
                attempts: row.try_get::<_, i32>(3)? as u32,
                transformed,
            })
        })
        .collect()
}

pub async fn apply_update(
    db: &impl GenericClient,
    clock: Clock,
    owner: &str,
    update: &DeliveryUpdate,
) -> anyhow::Result<bool> {
    let now = clock.now();
    let (body, headers, transformed_sha) = match &update.transformed {
        Some(t) => (Some(t.body.as_slice()), Some(serde_json::to_string(&t.headers)?), t.plugin_sha.as_deref()),
        None => (None, None, None),
    };
    let plugin_sha = transformed_sha.or(update.plugin_sha.as_deref());
    let row = db
        .query_opt(
            "UPDATE deliveries SET state = $1, next_attempt_at = $2, attempts = attempts + $3,
                 body = COALESCE($4, body), headers = COALESCE($5, headers), plugin_sha = COALESCE($6, plugin_sha),
                 reason = $7, lease_owner = NULL, lease_until = 0, updated_at = $8
             WHERE id = $9 AND lease_owner = $10
             RETURNING replay_requested",
            &[
                &update.state.as_str(),
                &clock.to_database(update.next_attempt_at_ms),
                &(update.attempt.is_some() as i32),
                &body,
                &headers,
                &plugin_sha,
                &update.reason,
                &now,
                &update.id,
                &owner,
            ],
        )
        .await?;
    let Some(row) = row else { return Ok(false) };
    if let Some(attempt) = &update.attempt {
        let excerpt = excerpt(&attempt.response_excerpt);
        db.execute(
            "INSERT INTO attempts (delivery_id, at, status, latency_ms, response_excerpt, error) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &update.id,
                &clock.to_database(attempt.at_ms),
                &attempt.status.map(i32::from),
                &(attempt.latency_ms as i64),
                &excerpt,
                &attempt.error,
            ],
        )
        .await?;
    }
    if row.try_get::<_, bool>(0)? {
        replay_queued(db, clock, &update.id).await?;
    }
    Ok(true)
}

/// The first bytes of a response, as stored with an attempt.
pub fn excerpt(text: &str) -> &str {
    let cut = (0..=EXCERPT_BYTES.min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    &text[..cut]
}

/// Carries out a replay that waited for a worker's lease.
pub async fn replay_queued(db: &impl GenericClient, clock: Clock, id: &str) -> anyhow::Result<()> {
    db.execute(&format!("UPDATE deliveries SET {REPLAY_SET} WHERE id = $2 AND replay_requested"), &[&clock.now(), &id])
        .await?;
    Ok(())
}

pub async fn release(db: &impl GenericClient, clock: Clock, owner: &str, ids: &[String]) -> anyhow::Result<()> {
    let replays = db
        .query(
            "UPDATE deliveries SET lease_owner = NULL, lease_until = 0 WHERE id = ANY($1) AND lease_owner = $2
             RETURNING id, replay_requested",
            &[&ids, &owner],
        )
        .await?;
    for row in replays {
        if row.try_get::<_, bool>(1)? {
            replay_queued(db, clock, row.try_get(0)?).await?;
        }
    }
    Ok(())
}

/// Releases the leases of every earlier run of host `host_id` (owners `{host_id}_...`), and
/// carries out the replays queued behind them. Returns how many were released.
pub async fn release_host(db: &impl GenericClient, clock: Clock, host_id: &str) -> anyhow::Result<u64> {
    let rows = db
        .query(
            "UPDATE deliveries SET lease_owner = NULL, lease_until = 0 WHERE starts_with(lease_owner, $1)
             RETURNING id, replay_requested",
            &[&format!("{host_id}_")],
        )
        .await?;
    for row in &rows {
        if row.try_get::<_, bool>(1)? {
            replay_queued(db, clock, row.try_get(0)?).await?;
        }
    }
    Ok(rows.len() as u64)
}

pub async fn requeue_held(db: &impl GenericClient, clock: Clock, webhooks: &[String]) -> anyhow::Result<u64> {
    Ok(db
        .execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = $2, reason = NULL, updated_at = $2
             WHERE webhook_id = ANY($1) AND state = 'held'",
            &[&webhooks, &clock.now()],
        )
        .await?)
}

/// `WHERE` clause and parameters for a filter (over `deliveries d JOIN events e`), numbered
/// after `parameters`' existing ones.
fn filter_sql(filter: &DeliveryFilter, parameters: &mut Parameters) -> String {
    let mut conditions = vec!["true".to_string()];
    for (condition, value) in filter.conditions() {
        parameters.push(match value {
            FilterValue::Text(text) => Box::new(text),
            FilterValue::Integer(number) => Box::new(number),
        });
        conditions.push(condition.replace('?', &format!("${}", parameters.len())));
    }
    conditions.join(" AND ")
}

pub async fn delivery_body(db: &impl GenericClient, id: &str) -> anyhow::Result<Option<Transformed>> {
    let sql = "SELECT body, headers, plugin_sha FROM deliveries WHERE id = $1 AND body IS NOT NULL";
    let Some(row) = db.query_opt(sql, &[&id]).await? else { return Ok(None) };
    let headers: Option<String> = row.try_get(1)?;
    let headers = headers.map(|h| serde_json::from_str(&h)).transpose()?.unwrap_or_default();
    Ok(Some(Transformed { body: row.try_get(0)?, headers, plugin_sha: row.try_get(2)? }))
}

pub async fn count_deliveries(db: &impl GenericClient, filter: &DeliveryFilter) -> anyhow::Result<u64> {
    let mut parameters: Parameters = Vec::new();
    let condition = filter_sql(filter, &mut parameters);
    let sql = format!("SELECT COUNT(*) FROM deliveries d JOIN events e ON e.id = d.event_id WHERE {condition}");
    let count: i64 = db.query_one(&sql, &refs(&parameters)).await?.get(0);
    Ok(count as u64)
}

/// Replays what `filter` matches: at once where no live lease is held, else once the lease
/// holder records its result.
pub async fn replay(db: &impl GenericClient, clock: Clock, filter: &DeliveryFilter) -> anyhow::Result<u64> {
    let mut parameters: Parameters = vec![Box::new(clock.now())];
    let condition = filter_sql(filter, &mut parameters);
    let matching = format!("SELECT d.id FROM deliveries d JOIN events e ON e.id = d.event_id WHERE {condition}");
    let queued = db
        .execute(
            &format!("UPDATE deliveries SET replay_requested = true WHERE lease_until > $1 AND id IN ({matching})"),
            &refs(&parameters),
        )
        .await?;
    let replayed = db
        .execute(
            &format!("UPDATE deliveries SET {REPLAY_SET} WHERE lease_until <= $1 AND id IN ({matching})"),
            &refs(&parameters),
        )
        .await?;
    Ok(queued + replayed)
}

/// The deliveries matching `filter`, newest first, with their attempts: two queries.
pub async fn delivery_records(
    db: &impl GenericClient,
    filter: &DeliveryFilter,
    limit: u32,
) -> anyhow::Result<Vec<DeliveryRecord>> {
    let mut parameters: Parameters = vec![Box::new(i64::from(limit))];
    let condition = filter_sql(filter, &mut parameters);
    let rows = db
        .query(
            &format!(
                "SELECT d.id, d.event_id, e.type, d.webhook_id, d.state, d.created_at, d.reason, d.plugin_sha, d.next_attempt_at
                 FROM deliveries d JOIN events e ON e.id = d.event_id WHERE {condition} ORDER BY d.id DESC LIMIT $1"
            ),
            &refs(&parameters),
        )
        .await?;
    let mut records = rows
        .iter()
        .map(|row| {
            Ok(DeliveryRecord {
                id: row.try_get(0)?,
                event_id: row.try_get(1)?,
                event_type: row.try_get(2)?,
                webhook_id: row.try_get(3)?,
                state: state(row, 4)?,
                created_at_ms: row.try_get(5)?,
                attempts: Vec::new(),
                reason: row.try_get(6)?,
                plugin_sha: row.try_get(7)?,
                next_attempt_at_ms: row.try_get(8)?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if records.is_empty() {
        return Ok(records);
    }
    let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let rows = db
        .query(
            "SELECT delivery_id, at, status, latency_ms, response_excerpt, error FROM attempts
             WHERE delivery_id = ANY($1) ORDER BY seq",
            &[&ids],
        )
        .await?;
    let mut by_delivery: HashMap<String, Vec<Attempt>> = HashMap::new();
    for row in rows {
        let attempt = Attempt {
            at_ms: row.try_get(1)?,
            status: row.try_get::<_, Option<i32>>(2)?.map(|s| s as u16),
            latency_ms: row.try_get::<_, i64>(3)? as u64,
            response_excerpt: row.try_get(4)?,
            error: row.try_get(5)?,
        };
        by_delivery.entry(row.try_get(0)?).or_default().push(attempt);
    }
    for record in &mut records {
        record.attempts = by_delivery.remove(&record.id).unwrap_or_default();
    }
    Ok(records)
}

pub async fn event(db: &impl GenericClient, id: &str) -> anyhow::Result<Option<EventRecord>> {
    let Some(row) =
        db.query_opt("SELECT id, type, timestamp, received_at, data FROM events WHERE id = $1", &[&id]).await?
    else {
        return Ok(None);
    };
    Ok(Some(EventRecord {
        id: row.try_get(0)?,
        event_type: row.try_get(1)?,
        timestamp: row.try_get(2)?,
        received_at_ms: row.try_get(3)?,
        data: serde_json::value::RawValue::from_string(row.try_get(4)?)?,
    }))
}

pub async fn state_counts(db: &impl GenericClient) -> anyhow::Result<BTreeMap<DeliveryState, u64>> {
    let rows = db.query("SELECT state, COUNT(*) FROM deliveries GROUP BY state", &[]).await?;
    rows.iter().map(|row| Ok((state(row, 0)?, row.try_get::<_, i64>(1)? as u64))).collect()
}

pub async fn queue_stats(db: &impl GenericClient, clock: Clock) -> anyhow::Result<QueueStats> {
    let row = db
        .query_one(
            "SELECT (SELECT COUNT(*) FROM deliveries WHERE state IN ('pending', 'retrying')),
                    (SELECT MIN(next_attempt_at) FROM deliveries WHERE state IN ('pending', 'retrying')),
                    (SELECT COUNT(*) FROM deliveries WHERE state = 'held')",
            &[],
        )
        .await?;
    Ok(QueueStats {
        due: row.try_get::<_, i64>(0)? as u64,
        earliest_due_ms: row.try_get::<_, Option<i64>>(1)?.map(|due| clock.to_host(due)),
        held: row.try_get::<_, i64>(2)? as u64,
    })
}

/// On this host's clock.
pub async fn next_due(db: &impl GenericClient, clock: Clock) -> anyhow::Result<Option<i64>> {
    let row = db
        .query_opt(
            "SELECT next_attempt_at FROM deliveries
             WHERE state IN ('pending', 'retrying') AND lease_until <= $1
             ORDER BY next_attempt_at LIMIT 1",
            &[&clock.now()],
        )
        .await?;
    Ok(row.map(|row| row.try_get(0)).transpose()?.map(|due| clock.to_host(due)))
}

/// As SQLite's: up to `batch` expired final deliveries with their attempts, their events once
/// unreferenced, and up to `batch` unreferenced events received before the cutoff.
pub async fn expire(
    db: &impl GenericClient,
    clock: Clock,
    cutoff_ms: i64,
    batch: usize,
    events_from: EventCursor,
) -> anyhow::Result<Expired> {
    // One host at a time: the others' sweeps find the lock taken and do nothing this time.
    let sweeping: bool = db.query_one("SELECT pg_try_advisory_xact_lock($1)", &[&RETENTION_LOCK]).await?.get(0);
    if !sweeping {
        return Ok(Expired { events_cursor: events_from, ..Expired::default() });
    }
    let cutoff_ms = clock.to_database(cutoff_ms);
    let gone = db
        .query(
            "WITH gone AS MATERIALIZED (
                 SELECT id FROM deliveries
                 WHERE state IN ('delivered', 'filtered', 'dead') AND updated_at < $1
                 ORDER BY updated_at LIMIT $2
                 FOR UPDATE SKIP LOCKED
             ), attempts_gone AS (
                 DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM gone)
             )
             DELETE FROM deliveries WHERE id IN (SELECT id FROM gone) RETURNING event_id",
            &[&cutoff_ms, &(batch as i64)],
        )
        .await?;
    let event_ids: Vec<String> = gone.iter().map(|row| row.try_get(0)).collect::<Result<_, _>>()?;
    let mut events = db
        .execute(
            "DELETE FROM events e WHERE e.id = ANY($1)
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)",
            &[&event_ids],
        )
        .await?;
    let scanned = db
        .query(
            "SELECT e.received_at, e.seq, EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
             FROM events e WHERE (e.received_at, e.seq) > ($1, $2) AND e.received_at < $3
             ORDER BY e.received_at, e.seq LIMIT $4",
            &[&events_from.received_at_ms, &events_from.seq, &cutoff_ms, &(batch as i64)],
        )
        .await?;
    let unreferenced: Vec<i64> =
        scanned.iter().filter(|row| !row.get::<_, bool>(2)).map(|row| row.get::<_, i64>(1)).collect();
    if !unreferenced.is_empty() {
        events += db.execute("DELETE FROM events WHERE seq = ANY($1)", &[&unreferenced]).await?;
    }
    let events_cursor =
        scanned.last().map(|row| EventCursor { received_at_ms: row.get(0), seq: row.get(1) }).unwrap_or(events_from);
    Ok(Expired {
        deliveries: gone.len() as u64,
        events,
        events_cursor,
        more: gone.len() == batch || scanned.len() == batch,
    })
}

pub async fn disable_webhook(
    db: &impl GenericClient,
    clock: Clock,
    webhook_id: &str,
    url: &str,
    reason: &str,
) -> anyhow::Result<()> {
    db.execute(
        "INSERT INTO disabled_webhooks (webhook_id, url, reason, disabled_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (webhook_id) DO UPDATE SET url = $2, reason = $3, disabled_at = $4",
        &[&webhook_id, &url, &reason, &clock.now()],
    )
    .await?;
    Ok(())
}

pub async fn enable_webhook(db: &impl GenericClient, webhook_id: &str) -> anyhow::Result<()> {
    db.execute("DELETE FROM disabled_webhooks WHERE webhook_id = $1", &[&webhook_id]).await?;
    db.execute("DELETE FROM failing_webhooks WHERE webhook_id = $1", &[&webhook_id]).await?;
    Ok(())
}

/// Since when (on the host's clock) every attempt to `webhook_id` has failed: `since_ms` (the
/// host's clock) unless an earlier start is recorded.
pub async fn webhook_failed(
    db: &impl GenericClient,
    clock: Clock,
    webhook_id: &str,
    since_ms: i64,
) -> anyhow::Result<i64> {
    db.execute(
        "INSERT INTO failing_webhooks (webhook_id, since) VALUES ($1, $2) \
         ON CONFLICT (webhook_id) DO UPDATE SET since = LEAST(failing_webhooks.since, EXCLUDED.since)",
        &[&webhook_id, &clock.to_database(since_ms)],
    )
    .await?;
    let since: i64 =
        db.query_one("SELECT since FROM failing_webhooks WHERE webhook_id = $1", &[&webhook_id]).await?.get(0);
    Ok(clock.to_host(since))
}

pub async fn webhook_succeeded(db: &impl GenericClient, webhook_id: &str) -> anyhow::Result<()> {
    db.execute("DELETE FROM failing_webhooks WHERE webhook_id = $1", &[&webhook_id]).await?;
    Ok(())
}

pub async fn put_webhook(db: &impl GenericClient, clock: Clock, id: &str, definition: &str) -> anyhow::Result<()> {
    db.execute(
        "INSERT INTO webhooks (id, config, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET config = $2, updated_at = $3",
        &[&id, &definition, &clock.now()],
    )
    .await?;
    Ok(())
}

pub async fn replace_webhook(
    db: &impl GenericClient,
    clock: Clock,
    id: &str,
    expected: &str,
    definition: &str,
) -> anyhow::Result<bool> {
    let replaced = db
        .execute(
            "UPDATE webhooks SET config = $3, updated_at = $4 WHERE id = $1 AND config = $2",
            &[&id, &expected, &definition, &clock.now()],
        )
        .await?;
    Ok(replaced == 1)
}

pub async fn stored_webhook(db: &impl GenericClient, id: &str) -> anyhow::Result<Option<String>> {
    Ok(db.query_opt("SELECT config FROM webhooks WHERE id = $1", &[&id]).await?.map(|row| row.get(0)))
}

pub async fn create_webhook(db: &impl GenericClient, clock: Clock, id: &str, definition: &str) -> anyhow::Result<bool> {
    let inserted = db
        .execute(
            "INSERT INTO webhooks (id, config, updated_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
            &[&id, &definition, &clock.now()],
        )
        .await?;
    Ok(inserted == 1)
}

pub async fn delete_webhook(db: &impl GenericClient, id: &str) -> anyhow::Result<bool> {
    // Its runtime disable goes with it: a new webhook of that id starts enabled.
    db.execute("DELETE FROM disabled_webhooks WHERE webhook_id = $1", &[&id]).await?;
    db.execute("DELETE FROM failing_webhooks WHERE webhook_id = $1", &[&id]).await?;
    Ok(db.execute("DELETE FROM webhooks WHERE id = $1", &[&id]).await? > 0)
}

pub async fn stored_webhooks(db: &impl GenericClient) -> anyhow::Result<Vec<(String, String)>> {
    let rows = db.query("SELECT id, config FROM webhooks ORDER BY id", &[]).await?;
    rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
}

pub async fn disabled(db: &impl GenericClient) -> anyhow::Result<BTreeMap<String, DisabledWebhook>> {
    let rows = db.query("SELECT webhook_id, url, reason FROM disabled_webhooks", &[]).await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, DisabledWebhook { url: row.try_get(1)?, reason: row.try_get(2)? })))
        .collect()
}

/// Reports older than this are deleted: hosts without a `host_id` report under a new name
/// each run, and a host killed with `kill -9` never removes its own.
const FORGET_HOSTS_AFTER_MS: i64 = 3600 * 1000;

pub async fn report_host(db: &impl GenericClient, clock: Clock, host: &str, plugins: &str) -> anyhow::Result<()> {
    db.execute("DELETE FROM hosts WHERE seen_at < $1", &[&(clock.now() - FORGET_HOSTS_AFTER_MS)]).await?;
    db.execute(
        "INSERT INTO hosts (host, seen_at, plugins) VALUES ($1, $2, $3)
         ON CONFLICT (host) DO UPDATE SET seen_at = $2, plugins = $3",
        &[&host, &clock.now(), &plugins],
    )
    .await?;
    Ok(())
}

pub async fn forget_host(db: &impl GenericClient, host: &str) -> anyhow::Result<()> {
    db.execute("DELETE FROM hosts WHERE host = $1", &[&host]).await?;
    Ok(())
}

/// `(host, seen_at on the host's clock, plugins JSON)` of hosts seen since `since_ms` ago.
pub async fn live_hosts(
    db: &impl GenericClient,
    clock: Clock,
    seen_within_ms: i64,
) -> anyhow::Result<Vec<(String, i64, String)>> {
    let rows = db
        .query(
            "SELECT host, seen_at, plugins FROM hosts WHERE seen_at >= $1 ORDER BY host",
            &[&(clock.now() - seen_within_ms)],
        )
        .await?;
    rows.iter().map(|row| Ok((row.try_get(0)?, clock.to_host(row.try_get(1)?), row.try_get(2)?))).collect()
}

pub async fn put_plugin_version(
    db: &impl GenericClient,
    clock: Clock,
    version: &PluginVersion,
    wasm: &[u8],
) -> anyhow::Result<bool> {
    let inserted = db
        .execute(
            "INSERT INTO plugin_versions (plugin, sha256, wasm, size, uploaded_at, uploaded_by)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (plugin, sha256) DO NOTHING",
            &[
                &version.plugin,
                &version.sha256,
                &wasm,
                &(wasm.len() as i64),
                &clock.to_database(version.uploaded_at_ms),
                &version.uploaded_by,
            ],
        )
        .await?;
    Ok(inserted == 1)
}

pub async fn prune_plugin_versions(db: &impl GenericClient, plugin: &str, keep: usize) -> anyhow::Result<()> {
    db.execute(
        "DELETE FROM plugin_versions WHERE plugin = $1
           AND sha256 NOT IN (SELECT sha256 FROM plugin_versions WHERE plugin = $1
                              ORDER BY uploaded_at DESC, sha256 LIMIT $2)
           AND sha256 NOT IN (SELECT sha256 FROM plugin_activations WHERE plugin = $1
                              UNION SELECT canary_sha256 FROM plugin_activations
                              WHERE plugin = $1 AND canary_sha256 IS NOT NULL)",
        &[&plugin, &(keep as i64)],
    )
    .await?;
    Ok(())
}

pub async fn plugin_versions(
    db: &impl GenericClient,
    clock: Clock,
    plugin: &str,
) -> anyhow::Result<Vec<PluginVersion>> {
    let rows = db
        .query(
            "SELECT plugin, sha256, size, uploaded_at, uploaded_by FROM plugin_versions WHERE plugin = $1
             ORDER BY uploaded_at DESC, sha256",
            &[&plugin],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(PluginVersion {
                plugin: row.try_get(0)?,
                sha256: row.try_get(1)?,
                size: row.try_get::<_, i64>(2)? as u64,
                uploaded_at_ms: clock.to_host(row.try_get(3)?),
                uploaded_by: row.try_get(4)?,
            })
        })
        .collect()
}

pub async fn plugin_wasm(db: &impl GenericClient, plugin: &str, sha256: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let row =
        db.query_opt("SELECT wasm FROM plugin_versions WHERE plugin = $1 AND sha256 = $2", &[&plugin, &sha256]).await?;
    Ok(row.map(|row| row.get(0)))
}

pub async fn plugin_activations(db: &impl GenericClient, clock: Clock) -> anyhow::Result<Vec<PluginActivation>> {
    let rows = db
        .query(
            "SELECT plugin, sha256, canary_sha256, canary_percent, canary_since, activated_by FROM plugin_activations
             ORDER BY plugin",
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let canary =
                match (row.try_get::<_, Option<String>>(2)?, row.try_get::<_, Option<i32>>(3)?, row.try_get(4)?) {
                    (Some(sha256), Some(percent), Some(since)) => {
                        Some(Canary { sha256, percent: percent.clamp(0, 100) as u8, since_ms: clock.to_host(since) })
                    }
                    _ => None,
                };
            let by_file = row.try_get::<_, String>(5)? == "file";
            Ok(PluginActivation { plugin: row.try_get(0)?, sha256: row.try_get(1)?, canary, by_file })
        })
        .collect()
}

pub async fn activate_plugin(
    db: &impl GenericClient,
    clock: Clock,
    activation: &PluginActivation,
) -> anyhow::Result<()> {
    let canary = activation.canary.as_ref();
    db.execute(
        "INSERT INTO plugin_activations
         (plugin, sha256, canary_sha256, canary_percent, canary_since, activated_by, changed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (plugin) DO UPDATE SET sha256 = $2, canary_sha256 = $3, canary_percent = $4,
           canary_since = $5, activated_by = $6, changed_at = $7",
        &[
            &activation.plugin,
            &activation.sha256,
            &canary.map(|c| c.sha256.as_str()),
            &canary.map(|c| i32::from(c.percent)),
            &canary.map(|c| clock.to_database(c.since_ms)),
            &if activation.by_file { "file" } else { "api" },
            &clock.now(),
        ],
    )
    .await?;
    Ok(())
}

pub async fn end_canary(
    db: &impl GenericClient,
    clock: Clock,
    plugin: &str,
    canary_sha256: &str,
) -> anyhow::Result<bool> {
    let ended = db
        .execute(
            "UPDATE plugin_activations SET canary_sha256 = NULL, canary_percent = NULL, canary_since = NULL,
             changed_at = $3 WHERE plugin = $1 AND canary_sha256 = $2",
            &[&plugin, &canary_sha256, &clock.now()],
        )
        .await?;
    Ok(ended == 1)
}

pub async fn deactivate_plugin(db: &impl GenericClient, plugin: &str) -> anyhow::Result<()> {
    db.execute("DELETE FROM plugin_activations WHERE plugin = $1", &[&plugin]).await?;
    Ok(())
}

pub async fn plugin_file(db: &impl GenericClient, plugin: &str) -> anyhow::Result<Option<String>> {
    let row = db.query_opt("SELECT sha256 FROM plugin_files WHERE plugin = $1", &[&plugin]).await?;
    Ok(row.map(|row| row.get(0)))
}

pub async fn set_plugin_file(db: &impl GenericClient, plugin: &str, sha256: &str) -> anyhow::Result<()> {
    db.execute(
        "INSERT INTO plugin_files (plugin, sha256) VALUES ($1, $2) ON CONFLICT (plugin) DO UPDATE SET sha256 = $2",
        &[&plugin, &sha256],
    )
    .await?;
    Ok(())
}

pub async fn webhook_event_ids(
    db: &impl GenericClient,
    clock: Clock,
    webhook_ids: &[String],
    since_ms: Option<i64>,
    limit: u32,
) -> anyhow::Result<Vec<(String, String)>> {
    let rows = db
        .query(
            "SELECT d.webhook_id, d.event_id FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE d.webhook_id = ANY($1) AND e.received_at >= $2 ORDER BY d.created_at DESC, d.id DESC LIMIT $3",
            &[&webhook_ids, &since_ms.map_or(i64::MIN, |since| clock.to_database(since)), &i64::from(limit)],
        )
        .await?;
    rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
}
