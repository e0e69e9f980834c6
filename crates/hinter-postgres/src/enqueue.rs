//! Transactional enqueue: jobs written inside the application's own transaction, so they
//! exist if and only if that transaction commits.
//!
//! The jobs are inserted by the same code as [`hinter_core::Store::job_insert_many`]
//! (`ops::job_insert_many`: the same duplicate detection under the same advisory locks, the
//! same ordering-key `seq` rules) and the `JobsAvailable` notification is sent in the same
//! transaction, so workers everywhere wake when the application commits, and not before.
//!
//! hinter's statements find its tables through `search_path`: for the duration of the call it
//! is set (`set_config(…, true)`, local to the transaction) to hinter's schema, then set back
//! to what it was, so the application's own statements see no difference.

use crate::connect::{quote_ident, validate_schema};
use crate::{events, migrate, ops};
use chrono::{DateTime, Utc};
use hinter_core::store::StoreResult;
use hinter_core::{Inserted, NewJob, StoreError, StoreEvent};
use tokio_postgres::Transaction;

/// Enqueues `jobs` inside the caller's transaction `tx`: they are visible to anyone else,
/// and idle workers on every machine are woken, only when `tx` commits; a rollback leaves no
/// trace (no job, no wake-up).
///
/// `schema` is the schema holding hinter's tables, as in [`crate::PostgresOptions::schema`]
/// (`Some(DEFAULT_SCHEMA)` unless hinter was told otherwise; `None`: the tables are found
/// through the connection's own `search_path`). The schema must exist at the current version
/// ([`crate::PostgresStore::connect`], `hinter serve` or `hinter migrate` create it).
///
/// The answer is that of [`hinter_core::Store::job_insert_many`], one entry per job in
/// order: a job whose `unique_key` matches an unfinished (or in-window) job, committed or
/// written earlier in this same transaction, is not inserted and answers the existing job
/// with `duplicate: true`. Jobs must be complete: build them with
/// [`hinter_core::Definitions::resolve`] (validation, the definition's defaults) or
/// [`NewJob::new`].
///
/// Like any statement, a failure (a database error, [`StoreError::Conflict`] for a job id
/// that already exists) may leave `tx` aborted: roll it back, and retry the whole
/// transaction if the error was transient (a deadlock, a lost connection). Jobs with a
/// `unique_key` or an `ordering_key` hold a transaction advisory lock on that key until `tx`
/// ends, as concurrent enqueues of the same key must wait for its outcome: keep such
/// transactions short.
///
/// ```no_run
/// # async fn example(client: &mut tokio_postgres::Client) -> Result<(), Box<dyn std::error::Error>> {
/// use hinter_core::NewJob;
/// use serde_json::json;
///
/// let tx = client.transaction().await?;
/// tx.execute("INSERT INTO orders (id) VALUES ($1)", &[&42_i64]).await?;
/// let job = NewJob::new("send_receipt", json!({ "order": 42 }));
/// hinter_postgres::enqueue_in(&tx, Some("hinter"), vec![job], chrono::Utc::now()).await?;
/// tx.commit().await?; // the order and its job, or neither
/// # Ok(())
/// # }
/// ```
pub async fn enqueue_in(
    tx: &Transaction<'_>,
    schema: Option<&str>,
    jobs: Vec<NewJob>,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Inserted>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(schema) = schema {
        validate_schema(schema)?;
    }
    let channel = events::channel(schema);
    let saved = enter(tx, schema).await.map_err(ops::Error::into_store)?;
    let inserted = async {
        let mut events: Vec<StoreEvent> = Vec::new();
        let inserted = ops::job_insert_many(tx, &jobs, now, &mut events).await?;
        // The application commits, so the listener delivers these to this process too.
        ops::notify(tx, &channel, &events, None).await?;
        Ok::<_, ops::Error>(inserted)
    }
    .await;
    // After a database error the transaction is aborted and refuses this too; the caller
    // rolls it back, which restores the search_path anyway.
    let restored = leave(tx, saved).await;
    let inserted = inserted.map_err(ops::Error::into_store)?;
    restored.map_err(ops::Error::into_store)?;
    Ok(inserted)
}

/// Points the transaction's `search_path` at hinter's schema and checks the schema's
/// version; returns the `search_path` to restore (`None`: it was not changed).
async fn enter(tx: &Transaction<'_>, schema: Option<&str>) -> ops::Result<Option<String>> {
    let (place, table) = match schema {
        Some(schema) => (
            format!("schema {schema}"),
            format!("{}.schema_migrations", quote_ident(schema)),
        ),
        None => (
            "the connection's search_path".to_string(),
            "schema_migrations".to_string(),
        ),
    };
    let (saved, exists) = match schema {
        Some(schema) => {
            let row = tx
                .query_one(
                    "SELECT current_setting('search_path'), \
                            set_config('search_path', $1, true), to_regclass($2) IS NOT NULL",
                    &[&quote_ident(schema), &table],
                )
                .await?;
            (
                Some(ops::get::<String>(&row, 0)?),
                ops::get::<bool>(&row, 2)?,
            )
        }
        None => {
            let row = tx
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
                .await?;
            (None, ops::get::<bool>(&row, 0)?)
        }
    };
    let checked = check_version(tx, exists, &place, &table).await;
    if checked.is_err() {
        let _ = leave(tx, saved.clone()).await;
    }
    checked.map(|()| saved)
}

/// Refuses a schema that is missing, older or newer than this build's.
async fn check_version(
    tx: &Transaction<'_>,
    exists: bool,
    place: &str,
    table: &str,
) -> ops::Result<()> {
    if !exists {
        return Err(StoreError::Unavailable(format!(
            "hinter's tables are not in {place}: run `hinter migrate` (or start hinter) on \
             this database first"
        ))
        .into());
    }
    let row = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {table}"),
            &[],
        )
        .await?;
    let version: i64 = ops::get(&row, 0)?;
    let latest = migrate::LATEST_VERSION;
    if version != latest {
        let advice = if version < latest {
            "run `hinter migrate` to bring it up to date"
        } else {
            "upgrade hinter-postgres in this application"
        };
        return Err(StoreError::Unavailable(format!(
            "hinter's tables in {place} are at schema version {version}, this build writes \
             version {latest}: {advice}"
        ))
        .into());
    }
    Ok(())
}

/// Sets the transaction's `search_path` back.
async fn leave(tx: &Transaction<'_>, saved: Option<String>) -> ops::Result<()> {
    if let Some(search_path) = saved {
        tx.execute(
            "SELECT set_config('search_path', $1, true)",
            &[&search_path],
        )
        .await?;
    }
    Ok(())
}
