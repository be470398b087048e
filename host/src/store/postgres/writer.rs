//! Group commit for PostgreSQL: ingests and delivery results queued by many tasks are
//! written together, a few multi-row statements in one transaction, so one commit (one WAL
//! flush) stores a whole batch, as the SQLite writer does. If the batch fails, each operation
//! runs again in a transaction of its own, so a failing one stores nothing and its neighbours
//! are stored; replies are sent only after the commit. Nothing else goes through here.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use super::clock::Clock;
use super::{in_transaction, sql};
use crate::model::Event;
use crate::store::{DeliveryUpdate, IngestOutcome, NewDelivery};

const MAX_BATCH: usize = 512;
const QUEUE: usize = 4096;

enum Write {
    Ingest { event: Event, deliveries: Vec<NewDelivery>, reply: oneshot::Sender<anyhow::Result<IngestOutcome>> },
    Update { owner: String, update: DeliveryUpdate, reply: oneshot::Sender<anyhow::Result<bool>> },
}

/// The queue of the writer task.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Write>,
}

impl Writer {
    /// Starts the writer task; it stops once every [`Writer`] is dropped.
    pub fn start(pool: Pool, clock: Clock) -> Writer {
        let (jobs, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, clock, receiver));
        Writer { jobs }
    }

    pub async fn ingest(&self, event: Event, deliveries: Vec<NewDelivery>) -> anyhow::Result<IngestOutcome> {
        let (reply, result) = oneshot::channel();
        self.send(Write::Ingest { event, deliveries, reply }).await?;
        result.await.map_err(|_| anyhow::anyhow!("the store dropped a request"))?
    }

    pub async fn update(&self, owner: &str, update: DeliveryUpdate) -> anyhow::Result<bool> {
        let (reply, result) = oneshot::channel();
        self.send(Write::Update { owner: owner.to_string(), update, reply }).await?;
        result.await.map_err(|_| anyhow::anyhow!("the store dropped a request"))?
    }

    async fn send(&self, write: Write) -> anyhow::Result<()> {
        self.jobs.send(write).await.map_err(|_| anyhow::anyhow!("the store has shut down"))
    }
}

async fn run(pool: Pool, clock: Clock, mut receiver: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        match together(&pool, clock, &batch).await {
            Ok(outcomes) => {
                for (write, outcome) in batch.drain(..).zip(outcomes) {
                    match (write, outcome) {
                        (Write::Ingest { reply, .. }, Outcome::Ingest(outcome)) => drop(reply.send(Ok(outcome))),
                        (Write::Update { reply, .. }, Outcome::Update(recorded)) => drop(reply.send(Ok(recorded))),
                        _ => unreachable!("outcomes follow the batch's order"),
                    }
                }
            }
            Err(error) if unreachable(&error) => {
                // Each write on its own would wait for the server again, one after the other.
                let message = format!("{error:#}");
                for write in batch.drain(..) {
                    let failed = || anyhow::anyhow!("the database is unreachable: {message}");
                    match write {
                        Write::Ingest { reply, .. } => drop(reply.send(Err(failed()))),
                        Write::Update { reply, .. } => drop(reply.send(Err(failed()))),
                    }
                }
            }
            Err(error) => {
                if batch.len() > 1 {
                    tracing::debug!(%error, writes = batch.len(), "a store batch failed; writing each on its own");
                }
                for write in batch.drain(..) {
                    alone(&pool, clock, write).await;
                }
            }
        }
    }
}

/// Whether `error` is the database being out of reach (no connection, or the connection
/// lost), as opposed to a statement that failed.
fn unreachable(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<deadpool_postgres::PoolError>().is_some()
            || cause.downcast_ref::<tokio_postgres::Error>().is_some_and(|e| e.is_closed())
    })
}

enum Outcome {
    Ingest(IngestOutcome),
    Update(bool),
}

