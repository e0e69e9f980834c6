//! Reading and pruning the event log ([`hinter_core::event`]); the rows are written by the
//! operations in `ops.rs`, in the transaction of the change they record.
//!
//! An event row is keyed by the writing transaction's full xid and a sequence value taken
//! inside it: `(xid, seq)`. Neither is a usable public id on its own. A sequence value taken
//! before commit can become visible after a higher one, so a reader that asked for "ids above
//! N" would skip it; ordering by xid alone fails the same way (a low xid may commit last).
//! But once a transaction's xid is below the oldest xid still running
//! (`pg_snapshot_xmin(pg_current_snapshot())`) it is *settled*: it and every transaction
//! before it have ended, and no event can ever again be written with such an xid. So the log
//! is the settled transactions' events in `(xid, seq)` order, and [`sequence`] gives each
//! settled transaction, in xid order, a `base` in `event_txs`:
//! `base(next) = base(prev) + span(prev)`, `span = max(seq) - min(seq) + 1`. An event's
//! public id is `base + (seq - first_seq)`: strictly increasing in log order, stable, never
//! reused (the newest `event_txs` row is never pruned), with gaps where sequence values went
//! to other transactions.

use crate::ops::{get, Conn, Error, Result};
use chrono::{DateTime, Utc};
use hinter_core::{EventFilter, EventKind, EventPage, JobEvent, StoreError};
use serde_json::Value;
use tokio_postgres::types::ToSql;

/// The name of the advisory lock that serializes sequencing and pruning in one schema (hashed
/// with the schema like every other lock of this crate, so schemas do not wait for each
/// other).
pub const SEQUENCE_LOCK: &str = "\u{1f}hinter.events.sequence";

/// Most transactions one sequencing step places; a reader runs further steps only while
/// the previous one was full (see [`MAX_STEPS`]).
pub const STEP_TXS: i64 = 10_000;

/// Most sequencing steps of one read (so 1,000,000 transactions); a larger backlog is
/// caught up by the following reads.
pub const MAX_STEPS: usize = 100;

/// Takes the sequencing lock until the end of the caller's transaction.
pub async fn lock<C: Conn>(c: &C) -> Result<()> {
    let stmt = c
        .prepare_cached(
            "SELECT pg_advisory_xact_lock(hashtextextended(coalesce(current_schema(), '') || $1, 0))",
        )
        .await?;
    c.execute(&stmt, &[&SEQUENCE_LOCK]).await?;
    Ok(())
}

/// One sequencing step, inside a transaction holding [`lock`]: places up to [`STEP_TXS`]
/// settled transactions after the last placed one. Returns how many it placed.
///
/// One statement, so one snapshot: `pg_current_snapshot()` is that statement's snapshot, and
/// every transaction below its xmin has ended, so the statement sees all of their events.
pub async fn sequence_step<C: Conn>(c: &C) -> Result<u64> {
    let stmt = c
        .prepare_cached(
            "WITH prev AS (
                 SELECT xid, base + span AS next_base FROM event_txs ORDER BY xid DESC LIMIT 1
             ),
             fresh AS (
                 SELECT xid, min(seq) AS first_seq, max(seq) - min(seq) + 1 AS span
                 FROM events
                 WHERE xid > coalesce((SELECT xid FROM prev), '0'::xid8)
                   AND xid < pg_snapshot_xmin(pg_current_snapshot())
                 GROUP BY xid ORDER BY xid LIMIT $1
             )
             INSERT INTO event_txs (xid, first_seq, span, base)
             SELECT xid, first_seq, span,
                    coalesce((SELECT next_base FROM prev), 1)
                        + sum(span) OVER (ORDER BY xid ROWS UNBOUNDED PRECEDING) - span
             FROM fresh",
        )
        .await?;
    Ok(c.execute(&stmt, &[&STEP_TXS]).await?)
}

/// The id of the last placed event (0 before any).
pub async fn last_id<C: Conn>(c: &C) -> Result<i64> {
    let stmt = c
        .prepare_cached("SELECT base + span - 1 FROM event_txs ORDER BY xid DESC LIMIT 1")
        .await?;
    match c.query_opt(&stmt, &[]).await? {
        Some(row) => get(&row, 0),
        None => Ok(0),
    }
}

