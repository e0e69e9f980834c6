//! The event log on SQLite: rows appended by the operations in `ops` inside the writer's
//! transaction, read by reader connections. Only one transaction writes at a time (across
//! processes too), so ids grow in commit order and every committed id is final.

use crate::ops::{db_err, micros, Result};
use chrono::{DateTime, TimeZone, Utc};
use hinter_core::{EventFilter, EventKind, EventPage, JobEvent, StoreError, StoreEvent};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

/// Appends an event about the job with sequence number `seq`, as it is now (its attempt after
/// the change), reading the job's fields first. Queues the `Logged` hint; the writer publishes
/// hints after the commit.
pub fn append(
    conn: &Connection,
    seq: i64,
    kind: EventKind,
    now: DateTime<Utc>,
    data: Option<&Value>,
    hints: &mut Vec<StoreEvent>,
) -> Result<()> {
    let (id, job, queue, attempt): (String, String, String, i64) = conn
        .prepare_cached("SELECT id, job, queue, attempt FROM jobs WHERE seq = ?1")
        .map_err(db_err)?
        .query_row([seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .map_err(db_err)?;
    let about = About {
        seq,
        id: &id,
        job: &job,
        queue: &queue,
        attempt,
    };
    append_about(conn, &about, kind, now, data, hints)
}

/// The job an event is about, when the caller has its row at hand (the hot paths: insert,
/// lease, complete), which saves looking it up again.
pub struct About<'a> {
    pub seq: i64,
    pub id: &'a str,
    pub job: &'a str,
    pub queue: &'a str,
    pub attempt: i64,
}

/// Appends an event about the job `about` (its fields as they are after the change).
pub fn append_about(
    conn: &Connection,
    about: &About<'_>,
    kind: EventKind,
    now: DateTime<Utc>,
    data: Option<&Value>,
    hints: &mut Vec<StoreEvent>,
) -> Result<()> {
    let data = data.map(Value::to_string);
    conn.prepare_cached(
        "INSERT INTO events (at, kind, job_seq, job_id, job, queue, attempt, data) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .map_err(db_err)?
    .execute(params![
        micros(now),
        kind.as_str(),
        about.seq,
        about.id,
        about.job,
        about.queue,
        about.attempt,
        data
    ])
    .map_err(db_err)?;
    hint(hints);
    Ok(())
}

/// Appends the `created` event of each job with a `seq` from `first` to `last`, just
/// inserted, in `seq` order: one statement that reads the rows back from the pages the insert
/// left in the cache, instead of one insert with eight parameters bound per job.
pub fn append_created(
    conn: &Connection,
    first: i64,
    last: i64,
    now: DateTime<Utc>,
    hints: &mut Vec<StoreEvent>,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO events (at, kind, job_seq, job_id, job, queue, attempt) \
         SELECT ?1, ?2, seq, id, job, queue, attempt FROM jobs \
         WHERE seq BETWEEN ?3 AND ?4 ORDER BY seq",
    )
    .map_err(db_err)?
    .execute(params![
        micros(now),
        EventKind::Created.as_str(),
        first,
        last
    ])
    .map_err(db_err)?;
    hint(hints);
    Ok(())
}

/// Notes that the log grew, once per run of appends.
pub(crate) fn hint(hints: &mut Vec<StoreEvent>) {
    if hints.last() != Some(&StoreEvent::Logged) {
        hints.push(StoreEvent::Logged);
    }
}

fn event_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawEvent> {
    Ok(RawEvent {
        id: r.get(0)?,
        at: r.get(1)?,
        kind: r.get(2)?,
        job_id: r.get(3)?,
        job: r.get(4)?,
        queue: r.get(5)?,
        attempt: r.get(6)?,
        data: r.get(7)?,
    })
}

struct RawEvent {
    id: i64,
    at: i64,
    kind: String,
    job_id: String,
    job: String,
    queue: String,
    attempt: i64,
    data: Option<String>,
}

impl RawEvent {
    fn decode(self) -> Result<JobEvent> {
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("event {}: {what}: {e}", self.id))
        };
        Ok(JobEvent {
            id: self.id,
            at: Utc
                .timestamp_micros(self.at)
                .single()
                .ok_or_else(|| bad("time", &self.at))?,
            kind: self.kind.parse().map_err(|e: String| bad("kind", &e))?,
            job_id: self.job_id.parse().map_err(|e| bad("job id", &e))?,
            attempt: u32::try_from(self.attempt).map_err(|e| bad("attempt", &e))?,
            data: match &self.data {
                None => Value::Null,
                Some(text) => serde_json::from_str(text).map_err(|e| bad("data", &e))?,
            },
            job: self.job,
            queue: self.queue,
        })
    }
}

