//! Attempt reports (log lines, progress, checkpoint) and reading a job's log.

use crate::log;
use crate::ops::{db_err, from_micros, micros, not_running_under, Result};
use chrono::{DateTime, Utc};
use hinter_core::output::MAX_LOG_PAGE;
use hinter_core::{EventKind, JobReport, LogLine, LogQuery, LogStream, StoreError, StoreEvent};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

/// Appends the report's lines under the job's current attempt and sets its progress and
/// checkpoint, guarded by the lease token; a report that sets the progress logs a
/// `progress` event. Checks before it writes, so it needs no savepoint.
pub fn job_report(
    conn: &Connection,
    report: &JobReport,
    now: DateTime<Utc>,
    hints: &mut Vec<StoreEvent>,
) -> Result<()> {
    let progress = report
        .progress
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("progress: {e}")))?;
    let checkpoint = report
        .checkpoint
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("checkpoint: {e}")))?;
    let (seq, attempt, job, queue): (i64, i64, String, String) = conn
        .prepare_cached(
            "UPDATE jobs SET progress = COALESCE(?3, progress), \
             checkpoint = COALESCE(?4, checkpoint) \
             WHERE id = ?1 AND state = 'running' AND lease_token = ?2 \
             RETURNING seq, attempt, job, queue",
        )
        .map_err(db_err)?
        .query_row(
            params![
                report.id.to_string(),
                report.lease_token,
                progress,
                checkpoint
            ],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .map_err(db_err)?
        .ok_or_else(|| not_running_under(conn, report.id))?;
    if let Some(progress) = &report.progress {
        let id = report.id.to_string();
        let about = log::About {
            seq,
            id: &id,
            job: &job,
            queue: &queue,
            attempt,
        };
        let data = progress.event_data();
        log::append_about(conn, &about, EventKind::Progress, now, Some(&data), hints)?;
    }
    if report.logs.is_empty() {
        return Ok(());
    }
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO job_logs (job_seq, attempt, at, stream, line) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(db_err)?;
    for line in &report.logs {
        insert
            .execute(params![
                seq,
                attempt,
                micros(line.at),
                line.stream.as_str(),
                line.line
            ])
            .map_err(db_err)?;
    }
    Ok(())
}

/// The job's log lines after `query.after`, of one attempt if asked; `None`: no such job.
pub fn job_logs(conn: &Connection, id: Uuid, query: LogQuery) -> Result<Option<Vec<LogLine>>> {
    let tx = conn.unchecked_transaction().map_err(db_err)?;
    let seq: Option<i64> = tx
        .prepare_cached("SELECT seq FROM jobs WHERE id = ?1")
        .map_err(db_err)?
        .query_row([id.to_string()], |r| r.get(0))
        .optional()
        .map_err(db_err)?;
    let Some(seq) = seq else {
        return Ok(None);
    };
    let limit = i64::from(query.limit.min(MAX_LOG_PAGE));
    let attempt = query.attempt.map(i64::from);
    let mut statement = tx
        .prepare_cached(
            "SELECT id, attempt, at, stream, line FROM job_logs \
             WHERE job_seq = ?1 AND id > ?2 AND (?3 IS NULL OR attempt = ?3) \
             ORDER BY id LIMIT ?4",
        )
        .map_err(db_err)?;
    let rows = statement
        .query_map(params![seq, query.after, attempt, limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })
        .map_err(db_err)?;
    let mut lines = Vec::new();
    for row in rows {
        let (id, attempt, at, stream, line) = row.map_err(db_err)?;
        let stream: LogStream = stream.parse().map_err(StoreError::Corrupt)?;
        lines.push(LogLine {
            id,
            attempt: u32::try_from(attempt).unwrap_or(0),
            at: from_micros(at)?,
            stream,
            level: stream.level().to_string(),
            line,
        });
    }
    drop(statement);
    tx.finish().map_err(db_err)?;
    Ok(Some(lines))
}
