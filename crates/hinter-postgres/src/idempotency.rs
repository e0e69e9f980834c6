//! Idempotency keys of enqueues ([`hinter_core::store::IdempotentInsert`]), inside the
//! transaction of the insert.
//!
//! The key's row is taken first (inserted without an answer, or an expired row taken over),
//! then the jobs are inserted and the answer written into the row. A concurrent transaction
//! with the same key waits on the primary key until the first one ends: on commit it reads
//! the kept answer (read committed: each statement sees what committed before it started),
//! on rollback its own insert goes ahead. So two uses of one key never both insert.

use crate::ops::{self, execute, get, query_opt, truncate, Result};
use chrono::{DateTime, Utc};
use hinter_core::store::{decode_kept_answer, encode_kept_answer, Idempotent, IdempotentInsert};
use hinter_core::{StoreError, StoreEvent};

/// Inserts the jobs and keeps their answer with the key, or answers what the key kept.
pub async fn insert_once<C: ops::Conn>(
    c: &C,
    request: &IdempotentInsert,
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<Idempotent> {
    request.check()?;
    let now = truncate(now);
    let taken = query_opt(
        c,
        "INSERT INTO idempotency_keys AS k
             (scope, key, fingerprint, created_at, expires_at, answer)
         VALUES ($1, $2, $3, $4, $5, NULL)
         ON CONFLICT (scope, key) DO UPDATE
             SET fingerprint = EXCLUDED.fingerprint, created_at = EXCLUDED.created_at,
                 expires_at = EXCLUDED.expires_at, answer = NULL
             WHERE k.expires_at <= EXCLUDED.created_at
         RETURNING 1",
        &[
            &request.scope,
            &request.key,
            &request.fingerprint,
            &now,
            &truncate(request.expires_at),
        ],
    )
    .await?;
    if taken.is_none() {
        // A live row of a committed transaction; the conflict left it locked for us.
        let row = query_opt(
            c,
            "SELECT fingerprint, answer FROM idempotency_keys WHERE scope = $1 AND key = $2",
            &[&request.scope, &request.key],
        )
        .await?;
        let Some(row) = row else {
            return Err(in_progress());
        };
        let fingerprint: String = get(&row, 0)?;
        if fingerprint != request.fingerprint {
            return Ok(Idempotent::KeyReused);
        }
        let Some(answer) = get::<Option<String>>(&row, 1)? else {
            return Err(in_progress());
        };
        return Ok(Idempotent::Replayed(decode_kept_answer(&answer)?));
    }
    let inserted = ops::job_insert_many(c, &request.jobs, now, events).await?;
    execute(
        c,
        "UPDATE idempotency_keys SET answer = $3 WHERE scope = $1 AND key = $2",
        &[
            &request.scope,
            &request.key,
            &encode_kept_answer(&inserted)?,
        ],
    )
    .await?;
    Ok(Idempotent::Inserted(inserted))
}

/// Not expected: a committed key always has its answer and cannot vanish while locked.
fn in_progress() -> ops::Error {
    ops::Error::Store(StoreError::Conflict(
        "a request with this idempotency key is in progress".into(),
    ))
}

/// Deletes up to `limit` keys expired at `now`, earliest first.
pub async fn prune<C: ops::Conn>(c: &C, now: DateTime<Utc>, limit: u32) -> Result<u64> {
    execute(
        c,
        "DELETE FROM idempotency_keys WHERE (scope, key) IN (
             SELECT scope, key FROM idempotency_keys WHERE expires_at <= $1
             ORDER BY expires_at LIMIT $2)",
        &[&now, &i64::from(limit)],
    )
    .await
}
