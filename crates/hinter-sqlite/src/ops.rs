//! The SQL of every store operation. Write operations run on the writer thread inside the
//! group transaction; read operations on a reader connection.

use crate::{counts, log};
use chrono::{DateTime, Utc};
use hinter_core::retry::FailOutcome;
use hinter_core::store::{
    Completion, Expired, Expiry, Failure, Heartbeat, HeartbeatAck, JobFilter, LeaseRequest,
    PruneRequest, QueueInfo, QueuePurge, Release,
};
use hinter_core::EventKind;
use hinter_core::{
    limits, AttemptError, Inserted, Job, JobState, LeasedJob, NewJob, Run, RunOutcome, StoreError,
    StoreEvent,
};
use rusqlite::{params, Connection, OptionalExtension, Row, ToSql};
use serde_json::json;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::time::Duration;
use uuid::Uuid;

pub type Result<T> = std::result::Result<T, StoreError>;

pub fn db_err(e: rusqlite::Error) -> StoreError {
    crate::writer::db_error(e, "")
}

pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_micros(us: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {us} out of range")))
}

fn opt_from_micros(us: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    us.map(from_micros).transpose()
}

/// Truncates to the precision the store keeps, so returned values equal stored ones.
fn truncate(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn parse_json(text: &str, what: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// Columns read by [`job_from_row`], in its order.
pub const JOB_COLUMNS: &str = "seq, id, job, queue, payload, state, priority, attempt, \
    max_attempts, run_at, created_at, started_at, finished_at, unique_key, ordering_key, \
    timeout_ms, singleton, cancel_requested, worker_id, lease_expires_at, errors, result, \
    errors_omitted, progress, checkpoint, reply_to, correlation_id, callback_url, parent_id";

/// Raw column values; decoding happens outside rusqlite's row callback so errors keep
/// their meaning.
pub struct RawJob {
    seq: i64,
    id: String,
    job: String,
    queue: String,
    payload: String,
    state: String,
    priority: i32,
    attempt: i64,
    max_attempts: i64,
    run_at: i64,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    unique_key: Option<String>,
    ordering_key: Option<String>,
    timeout_ms: Option<i64>,
    singleton: bool,
    cancel_requested: bool,
    worker_id: Option<String>,
    lease_expires_at: Option<i64>,
    errors: String,
    result: Option<String>,
    errors_omitted: i64,
    progress: Option<String>,
    checkpoint: Option<String>,
    reply_to: Option<String>,
    correlation_id: Option<String>,
    callback_url: Option<String>,
    parent_id: Option<String>,
}

pub fn raw_job(row: &Row<'_>) -> rusqlite::Result<RawJob> {
    Ok(RawJob {
        seq: row.get(0)?,
        id: row.get(1)?,
        job: row.get(2)?,
        queue: row.get(3)?,
        payload: row.get(4)?,
        state: row.get(5)?,
        priority: row.get(6)?,
        attempt: row.get(7)?,
        max_attempts: row.get(8)?,
        run_at: row.get(9)?,
        created_at: row.get(10)?,
        started_at: row.get(11)?,
        finished_at: row.get(12)?,
        unique_key: row.get(13)?,
        ordering_key: row.get(14)?,
        timeout_ms: row.get(15)?,
        singleton: row.get(16)?,
        cancel_requested: row.get(17)?,
        worker_id: row.get(18)?,
        lease_expires_at: row.get(19)?,
        errors: row.get(20)?,
        result: row.get(21)?,
        errors_omitted: row.get(22)?,
        progress: row.get(23)?,
        checkpoint: row.get(24)?,
        reply_to: row.get(25)?,
        correlation_id: row.get(26)?,
        callback_url: row.get(27)?,
        parent_id: row.get(28)?,
    })
}

impl RawJob {
    pub fn decode(self) -> Result<Job> {
        let errors: Vec<AttemptError> = serde_json::from_str(&self.errors)
            .map_err(|e| StoreError::Corrupt(format!("errors of job {}: {e}", self.id)))?;
        Ok(Job {
            id: Uuid::parse_str(&self.id)
                .map_err(|e| StoreError::Corrupt(format!("job id {:?}: {e}", self.id)))?,
            payload: parse_json(&self.payload, "payload")?,
            state: self
                .state
                .parse::<JobState>()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            job: self.job,
            queue: self.queue,
            priority: self.priority,
            attempt: u32::try_from(self.attempt).unwrap_or(0),
            max_attempts: u32::try_from(self.max_attempts).unwrap_or(0),
            run_at: from_micros(self.run_at)?,
            created_at: from_micros(self.created_at)?,
            started_at: opt_from_micros(self.started_at)?,
            finished_at: opt_from_micros(self.finished_at)?,
            unique_key: self.unique_key,
            ordering_key: self.ordering_key,
            timeout: self
                .timeout_ms
                .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
            singleton: self.singleton,
            cancel_requested: self.cancel_requested,
            worker_id: self.worker_id,
            lease_expires_at: opt_from_micros(self.lease_expires_at)?,
            errors,
            errors_omitted: u64::try_from(self.errors_omitted).unwrap_or(0),
            result: self
                .result
                .as_deref()
                .map(|r| parse_json(r, "result"))
                .transpose()?,
            runs: Vec::new(),
            progress: self
                .progress
                .as_deref()
                .map(|p| {
                    serde_json::from_str(p)
                        .map_err(|e| StoreError::Corrupt(format!("progress: {e}")))
                })
                .transpose()?,
            checkpoint: self
                .checkpoint
                .as_deref()
                .map(|c| parse_json(c, "checkpoint"))
                .transpose()?,
            reply_to: self.reply_to,
            correlation_id: self.correlation_id,
            callback_url: self.callback_url,
            parent_id: self
                .parent_id
                .as_deref()
                .map(|p| {
                    Uuid::parse_str(p)
                        .map_err(|e| StoreError::Corrupt(format!("parent id {p:?}: {e}")))
                })
                .transpose()?,
            followups: Vec::new(),
            seq: self.seq,
        })
    }
}

fn job_by(conn: &Connection, column: &str, value: &dyn rusqlite::ToSql) -> Result<Option<Job>> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE {column} = ?1");
    conn.prepare_cached(&sql)
        .map_err(db_err)?
        .query_row([value], raw_job)
        .optional()
        .map_err(db_err)?
        .map(RawJob::decode)
        .transpose()
}

/// The job with its runs.
pub fn job_get(conn: &Connection, id: Uuid) -> Result<Option<Job>> {
    // One snapshot for the job and its runs. Inside the writer's transaction this is a
    // savepoint; on a reader, a read transaction.
    let tx = conn.unchecked_transaction().map_err(db_err)?;
    let Some(mut job) = job_by(&tx, "id", &id.to_string())? else {
        return Ok(None);
    };
    job.runs = runs_of(&tx, job.seq)?;
    tx.finish().map_err(db_err)?;
    Ok(Some(job))
}

/// The runs of the job with sequence number `seq`, oldest first.
fn runs_of(conn: &Connection, seq: i64) -> Result<Vec<Run>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT attempt, worker_id, started_at, finished_at, outcome, error, exit_code, \
             duration_ms FROM runs WHERE job_seq = ?1 ORDER BY id",
        )
        .map_err(db_err)?;
    let rows = stmt
        .query_map([seq], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<i32>>(6)?,
                r.get::<_, Option<i64>>(7)?,
            ))
        })
        .map_err(db_err)?;
    let mut runs = Vec::new();
    for row in rows {
        let (attempt, worker_id, started_at, finished_at, outcome, error, exit_code, duration) =
            row.map_err(db_err)?;
        runs.push(Run {
            attempt: u32::try_from(attempt).unwrap_or(0),
            worker_id,
            started_at: from_micros(started_at)?,
            finished_at: opt_from_micros(finished_at)?,
            outcome: outcome.parse::<RunOutcome>().map_err(StoreError::Corrupt)?,
            error,
            exit_code,
            duration_ms: duration.map(|ms| u64::try_from(ms).unwrap_or(0)),
        });
    }
    Ok(runs)
}

/// The runs of each of `ids` that exists.
/// The follow-ups of job `id` (`parent_id = id`), oldest first, with their runs.
pub fn job_followups(conn: &Connection, id: Uuid) -> Result<Vec<Job>> {
    let tx = conn.unchecked_transaction().map_err(db_err)?;
    let raws = tx
        .prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE parent_id = ?1 ORDER BY seq"
        ))
        .map_err(db_err)?
        .query_map([id.to_string()], raw_job)
        .map_err(db_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err)?;
    let mut jobs = Vec::with_capacity(raws.len());
    for raw in raws {
        let mut job = raw.decode()?;
        job.runs = runs_of(&tx, job.seq)?;
        jobs.push(job);
    }
    tx.finish().map_err(db_err)?;
    Ok(jobs)
}

pub fn job_runs(conn: &Connection, ids: &[Uuid]) -> Result<HashMap<Uuid, Vec<Run>>> {
    let mut out = HashMap::with_capacity(ids.len());
    let mut stmt = conn
        .prepare_cached("SELECT seq FROM jobs WHERE id = ?1")
        .map_err(db_err)?;
    for id in ids {
        let seq: Option<i64> = stmt
            .query_row([id.to_string()], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        if let Some(seq) = seq {
            out.insert(*id, runs_of(conn, seq)?);
        }
    }
    Ok(out)
}

/// Ends the run of job `seq` under `lease_token` (still `running`) with `outcome` at `now`.
fn finish_run(
    conn: &Connection,
    seq: i64,
    lease_token: i64,
    outcome: RunOutcome,
    now: DateTime<Utc>,
    error: Option<&str>,
    exit_code: Option<i32>,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE runs SET outcome = ?3, finished_at = ?4, \
         duration_ms = MAX((?4 - started_at) / 1000, 0), error = ?5, exit_code = ?6 \
         WHERE job_seq = ?1 AND lease_token = ?2 AND outcome = 'running'",
    )
    .map_err(db_err)?
    .execute(params![
        seq,
        lease_token,
        outcome.as_str(),
        micros(now),
        error,
        exit_code
    ])
    .map_err(db_err)?;
    Ok(())
}

