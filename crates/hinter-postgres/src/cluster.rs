//! The [`hinter_core::Cluster`] operations: live processes and leaderships. Each is one
//! statement, so concurrent callers on any machine see a consistent answer; a leadership
//! changes hands only through the guarded upsert in [`leader_acquire`].

use crate::ops::{get, truncate, Result};
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use hinter_core::{Leadership, ProcessInfo};
use std::time::Duration;
use tokio_postgres::Row;

fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

pub async fn process_heartbeat<C: GenericClient>(c: &C, p: &ProcessInfo) -> Result<()> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO processes (id, host, pid, role, queues, concurrency, started_at,
                                    last_heartbeat_at, machine)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid,
                 role = excluded.role, queues = excluded.queues,
                 concurrency = excluded.concurrency,
                 last_heartbeat_at = excluded.last_heartbeat_at, machine = excluded.machine",
        )
        .await?;
    c.execute(
        &stmt,
        &[
            &p.id,
            &p.host,
            &i64::from(p.pid),
            &p.role,
            &p.queues,
            &i64::from(p.concurrency),
            &truncate(p.started_at),
            &truncate(p.last_heartbeat_at),
            &p.machine,
        ],
    )
    .await?;
    Ok(())
}

pub async fn process_list<C: GenericClient>(
    c: &C,
    alive_since: DateTime<Utc>,
) -> Result<Vec<ProcessInfo>> {
    // Ids compare bytewise (COLLATE "C"), as in every backend.
    let stmt = c
        .prepare_cached(
            "SELECT id, host, pid, role, queues, concurrency, started_at, last_heartbeat_at,
                    machine
             FROM processes WHERE last_heartbeat_at >= $1
             ORDER BY started_at, id COLLATE \"C\"",
        )
        .await?;
    c.query(&stmt, &[&alive_since])
        .await?
        .iter()
        .map(|row| {
            Ok(ProcessInfo {
                id: get(row, 0)?,
                host: get(row, 1)?,
                pid: count(get(row, 2)?),
                role: get(row, 3)?,
                queues: get(row, 4)?,
                concurrency: count(get(row, 5)?),
                started_at: get(row, 6)?,
                last_heartbeat_at: get(row, 7)?,
                machine: get(row, 8)?,
            })
        })
        .collect()
}

pub async fn process_prune<C: GenericClient>(c: &C, before: DateTime<Utc>) -> Result<u64> {
    let stmt = c
        .prepare_cached("DELETE FROM processes WHERE last_heartbeat_at < $1")
        .await?;
    Ok(c.execute(&stmt, &[&before]).await?)
}

pub async fn process_remove<C: GenericClient>(c: &C, id: &str) -> Result<()> {
    let stmt = c
        .prepare_cached("DELETE FROM processes WHERE id = $1")
        .await?;
    c.execute(&stmt, &[&id]).await?;
    Ok(())
}

fn leadership(name: &str, row: &Row) -> Result<Leadership> {
    Ok(Leadership {
        name: name.to_string(),
        holder: get(row, 0)?,
        term: get(row, 1)?,
        expires_at: get(row, 2)?,
    })
}

pub async fn leader_get<C: GenericClient>(c: &C, name: &str) -> Result<Option<Leadership>> {
    let stmt = c
        .prepare_cached("SELECT holder, term, expires_at FROM leaders WHERE name = $1")
        .await?;
    c.query_opt(&stmt, &[&name])
        .await?
        .map(|row| leadership(name, &row))
        .transpose()
}

/// Takes or renews the leadership in one upsert. The row lock of `ON CONFLICT DO UPDATE`
/// serializes candidates; the `WHERE` lets the update through only for the holder itself
/// (renewal, same term) or once the lease expired (take-over, next term). No row back means
/// someone else leads.
pub async fn leader_acquire<C: GenericClient>(
    c: &C,
    name: &str,
    holder: &str,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<Option<Leadership>> {
    let expires_at =
        truncate(now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(60)));
    let stmt = c
        .prepare_cached(
            "INSERT INTO leaders AS l (name, holder, term, expires_at) VALUES ($1, $2, 1, $3)
             ON CONFLICT (name) DO UPDATE SET
                 holder = excluded.holder,
                 term = CASE WHEN l.holder = excluded.holder THEN l.term ELSE l.term + 1 END,
                 expires_at = excluded.expires_at
             WHERE l.holder = excluded.holder OR l.expires_at <= $4
             RETURNING holder, term, expires_at",
        )
        .await?;
    c.query_opt(&stmt, &[&name, &holder, &expires_at, &now])
        .await?
        .map(|row| leadership(name, &row))
        .transpose()
}

pub async fn leader_release<C: GenericClient>(c: &C, name: &str, holder: &str) -> Result<()> {
    // Expire rather than delete, so the next holder's term still grows.
    let stmt = c
        .prepare_cached(
            "UPDATE leaders SET expires_at = to_timestamp(0) WHERE name = $1 AND holder = $2",
        )
        .await?;
    c.execute(&stmt, &[&name, &holder]).await?;
    Ok(())
}
