//! PostgreSQL: schedules and their occurrences (`schedules`, `schedule_occurrences`;
//! migration 10). A firing runs in the unit's transaction. Two servers firing one tick: the
//! guarded `UPDATE` of `next_fire_at` takes the schedule's row lock, so the second waits for
//! the first to commit, then sees the new `next_fire_at` and writes nothing; the occurrence's
//! primary key (schedule, fire_time) catches every other path (a schedule reset to a time
//! already fired), `ON CONFLICT DO NOTHING` so the unit goes on.

use crate::ops::{self, execute, get, query, query_opt, truncate, Conn, Error, Result};
use chrono::{DateTime, Utc};
use hinter_core::schedule::{
    Due, FireReport, NewSchedule, Occurrence, Outcome, Overlap, Schedule, ScheduleFiring,
    ScheduleSpec,
};
use hinter_core::{JobState, StoreError, StoreEvent};
use tokio_postgres::Row;
use uuid::Uuid;

const COLUMNS: &str = "name, spec, source, paused, next_fire_at, created_at, updated_at";

fn corrupt(message: String) -> Error {
    Error::Store(StoreError::Corrupt(message))
}

fn decode(row: &Row) -> Result<Schedule> {
    let name: String = get(row, 0)?;
    let spec: String = get(row, 1)?;
    let mut spec: ScheduleSpec =
        serde_json::from_str(&spec).map_err(|e| corrupt(format!("schedule {name:?}: {e}")))?;
    spec.paused = get(row, 3)?;
    Ok(Schedule {
        spec,
        source: get(row, 2)?,
        next_fire_at: get(row, 4)?,
        created_at: get(row, 5)?,
        updated_at: get(row, 6)?,
    })
}

pub async fn schedule_get<C: Conn>(c: &C, name: &str) -> Result<Option<Schedule>> {
    query_opt(
        c,
        &format!("SELECT {COLUMNS} FROM schedules WHERE name = $1"),
        &[&name],
    )
    .await?
    .map(|row| decode(&row))
    .transpose()
}

pub async fn schedule_list<C: Conn>(c: &C) -> Result<Vec<Schedule>> {
    query(
        c,
        &format!("SELECT {COLUMNS} FROM schedules ORDER BY name"),
        &[],
    )
    .await?
    .iter()
    .map(decode)
    .collect()
}

pub async fn schedule_due<C: Conn>(c: &C, now: DateTime<Utc>, limit: u32) -> Result<Vec<Schedule>> {
    query(
        c,
        &format!(
            "SELECT {COLUMNS} FROM schedules WHERE NOT paused AND next_fire_at IS NOT NULL \
             AND next_fire_at <= $1 ORDER BY next_fire_at, name LIMIT $2"
        ),
        &[&now, &i64::from(limit)],
    )
    .await?
    .iter()
    .map(decode)
    .collect()
}

pub async fn schedule_next_fire_at<C: Conn>(c: &C) -> Result<Option<DateTime<Utc>>> {
    let row = query_opt(
        c,
        "SELECT MIN(next_fire_at) FROM schedules WHERE NOT paused AND next_fire_at IS NOT NULL",
        &[],
    )
    .await?;
    match row {
        Some(row) => get(&row, 0),
        None => Ok(None),
    }
}

