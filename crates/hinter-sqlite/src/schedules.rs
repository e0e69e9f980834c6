//! SQLite: schedules and their occurrences (`schedules`, `schedule_occurrences`; migration 11).
//! A firing runs on the writer thread inside the unit's savepoint: the guarded advance of
//! `next_fire_at`, the occurrences and their jobs commit together or not at all.

use crate::ops::{self, db_err, micros, Result};
use chrono::{DateTime, Utc};
use hinter_core::schedule::{
    Due, FireReport, NewSchedule, Occurrence, Outcome, Overlap, Schedule, ScheduleFiring,
    ScheduleSpec,
};
use hinter_core::{JobState, StoreError, StoreEvent};
use rusqlite::{params, Connection, OptionalExtension, Row};
use uuid::Uuid;

fn time(us: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {us} out of range")))
}

const COLUMNS: &str = "name, spec, source, paused, next_fire_at, created_at, updated_at";

type RawSchedule = (String, String, String, bool, Option<i64>, i64, i64);

fn raw(row: &Row<'_>) -> rusqlite::Result<RawSchedule> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}

fn decode((name, spec, source, paused, next, created, updated): RawSchedule) -> Result<Schedule> {
    let mut spec: ScheduleSpec = serde_json::from_str(&spec)
        .map_err(|e| StoreError::Corrupt(format!("schedule {name:?}: {e}")))?;
    spec.paused = paused;
    Ok(Schedule {
        spec,
        source,
        next_fire_at: next.map(time).transpose()?,
        created_at: time(created)?,
        updated_at: time(updated)?,
    })
}

fn query(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<Schedule>> {
    let mut stmt = conn.prepare_cached(sql).map_err(db_err)?;
    let rows = stmt
        .query_map(params, raw)
        .map_err(db_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err)?;
    rows.into_iter().map(decode).collect()
}

pub fn schedule_get(conn: &Connection, name: &str) -> Result<Option<Schedule>> {
    Ok(query(
        conn,
        &format!("SELECT {COLUMNS} FROM schedules WHERE name = ?1"),
        [name],
    )?
    .pop())
}

pub fn schedule_list(conn: &Connection) -> Result<Vec<Schedule>> {
    query(
        conn,
        &format!("SELECT {COLUMNS} FROM schedules ORDER BY name"),
        [],
    )
}

pub fn schedule_due(conn: &Connection, now: DateTime<Utc>, limit: u32) -> Result<Vec<Schedule>> {
    query(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM schedules WHERE paused = 0 AND next_fire_at IS NOT NULL \
             AND next_fire_at <= ?1 ORDER BY next_fire_at, name LIMIT ?2"
        ),
        params![micros(now), limit],
    )
}

pub fn schedule_next_fire_at(conn: &Connection) -> Result<Option<DateTime<Utc>>> {
    let next: Option<i64> = conn
        .prepare_cached(
            "SELECT MIN(next_fire_at) FROM schedules WHERE paused = 0 AND next_fire_at IS NOT NULL",
        )
        .map_err(db_err)?
        .query_row([], |r| r.get(0))
        .map_err(db_err)?;
    next.map(time).transpose()
}

pub fn schedule_save(
    conn: &Connection,
    new: &NewSchedule,
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<Schedule> {
    new.spec.validate().map_err(StoreError::Invalid)?;
    let name = &new.spec.name;
    if new.create_only && schedule_get(conn, name)?.is_some() {
        return Err(StoreError::Conflict(format!(
            "a schedule named {name:?} exists already; change it with PUT or choose another name"
        )));
    }
    let spec = serde_json::to_string(&new.spec)
        .map_err(|e| StoreError::Corrupt(format!("schedule {name:?}: {e}")))?;
    conn.prepare_cached(
        "INSERT INTO schedules (name, spec, source, paused, next_fire_at, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) \
         ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, source = excluded.source, \
         paused = excluded.paused, next_fire_at = excluded.next_fire_at, \
         updated_at = excluded.updated_at",
    )
    .map_err(db_err)?
    .execute(params![
        name,
        spec,
        new.source,
        new.spec.paused,
        new.next_fire_at.map(micros),
        micros(now)
    ])
    .map_err(db_err)?;
    events.push(StoreEvent::Changed);
    schedule_get(conn, name)?
        .ok_or_else(|| StoreError::Corrupt(format!("schedule {name:?} vanished")))
}

fn no_schedule(name: &str) -> StoreError {
    StoreError::Unknown(format!("no schedule named {name:?}"))
}

pub fn schedule_delete(
    conn: &Connection,
    name: &str,
    events: &mut Vec<StoreEvent>,
) -> Result<Schedule> {
    let schedule = schedule_get(conn, name)?.ok_or_else(|| no_schedule(name))?;
    for sql in [
        "DELETE FROM schedule_occurrences WHERE schedule = ?1",
        "DELETE FROM schedules WHERE name = ?1",
    ] {
        conn.prepare_cached(sql)
            .map_err(db_err)?
            .execute([name])
            .map_err(db_err)?;
    }
    events.push(StoreEvent::Changed);
    Ok(schedule)
}

pub fn schedule_pause(
    conn: &Connection,
    name: &str,
    paused: bool,
    next_fire_at: Option<Option<DateTime<Utc>>>,
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<Schedule> {
    let changed = match next_fire_at {
        Some(next) => conn
            .prepare_cached(
                "UPDATE schedules SET paused = ?2, next_fire_at = ?3, updated_at = ?4 WHERE name = ?1",
            )
            .map_err(db_err)?
            .execute(params![name, paused, next.map(micros), micros(now)]),
        None => conn
            .prepare_cached("UPDATE schedules SET paused = ?2, updated_at = ?3 WHERE name = ?1")
            .map_err(db_err)?
            .execute(params![name, paused, micros(now)]),
    }
    .map_err(db_err)?;
    if changed == 0 {
        return Err(no_schedule(name));
    }
    events.push(StoreEvent::Changed);
    schedule_get(conn, name)?.ok_or_else(|| no_schedule(name))
}

pub fn occurrence_list(
    conn: &Connection,
    schedule: &str,
    before: Option<DateTime<Utc>>,
    limit: u32,
) -> Result<Vec<Occurrence>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT schedule, fire_time, outcome, reason, job_id, recorded_at, fired_by \
             FROM schedule_occurrences WHERE schedule = ?1 AND fire_time < ?2 \
             ORDER BY fire_time DESC LIMIT ?3",
        )
        .map_err(db_err)?;
    type Raw = (
        String,
        i64,
        String,
        Option<String>,
        Option<String>,
        i64,
        Option<String>,
    );
    let rows = stmt
        .query_map(
            params![schedule, before.map_or(i64::MAX, micros), limit],
            |r| -> rusqlite::Result<Raw> {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            },
        )
        .map_err(db_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err)?;
    rows.into_iter()
        .map(
            |(schedule, fire_time, outcome, reason, job_id, recorded_at, fired_by)| {
                Ok(Occurrence {
                    schedule,
                    fire_time: time(fire_time)?,
                    outcome: Outcome::parse(&outcome).ok_or_else(|| {
                        StoreError::Corrupt(format!("occurrence outcome {outcome:?}"))
                    })?,
                    reason,
                    job_id: job_id
                        .map(|id| id.parse::<Uuid>())
                        .transpose()
                        .map_err(|e| StoreError::Corrupt(format!("occurrence job id: {e}")))?,
                    fired_by,
                    recorded_at: time(recorded_at)?,
                })
            },
        )
        .collect()
}

/// The job of the latest fired occurrence, when it is not finished.
fn unfinished_previous(conn: &Connection, schedule: &str) -> Result<Option<(Uuid, JobState)>> {
    let row: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT o.job_id, j.state FROM schedule_occurrences o JOIN jobs j ON j.id = o.job_id \
             WHERE o.schedule = ?1 AND o.outcome = 'fired' AND o.job_id IS NOT NULL \
             ORDER BY o.fire_time DESC LIMIT 1",
        )
        .map_err(db_err)?
        .query_row([schedule], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(db_err)?;
    let Some((id, state)) = row else {
        return Ok(None);
    };
    let id: Uuid = id
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("occurrence job id: {e}")))?;
    let state: JobState = state
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("job state: {e}")))?;
    Ok((!state.is_finished()).then_some((id, state)))
}