/// The page after `after` (≥ 0): the placed events past `after`'s position that match
/// `filter`, at most `limit` (> 0), with where the next read resumes. One statement, so the
/// events and the end of the log come from one snapshot. Both tables are read as ranges of
/// their primary keys from the position on (the bounds on `t.xid` too, or the join would
/// walk `event_txs` from its start), so a page costs what it returns, not the log's length.
pub async fn read<C: Conn>(
    c: &C,
    after: i64,
    filter: &EventFilter,
    limit: u32,
) -> Result<EventPage> {
    let limit = i64::from(limit);
    // `after`'s position: in the transaction with the greatest base at or below it (or
    // before everything). LEAST keeps an id past that transaction's events (or i64::MAX)
    // from overflowing: any seq past its span is past all of its events.
    let mut conditions = String::new();
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&after];
    if let Some(queue) = &filter.queue {
        params.push(queue);
        conditions += &format!(" AND e.queue = ${}", params.len());
    }
    // A name with NUL names no queue PostgreSQL can hold: left out.
    let queues: Option<Vec<&str>> = filter.queues.as_ref().map(|queues| {
        queues
            .iter()
            .map(String::as_str)
            .filter(|q| !q.contains('\0'))
            .collect()
    });
    if let Some(queues) = &queues {
        params.push(queues);
        conditions += &format!(" AND e.queue = ANY(${}::text[])", params.len());
    }
    if let Some(job) = &filter.job {
        params.push(job);
        conditions += &format!(" AND e.job = ${}", params.len());
    }
    if let Some(job_id) = &filter.job_id {
        params.push(job_id);
        conditions += &format!(" AND e.job_id = ${}", params.len());
    }
    params.push(&limit);
    let sql = format!(
        "WITH last AS (
             SELECT xid, base + span - 1 AS id FROM event_txs ORDER BY xid DESC LIMIT 1
         ),
         pos AS (
             SELECT xid, first_seq + LEAST($1 - base, span) AS seq
             FROM event_txs WHERE base <= $1 ORDER BY base DESC LIMIT 1
         )
         SELECT l.id, p.*
         FROM last AS l LEFT JOIN LATERAL (
             SELECT t.base + (e.seq - t.first_seq) AS id, e.at, e.kind, e.job_id, e.job,
                    e.queue, e.attempt, e.data
             FROM events AS e JOIN event_txs AS t ON t.xid = e.xid
             WHERE (e.xid, e.seq) > (coalesce((SELECT xid FROM pos), '0'::xid8),
                                     coalesce((SELECT seq FROM pos), 0))
               AND e.xid <= l.xid{conditions}
               AND t.xid >= coalesce((SELECT xid FROM pos), '0'::xid8) AND t.xid <= l.xid
             ORDER BY e.xid, e.seq
             LIMIT ${}
         ) AS p ON true
         ORDER BY p.id",
        params.len()
    );
    let stmt = c.prepare_cached(&sql).await?;
    let rows = c.query(&stmt, &params).await?;
    let mut last = 0;
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        last = get::<i64>(row, 0)?;
        let Some(id) = get::<Option<i64>>(row, 1)? else {
            continue;
        };
        let kind: String = get(row, 3)?;
        events.push(JobEvent {
            id,
            at: get(row, 2)?,
            kind: kind
                .parse::<EventKind>()
                .map_err(|e| Error::Store(StoreError::Corrupt(format!("event {id}: {e}"))))?,
            job_id: get(row, 4)?,
            job: get(row, 5)?,
            queue: get(row, 6)?,
            attempt: u32::try_from(get::<i64>(row, 7)?.max(0)).unwrap_or(u32::MAX),
            data: get::<Option<Value>>(row, 8)?.unwrap_or(Value::Null),
        });
    }
    let next_after = match events.last() {
        Some(event) if events.len() as i64 >= limit => event.id,
        _ => last.max(after),
    };
    Ok(EventPage { events, next_after })
}

/// Deletes the placed events from before `before` among the oldest `limit` of the log (so
/// the work is bounded however long the log is), never the newest placed event; then the
/// places of transactions older than every remaining event, except the newest place (it
/// carries the next base, so ids are never reused). Inside a transaction holding [`lock`].
pub async fn prune<C: Conn>(c: &C, before: DateTime<Utc>, limit: u32) -> Result<u64> {
    let limit = i64::from(limit);
    let stmt = c
        .prepare_cached(
            "WITH last AS (SELECT xid FROM event_txs ORDER BY xid DESC LIMIT 1),
             newest AS (
                 SELECT xid, seq FROM events WHERE xid <= (SELECT xid FROM last)
                 ORDER BY xid DESC, seq DESC LIMIT 1
             ),
             oldest AS (
                 SELECT xid, seq, at FROM events WHERE xid <= (SELECT xid FROM last)
                 ORDER BY xid, seq LIMIT $2
             )
             DELETE FROM events AS e USING oldest AS o
             WHERE e.xid = o.xid AND e.seq = o.seq AND o.at < $1
               AND (o.xid, o.seq) <> (SELECT xid, seq FROM newest)",
        )
        .await?;
    let deleted = c.execute(&stmt, &[&before, &limit]).await?;
    if deleted > 0 {
        let stmt = c
            .prepare_cached(
                "WITH last AS (SELECT xid FROM event_txs ORDER BY xid DESC LIMIT 1)
                 DELETE FROM event_txs
                 WHERE xid < (SELECT xid FROM last)
                   AND xid < coalesce((SELECT xid FROM events ORDER BY xid, seq LIMIT 1),
                                      (SELECT xid FROM last))",
            )
            .await?;
        c.execute(&stmt, &[]).await?;
    }
    Ok(deleted)
}