fn job_get_seq(conn: &Connection, seq: i64) -> Result<Job> {
    job_by(conn, "seq", &seq)?.ok_or_else(|| StoreError::Corrupt(format!("job seq {seq} vanished")))
}

/// The job with sequence number `seq` and its runs.
fn job_with_runs(conn: &Connection, seq: i64) -> Result<Job> {
    let mut job = job_get_seq(conn, seq)?;
    job.runs = runs_of(conn, seq)?;
    Ok(job)
}

const ACTIVE_STATES: &str = "('scheduled', 'queued', 'running')";

/// Parameters per row of [`INSERT_JOBS`], in the order [`JobRow::bind`] binds them.
const INSERT_ARITY: usize = 18;

/// Rows per multi-row statement, largest first: a run of rows is written with as few
/// statements as these sizes add up to (1,000 jobs: seven of 128 and three more). One
/// statement per job opened and closed a cursor on the table and each of its indexes per job
/// and looked its SQL up in the statement cache each time: a fifth of the writer's time in a
/// bulk enqueue. 128 rows of the widest statement bind 2,304 parameters, far below SQLite's
/// limit of 32,766.
const CHUNKS: [usize; 8] = [128, 64, 32, 16, 8, 4, 2, 1];

/// A statement over a list of rows given as `VALUES`, made once for each size of
/// [`CHUNKS`]: `{values}` in `template` becomes `(?, …), (?, …)…` with `arity` parameters
/// per row, and `{JOB_COLUMNS}` becomes [`JOB_COLUMNS`]. Numbered parameters (`?1`…) must
/// come before `{values}` in the text: each `?` there takes the next number after the
/// highest one before it.
struct Chunked {
    template: &'static str,
    arity: usize,
    sql: std::sync::OnceLock<Vec<String>>,
}

impl Chunked {
    const fn new(template: &'static str, arity: usize) -> Self {
        Self {
            template,
            arity,
            sql: std::sync::OnceLock::new(),
        }
    }

    /// The statement for `rows` rows (one of [`CHUNKS`]).
    fn sql(&self, rows: usize) -> &str {
        let all = self.sql.get_or_init(|| {
            let row = format!("({})", vec!["?"; self.arity].join(", "));
            CHUNKS
                .iter()
                .map(|&n| {
                    self.template
                        .replace("{JOB_COLUMNS}", JOB_COLUMNS)
                        .replace("{values}", &vec![row.as_str(); n].join(", "))
                })
                .collect()
        });
        let at = CHUNKS.iter().position(|&n| n == rows).unwrap_or(0);
        &all[at]
    }

    /// Splits `items` into the chunks it is written in, largest first.
    fn chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
        let mut rest = items;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let size = CHUNKS.into_iter().find(|&n| n <= rest.len()).unwrap_or(1);
            let (chunk, after) = rest.split_at(size);
            rest = after;
            Some(chunk)
        })
    }
}

static INSERT_JOBS: Chunked = Chunked::new(
    "INSERT INTO jobs (seq, id, job, queue, payload, state, priority, max_attempts, run_at, \
     created_at, unique_key, ordering_key, timeout_ms, singleton, reply_to, correlation_id, \
     callback_url, parent_id) VALUES {values}",
    INSERT_ARITY,
);

/// A new job ready to be written: its columns as stored.
struct JobRow {
    new: NewJob,
    seq: i64,
    id: String,
    payload: String,
    state: JobState,
    run_at: DateTime<Utc>,
}

impl JobRow {
    fn new(new: NewJob, seq: i64, now: DateTime<Utc>) -> Result<Self> {
        let run_at = truncate(new.run_at.unwrap_or(now));
        let state = if new.run_at.is_some_and(|at| at > now) {
            JobState::Scheduled
        } else {
            JobState::Queued
        };
        let payload = serde_json::to_string(&new.payload)
            .map_err(|e| StoreError::Corrupt(format!("payload: {e}")))?;
        Ok(Self {
            id: new.id.to_string(),
            new,
            seq,
            payload,
            state,
            run_at,
        })
    }

    /// Binds the row's columns of [`INSERT_JOBS`] from parameter `first` on.
    fn bind(
        &self,
        stmt: &mut rusqlite::CachedStatement<'_>,
        first: usize,
        now: i64,
    ) -> rusqlite::Result<()> {
        let new = &self.new;
        let values: [&dyn rusqlite::ToSql; INSERT_ARITY] = [
            &self.seq,
            &self.id,
            &new.job,
            &new.queue,
            &self.payload,
            &self.state.as_str(),
            &new.priority,
            &new.max_attempts,
            &micros(self.run_at),
            &now,
            &new.unique_key,
            &new.ordering_key,
            &new.timeout.map(duration_ms),
            &new.singleton,
            &new.reply_to,
            &new.correlation_id,
            &new.callback_url,
            &new.parent_id.map(|p| p.to_string()),
        ];
        for (i, value) in values.into_iter().enumerate() {
            stmt.raw_bind_parameter(first + i, value)?;
        }
        Ok(())
    }

    fn into_job(self, now: DateTime<Utc>) -> Job {
        self.new
            .into_inserted(self.seq, self.state, self.run_at, now)
    }
}

/// Writes `rows` (consecutive `seq`s, in order) with multi-row `INSERT`s and their `created`
/// events with one statement, and moves them to `out` as inserted jobs.
fn write_rows(
    conn: &Connection,
    rows: &mut Vec<JobRow>,
    now: DateTime<Utc>,
    queues_ready: &mut HashSet<String>,
    events: &mut Vec<StoreEvent>,
    out: &mut Vec<Inserted>,
) -> Result<()> {
    let (Some(first), Some(last)) = (rows.first().map(|r| r.seq), rows.last().map(|r| r.seq))
    else {
        return Ok(());
    };
    let now_us = micros(now);
    for chunk in Chunked::chunks(rows) {
        let mut stmt = conn
            .prepare_cached(INSERT_JOBS.sql(chunk.len()))
            .map_err(db_err)?;
        for (i, row) in chunk.iter().enumerate() {
            row.bind(&mut stmt, 1 + i * INSERT_ARITY, now_us)
                .map_err(db_err)?;
        }
        stmt.raw_execute().map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                conflict(conn, chunk)
            }
            e => db_err(e),
        })?;
    }
    log::append_created(conn, first, last, now, events)?;
    for row in rows.drain(..) {
        counts::moved(&row.new.queue, None, Some(row.state));
        if row.state == JobState::Queued && !queues_ready.contains(&row.new.queue) {
            queues_ready.insert(row.new.queue.clone());
        }
        out.push(Inserted {
            job: row.into_job(now),
            duplicate: false,
        });
    }
    Ok(())
}

/// The error of a chunk whose insert met a unique constraint (the statement undid its own
/// rows): names the first job whose id is stored already (before this call, or by an earlier
/// chunk of it), or one given twice within the chunk.
fn conflict(conn: &Connection, chunk: &[JobRow]) -> StoreError {
    let taken = |id: &str| StoreError::Conflict(format!("job {id} already exists"));
    for row in chunk {
        let stored: rusqlite::Result<Option<i64>> = conn
            .prepare_cached("SELECT seq FROM jobs WHERE id = ?1")
            .and_then(|mut s| s.query_row([&row.id], |r| r.get(0)).optional());
        match stored {
            Ok(Some(_)) => return taken(&row.id),
            Ok(None) => {}
            Err(e) => return db_err(e),
        }
    }
    let mut seen = HashSet::new();
    match chunk.iter().find(|row| !seen.insert(&row.id)) {
        Some(row) => taken(&row.id),
        None => StoreError::Conflict("a job of this call already exists".to_string()),
    }
}

/// The `seq` the next inserted job gets: one above the highest there is, as SQLite assigns a
/// rowid. Given explicitly, so that a multi-row insert knows each row's.
fn next_job_seq(conn: &Connection) -> Result<i64> {
    let max: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM jobs")
        .map_err(db_err)?
        .query_row([], |r| r.get(0))
        .map_err(db_err)?;
    max.checked_add(1)
        .ok_or_else(|| StoreError::Unavailable("job sequence numbers are exhausted".to_string()))
}