/// Who records, and when: the parts every occurrence of one firing shares.
struct Recorder<'a> {
    schedule: &'a str,
    fired_by: Option<&'a str>,
    now: DateTime<Utc>,
}

fn record(
    conn: &Connection,
    by: &Recorder<'_>,
    fire_time: DateTime<Utc>,
    outcome: Outcome,
    reason: Option<&str>,
    job_id: Option<Uuid>,
) -> Result<Occurrence> {
    let (schedule, fired_by, now) = (by.schedule, by.fired_by, by.now);
    conn.prepare_cached(
        "INSERT INTO schedule_occurrences \
         (schedule, fire_time, outcome, reason, job_id, recorded_at, fired_by) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .map_err(db_err)?
    .execute(params![
        schedule,
        micros(fire_time),
        outcome.as_str(),
        reason,
        job_id.map(|id| id.to_string()),
        micros(now),
        fired_by
    ])
    .map_err(db_err)?;
    Ok(Occurrence {
        schedule: schedule.to_string(),
        fire_time: time(micros(fire_time))?,
        outcome,
        reason: reason.map(str::to_string),
        job_id,
        fired_by: fired_by.map(str::to_string),
        recorded_at: time(micros(now))?,
    })
}

fn recorded(conn: &Connection, schedule: &str, fire_time: DateTime<Utc>) -> Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM schedule_occurrences WHERE schedule = ?1 AND fire_time = ?2)",
    )
    .map_err(db_err)?
    .query_row(params![schedule, micros(fire_time)], |r| r.get(0))
    .map_err(db_err)
}

