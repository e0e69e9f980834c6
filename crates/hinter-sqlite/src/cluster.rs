//! SQLite implementation of [`hinter_core::Cluster`].

use crate::ops::{db_err, micros};
use chrono::{DateTime, Utc};
use hinter_core::store::StoreResult;
use hinter_core::{Leadership, ProcessInfo, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use std::time::Duration;

fn time(us: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {us} out of range")))
}

pub fn process_heartbeat(conn: &Connection, p: &ProcessInfo) -> StoreResult<()> {
    let queues = serde_json::to_string(&p.queues)
        .map_err(|e| StoreError::Corrupt(format!("queues: {e}")))?;
    conn.prepare_cached(
        "INSERT INTO processes (id, host, pid, role, queues, concurrency, started_at, \
         last_heartbeat_at, machine) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, \
         role = excluded.role, queues = excluded.queues, concurrency = excluded.concurrency, \
         last_heartbeat_at = excluded.last_heartbeat_at, machine = excluded.machine",
    )
    .map_err(db_err)?
    .execute(params![
        p.id,
        p.host,
        p.pid,
        p.role,
        queues,
        p.concurrency,
        micros(p.started_at),
        micros(p.last_heartbeat_at),
        p.machine
    ])
    .map_err(db_err)?;
    Ok(())
}

pub fn process_list(
    conn: &Connection,
    alive_since: DateTime<Utc>,
) -> StoreResult<Vec<ProcessInfo>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, host, pid, role, queues, concurrency, started_at, last_heartbeat_at, \
             machine FROM processes WHERE last_heartbeat_at >= ?1 ORDER BY started_at, id",
        )
        .map_err(db_err)?;
    let rows = stmt
        .query_map([micros(alive_since)], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, u32>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, String>(8)?,
            ))
        })
        .map_err(db_err)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, host, pid, role, queues, concurrency, started_at, last_heartbeat_at, machine) =
            row.map_err(db_err)?;
        out.push(ProcessInfo {
            queues: serde_json::from_str(&queues)
                .map_err(|e| StoreError::Corrupt(format!("queues of process {id}: {e}")))?,
            id,
            host,
            pid,
            role,
            concurrency,
            started_at: time(started_at)?,
            last_heartbeat_at: time(last_heartbeat_at)?,
            machine,
        });
    }
    Ok(out)
}

pub fn process_prune(conn: &Connection, before: DateTime<Utc>) -> StoreResult<u64> {
    let n = conn
        .prepare_cached("DELETE FROM processes WHERE last_heartbeat_at < ?1")
        .map_err(db_err)?
        .execute([micros(before)])
        .map_err(db_err)?;
    Ok(n as u64)
}

pub fn process_remove(conn: &Connection, id: &str) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM processes WHERE id = ?1")
        .map_err(db_err)?
        .execute([id])
        .map_err(db_err)?;
    Ok(())
}

pub fn leader_get(conn: &Connection, name: &str) -> StoreResult<Option<Leadership>> {
    let row: Option<(String, i64, i64)> = conn
        .prepare_cached("SELECT holder, term, expires_at FROM leaders WHERE name = ?1")
        .map_err(db_err)?
        .query_row([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
        .map_err(db_err)?;
    row.map(|(holder, term, expires_at)| {
        Ok(Leadership {
            name: name.to_string(),
            holder,
            term,
            expires_at: time(expires_at)?,
        })
    })
    .transpose()
}

pub fn leader_acquire(
    conn: &Connection,
    name: &str,
    holder: &str,
    ttl: Duration,
    now: DateTime<Utc>,
) -> StoreResult<Option<Leadership>> {
    let expires_at = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(60));
    let term = match leader_get(conn, name)? {
        Some(current) if current.holder == holder => current.term,
        Some(current) if current.expires_at > now => return Ok(None),
        Some(current) => current.term + 1,
        None => 1,
    };
    conn.prepare_cached(
        "INSERT INTO leaders (name, holder, term, expires_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, term = excluded.term, \
         expires_at = excluded.expires_at",
    )
    .map_err(db_err)?
    .execute(params![name, holder, term, micros(expires_at)])
    .map_err(db_err)?;
    leader_get(conn, name)
}

pub fn leader_release(conn: &Connection, name: &str, holder: &str) -> StoreResult<()> {
    // Expire rather than delete, so the next holder's term still grows.
    conn.prepare_cached("UPDATE leaders SET expires_at = 0 WHERE name = ?1 AND holder = ?2")
        .map_err(db_err)?
        .execute([name, holder])
        .map_err(db_err)?;
    Ok(())
}