pub async fn schedule_save<C: Conn>(
    c: &C,
    new: &NewSchedule,
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<Schedule> {
    new.spec.validate().map_err(StoreError::Invalid)?;
    let name = &new.spec.name;
    let spec =
        serde_json::to_string(&new.spec).map_err(|e| corrupt(format!("schedule {name:?}: {e}")))?;
    let next = new.next_fire_at.map(truncate);
    let now = truncate(now);
    let conflict = if new.create_only {
        "DO NOTHING"
    } else {
        "DO UPDATE SET spec = excluded.spec, source = excluded.source, paused = excluded.paused, \
         next_fire_at = excluded.next_fire_at, updated_at = excluded.updated_at"
    };
    let row = query_opt(
        c,
        &format!(
            "INSERT INTO schedules (name, spec, source, paused, next_fire_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (name) {conflict} RETURNING {COLUMNS}"
        ),
        &[name, &spec, &new.source, &new.spec.paused, &next, &now],
    )
    .await?;
    match row {
        Some(row) => {
            events.push(StoreEvent::Changed);
            decode(&row)
        }
        None => Err(Error::Store(StoreError::Conflict(format!(
            "a schedule named {name:?} exists already; change it with PUT or choose another name"
        )))),
    }
}

fn no_schedule(name: &str) -> Error {
    Error::Store(StoreError::Unknown(format!("no schedule named {name:?}")))
}

pub async fn schedule_delete<C: Conn>(
    c: &C,
    name: &str,
    events: &mut Vec<StoreEvent>,
) -> Result<Schedule> {
    let row = query_opt(
        c,
        &format!("DELETE FROM schedules WHERE name = $1 RETURNING {COLUMNS}"),
        &[&name],
    )
    .await?
    .ok_or_else(|| no_schedule(name))?;
    events.push(StoreEvent::Changed);
    decode(&row)
}

pub async fn schedule_pause<C: Conn>(
    c: &C,
    name: &str,
    paused: bool,
    next_fire_at: Option<Option<DateTime<Utc>>>,
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<Schedule> {
    let now = truncate(now);
    let row = match next_fire_at {
        Some(next) => {
            let next = next.map(truncate);
            query_opt(
                c,
                &format!(
                    "UPDATE schedules SET paused = $2, next_fire_at = $3, updated_at = $4 \
                     WHERE name = $1 RETURNING {COLUMNS}"
                ),
                &[&name, &paused, &next, &now],
            )
            .await?
        }
        None => {
            query_opt(
                c,
                &format!(
                    "UPDATE schedules SET paused = $2, updated_at = $3 WHERE name = $1 \
                     RETURNING {COLUMNS}"
                ),
                &[&name, &paused, &now],
            )
            .await?
        }
    }
    .ok_or_else(|| no_schedule(name))?;
    events.push(StoreEvent::Changed);
    decode(&row)
}

pub async fn occurrence_list<C: Conn>(
    c: &C,
    schedule: &str,
    before: Option<DateTime<Utc>>,
    limit: u32,
) -> Result<Vec<Occurrence>> {
    let rows = query(
        c,
        "SELECT schedule, fire_time, outcome, reason, job_id, recorded_at, fired_by \
         FROM schedule_occurrences WHERE schedule = $1 AND ($2::timestamptz IS NULL OR fire_time < $2) \
         ORDER BY fire_time DESC LIMIT $3",
        &[&schedule, &before, &i64::from(limit)],
    )
    .await?;
    rows.iter()
        .map(|row| {
            let outcome: String = get(row, 2)?;
            Ok(Occurrence {
                schedule: get(row, 0)?,
                fire_time: get(row, 1)?,
                outcome: Outcome::parse(&outcome)
                    .ok_or_else(|| corrupt(format!("occurrence outcome {outcome:?}")))?,
                reason: get(row, 3)?,
                job_id: get(row, 4)?,
                recorded_at: get(row, 5)?,
                fired_by: get(row, 6)?,
            })
        })
        .collect()
}

/// The job of the latest fired occurrence, when it is not finished.
async fn unfinished_previous<C: Conn>(c: &C, schedule: &str) -> Result<Option<(Uuid, JobState)>> {
    let row = query_opt(
        c,
        "SELECT o.job_id, j.state FROM schedule_occurrences o JOIN jobs j ON j.id = o.job_id \
         WHERE o.schedule = $1 AND o.outcome = 'fired' AND o.job_id IS NOT NULL \
         ORDER BY o.fire_time DESC LIMIT 1",
        &[&schedule],
    )
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let id: Uuid = get(&row, 0)?;
    let state: String = get(&row, 1)?;
    let state: JobState = state
        .parse()
        .map_err(|e| corrupt(format!("job state: {e}")))?;
    Ok((!state.is_finished()).then_some((id, state)))
}

/// Records an occurrence unless (schedule, fire_time) is recorded already (`None`).
/// Who records, and when: the parts every occurrence of one firing shares.
struct Recorder<'a> {
    schedule: &'a str,
    fired_by: Option<&'a str>,
    now: DateTime<Utc>,
}

async fn record<C: Conn>(
    c: &C,
    by: &Recorder<'_>,
    fire_time: DateTime<Utc>,
    outcome: Outcome,
    reason: Option<&str>,
    job_id: Option<Uuid>,
) -> Result<Option<Occurrence>> {
    let (schedule, fired_by, now) = (by.schedule, by.fired_by, by.now);
    let fire_time = truncate(fire_time);
    let now = truncate(now);
    let inserted = execute(
        c,
        "INSERT INTO schedule_occurrences \
         (schedule, fire_time, outcome, reason, job_id, recorded_at, fired_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        &[
            &schedule,
            &fire_time,
            &outcome.as_str(),
            &reason,
            &job_id,
            &now,
            &fired_by,
        ],
    )
    .await?;
    Ok((inserted == 1).then(|| Occurrence {
        schedule: schedule.to_string(),
        fire_time,
        outcome,
        reason: reason.map(str::to_string),
        job_id,
        fired_by: fired_by.map(str::to_string),
        recorded_at: now,
    }))
}

