//! Read connections: reads run on their own connections beside the writer (WAL lets readers
//! and the writer proceed at once), so listings, `/metrics` and `/readyz` never queue behind
//! ingest on the writer thread.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

/// Page cache per read connection, in KiB. Each connection's cache fills to its size as a
/// busy host's reads touch more of a growing database: at SQLite's default (2 MiB each, 1 KiB
/// pages) the four of them added about 10 MiB to the host over its first five minutes under
/// load. Reads are listings and due-time lookups of a few hundred pages, and the file's pages
/// stay in the kernel's cache, so a smaller cache costs them little.
const READ_CACHE_KIB: u32 = 512;

/// A fixed set of read-only connections; a read waits for a free one, then runs on Tokio's
/// blocking pool.
pub struct Readers {
    idle: Mutex<Vec<Connection>>,
    free: Arc<Semaphore>,
}

impl Readers {
    pub fn open(path: &Path, count: usize) -> anyhow::Result<Arc<Readers>> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let connections = (0..count)
            .map(|_| {
                let connection = Connection::open_with_flags(path, flags)
                    .with_context(|| format!("opening {} for reading", path.display()))?;
                connection
                    .execute_batch(&format!("PRAGMA busy_timeout = 5000; PRAGMA cache_size = -{READ_CACHE_KIB};"))
                    .context("configuring a read connection")?;
                connection.set_prepared_statement_cache_capacity(32);
                Ok(connection)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Arc::new(Readers { idle: Mutex::new(connections), free: Arc::new(Semaphore::new(count)) }))
    }

    /// Runs `work` on a read connection.
    pub async fn read<T, F>(self: &Arc<Self>, work: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> anyhow::Result<T> + Send + 'static,
    {
        // The permit goes with the work: if the caller is dropped mid-read, the connection is
        // still in use until the blocking closure returns it.
        let permit = self.free.clone().acquire_owned().await.context("the store has shut down")?;
        let readers = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let connection = readers.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let connection = connection.context("no read connection free (host bug)")?;
            let result = work(&connection);
            readers.idle.lock().unwrap_or_else(|e| e.into_inner()).push(connection);
            result
        })
        .await
        .context("a store read panicked")?
    }
}