pub fn job_insert_many(
    conn: &Connection,
    jobs: Vec<NewJob>,
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<Vec<Inserted>> {
    hinter_core::store::check_new_jobs(&jobs)?;
    let now = truncate(now);
    let mut out = Vec::with_capacity(jobs.len());
    let mut queues_ready: HashSet<String> = HashSet::new();
    let mut next_seq = next_job_seq(conn)?;
    let mut rows: Vec<JobRow> = Vec::with_capacity(jobs.len().min(1000));
    for new in jobs {
        if let Some(key) = &new.unique_key {
            // The duplicate check reads the jobs written so far, those of this call too.
            write_rows(conn, &mut rows, now, &mut queues_ready, events, &mut out)?;
            let existing: Option<i64> = match new.unique_for {
                Some(window) => {
                    let since = micros(now) - duration_ms(window).saturating_mul(1000);
                    conn.prepare_cached(
                        "SELECT seq FROM jobs WHERE job = ?1 AND unique_key = ?2 \
                         AND created_at > ?3 ORDER BY seq DESC LIMIT 1",
                    )
                    .map_err(db_err)?
                    .query_row(params![new.job, key, since], |r| r.get(0))
                    .optional()
                    .map_err(db_err)?
                }
                None => conn
                    .prepare_cached(&format!(
                        "SELECT seq FROM jobs WHERE job = ?1 AND unique_key = ?2 \
                         AND state IN {ACTIVE_STATES} ORDER BY seq DESC LIMIT 1"
                    ))
                    .map_err(db_err)?
                    .query_row(params![new.job, key], |r| r.get(0))
                    .optional()
                    .map_err(db_err)?,
            };
            if let Some(seq) = existing {
                out.push(Inserted {
                    job: job_get_seq(conn, seq)?,
                    duplicate: true,
                });
                continue;
            }
        }
        let seq = next_seq;
        next_seq = next_seq.checked_add(1).ok_or_else(|| {
            StoreError::Unavailable("job sequence numbers are exhausted".to_string())
        })?;
        rows.push(JobRow::new(new, seq, now)?);
    }
    write_rows(conn, &mut rows, now, &mut queues_ready, events, &mut out)?;
    events.extend(
        queues_ready
            .into_iter()
            .map(|queue| StoreEvent::JobsAvailable { queue }),
    );
    Ok(out)
}

pub fn job_promote_scheduled(
    conn: &Connection,
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<u64> {
    let mut stmt = conn
        .prepare_cached(
            "UPDATE jobs SET state = 'queued' WHERE state = 'scheduled' AND run_at <= ?1 \
             RETURNING queue",
        )
        .map_err(db_err)?;
    let queues = stmt
        .query_map([micros(now)], |r| r.get::<_, String>(0))
        .map_err(db_err)?
        .collect::<rusqlite::Result<Vec<String>>>()
        .map_err(db_err)?;
    let count = queues.len() as u64;
    for queue in &queues {
        counts::moved(queue, Some(JobState::Scheduled), Some(JobState::Queued));
    }
    let distinct: HashSet<String> = queues.into_iter().collect();
    events.extend(
        distinct
            .into_iter()
            .map(|queue| StoreEvent::JobsAvailable { queue }),
    );
    Ok(count)
}

/// A job that may be leased: what choosing needs. The rest is read only for the jobs taken.
struct Candidate {
    seq: i64,
    priority: i32,
    job: String,
    singleton: bool,
}

impl Candidate {
    /// Lease order: higher priority first, then enqueue order; smaller is better.
    fn rank(&self) -> (Reverse<i32>, i64) {
        (Reverse(self.priority), self.seq)
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.rank() == other.rank()
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

pub fn job_lease(
    conn: &Connection,
    request: &LeaseRequest,
    events: &mut Vec<StoreEvent>,
) -> Result<Vec<LeasedJob>> {
    job_promote_scheduled(conn, request.now, events)?;
    let paused: HashSet<String> = conn
        .prepare_cached("SELECT name FROM queues WHERE paused = 1")
        .map_err(db_err)?
        .query_map([], |r| r.get(0))
        .map_err(db_err)?
        .collect::<rusqlite::Result<_>>()
        .map_err(db_err)?;
    // Linear in the request: a set of names seen, not a scan of the list per name.
    let mut seen: HashSet<&str> = HashSet::with_capacity(request.queues.len());
    let queues: Vec<&String> = request
        .queues
        .iter()
        .filter(|queue| !paused.contains(*queue) && seen.insert(queue.as_str()))
        .collect();
    // Limited to some job names: one JSON array parameter, so the statement is prepared once.
    let names = if request.jobs.is_empty() {
        None
    } else {
        Some(
            serde_json::to_string(&request.jobs)
                .map_err(|e| StoreError::Corrupt(format!("job names: {e}")))?,
        )
    };
    let max = request.max as usize;
    let mut leased = Vec::with_capacity(max);
    // Rounds: a round that had to skip a second singleton of the same name asks again,
    // and the guard in the query then sees the first one running.
    loop {
        let want = max - leased.len();
        let candidates = lease_candidates(conn, &queues, names.as_deref(), want)?;
        let found = candidates.len();
        let skipped = lease_round(conn, request, candidates, want, &mut leased, events)?;
        if !skipped || found == 0 || leased.len() >= max {
            return Ok(leased);
        }
    }
}

/// The best `want` eligible queued jobs of `queues`, best first. Each queue's jobs are read
/// in lease order and only while they could still make the cut, and only the columns that
/// choose, so many queues cost little more than their best jobs.
fn lease_candidates(
    conn: &Connection,
    queues: &[&String],
    names: Option<&str>,
    want: usize,
) -> Result<Vec<Candidate>> {
    if want == 0 {
        return Ok(Vec::new());
    }
    // The best so far; its top is the worst of them.
    let mut best: BinaryHeap<Candidate> = BinaryHeap::with_capacity(want + 1);
    let mut stmt = conn
        .prepare_cached(&candidates_sql(names.is_some()))
        .map_err(db_err)?;
    for queue in queues {
        let mut rows = match names {
            None => stmt.query(params![queue, want as i64]),
            Some(names) => stmt.query(params![queue, want as i64, names]),
        }
        .map_err(db_err)?;
        while let Some(row) = rows.next().map_err(db_err)? {
            let candidate = Candidate {
                seq: row.get(0).map_err(db_err)?,
                priority: row.get(1).map_err(db_err)?,
                job: row.get(2).map_err(db_err)?,
                singleton: row.get(3).map_err(db_err)?,
            };
            if best.len() == want && best.peek().is_some_and(|worst| &candidate >= worst) {
                // This queue's later jobs rank lower still.
                break;
            }
            best.push(candidate);
            if best.len() > want {
                best.pop();
            }
        }
    }
    Ok(best.into_sorted_vec())
}

/// The statement of [`lease_candidates`]: one queue's eligible queued jobs in lease order,
/// `?1` the queue, `?2` how many, `?3` the job names (a JSON array) if `names`. A singleton's
/// check for a running job of its name reads `jobs_active_job` (a running job is unfinished).
fn candidates_sql(names: bool) -> String {
    let names_filter = if names {
        "AND job IN (SELECT value FROM json_each(?3))"
    } else {
        ""
    };
    format!(
        "SELECT seq, priority, job, singleton
             FROM jobs j
             WHERE state = 'queued' AND queue = ?1
               AND (ordering_key IS NULL OR NOT EXISTS (
                    SELECT 1 FROM jobs o
                    WHERE o.queue = j.queue AND o.ordering_key = j.ordering_key
                      AND o.state IN {ACTIVE_STATES} AND (o.seq < j.seq OR o.state = 'running')))
               AND (singleton = 0 OR NOT EXISTS (
                    SELECT 1 FROM jobs s WHERE s.job = j.job AND s.state = 'running'
                                             AND s.finished_at IS NULL))
               {names_filter}
             ORDER BY priority DESC, seq
             LIMIT ?2"
    )
}

static LEASE_JOBS: Chunked = Chunked::new(
    "UPDATE jobs SET state = 'running', attempt = attempt + 1, worker_id = ?1, \
     lease_token = v.column2, lease_expires_at = ?2, started_at = ?3, \
     deadline_at = CASE WHEN timeout_ms IS NULL THEN NULL ELSE ?3 + timeout_ms * 1000 END \
     FROM (VALUES {values}) AS v WHERE jobs.seq = v.column1 AND jobs.state = 'queued'",
    2,
);
static LEASED_ROWS: Chunked = Chunked::new(
    "SELECT jobs.seq, id, job, queue, payload, attempt, max_attempts, priority, created_at, \
            timeout_ms, checkpoint \
     FROM (VALUES {values}) AS v JOIN jobs ON jobs.seq = v.column1 \
     WHERE jobs.lease_token = v.column2",
    2,
);
static LEASED_RUNS: Chunked = Chunked::new(
    "INSERT INTO runs (job_seq, attempt, worker_id, lease_token, started_at) \
     SELECT jobs.seq, jobs.attempt, ?1, jobs.lease_token, ?2 \
     FROM (VALUES {values}) AS v JOIN jobs ON jobs.seq = v.column1 \
     WHERE jobs.lease_token = v.column2 ORDER BY v.column1",
    2,
);
static STARTED_EVENTS: Chunked = Chunked::new(
    "INSERT INTO events (at, kind, job_seq, job_id, job, queue, attempt, data) \
     SELECT ?1, ?2, jobs.seq, jobs.id, jobs.job, jobs.queue, jobs.attempt, ?3 \
     FROM (VALUES {values}) AS v JOIN jobs ON jobs.seq = v.column1 \
     WHERE jobs.lease_token = v.column2 ORDER BY v.column3",
    3,
);

/// Leases `candidates` (best first) until `want` are taken, each singleton name once. Answers
/// whether a singleton was passed over. The jobs are written with a few statements per chunk
/// of [`CHUNKS`], not four per job: their update, their rows read back, their runs and their
/// `started` events in lease order.
fn lease_round(
    conn: &Connection,
    request: &LeaseRequest,
    candidates: Vec<Candidate>,
    want: usize,
    leased: &mut Vec<LeasedJob>,
    events: &mut Vec<StoreEvent>,
) -> Result<bool> {
    let now = micros(truncate(request.now));
    let lease_until = truncate(
        request.now
            + chrono::Duration::from_std(request.lease_for).unwrap_or(chrono::Duration::hours(1)),
    );
    let mut singletons_taken: HashSet<String> = HashSet::new();
    let mut skipped = false;
    // (seq, lease token) of the jobs chosen, in lease order.
    let mut chosen: Vec<(i64, i64)> = Vec::with_capacity(want.min(candidates.len()));
    for c in candidates {
        if chosen.len() >= want {
            break;
        }
        if c.singleton && !singletons_taken.insert(c.job.clone()) {
            skipped = true;
            continue;
        }
        chosen.push((c.seq, new_lease_token()));
    }
    // No RETURNING: SQLite runs RETURNING as a trigger, and a statement with a trigger that
    // may abort keeps a statement journal, which cost a quarter of the writer's time. The
    // rows are read back by key instead (their pages are in the cache); a chosen job that
    // was not queued any more has no row with its token and is left out.
    let started = json!({ "worker_id": request.worker_id }).to_string();
    let until = micros(lease_until);
    for chunk in Chunked::chunks(&chosen) {
        let mut stmt = conn
            .prepare_cached(LEASE_JOBS.sql(chunk.len()))
            .map_err(db_err)?;
        bind_all(
            &mut stmt,
            &[&request.worker_id, &until, &now],
            seq_tokens(chunk),
        )?;
        stmt.raw_execute().map_err(db_err)?;

        let mut stmt = conn
            .prepare_cached(LEASED_RUNS.sql(chunk.len()))
            .map_err(db_err)?;
        bind_all(&mut stmt, &[&request.worker_id, &now], seq_tokens(chunk))?;
        stmt.raw_execute().map_err(db_err)?;

        let mut stmt = conn
            .prepare_cached(STARTED_EVENTS.sql(chunk.len()))
            .map_err(db_err)?;
        let order: Vec<i64> = (0..).take(chunk.len()).collect();
        bind_all(
            &mut stmt,
            &[&now, &EventKind::Started.as_str(), &started],
            chunk
                .iter()
                .zip(&order)
                .flat_map(|((seq, token), k)| [seq as &dyn ToSql, token, k]),
        )?;
        stmt.raw_execute().map_err(db_err)?;

        let mut stmt = conn
            .prepare_cached(LEASED_ROWS.sql(chunk.len()))
            .map_err(db_err)?;
        bind_all(&mut stmt, &[], seq_tokens(chunk))?;
        let mut by_seq: HashMap<i64, LeasedRow> = HashMap::with_capacity(chunk.len());
        let mut rows = stmt.raw_query();
        while let Some(r) = rows.next().map_err(db_err)? {
            let row = LeasedRow {
                id: r.get(1).map_err(db_err)?,
                job: r.get(2).map_err(db_err)?,
                queue: r.get(3).map_err(db_err)?,
                payload: r.get(4).map_err(db_err)?,
                attempt: r.get(5).map_err(db_err)?,
                max_attempts: r.get(6).map_err(db_err)?,
                priority: r.get(7).map_err(db_err)?,
                created_at: r.get(8).map_err(db_err)?,
                timeout_ms: r.get(9).map_err(db_err)?,
                checkpoint: r.get(10).map_err(db_err)?,
            };
            by_seq.insert(r.get(0).map_err(db_err)?, row);
        }
        if !by_seq.is_empty() {
            log::hint(events);
        }
        for &(seq, lease_token) in chunk {
            let Some(row) = by_seq.remove(&seq) else {
                continue;
            };
            counts::moved(&row.queue, Some(JobState::Queued), Some(JobState::Running));
            leased.push(LeasedJob {
                id: Uuid::parse_str(&row.id)
                    .map_err(|e| StoreError::Corrupt(format!("job id {:?}: {e}", row.id)))?,
                job: row.job,
                queue: row.queue,
                payload: parse_json(&row.payload, "payload")?,
                attempt: u32::try_from(row.attempt).unwrap_or(u32::MAX),
                max_attempts: u32::try_from(row.max_attempts).unwrap_or(0),
                priority: row.priority,
                created_at: from_micros(row.created_at)?,
                lease_token,
                lease_expires_at: lease_until,
                timeout: row
                    .timeout_ms
                    .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
                checkpoint: row
                    .checkpoint
                    .as_deref()
                    .map(|c| parse_json(c, "checkpoint"))
                    .transpose()?,
            });
        }
    }
    Ok(skipped)
}

/// What a lease reads back of a job it took.
struct LeasedRow {
    id: String,
    job: String,
    queue: String,
    payload: String,
    attempt: i64,
    max_attempts: i64,
    priority: i32,
    created_at: i64,
    timeout_ms: Option<i64>,
    checkpoint: Option<String>,
}

/// The values of `(seq, lease token)` rows, one after another, for [`bind_all`].
fn seq_tokens(rows: &[(i64, i64)]) -> impl Iterator<Item = &dyn ToSql> {
    rows.iter()
        .flat_map(|(seq, token)| [seq as &dyn ToSql, token])
}

/// Binds a [`Chunked`] statement's parameters from the first on: `head`, its numbered ones,
/// then `rows`, the values of its rows one after another.
fn bind_all<'a>(
    stmt: &mut rusqlite::CachedStatement<'_>,
    head: &[&'a dyn ToSql],
    rows: impl IntoIterator<Item = &'a dyn ToSql>,
) -> Result<()> {
    for (i, value) in head.iter().copied().chain(rows).enumerate() {
        stmt.raw_bind_parameter(1 + i, value).map_err(db_err)?;
    }
    Ok(())
}

/// A fencing token: random, positive, and exact in JSON numbers (below 2^53).
fn new_lease_token() -> i64 {
    rand::random_range(1..(1i64 << 53))
}

/// What the guarded operations need of a job running under a given lease.
struct Held {
    seq: i64,
    attempt: i64,
    cancel_requested: bool,
    queue: String,
}

/// The job's row if it is running under this lease token; otherwise why not.
fn running_under(conn: &Connection, id: Uuid, lease_token: i64) -> Result<Held> {
    let row: Option<(i64, Option<i64>, String, bool, String, i64)> = conn
        .prepare_cached(
            "SELECT seq, lease_token, state, cancel_requested, queue, attempt \
             FROM jobs WHERE id = ?1",
        )
        .map_err(db_err)?
        .query_row([id.to_string()], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .optional()
        .map_err(db_err)?;
    match row {
        None => Err(StoreError::NotFound(id)),
        Some((seq, Some(token), state, cancel_requested, queue, attempt))
            if token == lease_token && state == "running" =>
        {
            Ok(Held {
                seq,
                attempt,
                cancel_requested,
                queue,
            })
        }
        Some(_) => Err(StoreError::StaleLease(id)),
    }
}

/// Why a guarded update of job `id` under `lease_token` matched nothing.
pub(crate) fn not_running_under(conn: &Connection, id: Uuid) -> StoreError {
    let exists = conn
        .prepare_cached("SELECT 1 FROM jobs WHERE id = ?1")
        .and_then(|mut s| s.exists([id.to_string()]));
    match exists {
        Ok(true) => StoreError::StaleLease(id),
        Ok(false) => StoreError::NotFound(id),
        Err(e) => db_err(e),
    }
}

pub fn job_heartbeat(
    conn: &Connection,
    hb: &Heartbeat,
    now: DateTime<Utc>,
) -> Result<HeartbeatAck> {
    let until = truncate(
        now + chrono::Duration::from_std(hb.lease_for).unwrap_or(chrono::Duration::hours(1)),
    );
    let id = hb.id.to_string();
    // UPDATE, then the flag by key: no RETURNING (see `lease_round`).
    let updated = conn
        .prepare_cached(
            "UPDATE jobs SET lease_expires_at = ?3 \
             WHERE id = ?1 AND state = 'running' AND lease_token = ?2",
        )
        .map_err(db_err)?
        .execute(params![id, hb.lease_token, micros(until)])
        .map_err(db_err)?;
    if updated == 0 {
        return Err(not_running_under(conn, hb.id));
    }
    let cancel_requested = conn
        .prepare_cached("SELECT cancel_requested FROM jobs WHERE id = ?1")
        .map_err(db_err)?
        .query_row(params![id], |r| r.get::<_, bool>(0))
        .map_err(db_err)?;
    Ok(HeartbeatAck {
        lease_expires_at: until,
        cancel_requested,
    })
}

/// Jobs waiting behind this one (same ordering key, or same singleton name) may now go.
fn finished_events(job: &Job, events: &mut Vec<StoreEvent>) {
    events.push(StoreEvent::JobFinished {
        id: job.id,
        state: job.state,
    });
    if job.ordering_key.is_some() || job.singleton {
        events.push(StoreEvent::JobsAvailable {
            queue: job.queue.clone(),
        });
    }
}

/// Marks a job succeeded. Returns the raw row: decoding happens off the writer thread.
pub fn job_complete(
    conn: &Connection,
    c: &Completion,
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<RawJob> {
    let result = c
        .result
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("result: {e}")))?;
    let id = c.id.to_string();
    // UPDATE, then the row by key: no RETURNING, whose trigger costs a statement journal
    // (see `lease_round`).
    let updated = conn
        .prepare_cached(
            "UPDATE jobs SET state = 'succeeded', result = ?3, finished_at = ?4, \
             lease_token = NULL, lease_expires_at = NULL, deadline_at = NULL \
             WHERE id = ?1 AND state = 'running' AND lease_token = ?2",
        )
        .map_err(db_err)?
        .execute(params![id, c.lease_token, result, micros(now)])
        .map_err(db_err)?;
    if updated == 0 {
        return Err(not_running_under(conn, c.id));
    }
    let raw = conn
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))
        .map_err(db_err)?
        .query_row(params![id], raw_job)
        .map_err(db_err)?;
    finish_run(
        conn,
        raw.seq,
        c.lease_token,
        RunOutcome::Succeeded,
        now,
        None,
        None,
    )?;
    let about = log::About {
        seq: raw.seq,
        id: &raw.id,
        job: &raw.job,
        queue: &raw.queue,
        attempt: raw.attempt,
    };
    log::append_about(conn, &about, EventKind::Succeeded, now, None, events)?;
    succeeded(conn, c.id, &raw, now, events)?;
    Ok(raw)
}

/// What follows the success of job `id` (`raw`, as written) in its transaction: its count,
/// the announcements, and its follow-ups.
fn succeeded(
    conn: &Connection,
    id: Uuid,
    raw: &RawJob,
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<()> {
    counts::moved(
        &raw.queue,
        Some(JobState::Running),
        Some(JobState::Succeeded),
    );
    events.push(StoreEvent::JobFinished {
        id,
        state: JobState::Succeeded,
    });
    if raw.ordering_key.is_some() || raw.singleton {
        events.push(StoreEvent::JobsAvailable {
            queue: raw.queue.clone(),
        });
    }
    if raw.reply_to.is_some() || raw.callback_url.is_some() {
        let job = job_get_seq(conn, raw.seq)?;
        insert_followups(conn, &job, now, events)?;
    }
    Ok(())
}

static HOLDERS: Chunked = Chunked::new(
    "SELECT id, seq, state = 'running' AND lease_token IS v.column2 FROM jobs \
     JOIN (VALUES {values}) AS v ON jobs.id = v.column1",
    2,
);
static SUCCEED_JOBS: Chunked = Chunked::new(
    "UPDATE jobs SET state = 'succeeded', result = v.column2, finished_at = ?1, \
     lease_token = NULL, lease_expires_at = NULL, deadline_at = NULL \
     FROM (VALUES {values}) AS v WHERE jobs.seq = v.column1",
    2,
);
static SUCCEED_RUNS: Chunked = Chunked::new(
    "UPDATE runs SET outcome = ?1, finished_at = ?2, \
     duration_ms = MAX((?2 - started_at) / 1000, 0), error = NULL, exit_code = NULL \
     FROM (VALUES {values}) AS v \
     WHERE runs.job_seq = v.column1 AND runs.lease_token = v.column2 \
     AND runs.outcome = 'running'",
    2,
);
static SUCCEEDED_EVENTS: Chunked = Chunked::new(
    "INSERT INTO events (at, kind, job_seq, job_id, job, queue, attempt) \
     SELECT ?1, ?2, jobs.seq, jobs.id, jobs.job, jobs.queue, jobs.attempt \
     FROM (VALUES {values}) AS v JOIN jobs ON jobs.seq = v.column2 ORDER BY v.column1",
    2,
);
static READ_BACK: Chunked = Chunked::new(
    "SELECT {JOB_COLUMNS} FROM jobs WHERE seq IN (VALUES {values})",
    1,
);

/// [`job_complete`] of each of `items`, the whole list with a few statements per chunk of
/// [`CHUNKS`] instead of four per job: which of them hold their lease (one read), the jobs'
/// update, their runs', their `succeeded` events in the order of `items`, and the rows read
/// back. An item whose job is not running under its token is answered `StaleLease` or
/// `NotFound`, as by `job_complete`, and changes nothing. A list that names a job twice goes
/// item by item, so that the second is answered as the first leaves the job.
pub fn job_complete_many(
    conn: &Connection,
    items: &[Completion],
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<Vec<Result<RawJob>>> {
    let mut seen = HashSet::with_capacity(items.len());
    if items.len() < 2 || !items.iter().all(|c| seen.insert(c.id)) {
        return items
            .iter()
            .map(|c| match job_complete(conn, c, now, events) {
                Err(e @ (StoreError::Unavailable(_) | StoreError::Storage(_))) => Err(e),
                other => Ok(other),
            })
            .collect();
    }
    let now_us = micros(now);
    let ids: Vec<String> = items.iter().map(|c| c.id.to_string()).collect();
    // The job of each item: its seq, and whether it runs under the item's token.
    let mut held: HashMap<String, (i64, bool)> = HashMap::with_capacity(items.len());
    let pairs: Vec<(&String, i64)> = ids
        .iter()
        .zip(items.iter().map(|c| c.lease_token))
        .collect();
    for chunk in Chunked::chunks(&pairs) {
        let mut stmt = conn
            .prepare_cached(HOLDERS.sql(chunk.len()))
            .map_err(db_err)?;
        bind_all(
            &mut stmt,
            &[],
            chunk
                .iter()
                .flat_map(|(id, token)| [id as &dyn ToSql, token]),
        )?;
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next().map_err(db_err)? {
            held.insert(
                row.get(0).map_err(db_err)?,
                (row.get(1).map_err(db_err)?, row.get(2).map_err(db_err)?),
            );
        }
    }
    // (position in `items`, seq, lease token, result) of the items that hold their lease.
    let mut good: Vec<(usize, i64, i64, Option<String>)> = Vec::with_capacity(items.len());
    let mut out: Vec<Option<Result<RawJob>>> = Vec::with_capacity(items.len());
    for (i, (c, id)) in items.iter().zip(&ids).enumerate() {
        match held.get(id) {
            Some(&(seq, true)) => {
                let result = c
                    .result
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(|e| StoreError::Corrupt(format!("result: {e}")))?;
                good.push((i, seq, c.lease_token, result));
                out.push(None);
            }
            Some(&(_, false)) => out.push(Some(Err(StoreError::StaleLease(c.id)))),
            None => out.push(Some(Err(StoreError::NotFound(c.id)))),
        }
    }
    for chunk in Chunked::chunks(&good) {
        let mut stmt = conn
            .prepare_cached(SUCCEED_JOBS.sql(chunk.len()))
            .map_err(db_err)?;
        bind_all(
            &mut stmt,
            &[&now_us],
            chunk
                .iter()
                .flat_map(|(_, seq, _, result)| [seq as &dyn ToSql, result]),
        )?;
        stmt.raw_execute().map_err(db_err)?;
        let mut stmt = conn
            .prepare_cached(SUCCEED_RUNS.sql(chunk.len()))
            .map_err(db_err)?;
        bind_all(
            &mut stmt,
            &[&RunOutcome::Succeeded.as_str(), &now_us],
            chunk
                .iter()
                .flat_map(|(_, seq, token, _)| [seq as &dyn ToSql, token]),
        )?;
        stmt.raw_execute().map_err(db_err)?;
        let mut stmt = conn
            .prepare_cached(SUCCEEDED_EVENTS.sql(chunk.len()))
            .map_err(db_err)?;
        let order: Vec<i64> = chunk.iter().map(|(i, ..)| *i as i64).collect();
        bind_all(
            &mut stmt,
            &[&now_us, &EventKind::Succeeded.as_str()],
            chunk
                .iter()
                .zip(&order)
                .flat_map(|((_, seq, _, _), k)| [k as &dyn ToSql, seq]),
        )?;
        stmt.raw_execute().map_err(db_err)?;
        let mut stmt = conn
            .prepare_cached(READ_BACK.sql(chunk.len()))
            .map_err(db_err)?;
        bind_all(
            &mut stmt,
            &[],
            chunk.iter().map(|(_, seq, _, _)| seq as &dyn ToSql),
        )?;
        let mut by_seq: HashMap<i64, RawJob> = HashMap::with_capacity(chunk.len());
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next().map_err(db_err)? {
            let raw = raw_job(row).map_err(db_err)?;
            by_seq.insert(raw.seq, raw);
        }
        for &(i, seq, _, _) in chunk {
            let raw = by_seq
                .remove(&seq)
                .ok_or_else(|| StoreError::Corrupt(format!("job seq {seq} vanished")))?;
            out[i] = Some(Ok(raw));
        }
    }
    if !good.is_empty() {
        log::hint(events);
    }
    let mut answers = Vec::with_capacity(items.len());
    for (c, answer) in items.iter().zip(out) {
        let answer =
            answer.ok_or_else(|| StoreError::Corrupt(format!("job {} unanswered", c.id)))?;
        if let Ok(raw) = &answer {
            succeeded(conn, c.id, raw, now, events)?;
        }
        answers.push(answer);
    }
    Ok(answers)
}

/// Inserts the reply message and callback delivery of a job that just finished, in the
/// transaction of its outcome ([`hinter_core::followup`]).
fn insert_followups(
    conn: &Connection,
    job: &Job,
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<()> {
    let followups = hinter_core::followup::followups(job);
    if !followups.is_empty() {
        job_insert_many(conn, followups, now, events)?;
    }
    Ok(())
}

pub fn job_fail(
    conn: &Connection,
    f: &Failure,
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<Job> {
    let Held {
        seq,
        attempt,
        cancel_requested,
        queue,
    } = running_under(conn, f.id, f.lease_token)?;
    let now = truncate(now);
    if let Some(reason) = f.rescued {
        let data = json!({ "reason": reason.as_str() });
        log::append(conn, seq, EventKind::Rescued, now, Some(&data), events)?;
    }
    let outcome = if cancel_requested {
        FailOutcome::Cancelled
    } else {
        f.outcome
    };
    let message = limits::bounded_error(&f.error);
    let entry = serde_json::to_string(&AttemptError {
        attempt: u32::try_from(attempt).unwrap_or(0),
        at: truncate(now),
        message: message.clone().into_owned(),
    })
    .map_err(|e| StoreError::Corrupt(format!("error entry: {e}")))?;
    let (state, run_at, finished_at) = match outcome {
        // Due at once (a rescued lease): straight back to the queue.
        FailOutcome::Retry { run_at } if micros(run_at) <= micros(now) => {
            (JobState::Queued, Some(micros(run_at)), None)
        }
        FailOutcome::Retry { run_at } => (JobState::Scheduled, Some(micros(run_at)), None),
        FailOutcome::Dead => (JobState::Dead, None, Some(micros(now))),
        FailOutcome::Cancelled => (JobState::Cancelled, None, Some(micros(now))),
    };
    // The history policy of `hinter_core::limits`: append, keep the first ?6 and the last ?7
    // entries, count the dropped ones. In SET, `errors` is the value before the update.
    conn.prepare_cached(
        "UPDATE jobs SET state = ?2, run_at = COALESCE(?3, run_at), finished_at = ?4, \
         errors = (SELECT json_group_array(json(e.value) ORDER BY e.key) \
                   FROM json_each(json_insert(jobs.errors, '$[#]', json(?5))) AS e \
                   WHERE e.key < ?6 OR e.key >= json_array_length(jobs.errors) + 1 - ?7), \
         errors_omitted = errors_omitted + MAX(json_array_length(errors) + 1 - (?6 + ?7), 0), \
         lease_token = NULL, lease_expires_at = NULL, deadline_at = NULL WHERE seq = ?1",
    )
    .map_err(db_err)?
    .execute(params![
        seq,
        state.as_str(),
        run_at,
        finished_at,
        entry,
        limits::ERRORS_KEPT_FIRST as i64,
        limits::ERRORS_KEPT_LAST as i64
    ])
    .map_err(db_err)?;
    counts::moved(&queue, Some(JobState::Running), Some(state));
    let run_outcome = if state == JobState::Cancelled {
        RunOutcome::Cancelled
    } else {
        RunOutcome::Failed
    };
    finish_run(
        conn,
        seq,
        f.lease_token,
        run_outcome,
        now,
        Some(&message),
        f.exit_code,
    )?;
    let failed = json!({ "error": message, "exit_code": f.exit_code });
    log::append(conn, seq, EventKind::Failed, now, Some(&failed), events)?;
    let (kind, data) = match state {
        JobState::Dead => (EventKind::Dead, None),
        JobState::Cancelled => (EventKind::Cancelled, None),
        _ => (
            EventKind::RetryScheduled,
            run_at
                .and_then(|us| from_micros(us).ok())
                .map(|at| json!({ "run_at": at })),
        ),
    };
    log::append(conn, seq, kind, now, data.as_ref(), events)?;
    let job = job_get_seq(conn, seq)?;
    if job.state.is_finished() {
        finished_events(&job, events);
        insert_followups(conn, &job, now, events)?;
    } else if job.state == JobState::Queued || job.ordering_key.is_some() || job.singleton {
        // Queued again, or no longer running: jobs it held back may start.
        events.push(StoreEvent::JobsAvailable {
            queue: job.queue.clone(),
        });
    }
    Ok(job)
}

pub fn job_release(
    conn: &Connection,
    r: &Release,
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<()> {
    let Held { seq, queue, .. } = running_under(conn, r.id, r.lease_token)?;
    finish_run(
        conn,
        seq,
        r.lease_token,
        RunOutcome::Released,
        now,
        None,
        None,
    )?;
    conn.prepare_cached(
        "UPDATE jobs SET state = 'queued', attempt = MAX(attempt - 1, 0), worker_id = NULL, \
         lease_token = NULL, lease_expires_at = NULL, started_at = NULL, deadline_at = NULL \
         WHERE seq = ?1",
    )
    .map_err(db_err)?
    .execute([seq])
    .map_err(db_err)?;
    counts::moved(&queue, Some(JobState::Running), Some(JobState::Queued));
    log::append(conn, seq, EventKind::Released, now, None, events)?;
    events.push(StoreEvent::JobsAvailable { queue });
    Ok(())
}

pub fn job_cancel(
    conn: &Connection,
    id: Uuid,
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<Job> {
    let job = job_by(conn, "id", &id.to_string())?.ok_or(StoreError::NotFound(id))?;
    match job.state {
        JobState::Scheduled | JobState::Queued => {
            conn.prepare_cached(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?2 WHERE seq = ?1",
            )
            .map_err(db_err)?
            .execute(params![job.seq, micros(now)])
            .map_err(db_err)?;
            counts::moved(&job.queue, Some(job.state), Some(JobState::Cancelled));
            log::append(conn, job.seq, EventKind::Cancelled, now, None, events)?;
            let job = job_with_runs(conn, job.seq)?;
            finished_events(&job, events);
            insert_followups(conn, &job, now, events)?;
            Ok(job)
        }
        JobState::Running => {
            conn.prepare_cached("UPDATE jobs SET cancel_requested = 1 WHERE seq = ?1")
                .map_err(db_err)?
                .execute([job.seq])
                .map_err(db_err)?;
            if !job.cancel_requested {
                log::append(conn, job.seq, EventKind::CancelRequested, now, None, events)?;
            }
            events.push(StoreEvent::CancelRequested { id });
            job_with_runs(conn, job.seq)
        }
        state => Err(StoreError::Conflict(format!(
            "job {id} is already {state} and cannot be cancelled"
        ))),
    }
}

pub fn job_retry(
    conn: &Connection,
    id: Uuid,
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<Job> {
    let job = job_by(conn, "id", &id.to_string())?.ok_or(StoreError::NotFound(id))?;
    if !matches!(job.state, JobState::Dead | JobState::Cancelled) {
        return Err(StoreError::Conflict(format!(
            "job {id} is {}; only dead or cancelled jobs can be retried",
            job.state
        )));
    }
    conn.prepare_cached(
        "UPDATE jobs SET state = 'queued', run_at = ?2, finished_at = NULL, \
         cancel_requested = 0, max_attempts = MAX(max_attempts, attempt + 1), \
         worker_id = NULL, lease_token = NULL, lease_expires_at = NULL, deadline_at = NULL \
         WHERE seq = ?1",
    )
    .map_err(db_err)?
    .execute(params![job.seq, micros(now)])
    .map_err(db_err)?;
    counts::moved(&job.queue, Some(job.state), Some(JobState::Queued));
    log::append(conn, job.seq, EventKind::Retried, now, None, events)?;
    events.push(StoreEvent::JobsAvailable {
        queue: job.queue.clone(),
    });
    job_with_runs(conn, job.seq)
}

/// Running jobs past their lease or deadline, the longest overdue first (ties in enqueue
/// order). A job past both is listed once, as timed out.
pub fn job_expired_list(conn: &Connection, now: DateTime<Utc>, limit: u32) -> Result<Vec<Expired>> {
    let mut found: HashMap<String, (i64, i64, Expired)> = HashMap::new();
    for (sql, reason) in [
        (
            "SELECT id, lease_token, attempt, max_attempts, cancel_requested, timeout_ms, \
             deadline_at, seq FROM jobs \
             WHERE state = 'running' AND deadline_at IS NOT NULL AND deadline_at <= ?1 \
             ORDER BY deadline_at, seq LIMIT ?2",
            Expiry::TimedOut,
        ),
        (
            "SELECT id, lease_token, attempt, max_attempts, cancel_requested, timeout_ms, \
             lease_expires_at, seq FROM jobs \
             WHERE state = 'running' AND lease_expires_at <= ?1 \
             ORDER BY lease_expires_at, seq LIMIT ?2",
            Expiry::LeaseExpired,
        ),
    ] {
        let mut stmt = conn.prepare_cached(sql).map_err(db_err)?;
        let rows = stmt
            .query_map(params![micros(now), limit], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, bool>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })
            .map_err(db_err)?;
        for row in rows {
            let (id, token, attempt, max_attempts, cancel_requested, timeout_ms, due, seq) =
                row.map_err(db_err)?;
            if let Some((earliest, _, _)) = found.get_mut(&id) {
                *earliest = (*earliest).min(due);
                continue;
            }
            let uuid = Uuid::parse_str(&id)
                .map_err(|e| StoreError::Corrupt(format!("job id {id:?}: {e}")))?;
            let expired = Expired {
                id: uuid,
                lease_token: token.unwrap_or(0),
                attempt: u32::try_from(attempt).unwrap_or(0),
                max_attempts: u32::try_from(max_attempts).unwrap_or(0),
                cancel_requested,
                timeout: timeout_ms.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
                reason,
            };
            found.insert(id, (due, seq, expired));
        }
    }
    let mut list: Vec<(i64, i64, Expired)> = found.into_values().collect();
    list.sort_by_key(|(due, seq, _)| (*due, *seq));
    list.truncate(limit as usize);
    Ok(list.into_iter().map(|(_, _, e)| e).collect())
}

pub fn job_next_scheduled_at(conn: &Connection) -> Result<Option<DateTime<Utc>>> {
    let us: Option<i64> = conn
        .prepare_cached("SELECT MIN(run_at) FROM jobs WHERE state = 'scheduled'")
        .map_err(db_err)?
        .query_row([], |r| r.get(0))
        .map_err(db_err)?;
    opt_from_micros(us)
}

/// [`JOB_COLUMNS`] for a listing: `payload` and `result` only when the filter asks for them.
fn list_columns(filter: &JobFilter) -> String {
    let mut columns = JOB_COLUMNS.to_string();
    if !filter.with_payload {
        columns = columns.replacen(", payload,", ", 'null',", 1);
    }
    if !filter.with_result {
        columns = columns.replacen(", result,", ", NULL,", 1);
    }
    // A checkpoint can be large and is for the next attempt: `job_get` reads it.
    columns.replacen(", checkpoint", ", NULL", 1)
}

/// ` AND queue IN (?…)` over `queues`, their values added to `args`; none: nothing matches.
pub(crate) fn queue_in(queues: &[String], args: &mut Vec<Box<dyn rusqlite::ToSql>>) -> String {
    if queues.is_empty() {
        return " AND 0".into();
    }
    let mut marks = Vec::with_capacity(queues.len());
    for queue in queues {
        args.push(Box::new(queue.clone()));
        marks.push(format!("?{}", args.len()));
    }
    format!(" AND queue IN ({})", marks.join(", "))
}

pub fn job_list(conn: &Connection, filter: &JobFilter) -> Result<Vec<Job>> {
    let rows = match (filter.state, &filter.queue, &filter.job) {
        // A queue or job name without a state: each state's jobs come in enqueue order
        // straight from an index (migration 15), and the first of the merged lists are the
        // page. One list for every state instead would have to sort all the queue's (or
        // name's) jobs first.
        (None, Some(_), _) | (None, _, Some(_)) => {
            let mut lists = Vec::new();
            for state in JobState::ALL {
                let of_state = JobFilter {
                    state: Some(state),
                    ..filter.clone()
                };
                lists.push(job_list_rows(conn, &of_state)?);
            }
            first_of(lists, filter.limit)
        }
        _ => job_list_rows(conn, filter)?,
    };
    let mut jobs = Vec::with_capacity(rows.len());
    let mut bytes = 0u64;
    for (job, size) in rows {
        if filter.max_bytes.is_some_and(|budget| bytes >= budget) {
            break;
        }
        bytes += size;
        jobs.push(job);
    }
    Ok(jobs)
}

/// The first `limit` of lists each in enqueue order, in enqueue order.
fn first_of(lists: Vec<Vec<(Job, u64)>>, limit: u32) -> Vec<(Job, u64)> {
    let mut rows: Vec<(Job, u64)> = lists.into_iter().flatten().collect();
    rows.sort_by_key(|(job, _)| job.seq);
    rows.truncate(limit as usize);
    rows
}

/// The rows of a listing of one state or of none. Active jobs are indexed by queue and state
/// and by name and state (`jobs_active_queue`, `jobs_active_job`): with neither, each queue
/// that holds jobs of the state (by `job_counts`) is read on its own and the lists merged, so
/// every read is of an index in enqueue order.
fn job_list_rows(conn: &Connection, filter: &JobFilter) -> Result<Vec<(Job, u64)>> {
    match filter.state {
        Some(state) if !state.is_finished() && filter.queue.is_none() && filter.job.is_none() => {
            let mut rows: Vec<(Job, u64)> = Vec::new();
            for queue in queues_holding(conn, state, filter.queues.as_deref())? {
                let of_queue = JobFilter {
                    queue: Some(queue),
                    queues: None,
                    ..filter.clone()
                };
                // Once the page is full, only a queue's jobs before its last can be on it:
                // with thousands of queues, most then answer from one index seek.
                let before = match rows.last() {
                    Some((last, _)) if rows.len() >= filter.limit as usize => Some(last.seq),
                    _ => None,
                };
                rows.extend(job_rows(conn, &of_queue, before)?);
                rows = first_of(vec![rows], filter.limit);
            }
            Ok(rows)
        }
        _ => job_rows(conn, filter, None),
    }
}

/// The queues with jobs in `state`, of `among` if given.
fn queues_holding(
    conn: &Connection,
    state: JobState,
    among: Option<&[String]>,
) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare_cached("SELECT queue FROM job_counts WHERE state = ?1 AND n > 0 ORDER BY queue")
        .map_err(db_err)?;
    let queues = stmt
        .query_map([state.as_str()], |r| r.get::<_, String>(0))
        .map_err(db_err)?
        .collect::<rusqlite::Result<Vec<String>>>()
        .map_err(db_err)?;
    Ok(match among {
        Some(among) => {
            // A token may name thousands of queues: a set, not a scan of the list per queue.
            let among: HashSet<&str> = among.iter().map(String::as_str).collect();
            queues
                .into_iter()
                .filter(|q| among.contains(q.as_str()))
                .collect()
        }
        None => queues,
    })
}

/// The jobs `filter` selects (before sequence number `before`, if given), each with the bytes
/// the budget counts (the byte budget itself is applied by [`job_list`]). Stops reading once
/// the budget is spent.
fn job_rows(conn: &Connection, filter: &JobFilter, before: Option<i64>) -> Result<Vec<(Job, u64)>> {
    let (sql, args) = list_query(filter, before);
    let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args.iter()), raw_job)
        .map_err(db_err)?;
    let mut jobs = Vec::new();
    let mut bytes = 0u64;
    for row in rows {
        if filter.max_bytes.is_some_and(|budget| bytes >= budget) {
            break;
        }
        let raw = row.map_err(db_err)?;
        let mut size = raw.errors.len() as u64;
        if filter.with_payload {
            size += raw.payload.len() as u64;
        }
        if filter.with_result {
            size += raw.result.as_ref().map_or(0, |r| r.len() as u64);
        }
        bytes += size;
        jobs.push((raw.decode()?, size));
    }
    Ok(jobs)
}

/// The statement of one listing (of jobs before `before`, if given) and its arguments.
fn list_query(filter: &JobFilter, before: Option<i64>) -> (String, Vec<Box<dyn rusqlite::ToSql>>) {
    let columns = list_columns(filter);
    let mut sql = format!("SELECT {columns} FROM jobs WHERE seq > ?1");
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![Box::new(filter.after_seq.unwrap_or(0))];
    if let Some(before) = before {
        args.push(Box::new(before));
        sql += &format!(" AND seq < ?{}", args.len());
    }
    if let Some(state) = filter.state {
        args.push(Box::new(state.as_str()));
        // Which of the partial indexes of migration 15 the planner may use: a finished job
        // has `finished_at`, an active one not.
        let finished = if state.is_finished() {
            "NOT NULL"
        } else {
            "NULL"
        };
        sql += &format!(" AND state = ?{} AND finished_at IS {finished}", args.len());
    }
    if let Some(queue) = &filter.queue {
        args.push(Box::new(queue.clone()));
        sql += &format!(" AND queue = ?{}", args.len());
    }
    if let Some(queues) = &filter.queues {
        sql += &queue_in(queues, &mut args);
    }
    if let Some(job) = &filter.job {
        args.push(Box::new(job.clone()));
        sql += &format!(" AND job = ?{}", args.len());
    }
    args.push(Box::new(i64::from(filter.limit)));
    sql += &format!(" ORDER BY seq LIMIT ?{}", args.len());
    (sql, args)
}

/// Deletes up to ?3 jobs in state ?1 that finished before ?2, those that finished first;
/// returns their queues (for `job_counts`). Served by the `jobs_finished` index.
const PRUNE_SQL: &str = "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs \
                         WHERE state = ?1 AND finished_at < ?2 ORDER BY finished_at LIMIT ?3) \
                         RETURNING queue";

/// Deletes finished job `id` (runs and log lines go with it); the job as it was.
pub fn job_delete(conn: &Connection, id: Uuid) -> Result<Job> {
    let job = job_by(conn, "id", &id.to_string())?.ok_or(StoreError::NotFound(id))?;
    if !job.state.is_finished() {
        return Err(StoreError::Conflict(format!(
            "job {id} is {} and cannot be deleted; cancel it first",
            job.state
        )));
    }
    let job = job_with_runs(conn, job.seq)?;
    conn.prepare_cached("DELETE FROM jobs WHERE seq = ?1")
        .map_err(db_err)?
        .execute([job.seq])
        .map_err(db_err)?;
    counts::moved(&job.queue, Some(job.state), None);
    Ok(job)
}

/// Deletes up to ?3 jobs of queue ?1 in the states of JSON array ?2, those that finished
/// first; returns their states. `finished_at IS NOT NULL` (every finished job's, no other's)
/// lets the planner use `jobs_done_queue`, a partial index.
const PURGE_SQL: &str = "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE queue = ?1 \
                         AND state IN (SELECT value FROM json_each(?2)) \
                         AND finished_at IS NOT NULL ORDER BY finished_at, seq LIMIT ?3) \
                         RETURNING state";

/// Deletes up to `purge.limit` finished jobs of a queue in the given states, longest finished
/// first.
pub fn queue_purge(conn: &Connection, purge: &QueuePurge) -> Result<u64> {
    let states = serde_json::to_string(&purge.state_names()?)
        .map_err(|e| StoreError::Corrupt(format!("states: {e}")))?;
    let mut stmt = conn.prepare_cached(PURGE_SQL).map_err(db_err)?;
    let deleted = stmt
        .query_map(params![purge.queue, states, purge.limit], |r| {
            r.get::<_, String>(0)
        })
        .map_err(db_err)?
        .collect::<rusqlite::Result<Vec<String>>>()
        .map_err(db_err)?;
    for state in &deleted {
        let state = state
            .parse::<JobState>()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        counts::moved(&purge.queue, Some(state), None);
    }
    Ok(deleted.len() as u64)
}

pub fn job_prune(conn: &Connection, request: &PruneRequest) -> Result<u64> {
    let mut total = 0u64;
    let limit = u64::from(request.limit);
    for (state, before) in [
        (JobState::Succeeded, request.succeeded_before),
        (JobState::Dead, request.dead_before),
        (JobState::Cancelled, request.cancelled_before),
    ] {
        let mut stmt = conn.prepare_cached(PRUNE_SQL).map_err(db_err)?;
        let queues = stmt
            .query_map(
                params![state.as_str(), micros(before), (limit - total) as i64],
                |r| r.get::<_, String>(0),
            )
            .map_err(db_err)?
            .collect::<rusqlite::Result<Vec<String>>>()
            .map_err(db_err)?;
        for queue in &queues {
            counts::moved(queue, Some(state), None);
        }
        total += queues.len() as u64;
        if total >= limit {
            break;
        }
    }
    Ok(total)
}

pub fn queue_list(conn: &Connection) -> Result<Vec<QueueInfo>> {
    let mut queues: BTreeMap<String, QueueInfo> = BTreeMap::new();
    let blank = |name: &str| QueueInfo {
        name: name.to_string(),
        paused: false,
        scheduled: 0,
        queued: 0,
        running: 0,
        succeeded: 0,
        dead: 0,
        cancelled: 0,
        oldest_queued_at: None,
    };
    // Kept by the writer with every change (counts.rs), so this reads a few rows whatever
    // the number of jobs.
    let mut stmt = conn
        .prepare_cached("SELECT queue, state, n FROM job_counts WHERE n <> 0")
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(db_err)?;
    for row in rows {
        let (queue, state, count) = row.map_err(db_err)?;
        let info = queues.entry(queue.clone()).or_insert_with(|| blank(&queue));
        let count = u64::try_from(count).unwrap_or(0);
        match state
            .parse::<JobState>()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?
        {
            JobState::Scheduled => info.scheduled = count,
            JobState::Queued => info.queued = count,
            JobState::Running => info.running = count,
            JobState::Succeeded => info.succeeded = count,
            JobState::Dead => info.dead = count,
            JobState::Cancelled => info.cancelled = count,
        }
    }
    // The longest-waiting queued job of each queue with queued jobs: the first entry of
    // that queue in the `jobs_queued_since` index.
    let mut stmt = conn
        .prepare_cached("SELECT MIN(run_at) FROM jobs WHERE state = 'queued' AND queue = ?1")
        .map_err(db_err)?;
    for info in queues.values_mut().filter(|info| info.queued > 0) {
        let oldest: Option<i64> = stmt.query_row([&info.name], |r| r.get(0)).map_err(db_err)?;
        info.oldest_queued_at = opt_from_micros(oldest)?;
    }
    let mut stmt = conn
        .prepare_cached("SELECT name, paused FROM queues")
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))
        .map_err(db_err)?;
    for row in rows {
        let (name, paused) = row.map_err(db_err)?;
        // A queue without jobs is listed only while it is paused.
        if paused {
            queues
                .entry(name.clone())
                .or_insert_with(|| blank(&name))
                .paused = true;
        }
    }
    Ok(queues.into_values().collect())
}

pub fn queue_set_paused(
    conn: &Connection,
    queue: &str,
    paused: bool,
    events: &mut Vec<StoreEvent>,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO queues (name, paused) VALUES (?1, ?2) \
         ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
    )
    .map_err(db_err)?
    .execute(params![queue, paused])
    .map_err(db_err)?;
    if !paused {
        events.push(StoreEvent::JobsAvailable {
            queue: queue.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query plan of `sql` with `args`, one line per step.
    fn plan(conn: &Connection, sql: &str, args: impl rusqlite::Params) -> Vec<String> {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        stmt.query_map(args, |r| r.get::<_, String>(3))
            .expect("query plan")
            .collect::<rusqlite::Result<_>>()
            .expect("query plan rows")
    }

    /// Retention deletes a job's runs with it (the `jobs_delete_runs` trigger: foreign keys
    /// are not enforced on hinter's connections).
    #[test]
    fn pruning_a_job_deletes_its_runs() {
        let mut conn = Connection::open_in_memory().expect("open");
        crate::migrate::migrate(&mut conn).expect("migrate");
        let t0 = Utc::now();
        let mut events = Vec::new();
        let mut ids = Vec::new();
        for name in ["gone", "kept"] {
            let new = NewJob::new(name, serde_json::json!(null));
            ids.push(new.id);
            job_insert_many(&conn, vec![new], t0, &mut events).expect("insert");
            let leased = job_lease(
                &conn,
                &LeaseRequest {
                    jobs: Vec::new(),
                    queues: vec!["default".into()],
                    worker_id: "w".into(),
                    max: 1,
                    lease_for: Duration::from_secs(60),
                    now: t0,
                },
                &mut events,
            )
            .expect("lease");
            if name == "gone" {
                let c = Completion {
                    id: leased[0].id,
                    lease_token: leased[0].lease_token,
                    result: None,
                };
                job_complete(&conn, &c, t0, &mut events).expect("complete");
            }
        }
        let runs = |conn: &Connection| -> i64 {
            conn.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
                .expect("count runs")
        };
        assert_eq!(runs(&conn), 2);
        let later = t0 + chrono::Duration::seconds(1);
        let pruned = job_prune(
            &conn,
            &PruneRequest {
                succeeded_before: later,
                dead_before: later,
                cancelled_before: later,
                limit: 10,
            },
        )
        .expect("prune");
        assert_eq!(pruned, 1);
        assert_eq!(
            runs(&conn),
            1,
            "the pruned job's run is deleted, the other kept"
        );
        assert_eq!(job_runs(&conn, &ids).expect("runs").len(), 1);
    }

    /// Every listing `job_list` runs reads an index in `seq` order: no scan of the table, no
    /// sort (a queue or name without a state is listed state by state, and an active state
    /// without a queue queue by queue, see `job_list`).
    #[test]
    fn listings_read_an_index_in_order_for_every_filter() {
        let mut conn = Connection::open_in_memory().expect("open");
        crate::migrate::migrate(&mut conn).expect("migrate");
        let mut queries = vec![(
            JobFilter {
                limit: 50,
                ..JobFilter::default()
            },
            "USING INTEGER PRIMARY KEY (rowid>?)",
        )];
        for queue in [None, Some("q".to_string())] {
            for job in [None, Some("j".to_string())] {
                let expected = match (&queue, &job) {
                    (None, None) => "USING INDEX jobs_done_state (state=? AND seq>?)",
                    (Some(_), None) => {
                        "USING INDEX jobs_done_queue (queue=? AND state=? AND rowid>?)"
                    }
                    (_, Some(_)) => "USING INDEX jobs_done_job (job=? AND state=? AND rowid>?)",
                };
                queries.push((
                    JobFilter {
                        state: Some(JobState::Dead),
                        queue: queue.clone(),
                        job: job.clone(),
                        after_seq: Some(10),
                        limit: 50,
                        ..JobFilter::default()
                    },
                    expected,
                ));
                // An active state is read with a queue or a name (job_list_rows).
                for state in [JobState::Scheduled, JobState::Queued, JobState::Running] {
                    let expected = match &job {
                        Some(_) => "USING INDEX jobs_active_job (job=? AND state=? AND rowid>?)",
                        None => "USING INDEX jobs_active_queue (queue=? AND state=? AND rowid>?)",
                    };
                    queries.push((
                        JobFilter {
                            state: Some(state),
                            queue: if job.is_some() {
                                queue.clone()
                            } else {
                                Some("q".into())
                            },
                            job: job.clone(),
                            after_seq: Some(10),
                            limit: 50,
                            ..JobFilter::default()
                        },
                        expected,
                    ));
                }
            }
        }
        // An active state without a queue, queue by queue, once the page is full.
        queries.push((
            JobFilter {
                state: Some(JobState::Queued),
                queue: Some("q".into()),
                after_seq: Some(10),
                limit: 50,
                ..JobFilter::default()
            },
            "USING INDEX jobs_active_queue (queue=? AND state=? AND rowid>? AND rowid<?)",
        ));
        for (i, (filter, expected)) in queries.iter().enumerate() {
            let before = (i + 1 == queries.len()).then_some(1000);
            let (sql, args) = list_query(filter, before);
            let plan = plan(&conn, &sql, rusqlite::params_from_iter(args.iter()));
            assert!(
                plan.iter().any(|step| step.contains(expected)),
                "{filter:?}: expected {expected}, got {plan:?}"
            );
            assert!(
                !plan.iter().any(|step| step.contains("TEMP B-TREE")),
                "{filter:?}: the index gives the order, no sort: {plan:?}"
            );
        }
    }

    /// The oldest queued job of a queue comes from the first entry of `jobs_queued_since`.
    #[test]
    fn oldest_queued_reads_one_index_entry() {
        let mut conn = Connection::open_in_memory().expect("open");
        crate::migrate::migrate(&mut conn).expect("migrate");
        let plan = plan(
            &conn,
            "SELECT MIN(run_at) FROM jobs WHERE state = 'queued' AND queue = ?1",
            ["q"],
        );
        assert!(
            plan.iter()
                .any(|step| step.contains("COVERING INDEX jobs_queued_since (queue=?)")),
            "{plan:?}"
        );
    }

    /// A queue's purge reads the queue's finished jobs, not the table.
    #[test]
    fn purging_searches_a_finished_jobs_index() {
        let mut conn = Connection::open_in_memory().expect("open");
        crate::migrate::migrate(&mut conn).expect("migrate");
        let plan = plan(&conn, PURGE_SQL, params!["q", "[\"dead\"]", 10]);
        assert!(
            plan.iter()
                .any(|step| step.contains("INDEX jobs_done_queue (queue=? AND state=?)")),
            "{plan:?}"
        );
    }

    /// The lease's candidates come from `jobs_queued` in lease order, and a singleton's check
    /// for a running job of its name is one search of `jobs_active_job`, not a walk of
    /// every running job (migration 16 dropped the index of running jobs by name).
    #[test]
    fn lease_candidates_search_indexes() {
        let mut conn = Connection::open_in_memory().expect("open");
        crate::migrate::migrate(&mut conn).expect("migrate");
        for names in [false, true] {
            let sql = candidates_sql(names);
            let plan = if names {
                plan(&conn, &sql, params!["q", 10, "[\"a\"]"])
            } else {
                plan(&conn, &sql, params!["q", 10])
            };
            assert!(
                plan.iter()
                    .any(|step| step.contains("SEARCH j USING INDEX jobs_queued (queue=?)")),
                "{plan:?}"
            );
            assert!(
                plan.iter().any(|step| step.starts_with("SEARCH s")
                    && step.contains("jobs_active_job (job=? AND state=?)")),
                "{plan:?}"
            );
            // The names' JSON array is walked, no table is.
            assert!(
                !plan
                    .iter()
                    .any(|step| step.starts_with("SCAN") && !step.contains("json_each")),
                "{plan:?}"
            );
        }
    }

    #[test]
    fn pruning_searches_the_finished_jobs_index() {
        let mut conn = Connection::open_in_memory().expect("open");
        crate::migrate::migrate(&mut conn).expect("migrate");
        let plan = plan(&conn, PRUNE_SQL, params!["succeeded", 0, 100]);
        assert!(
            plan.iter()
                .any(|step| step.contains("INDEX jobs_finished (state=? AND finished_at<?)")),
            "pruning should search jobs_finished: {plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.contains("TEMP B-TREE")),
            "the index gives the order, no sort: {plan:?}"
        );
    }
}
