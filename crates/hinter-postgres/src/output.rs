//! Attempt reports (log lines, progress, checkpoint) and reading a job's log.

use crate::ops::{get, query, query_opt, truncate, Conn, Error, Result};
use chrono::{DateTime, Utc};
use hinter_core::output::MAX_LOG_PAGE;
use hinter_core::{JobReport, LogLine, LogQuery, LogStream, StoreError};
use serde_json::Value;
use uuid::Uuid;

/// One statement: the guarded update of the job (progress, checkpoint), the insert of its
/// lines under the attempt it returns, and the `progress` event when the report sets the
/// progress. No row back: the lease token did not match, or no job. `now` is on the
/// database's clock.
pub async fn job_report<C: Conn>(c: &C, report: &JobReport, now: DateTime<Utc>) -> Result<()> {
    let progress: Option<Value> = report
        .progress
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("progress: {e}")))?;
    let progress_event: Option<Value> = report.progress.as_ref().map(|p| p.event_data());
    let ats: Vec<_> = report.logs.iter().map(|l| truncate(l.at)).collect();
    let streams: Vec<&str> = report.logs.iter().map(|l| l.stream.as_str()).collect();
    let lines: Vec<&str> = report.logs.iter().map(|l| l.line.as_str()).collect();
    let row = query_opt(
        c,
        "WITH j AS (
             UPDATE jobs SET progress = COALESCE($3::json, progress),
                 checkpoint = COALESCE($4::json, checkpoint)
             WHERE id = $1 AND state = 'running' AND lease_token = $2
             RETURNING seq, id, job, queue, attempt),
         written AS (
             INSERT INTO job_logs (job_seq, attempt, at, stream, line)
             SELECT j.seq, j.attempt, u.at, u.stream, u.line
             FROM j, unnest($5::timestamptz[], $6::text[], $7::text[]) WITH ORDINALITY
                  AS u(at, stream, line, n)
             ORDER BY u.n),
         logged AS (
             INSERT INTO events (at, kind, job_id, job, queue, attempt, data)
             SELECT $9, 'progress', j.id, j.job, j.queue, j.attempt, $8::json
             FROM j WHERE $8::json IS NOT NULL)
         SELECT seq FROM j",
        &[
            &report.id,
            &report.lease_token,
            &progress,
            &report.checkpoint,
            &ats,
            &streams,
            &lines,
            &progress_event,
            &truncate(now),
        ],
    )
    .await?;
    if row.is_some() {
        return Ok(());
    }
    let exists = query_opt(c, "SELECT 1 FROM jobs WHERE id = $1", &[&report.id]).await?;
    Err(Error::Store(if exists.is_some() {
        StoreError::StaleLease(report.id)
    } else {
        StoreError::NotFound(report.id)
    }))
}

/// The job's log lines after `query.after`, of one attempt if asked; `None`: no such job.
/// One statement, so the job's existence and its lines come from one snapshot.
pub async fn job_logs<C: Conn>(c: &C, id: Uuid, q: LogQuery) -> Result<Option<Vec<LogLine>>> {
    let limit = i64::from(q.limit.min(MAX_LOG_PAGE));
    let attempt = q.attempt.map(i64::from);
    let rows = query(
        c,
        "SELECT l.id, l.attempt, l.at, l.stream, l.line
         FROM jobs AS j LEFT JOIN LATERAL (
             SELECT * FROM job_logs AS l
             WHERE l.job_seq = j.seq AND l.id > $2 AND ($3::int8 IS NULL OR l.attempt = $3)
             ORDER BY l.id LIMIT $4) AS l ON true
         WHERE j.id = $1
         ORDER BY l.id",
        &[&id, &q.after, &attempt, &limit],
    )
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut lines = Vec::with_capacity(rows.len());
    for row in &rows {
        let Some(line_id) = get::<Option<i64>>(row, 0)? else {
            continue;
        };
        let stream: String = get(row, 3)?;
        let stream: LogStream = stream.parse().map_err(StoreError::Corrupt)?;
        lines.push(LogLine {
            id: line_id,
            attempt: u32::try_from(get::<i64>(row, 1)?).unwrap_or(0),
            at: get(row, 2)?,
            stream,
            level: stream.level().to_string(),
            line: get(row, 4)?,
        });
    }
    Ok(Some(lines))
}
