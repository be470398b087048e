//! Every statement that writes, each run by the writer thread inside its open transaction.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::reads::filter_sql;
use crate::model::Event;
use crate::store::{
    DeliveryFilter, DeliveryUpdate, DueDelivery, EventCursor, Expired, IngestOutcome, NewDelivery, PluginActivation,
    PluginVersion, Transformed, now_ms,
};

const EXCERPT_BYTES: usize = 512;

/// What a replay does to a delivery: due now on a fresh schedule; `held` and `filtered` ones
/// (and any never transformed) are transformed again, the others resend their stored body.
const REPLAY_SET: &str = "
    state = CASE WHEN state IN ('held', 'filtered') OR body IS NULL THEN 'pending' ELSE 'retrying' END,
    body = CASE WHEN state IN ('held', 'filtered') THEN NULL ELSE body END,
    headers = CASE WHEN state IN ('held', 'filtered') THEN NULL ELSE headers END,
    plugin_sha = CASE WHEN state IN ('held', 'filtered') THEN NULL ELSE plugin_sha END,
    attempts = 0, next_attempt_at = ?1, reason = NULL, lease_owner = NULL, lease_until = 0,
    replay_requested = 0, updated_at = ?1";

pub fn ingest(db: &Connection, event: &Event, deliveries: &[NewDelivery]) -> anyhow::Result<IngestOutcome> {
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

pub fn claim(
    db: &Connection,
    owner: &str,
    limit: usize,
    busy: &[String],
    lease: Duration,
) -> anyhow::Result<Vec<DueDelivery>> {
    let now = now_ms();
    // The busy webhooks are spliced in as one placeholder each, so the statement for each
    // count is prepared once (a JSON array through `json_each(?)` is re-prepared per claim).
    let skip_busy = match busy.len() {
        0 => String::new(),
        n => format!("AND webhook_id NOT IN ({})", (5..5 + n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")),
    };
    // A replay queued behind a lease that expired (its holder died) is this claim: the
    // delivery goes out now, on a fresh schedule.
    let mut claimed = db.prepare_cached(&format!(
        "UPDATE deliveries SET lease_owner = ?1, lease_until = ?2,
             attempts = CASE WHEN replay_requested = 1 THEN 0 ELSE attempts END, replay_requested = 0
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

pub fn apply_update(db: &Connection, owner: &str, update: &DeliveryUpdate) -> anyhow::Result<bool> {
    let now = now_ms();
    let (body, headers, transformed_sha) = match &update.transformed {
        Some(t) => (Some(t.body.as_slice()), Some(serde_json::to_string(&t.headers)?), t.plugin_sha.as_deref()),
        None => (None, None, None),
    };
    let plugin_sha = transformed_sha.or(update.plugin_sha.as_deref());
    let replay_requested: Option<bool> = db
        .prepare_cached(
            "UPDATE deliveries SET state = ?1, next_attempt_at = ?2, attempts = attempts + ?3,
                 body = COALESCE(?4, body), headers = COALESCE(?5, headers), plugin_sha = COALESCE(?6, plugin_sha),
                 reason = ?7, lease_owner = NULL, lease_until = 0, updated_at = ?8
             WHERE id = ?9 AND lease_owner = ?10
             RETURNING replay_requested",
        )?
        .query_row(
            params![
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
            ],
            |row| row.get(0),
        )
        .optional()?;
    let Some(replay_requested) = replay_requested else { return Ok(false) };
    if let Some(attempt) = &update.attempt {
        let mut excerpt = attempt.response_excerpt.clone();
        if excerpt.len() > EXCERPT_BYTES {
            let cut = (0..=EXCERPT_BYTES).rev().find(|&i| excerpt.is_char_boundary(i)).unwrap_or(0);
            excerpt.truncate(cut);
        }
        db.prepare_cached("INSERT INTO attempts (delivery_id, at, status, latency_ms, response_excerpt, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
            .execute(params![update.id, attempt.at_ms, attempt.status, attempt.latency_ms as i64, excerpt, attempt.error])?;
    }
    if replay_requested {
        replay_queued(db, &update.id)?;
    }
    Ok(true)
}

/// Carries out a replay that waited for a worker's lease.
fn replay_queued(db: &Connection, id: &str) -> anyhow::Result<()> {
    db.prepare_cached(&format!("UPDATE deliveries SET {REPLAY_SET} WHERE id = ?2 AND replay_requested = 1"))?
        .execute(params![now_ms(), id])?;
    Ok(())
}

pub fn release(db: &Connection, owner: &str, ids: &[String]) -> anyhow::Result<()> {
    let mut statement = db.prepare_cached(
        "UPDATE deliveries SET lease_owner = NULL, lease_until = 0 WHERE id = ?1 AND lease_owner = ?2
         RETURNING replay_requested",
    )?;
    for id in ids {
        let replay_requested: Option<bool> = statement.query_row(params![id, owner], |row| row.get(0)).optional()?;
        if replay_requested == Some(true) {
            replay_queued(db, id)?;
        }
    }
    Ok(())
}

/// At start: the embedded store belongs to one process, so every lease is a previous run's
/// (a crash) and is released at once rather than waiting for it to expire; replays that
/// waited for those leases take effect.
pub fn release_all(db: &Connection) -> anyhow::Result<usize> {
    let now = now_ms();
    db.execute(&format!("UPDATE deliveries SET {REPLAY_SET} WHERE replay_requested = 1"), params![now])?;
    Ok(db.execute("UPDATE deliveries SET lease_owner = NULL, lease_until = 0 WHERE lease_owner IS NOT NULL", [])?)
}

pub fn requeue_held(db: &Connection, webhooks: &[String]) -> anyhow::Result<u64> {
    let mut statement = db.prepare_cached(
        "UPDATE deliveries SET state = 'pending', next_attempt_at = ?2, reason = NULL, updated_at = ?2 WHERE webhook_id = ?1 AND state = 'held'",
    )?;
    let mut total = 0;
    for webhook in webhooks {
        total += statement.execute(params![webhook, now_ms()])? as u64;
    }
    Ok(total)
}

/// Replays what `filter` matches: at once where no live lease is held, else once the
/// lease holder records its result (see [`apply_update`] and [`release`]).
pub fn replay(db: &Connection, filter: &DeliveryFilter) -> anyhow::Result<u64> {
    let (condition, mut values) = filter_sql(filter, 2);
    let now = now_ms();
    values.insert(0, rusqlite::types::Value::Integer(now));
    let matching = format!("SELECT d.id FROM deliveries d JOIN events e ON e.id = d.event_id WHERE {condition}");
    let queued = db.execute(
        &format!("UPDATE deliveries SET replay_requested = 1 WHERE lease_until > ?1 AND id IN ({matching})"),
        rusqlite::params_from_iter(values.iter()),
    )?;
    let replayed = db.execute(
        &format!("UPDATE deliveries SET {REPLAY_SET} WHERE lease_until <= ?1 AND id IN ({matching})"),
        rusqlite::params_from_iter(values.iter()),
    )?;
    Ok((queued + replayed) as u64)
}

/// Deletes up to `batch` expired final deliveries with their attempts, their events once
/// no delivery refers to them, and up to `batch` events without deliveries received before
/// the cutoff (scanned from `events_from`).
pub fn expire(db: &Connection, cutoff_ms: i64, batch: usize, events_from: EventCursor) -> anyhow::Result<Expired> {
    let expired: Vec<(String, String)> = db
        .prepare_cached(
            "SELECT id, event_id FROM deliveries
             WHERE state IN ('delivered', 'filtered', 'dead') AND updated_at < ?1
             ORDER BY updated_at LIMIT ?2",
        )?
        .query_map(params![cutoff_ms, batch as i64], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut delete_attempts = db.prepare_cached("DELETE FROM attempts WHERE delivery_id = ?1")?;
    let mut delete_delivery = db.prepare_cached("DELETE FROM deliveries WHERE id = ?1")?;
    let mut delete_orphan = db.prepare_cached(
        "DELETE FROM events WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM deliveries WHERE event_id = ?1)",
    )?;
    let mut events = 0;
    for (id, _) in &expired {
        delete_attempts.execute([id])?;
        delete_delivery.execute([id])?;
    }
    let mut event_ids: Vec<&str> = expired.iter().map(|(_, event)| event.as_str()).collect();
    event_ids.sort_unstable();
    event_ids.dedup();
    for event in event_ids {
        events += delete_orphan.execute([event])? as u64;
    }

    // Events that never had a delivery (no webhook subscribed) or whose deliveries went
    // before the event was old enough; those still referred to are left for the path above.
    let scanned: Vec<(i64, i64, bool)> = db
        .prepare_cached(
            "SELECT e.received_at, e.rowid, EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
             FROM events e WHERE (e.received_at, e.rowid) > (?1, ?2) AND e.received_at < ?3
             ORDER BY e.received_at, e.rowid LIMIT ?4",
        )?
        .query_map(params![events_from.received_at_ms, events_from.seq, cutoff_ms, batch as i64], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut delete_event = db.prepare_cached("DELETE FROM events WHERE rowid = ?1")?;
    for (_, seq, referred) in &scanned {
        if !referred {
            events += delete_event.execute([seq])? as u64;
        }
    }
    let events_cursor =
        scanned.last().map(|&(received_at_ms, seq, _)| EventCursor { received_at_ms, seq }).unwrap_or(events_from);
    Ok(Expired {
        deliveries: expired.len() as u64,
        events,
        events_cursor,
        more: expired.len() == batch || scanned.len() == batch,
    })
}

/// Pages released per step, so one step holds the writer only briefly.
const RECLAIM_STEP_PAGES: i64 = 1024;

/// With incremental auto-vacuum (new databases), returns free pages to the file system
/// while more than a quarter of the file is free, one step at a time; otherwise free pages
/// are simply reused by later writes. Returns the bytes released.
pub fn reclaim_space(db: &Connection) -> anyhow::Result<u64> {
    let pragma = |name: &str| db.query_row(&format!("PRAGMA {name}"), [], |row| row.get::<_, i64>(0));
    if pragma("auto_vacuum")? != 2 {
        return Ok(0);
    }
    let (free, pages, page_size) = (pragma("freelist_count")?, pragma("page_count")?, pragma("page_size")?);
    if free * 4 < pages {
        return Ok(0);
    }
    let step = free.min(RECLAIM_STEP_PAGES);
    db.execute_batch(&format!("PRAGMA incremental_vacuum({step})"))?;
    let released = free - pragma("freelist_count")?;
    Ok((released * page_size) as u64)
}

pub fn disable_webhook(db: &Connection, webhook_id: &str, url: &str, reason: &str) -> anyhow::Result<()> {
    db.execute(
        "INSERT OR REPLACE INTO disabled_webhooks (webhook_id, url, reason, disabled_at) VALUES (?1, ?2, ?3, ?4)",
        params![webhook_id, url, reason, now_ms()],
    )?;
    Ok(())
}

pub fn enable_webhook(db: &Connection, webhook_id: &str) -> anyhow::Result<()> {
    db.execute("DELETE FROM disabled_webhooks WHERE webhook_id = ?1", [webhook_id])?;
    db.execute("DELETE FROM failing_webhooks WHERE webhook_id = ?1", [webhook_id])?;
    Ok(())
}

pub fn webhook_failed(db: &Connection, webhook_id: &str, since_ms: i64) -> anyhow::Result<i64> {
    db.execute(
        "INSERT INTO failing_webhooks (webhook_id, since) VALUES (?1, ?2) ON CONFLICT (webhook_id) DO UPDATE SET since = MIN(since, excluded.since)",
        params![webhook_id, since_ms],
    )?;
    Ok(db.query_row("SELECT since FROM failing_webhooks WHERE webhook_id = ?1", [webhook_id], |row| row.get(0))?)
}

pub fn webhook_succeeded(db: &Connection, webhook_id: &str) -> anyhow::Result<()> {
    db.execute("DELETE FROM failing_webhooks WHERE webhook_id = ?1", [webhook_id])?;
    Ok(())
}

pub fn put_webhook(db: &Connection, id: &str, definition: &str) -> anyhow::Result<()> {
    db.execute(
        "INSERT OR REPLACE INTO webhooks (id, config, updated_at) VALUES (?1, ?2, ?3)",
        params![id, definition, now_ms()],
    )?;
    Ok(())
}

pub fn replace_webhook(db: &Connection, id: &str, expected: &str, definition: &str) -> anyhow::Result<bool> {
    let replaced = db.execute(
        "UPDATE webhooks SET config = ?3, updated_at = ?4 WHERE id = ?1 AND config = ?2",
        params![id, expected, definition, now_ms()],
    )?;
    Ok(replaced == 1)
}

pub fn create_webhook(db: &Connection, id: &str, definition: &str) -> anyhow::Result<bool> {
    let inserted = db.execute(
        "INSERT INTO webhooks (id, config, updated_at) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO NOTHING",
        params![id, definition, now_ms()],
    )?;
    Ok(inserted == 1)
}

pub fn delete_webhook(db: &Connection, id: &str) -> anyhow::Result<bool> {
    // Its runtime disable goes with it: a new webhook of that id starts enabled.
    db.execute("DELETE FROM disabled_webhooks WHERE webhook_id = ?1", [id])?;
    db.execute("DELETE FROM failing_webhooks WHERE webhook_id = ?1", [id])?;
    Ok(db.execute("DELETE FROM webhooks WHERE id = ?1", [id])? > 0)
}

pub fn put_plugin_version(db: &Connection, version: &PluginVersion, wasm: &[u8]) -> anyhow::Result<bool> {
    let inserted = db.execute(
        "INSERT INTO plugin_versions (plugin, sha256, wasm, size, uploaded_at, uploaded_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (plugin, sha256) DO NOTHING",
        params![version.plugin, version.sha256, wasm, wasm.len() as i64, version.uploaded_at_ms, version.uploaded_by],
    )?;
    Ok(inserted == 1)
}

pub fn prune_plugin_versions(db: &Connection, plugin: &str, keep: usize) -> anyhow::Result<()> {
    db.execute(
        "DELETE FROM plugin_versions WHERE plugin = ?1
           AND sha256 NOT IN (SELECT sha256 FROM plugin_versions WHERE plugin = ?1
                              ORDER BY uploaded_at DESC, rowid DESC LIMIT ?2)
           AND sha256 NOT IN (SELECT sha256 FROM plugin_activations WHERE plugin = ?1
                              UNION SELECT canary_sha256 FROM plugin_activations
                              WHERE plugin = ?1 AND canary_sha256 IS NOT NULL)",
        params![plugin, keep as i64],
    )?;
    Ok(())
}

pub fn activate_plugin(db: &Connection, activation: &PluginActivation) -> anyhow::Result<()> {
    let canary = activation.canary.as_ref();
    db.execute(
        "INSERT OR REPLACE INTO plugin_activations
         (plugin, sha256, canary_sha256, canary_percent, canary_since, activated_by, changed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            activation.plugin,
            activation.sha256,
            canary.map(|c| &c.sha256),
            canary.map(|c| c.percent),
            canary.map(|c| c.since_ms),
            if activation.by_file { "file" } else { "api" },
            now_ms()
        ],
    )?;
    Ok(())
}

pub fn end_canary(db: &Connection, plugin: &str, canary_sha256: &str) -> anyhow::Result<bool> {
    let ended = db.execute(
        "UPDATE plugin_activations SET canary_sha256 = NULL, canary_percent = NULL, canary_since = NULL,
         changed_at = ?3 WHERE plugin = ?1 AND canary_sha256 = ?2",
        params![plugin, canary_sha256, now_ms()],
    )?;
    Ok(ended == 1)
}

pub fn deactivate_plugin(db: &Connection, plugin: &str) -> anyhow::Result<()> {
    db.execute("DELETE FROM plugin_activations WHERE plugin = ?1", [plugin])?;
    Ok(())
}

pub fn set_plugin_file(db: &Connection, plugin: &str, sha256: &str) -> anyhow::Result<()> {
    db.execute("INSERT OR REPLACE INTO plugin_files (plugin, sha256) VALUES (?1, ?2)", [plugin, sha256])?;
    Ok(())
}
