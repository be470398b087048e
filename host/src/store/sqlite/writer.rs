//! The writer thread: it owns the one connection that writes and runs every write.
//!
//! It takes whatever operations are queued (up to [`MAX_BATCH`]) and runs them in one
//! transaction, so one fsync commits many ingests and updates (group commit). If one of them
//! fails, or the commit does, the batch is rolled back and each operation runs again in a
//! transaction of its own, so a failing operation stores nothing and does not affect its
//! neighbours. Replies are sent only after the commit. (A savepoint per operation would avoid
//! the replay, at the price of a statement journal copy of every page each operation touches.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::anyhow;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::store::StoreError;

const MAX_BATCH: usize = 512;
/// Operations queued for the writer before callers wait for room.
const QUEUE: usize = 4096;

/// One store operation: its work (run again if its batch is replayed) and where its result goes.
trait Operation: Send {
    /// Runs the work inside the writer's open transaction and keeps the result; returns
    /// whether it succeeded.
    fn run(&mut self, db: &Connection) -> bool;
    /// Sends the kept result, or `commit_error` if the transaction it ran in was not stored.
    fn finish(self: Box<Self>, commit_error: Option<&rusqlite::Error>);
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

    fn finish(self: Box<Self>, commit_error: Option<&rusqlite::Error>) {
        let result = match (commit_error, self.result) {
            (Some(error), _) => Err(classify(anyhow!("store commit failed: {error}"), is_full(Some(error)))),
            (None, Some(Err(error))) => {
                let full = is_full(error.downcast_ref::<rusqlite::Error>());
                Err(classify(error, full))
            }
            (None, Some(result)) => result,
            (None, None) => Err(anyhow!("the store did not run the request")),
        };
        let _ = self.reply.send(result);
    }
}

/// A full disk becomes [`StoreError::StorageFull`], so callers can tell it from other failures.
fn classify(error: anyhow::Error, full: bool) -> anyhow::Error {
    if full { anyhow::Error::new(StoreError::StorageFull(format!("{error:#}"))) } else { error }
}

fn is_full(error: Option<&rusqlite::Error>) -> bool {
    matches!(error.and_then(rusqlite::Error::sqlite_error_code), Some(rusqlite::ErrorCode::DiskFull))
}

type Job = Box<dyn Operation>;

/// The sending side of the writer thread's queue.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread on `connection`; `on_exit` runs on that thread when every
    /// [`Writer`] is dropped and the queue is drained. When `wal_full` is set, the writer
    /// finishes a checkpoint after its current batch and clears it.
    pub fn start(
        connection: Connection,
        wal_full: Arc<AtomicBool>,
        on_exit: impl FnOnce() + Send + 'static,
    ) -> anyhow::Result<Writer> {
        let (jobs, receiver) = mpsc::channel(QUEUE);
        std::thread::Builder::new().name("hookwasm-store".into()).spawn(move || {
            writer_loop(connection, receiver, &wal_full);
            on_exit();
        })?;
        Ok(Writer { jobs })
    }

    /// Runs `work` on the writer thread; answers once its batch has committed.
    pub async fn call<T, F>(&self, work: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> anyhow::Result<T> + Send + 'static,
    {
        let (reply, response) = oneshot::channel();
        let job: Job = Box::new(Pending { work, result: None, reply });
        self.jobs.send(job).await.map_err(|_| anyhow!("the store has shut down"))?;
        response.await.map_err(|_| anyhow!("the store dropped a request"))?
    }

    /// Whether the writer thread is still taking work.
    pub fn is_running(&self) -> bool {
        !self.jobs.is_closed()
    }
}

fn writer_loop(mut connection: Connection, mut receiver: mpsc::Receiver<Job>, wal_full: &AtomicBool) {
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
        if wal_full.swap(false, Ordering::Relaxed) {
            finish_checkpoint(&connection);
        }
    }
}

/// A checkpoint on the writer's own connection, between two batches: the checkpoint thread
/// has just copied nearly all of the WAL, so this copies the few frames committed since (and
/// syncs the database file), and the next commit starts the WAL over instead of growing it.
fn finish_checkpoint(connection: &Connection) {
    if let Err(error) = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(%error, "finishing a WAL checkpoint failed");
    }
}

/// Runs `batch` in one transaction and, once it has committed, sends every result; on a
/// failure, runs each operation again on its own (see the module docs).
fn run_batch(connection: &mut Connection, batch: &mut Vec<Job>) {
    let committed = match run_together(connection, batch) {
        Ok(()) => true,
        Err(error) if batch.len() == 1 => {
            // Nothing to separate: its own result (or the commit's error) is the answer.
            let job = batch.pop().expect("one job");
            job.finish(error.as_ref());
            return;
        }
        Err(_) => false,
    };
    for mut job in batch.drain(..) {
        if committed {
            job.finish(None);
        } else {
            let error = run_together(connection, std::slice::from_mut(&mut job)).err().flatten();
            job.finish(error.as_ref());
        }
    }
}

/// Runs `jobs` in one transaction and commits it if all of them succeeded. `Err(None)`: a
/// job failed (its error is its result) and nothing was stored; `Err(Some(error))`: the
/// transaction could not be begun or committed.
fn run_together(connection: &mut Connection, jobs: &mut [Job]) -> Result<(), Option<rusqlite::Error>> {
    let transaction = connection.transaction().map_err(Some)?;
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
        Some(error)
    })
}