pub async fn schedule_fire<C: Conn>(
    c: &C,
    firing: &ScheduleFiring,
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<FireReport> {
    let name = firing.schedule.as_str();
    let advanced = execute(
        c,
        "UPDATE schedules SET next_fire_at = $3 \
         WHERE name = $1 AND next_fire_at = $2 AND NOT paused",
        &[
            &name,
            &truncate(firing.expected),
            &firing.next.map(truncate),
        ],
    )
    .await?;
    if advanced == 0 {
        return Ok(FireReport::default());
    }
    let mut report = FireReport {
        advanced: true,
        ..FireReport::default()
    };
    let previous = unfinished_previous(c, name).await?;
    let by = Recorder {
        schedule: name,
        fired_by: firing.fired_by.as_deref(),
        now,
    };
    for due in &firing.due {
        let occurrence = match due {
            Due::Missed { fire_time, reason } => {
                record(c, &by, *fire_time, Outcome::Missed, Some(reason), None).await?
            }
            Due::Fire { fire_time, job } => {
                if let Some((prev, state)) = previous {
                    match firing.overlap {
                        Overlap::Skip => {
                            let reason = format!("overlap: job {prev} is still {state}");
                            let skipped =
                                record(c, &by, *fire_time, Outcome::Skipped, Some(&reason), None)
                                    .await?;
                            report.recorded.extend(skipped);
                            continue;
                        }
                        Overlap::Allow => {}
                        Overlap::Replace if report.replaced.is_none() => {
                            match ops::job_cancel(c, prev, now, events).await {
                                Ok(_) | Err(Error::Store(StoreError::Conflict(_))) => {}
                                Err(e) => return Err(e),
                            }
                            report.replaced = Some(prev);
                        }
                        Overlap::Replace => {}
                    }
                }
                // The occurrence first: recorded already means its job exists already.
                let Some(mut occurrence) =
                    record(c, &by, *fire_time, Outcome::Fired, None, Some(job.id)).await?
                else {
                    continue;
                };
                let inserted =
                    ops::job_insert_many(c, std::slice::from_ref(job), now, events).await?;
                if let Some(first) = inserted.first() {
                    // A duplicate by unique_key: the occurrence points at the existing job.
                    if first.job.id != job.id {
                        execute(
                            c,
                            "UPDATE schedule_occurrences SET job_id = $3 \
                             WHERE schedule = $1 AND fire_time = $2",
                            &[&name, &occurrence.fire_time, &first.job.id],
                        )
                        .await?;
                        occurrence.job_id = Some(first.job.id);
                    }
                }
                Some(occurrence)
            }
        };
        report.recorded.extend(occurrence);
    }
    Ok(report)
}
