//! Versioned schema migrations, applied at connect under a session advisory lock so that
//! processes starting together migrate one after the other.

use crate::connect::quote_ident;
use hinter_core::StoreError;
use tokio_postgres::Client;

/// Every migration, by version. Never edit one that has shipped; add the next.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_init.sql")),
    (2, include_str!("migrations/0002_cluster.sql")),
    (3, include_str!("migrations/0003_errors_omitted.sql")),
    (4, include_str!("migrations/0004_runs.sql")),
    (5, include_str!("migrations/0005_process_machine.sql")),
    (6, include_str!("migrations/0006_events.sql")),
    (7, include_str!("migrations/0007_tokens.sql")),
    (8, include_str!("migrations/0008_idempotency.sql")),
    (9, include_str!("migrations/0009_job_logs.sql")),
    (10, include_str!("migrations/0010_schedules.sql")),
    (11, include_str!("migrations/0011_followups.sql")),
    (12, include_str!("migrations/0012_job_counts.sql")),
    (13, include_str!("migrations/0013_jobs_by_name.sql")),
    (14, include_str!("migrations/0014_listing_indexes.sql")),
    (15, include_str!("migrations/0015_running_by_name.sql")),
];

/// The schema version this build writes.
pub const LATEST_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Every migration's version, in order. Versions need not be consecutive: features built
/// side by side take their numbers ahead, and every version the database has not recorded is
/// applied, in order.
pub fn versions() -> Vec<i64> {
    MIGRATIONS.iter().map(|(version, _)| *version).collect()
}

fn fail(what: &str, e: tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(format!("{what}: {}", crate::ops::describe(&e)))
}

/// Brings the database (in `schema`, created if missing) to [`LATEST_VERSION`]; refuses a
/// database from a newer hinter. `client` must be a connection of its own: the advisory lock
/// is held by the session, and dropping the connection releases it whatever happens.
pub async fn migrate(client: &mut Client, schema: Option<&str>) -> Result<i64, StoreError> {
    let lock_name = format!("hinter.migrate.{}", schema.unwrap_or(""));
    client
        .execute(
            "SELECT pg_advisory_lock(hashtextextended($1, 0))",
            &[&lock_name],
        )
        .await
        .map_err(|e| fail("taking the migration lock", e))?;
    let result = migrate_locked(client, schema).await;
    let unlocked = client
        .execute(
            "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
            &[&lock_name],
        )
        .await;
    let version = result?;
    unlocked.map_err(|e| fail("releasing the migration lock", e))?;
    Ok(version)
}

async fn migrate_locked(client: &mut Client, schema: Option<&str>) -> Result<i64, StoreError> {
    // `… IF NOT EXISTS` answers every start with a NOTICE ("already exists, skipping") that
    // the driver would log at INFO; only warnings and errors are news.
    client
        .batch_execute("SET client_min_messages TO warning")
        .await
        .map_err(|e| fail("setting client_min_messages", e))?;
    if let Some(schema) = schema {
        let quoted = quote_ident(schema);
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {quoted}; SET search_path TO {quoted}"
            ))
            .await
            .map_err(|e| fail(&format!("creating schema {schema}"), e))?;
    }
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    BIGINT      PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(|e| fail("creating schema_migrations", e))?;
    let current: i64 = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::int8 FROM schema_migrations",
            &[],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| fail("reading the schema version", e))?;
    if current > LATEST_VERSION {
        return Err(StoreError::Unavailable(format!(
            "the database has hinter schema version {current}, newer than this hinter knows \
             ({LATEST_VERSION}); run a newer hinter"
        )));
    }
    // Every migration not recorded, also one numbered below a recorded version: features
    // built side by side take their numbers ahead, so a database may have met a later one
    // first.
    let applied: Vec<i64> = client
        .query("SELECT version FROM schema_migrations", &[])
        .await
        .map_err(|e| fail("reading the schema versions", e))?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(|e| fail("reading the schema versions", e))?;
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| !applied.contains(v)) {
        let tx = client
            .transaction()
            .await
            .map_err(|e| fail("starting a migration", e))?;
        tx.batch_execute(sql)
            .await
            .map_err(|e| fail(&format!("applying migration {version}"), e))?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(|e| fail("recording a migration", e))?;
        tx.commit()
            .await
            .map_err(|e| fail(&format!("committing migration {version}"), e))?;
        tracing::info!(version, schema, "applied schema migration");
    }
    Ok(LATEST_VERSION.max(current))
}
