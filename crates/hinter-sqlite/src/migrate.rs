//! Versioned schema migrations, applied in order at open.

use hinter_core::StoreError;
use rusqlite::Connection;

/// Every migration, by version. Never edit one that has shipped; add the next.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_init.sql")),
    (2, include_str!("migrations/0002_cluster.sql")),
    (3, include_str!("migrations/0003_errors_omitted.sql")),
    (4, include_str!("migrations/0004_finished_index.sql")),
    (5, include_str!("migrations/0005_runs.sql")),
    (6, include_str!("migrations/0006_process_machine.sql")),
    (7, include_str!("migrations/0007_events.sql")),
    (8, include_str!("migrations/0008_tokens.sql")),
    (9, include_str!("migrations/0009_idempotency.sql")),
    (10, include_str!("migrations/0010_job_logs.sql")),
    (11, include_str!("migrations/0011_schedules.sql")),
    (12, include_str!("migrations/0012_followups.sql")),
    (13, include_str!("migrations/0013_job_counts.sql")),
    (14, include_str!("migrations/0014_jobs_by_name.sql")),
    (15, include_str!("migrations/0015_listing_indexes.sql")),
    (16, include_str!("migrations/0016_running_by_name.sql")),
];

/// The schema version this build writes.
pub const LATEST_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Brings the database to [`LATEST_VERSION`]: applies, in order, every migration the
/// database has not recorded, also one numbered below a version it has (features built side
/// by side take their numbers ahead, so a database may have met a later number first).
/// Refuses a database from a newer hinter.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let fail = |what: &str, e: rusqlite::Error| StoreError::Unavailable(format!("{what}: {e}"));
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY,
             applied_at INTEGER NOT NULL
         )",
    )
    .map_err(|e| fail("creating schema_migrations", e))?;
    let current: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(|e| fail("reading schema version", e))?;
    if current > LATEST_VERSION {
        return Err(StoreError::Unavailable(format!(
            "the database has schema version {current}, newer than this hinter knows \
             ({LATEST_VERSION}); run a newer hinter"
        )));
    }
    let applied: Vec<i64> = {
        let mut statement = conn
            .prepare("SELECT version FROM schema_migrations")
            .map_err(|e| fail("reading schema versions", e))?;
        let rows = statement
            .query_map([], |r| r.get(0))
            .map_err(|e| fail("reading schema versions", e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| fail("reading schema versions", e))?
    };
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| !applied.contains(v)) {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| fail("starting migration", e))?;
        // Another process may have migrated while we waited for the write lock.
        let done: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
                [version],
                |r| r.get(0),
            )
            .map_err(|e| fail("reading schema version", e))?;
        if done {
            continue;
        }
        tx.execute_batch(sql)
            .map_err(|e| fail(&format!("applying migration {version}"), e))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            rusqlite::params![version, chrono::Utc::now().timestamp_micros()],
        )
        .map_err(|e| fail("recording migration", e))?;
        tx.commit()
            .map_err(|e| fail(&format!("committing migration {version}"), e))?;
        tracing::info!(version, "applied schema migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(conn: &Connection) -> Vec<i64> {
        let mut statement = conn
            .prepare("SELECT version FROM schema_migrations ORDER BY version")
            .expect("prepare");
        let rows = statement.query_map([], |r| r.get(0)).expect("query");
        rows.collect::<Result<_, _>>().expect("versions")
    }

    /// A database that recorded a later version before an earlier one (features merged in
    /// another order than numbered) gets the earlier one at the next start.
    #[test]
    fn a_missing_version_below_the_latest_is_applied() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = Connection::open(dir.path().join("hinter.db")).expect("open");
        migrate(&mut conn).expect("migrate");
        let all: Vec<i64> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        assert_eq!(versions(&conn), all);
        // As if version 7 had not been there when a later one was applied.
        conn.execute_batch("DROP TABLE events; DELETE FROM schema_migrations WHERE version = 7")
            .expect("undo migration 7");
        assert!(
            MIGRATIONS.iter().any(|(v, _)| *v > 7),
            "a later version exists"
        );
        migrate(&mut conn).expect("migrate again");
        assert_eq!(versions(&conn), all);
        conn.execute("INSERT INTO events (at, kind, job_seq, job_id, job, queue, attempt) VALUES (0, 'created', 1, 'x', 'j', 'q', 0)", [])
            .expect("the events table is back");
    }
}