pub fn schedule_fire(
    conn: &Connection,
    firing: ScheduleFiring,
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<FireReport> {
    let advanced = conn
        .prepare_cached(
            "UPDATE schedules SET next_fire_at = ?3 \
             WHERE name = ?1 AND next_fire_at = ?2 AND paused = 0",
        )
        .map_err(db_err)?
        .execute(params![
            firing.schedule,
            micros(firing.expected),
            firing.next.map(micros)
        ])
        .map_err(db_err)?;
    if advanced == 0 {
        return Ok(FireReport::default());
    }
    let mut report = FireReport {
        advanced: true,
        ..FireReport::default()
    };
    let previous = unfinished_previous(conn, &firing.schedule)?;
    let name = &firing.schedule;
    let by = Recorder {
        schedule: name,
        fired_by: firing.fired_by.as_deref(),
        now,
    };
    for due in firing.due {
        if recorded(conn, name, due.fire_time())? {
            continue;
        }
        let occurrence = match due {
            Due::Missed { fire_time, reason } => {
                record(conn, &by, fire_time, Outcome::Missed, Some(&reason), None)?
            }
            Due::Fire { fire_time, job } => {
                if let Some((prev, state)) = previous {
                    match firing.overlap {
                        Overlap::Skip => {
                            let reason = format!("overlap: job {prev} is still {state}");
                            report.recorded.push(record(
                                conn,
                                &by,
                                fire_time,
                                Outcome::Skipped,
                                Some(&reason),
                                None,
                            )?);
                            continue;
                        }
                        Overlap::Allow => {}
                        Overlap::Replace if report.replaced.is_none() => {
                            match ops::job_cancel(conn, prev, now, events) {
                                Ok(_) | Err(StoreError::Conflict(_)) => {}
                                Err(e) => return Err(e),
                            }
                            report.replaced = Some(prev);
                        }
                        Overlap::Replace => {}
                    }
                }
                let inserted = ops::job_insert_many(conn, vec![job], now, events)?;
                let id = inserted.first().map(|i| i.job.id);
                record(conn, &by, fire_time, Outcome::Fired, None, id)?
            }
        };
        report.recorded.push(occurrence);
    }
    Ok(report)
}
