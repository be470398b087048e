//! The database file's settings and its schema, versioned by numbered migrations in
//! `host/migrations/sqlite/` (refinery, which has a PostgreSQL driver too, records each
//! applied version in `refinery_schema_history`).
//!
//! At start a newer binary applies the versions it has and the file lacks, all in one
//! transaction, and logs each; a binary older than the file refuses it rather than misread
//! it. A data dir written before versioned migrations has the version 1 tables and no
//! history: version 1 creates its tables only if they do not exist, so such a file adopts it
//! unchanged.

use anyhow::{Context, bail};
use rusqlite::Connection;

mod embedded {
    refinery::embed_migrations!("migrations/sqlite");
}

const HISTORY_TABLE: &str = "refinery_schema_history";

/// Settings that only a new, empty database can take, then those every connection that
/// writes needs.
pub fn configure(connection: &Connection) -> anyhow::Result<()> {
    let pages: i64 = connection.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    if pages == 0 {
        // 1 KiB pages: each commit writes every page it touched to the WAL, and most are
        // index pages that gained one small entry. Incremental auto-vacuum lets retention
        // give space back to the file system (it cannot be switched on later without a
        // full VACUUM).
        connection
            .execute_batch("PRAGMA page_size = 1024; PRAGMA auto_vacuum = INCREMENTAL;")
            .context("configuring a new database")?;
    }
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY;
             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
        )
        .context("configuring SQLite")?;
    // Checkpoints run beside the writer, not inside one of its commits: an automatic
    // checkpoint fsyncs the database file while every ingest in that commit waits. After a
    // checkpoint the WAL is cut back to this size instead of keeping its largest.
    connection
        .execute_batch("PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;")
        .context("configuring SQLite")?;
    Ok(())
}

/// The newest schema version this binary knows.
pub fn latest_version() -> i64 {
    embedded::migrations::runner().get_migrations().iter().map(|m| i64::from(m.version())).max().unwrap_or(0)
}

/// The schema version `connection`'s file is at: 0 for an empty file or one written before
/// versioned migrations.
pub fn current_version(connection: &Connection) -> anyhow::Result<i64> {
    let has_history: bool = connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [HISTORY_TABLE],
        |r| r.get(0),
    )?;
    if !has_history {
        return Ok(0);
    }
    let version: Option<i64> =
        connection.query_row(&format!("SELECT MAX(version) FROM {HISTORY_TABLE}"), [], |r| r.get(0))?;
    Ok(version.unwrap_or(0))
}

/// Brings the file's schema up to [`latest_version`], or refuses a file from a newer binary.
pub fn migrate(connection: &mut Connection, path: &std::path::Path) -> anyhow::Result<()> {
    let latest = latest_version();
    let current = current_version(connection)?;
    if current > latest {
        bail!(
            "{} has store schema version {current}, written by a newer hookwasm; this binary knows versions up to \
             {latest}. Run a hookwasm at least as new as the one that last opened it (or restore a backup of the \
             data dir taken before that upgrade)",
            path.display()
        );
    }
    if current == latest {
        return Ok(());
    }
    let unversioned: bool = connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'deliveries')",
        [],
        |r| r.get(0),
    )?;
    if current == 0 && unversioned {
        tracing::info!(file = %path.display(), "store written before versioned schemas: adopting it as version 1");
    }
    let report = embedded::migrations::runner()
        .set_grouped(true)
        .set_abort_divergent(true)
        .set_abort_missing(true)
        .run(connection)
        .with_context(|| {
            format!("upgrading the store schema of {} from version {current} to {latest}", path.display())
        })?;
    for migration in report.applied_migrations() {
        tracing::info!(version = migration.version(), name = migration.name(), "store schema migration applied");
    }
    tracing::info!(from = current, to = latest, file = %path.display(), "store schema up to date");
    Ok(())
}