/// Writes the whole batch in one transaction; the outcomes follow the batch's order.
async fn together(pool: &Pool, clock: Clock, batch: &[Write]) -> anyhow::Result<Vec<Outcome>> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    let now = clock.now();

    // Events: the first of several posts of one id in the batch is the one stored.
    let mut first_posts: Vec<&Event> = Vec::new();
    let mut seen = HashSet::new();
    for write in batch {
        if let Write::Ingest { event, .. } = write
            && seen.insert(event.id.as_str())
        {
            first_posts.push(event);
        }
    }
    let mut new_events: HashSet<String> = HashSet::new();
    if !first_posts.is_empty() {
        let column = |field: fn(&Event) -> &str| first_posts.iter().map(|e| field(e)).collect::<Vec<&str>>();
        let rows = transaction
            .query(
                "INSERT INTO events (id, type, timestamp, data, received_at)
                 SELECT e.id, e.type, e.timestamp, e.data, $5
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) AS e(id, type, timestamp, data)
                 ON CONFLICT (id) DO NOTHING RETURNING id",
                &[
                    &column(|e| &e.id),
                    &column(|e| &e.event_type),
                    &column(|e| &e.timestamp),
                    &column(|e| &e.data),
                    &now,
                ],
            )
            .await?;
        new_events = rows.iter().map(|row| row.try_get(0)).collect::<Result<_, _>>()?;
    }
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut deliveries: Vec<(&NewDelivery, &str)> = Vec::new();
    for write in batch {
        match write {
            Write::Ingest { event, deliveries: new, .. } => {
                if new_events.remove(&event.id) {
                    deliveries.extend(new.iter().map(|d| (d, event.id.as_str())));
                    outcomes.push(Outcome::Ingest(IngestOutcome::Accepted { deliveries: new.len() }));
                } else {
                    outcomes.push(Outcome::Ingest(IngestOutcome::Duplicate));
                }
            }
            Write::Update { .. } => outcomes.push(Outcome::Update(false)),
        }
    }
    if !deliveries.is_empty() {
        let ids: Vec<&str> = deliveries.iter().map(|(d, _)| d.id.as_str()).collect();
        let events: Vec<&str> = deliveries.iter().map(|(_, event)| *event).collect();
        let webhooks: Vec<&str> = deliveries.iter().map(|(d, _)| d.webhook_id.as_str()).collect();
        let owners: Vec<Option<&str>> =
            deliveries.iter().map(|(d, _)| d.lease.as_ref().map(|l| l.owner.as_str())).collect();
        let until: Vec<i64> =
            deliveries.iter().map(|(d, _)| d.lease.as_ref().map_or(0, |l| clock.to_database(l.until_ms))).collect();
        transaction
            .execute(
                "INSERT INTO deliveries (id, event_id, webhook_id, state, next_attempt_at, created_at, updated_at, lease_owner, lease_until)
                 SELECT d.id, d.event_id, d.webhook_id, 'pending', $6, $6, $6, d.owner, d.until
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) AS d(id, event_id, webhook_id, owner, until)",
                &[&ids, &events, &webhooks, &owners, &until, &now],
            )
            .await?;
    }

    // Results: recorded only where the writer still holds the lease.
    let updates: Vec<(&str, &DeliveryUpdate)> = batch
        .iter()
        .filter_map(|write| match write {
            Write::Update { owner, update, .. } => Some((owner.as_str(), update)),
            Write::Ingest { .. } => None,
        })
        .collect();
    if !updates.is_empty() {
        let mut headers = Vec::with_capacity(updates.len());
        for (_, update) in &updates {
            headers.push(update.transformed.as_ref().map(|t| serde_json::to_string(&t.headers)).transpose()?);
        }
        let ids: Vec<&str> = updates.iter().map(|(_, u)| u.id.as_str()).collect();
        let owners: Vec<&str> = updates.iter().map(|(owner, _)| *owner).collect();
        let states: Vec<&str> = updates.iter().map(|(_, u)| u.state.as_str()).collect();
        let next: Vec<i64> = updates.iter().map(|(_, u)| clock.to_database(u.next_attempt_at_ms)).collect();
        let attempted: Vec<i32> = updates.iter().map(|(_, u)| u.attempt.is_some() as i32).collect();
        let bodies: Vec<Option<&[u8]>> =
            updates.iter().map(|(_, u)| u.transformed.as_ref().map(|t| t.body.as_slice())).collect();
        let shas: Vec<Option<&str>> = updates
            .iter()
            .map(|(_, u)| u.transformed.as_ref().and_then(|t| t.plugin_sha.as_deref()).or(u.plugin_sha.as_deref()))
            .collect();
        let reasons: Vec<Option<&str>> = updates.iter().map(|(_, u)| u.reason.as_deref()).collect();
        let rows = transaction
            .query(
                "UPDATE deliveries d SET state = u.state, next_attempt_at = u.next_at, attempts = d.attempts + u.attempted,
                     body = COALESCE(u.body, d.body), headers = COALESCE(u.headers, d.headers),
                     plugin_sha = COALESCE(u.sha, d.plugin_sha), reason = u.reason,
                     lease_owner = NULL, lease_until = 0, updated_at = $10
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::int[], $6::bytea[], $7::text[], $8::text[], $9::text[])
                     AS u(id, owner, state, next_at, attempted, body, headers, sha, reason)
                 WHERE d.id = u.id AND d.lease_owner = u.owner
                 RETURNING d.id, d.replay_requested",
                &[&ids, &owners, &states, &next, &attempted, &bodies, &headers, &shas, &reasons, &now],
            )
            .await?;
        let mut recorded: HashMap<String, bool> = HashMap::new();
        for row in rows {
            recorded.insert(row.try_get(0)?, row.try_get(1)?);
        }
        let attempts: Vec<(&str, &crate::store::Attempt)> = updates
            .iter()
            .filter(|(_, u)| recorded.contains_key(&u.id))
            .filter_map(|(_, u)| u.attempt.as_ref().map(|a| (u.id.as_str(), a)))
            .collect();
        if !attempts.is_empty() {
            let ids: Vec<&str> = attempts.iter().map(|(id, _)| *id).collect();
            let at: Vec<i64> = attempts.iter().map(|(_, a)| clock.to_database(a.at_ms)).collect();
            let status: Vec<Option<i32>> = attempts.iter().map(|(_, a)| a.status.map(i32::from)).collect();
            let latency: Vec<i64> = attempts.iter().map(|(_, a)| a.latency_ms as i64).collect();
            let excerpts: Vec<&str> = attempts.iter().map(|(_, a)| sql::excerpt(&a.response_excerpt)).collect();
            let errors: Vec<Option<&str>> = attempts.iter().map(|(_, a)| a.error.as_deref()).collect();
            transaction
                .execute(
                    "INSERT INTO attempts (delivery_id, at, status, latency_ms, response_excerpt, error)
                     SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::int[], $4::bigint[], $5::text[], $6::text[])",
                    &[&ids, &at, &status, &latency, &excerpts, &errors],
                )
                .await?;
        }
        for (id, replay_requested) in &recorded {
            if *replay_requested {
                sql::replay_queued(&*transaction, clock, id).await?;
            }
        }
        let mut updates = updates.iter();
        for outcome in &mut outcomes {
            if let Outcome::Update(recorded_here) = outcome {
                let (_, update) = updates.next().expect("one update per update outcome");
                *recorded_here = recorded.contains_key(&update.id);
            }
        }
    }
    transaction.commit().await?;
    Ok(outcomes)
}

/// Writes one operation in a transaction of its own and replies with its result.
async fn alone(pool: &Pool, clock: Clock, write: Write) {
    match write {
        Write::Ingest { event, deliveries, reply } => {
            let _ =
                reply.send(in_transaction(pool, async |db| sql::ingest(db, clock, &event, &deliveries).await).await);
        }
        Write::Update { owner, update, reply } => {
            let _ =
                reply.send(in_transaction(pool, async |db| sql::apply_update(db, clock, &owner, &update).await).await);
        }
    }
}