/// Events after `after` matching `filter`, at most `limit`. The end of the log is read first
/// and the page bounded by it, so `next_after` never passes an event the page did not see.
pub fn read(conn: &Connection, after: i64, filter: &EventFilter, limit: u32) -> Result<EventPage> {
    let after = after.max(0);
    if limit == 0 {
        return Ok(EventPage {
            events: Vec::new(),
            next_after: after,
        });
    }
    let end: i64 = last_id(conn)?;
    let mut sql = String::from(
        "SELECT id, at, kind, job_id, job, queue, attempt, data FROM events \
         WHERE id > ?1 AND id <= ?2",
    );
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![Box::new(after), Box::new(end)];
    if let Some(id) = filter.job_id {
        // Through the job's `seq` (indexed) while the job exists; the text id decides.
        let seq: Option<i64> = conn
            .prepare_cached("SELECT seq FROM jobs WHERE id = ?1")
            .map_err(db_err)?
            .query_row([id.to_string()], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        if let Some(seq) = seq {
            args.push(Box::new(seq));
            sql.push_str(&format!(" AND job_seq = ?{}", args.len()));
        }
    }
    for (column, value) in [
        ("job_id", filter.job_id.map(|id| id.to_string())),
        ("queue", filter.queue.clone()),
        ("job", filter.job.clone()),
    ] {
        if let Some(value) = value {
            args.push(Box::new(value));
            sql.push_str(&format!(" AND {column} = ?{}", args.len()));
        }
    }
    if let Some(queues) = &filter.queues {
        sql.push_str(&crate::ops::queue_in(queues, &mut args));
    }
    args.push(Box::new(limit));
    sql.push_str(&format!(" ORDER BY id LIMIT ?{}", args.len()));
    let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
    let raws = stmt
        .query_map(rusqlite::params_from_iter(args.iter()), event_from_row)
        .map_err(db_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err)?;
    let events = raws
        .into_iter()
        .map(RawEvent::decode)
        .collect::<Result<Vec<_>>>()?;
    let next_after = match events.last() {
        Some(last) if events.len() as u64 >= u64::from(limit) => last.id,
        _ => end.max(after),
    };
    Ok(EventPage { events, next_after })
}

/// The id of the last event written (pruning keeps it, so ids are not reused).
pub fn last_id(conn: &Connection) -> Result<i64> {
    conn.prepare_cached("SELECT COALESCE(MAX(id), 0) FROM events")
        .map_err(db_err)?
        .query_row([], |r| r.get::<_, i64>(0))
        .map_err(db_err)
}

/// Deletes events from before `before` among the oldest `limit`: the scan is bounded by
/// `limit` rows however large the log is. The newest event is kept whatever its age: it
/// holds the highest id, so the next one is numbered above every id ever handed out.
pub fn prune(conn: &Connection, before: DateTime<Utc>, limit: u32) -> Result<u64> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?2) \
             AND at < ?1 AND id < (SELECT MAX(id) FROM events)",
        )
        .map_err(db_err)?
        .execute(params![micros(before), limit])
        .map_err(db_err)?;
    Ok(deleted as u64)
}
