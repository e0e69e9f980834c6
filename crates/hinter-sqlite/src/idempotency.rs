//! Idempotency keys of enqueues ([`hinter_core::store::IdempotentInsert`]). Runs on the writer
//! thread, inside the transaction of the insert: writes are serialised (one writer at a
//! time, across processes too), so a second use of a key always sees the first one's row.

use crate::ops::{self, db_err, micros, Result};
use chrono::{DateTime, Utc};
use hinter_core::store::{decode_kept_answer, encode_kept_answer, Idempotent, IdempotentInsert};
use hinter_core::StoreEvent;
use rusqlite::{params, Connection, OptionalExtension};

/// Inserts the jobs and keeps their answer with the key, or answers what the key kept.
pub fn insert_once(
    conn: &Connection,
    request: IdempotentInsert,
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<Idempotent> {
    request.check()?;
    let kept: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT fingerprint, answer FROM idempotency_keys \
             WHERE scope = ?1 AND key = ?2 AND expires_at > ?3",
        )
        .map_err(db_err)?
        .query_row(params![request.scope, request.key, micros(now)], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(db_err)?;
    if let Some((fingerprint, answer)) = kept {
        return Ok(if fingerprint == request.fingerprint {
            Idempotent::Replayed(decode_kept_answer(&answer)?)
        } else {
            Idempotent::KeyReused
        });
    }
    let IdempotentInsert {
        scope,
        key,
        fingerprint,
        expires_at,
        jobs,
    } = request;
    let inserted = ops::job_insert_many(conn, jobs, now, events)?;
    // An expired row of the key may still be there (not pruned yet): replaced.
    conn.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys \
         (scope, key, fingerprint, created_at, expires_at, answer) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .map_err(db_err)?
    .execute(params![
        scope,
        key,
        fingerprint,
        micros(now),
        micros(expires_at),
        encode_kept_answer(&inserted)?
    ])
    .map_err(db_err)?;
    Ok(Idempotent::Inserted(inserted))
}

/// Deletes up to `limit` keys expired at `now`, earliest first.
pub fn prune(conn: &Connection, now: DateTime<Utc>, limit: u32) -> Result<u64> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM idempotency_keys WHERE rowid IN (\
                 SELECT rowid FROM idempotency_keys WHERE expires_at <= ?1 \
                 ORDER BY expires_at LIMIT ?2)",
        )
        .map_err(db_err)?
        .execute(params![micros(now), limit])
        .map_err(db_err)?;
    Ok(deleted as u64)
}
