//! The SQL of every store operation. Writes run inside a transaction opened by the caller
//! (which publishes the collected events and commits); reads on a pooled connection.
//!
//! Batches are written with one statement over `unnest` arrays; each item carries its
//! position in the request (`i`) so answers are matched back to it.
//!
//! Operations run on any [`Conn`]: a pooled connection or transaction (statements prepared
//! once per connection), or an application's own transaction ([`crate::enqueue_in`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hinter_core::listing::{JobPage, ListCursor, Snapshot, Unseen};
use hinter_core::retry::FailOutcome;
use hinter_core::store::{
    Completion, Expired, Expiry, Failure, Heartbeat, HeartbeatAck, JobFilter, LeaseRequest,
    PruneRequest, QueueInfo, QueuePurge, Release, StoreResult,
};
use hinter_core::{
    limits, AttemptError, Inserted, Job, JobState, LeasedJob, NewJob, Run, StoreError, StoreEvent,
};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};
use uuid::Uuid;

/// An operation's failure: a database error (kept whole, so the caller can retry a
/// deadlock), or an answer of the store.
#[derive(Debug)]
pub enum Error {
    Db(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Db(e)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Store(e)
    }
}

impl Error {
    /// A deadlock or serialization failure: the transaction was rolled back and may be run
    /// again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Db(e) if e.code().is_some_and(|c| {
            *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
        }))
    }

    pub fn into_store(self) -> StoreError {
        match self {
            Error::Store(e) => e,
            Error::Db(e) => db_err(e),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A database error's message, with the server's detail when there is one, or with its
/// causes ("error connecting to server: Connection refused").
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_string(),
        },
        None => {
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                text.push_str(": ");
                text.push_str(&c.to_string());
                cause = c.source();
            }
            text
        }
    }
}

/// Maps a database error: data the database refuses (a taken id, an out-of-range time,
/// text it cannot store) is a conflict; a full disk or an I/O error of the database server
/// is a storage failure whose message says so; anything else means the store is
/// unavailable.
pub fn db_err(e: tokio_postgres::Error) -> StoreError {
    classify(e.code(), describe(&e))
}

/// [`db_err`] on an error's SQLSTATE and description.
fn classify(code: Option<&SqlState>, message: String) -> StoreError {
    match code {
        Some(c) if *c == SqlState::DISK_FULL => {
            StoreError::Storage(format!("disk full on the database server ({message})"))
        }
        Some(c) if *c == SqlState::IO_ERROR => {
            StoreError::Storage(format!("disk I/O error on the database server ({message})"))
        }
        Some(c) if matches!(&c.code()[..2], "22" | "23") => StoreError::Conflict(message),
        _ => StoreError::Unavailable(message),
    }
}

/// Truncates to the precision the store keeps, so returned values equal stored ones.
pub fn truncate(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// `t` as serde_json writes a `DateTime<Utc>` (what the event log's `data` and the errors'
/// `at` hold): computed here, not by the database, so both backends write the same text.
fn serde_time(t: DateTime<Utc>) -> Result<String> {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .ok_or_else(|| Error::Store(StoreError::Corrupt(format!("cannot encode the time {t}"))))
}

fn plus(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    truncate(t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::hours(1)))
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn from_ms(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn to_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// Columns read by [`job_from_row`], in its order; `j` is the alias of `jobs`.
const JOB_COLUMNS: &str = "j.seq, j.id, j.job, j.queue, j.payload, j.state, j.priority, \
    j.attempt, j.max_attempts, j.run_at, j.created_at, j.started_at, j.finished_at, \
    j.unique_key, j.ordering_key, j.timeout_ms, j.singleton, j.cancel_requested, j.worker_id, \
    j.lease_expires_at, j.errors, j.result, j.errors_omitted, j.progress, j.checkpoint, \
    j.reply_to, j.correlation_id, j.callback_url, j.parent_id";

/// How many columns [`JOB_COLUMNS`] has: what follows it starts here.
const JOB_COLUMN_COUNT: usize = 29;

/// The runs of job `j`, oldest first, as one JSON array of [`Run`] objects: one statement
/// (one snapshot) reads a job with its runs. Follows [`JOB_COLUMNS`] where it is read.
const RUNS_COLUMN: &str = "(SELECT COALESCE(json_agg(json_build_object(
        'attempt', r.attempt, 'worker_id', r.worker_id, 'started_at', r.started_at,
        'finished_at', r.finished_at, 'outcome', r.outcome, 'error', r.error,
        'exit_code', r.exit_code, 'duration_ms', r.duration_ms) ORDER BY r.id), '[]')
     FROM runs AS r WHERE r.job_seq = j.seq)";

/// Decodes [`RUNS_COLUMN`] at column `idx`.
fn runs_from_row(row: &Row, idx: usize) -> Result<Vec<Run>> {
    let runs: Value = get(row, idx)?;
    serde_json::from_value(runs)
        .map_err(|e| Error::Store(StoreError::Corrupt(format!("runs: {e}"))))
}

/// Ends the run of each job a data-modifying CTE named `done` returned (columns `seq`,
/// `run_token`, `run_outcome`, `run_error`, `run_exit_code`), at `$NOW`. Fenced by the
/// lease token the job was running under.
const FINISH_RUNS: &str = "runs_done AS (
         UPDATE runs SET outcome = done.run_outcome, finished_at = $NOW::timestamptz,
             duration_ms = GREATEST(floor(extract(epoch FROM $NOW::timestamptz - runs.started_at)
                                          * 1000), 0)::int8,
             error = done.run_error, exit_code = done.run_exit_code
         FROM done
         WHERE runs.job_seq = done.seq AND runs.lease_token = done.run_token
           AND runs.outcome = 'running')";

/// Column `idx` of `row`; a value of the wrong type is a corrupt store.
pub fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T> {
    row.try_get(idx)
        .map_err(|e| Error::Store(StoreError::Corrupt(format!("column {idx}: {e}"))))
}

/// Decodes [`JOB_COLUMNS`] starting at column `at`.
fn job_from_row(row: &Row, at: usize) -> Result<Job> {
    let id: Uuid = get(row, at + 1)?;
    let state: String = get(row, at + 5)?;
    let errors: Value = get(row, at + 20)?;
    let errors: Vec<AttemptError> = serde_json::from_value(errors)
        .map_err(|e| StoreError::Corrupt(format!("errors of job {id}: {e}")))?;
    Ok(Job {
        seq: get(row, at)?,
        id,
        job: get(row, at + 2)?,
        queue: get(row, at + 3)?,
        payload: get(row, at + 4)?,
        state: state
            .parse::<JobState>()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        priority: get(row, at + 6)?,
        attempt: to_u32(get(row, at + 7)?),
        max_attempts: to_u32(get(row, at + 8)?),
        run_at: get(row, at + 9)?,
        created_at: get(row, at + 10)?,
        started_at: get(row, at + 11)?,
        finished_at: get(row, at + 12)?,
        unique_key: get(row, at + 13)?,
        ordering_key: get(row, at + 14)?,
        timeout: get::<Option<i64>>(row, at + 15)?.map(from_ms),
        singleton: get(row, at + 16)?,
        cancel_requested: get(row, at + 17)?,
        worker_id: get(row, at + 18)?,
        lease_expires_at: get(row, at + 19)?,
        errors,
        errors_omitted: u64::try_from(get::<i64>(row, at + 22)?).unwrap_or(0),
        result: get(row, at + 21)?,
        runs: Vec::new(),
        progress: get::<Option<Value>>(row, at + 23)?
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("progress of job {id}: {e}")))?,
        checkpoint: get(row, at + 24)?,
        reply_to: get(row, at + 25)?,
        correlation_id: get(row, at + 26)?,
        callback_url: get(row, at + 27)?,
        parent_id: get(row, at + 28)?,
        followups: Vec::new(),
    })
}

/// Where operations run: a connection or a transaction.
#[async_trait]
pub trait Conn: Sync {
    /// Prepares `sql`, reusing the statement of an earlier call where the connection keeps
    /// a cache.
    async fn prepare_cached(&self, sql: &str) -> std::result::Result<Statement, PgError>;
    async fn query(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Vec<Row>, PgError>;
    async fn query_opt(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Option<Row>, PgError>;
    async fn execute(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<u64, PgError>;
    /// Runs `sql` (statements without parameters) by the simple protocol.
    async fn batch_execute(&self, sql: &str) -> std::result::Result<(), PgError>;
}

type PgError = tokio_postgres::Error;

/// Pooled connections and their transactions: through deadpool's statement cache.
macro_rules! pooled_conn {
    ($ty:ty) => {
        #[async_trait]
        impl Conn for $ty {
            async fn prepare_cached(&self, sql: &str) -> std::result::Result<Statement, PgError> {
                deadpool_postgres::GenericClient::prepare_cached(self, sql).await
            }
            async fn query(
                &self,
                stmt: &Statement,
                params: &[&(dyn ToSql + Sync)],
            ) -> std::result::Result<Vec<Row>, PgError> {
                deadpool_postgres::GenericClient::query(self, stmt, params).await
            }
            async fn query_opt(
                &self,
                stmt: &Statement,
                params: &[&(dyn ToSql + Sync)],
            ) -> std::result::Result<Option<Row>, PgError> {
                deadpool_postgres::GenericClient::query_opt(self, stmt, params).await
            }
            async fn execute(
                &self,
                stmt: &Statement,
                params: &[&(dyn ToSql + Sync)],
            ) -> std::result::Result<u64, PgError> {
                deadpool_postgres::GenericClient::execute(self, stmt, params).await
            }
            async fn batch_execute(&self, sql: &str) -> std::result::Result<(), PgError> {
                deadpool_postgres::GenericClient::batch_execute(self, sql).await
            }
        }
    };
}

pooled_conn!(deadpool_postgres::Client);
pooled_conn!(deadpool_postgres::Transaction<'_>);

/// An application's own transaction: no statement cache, each statement is prepared anew.
#[async_trait]
impl Conn for tokio_postgres::Transaction<'_> {
    async fn prepare_cached(&self, sql: &str) -> std::result::Result<Statement, PgError> {
        self.prepare(sql).await
    }
    async fn query(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Vec<Row>, PgError> {
        tokio_postgres::Transaction::query(self, stmt, params).await
    }
    async fn query_opt(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Option<Row>, PgError> {
        tokio_postgres::Transaction::query_opt(self, stmt, params).await
    }
    async fn execute(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<u64, PgError> {
        tokio_postgres::Transaction::execute(self, stmt, params).await
    }
    async fn batch_execute(&self, sql: &str) -> std::result::Result<(), PgError> {
        tokio_postgres::Transaction::batch_execute(self, sql).await
    }
}

pub(crate) async fn query<C: Conn>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query(&stmt, params).await?)
}

pub(crate) async fn query_opt<C: Conn>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&stmt, params).await?)
}

pub(crate) async fn execute<C: Conn>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.execute(&stmt, params).await?)
}

/// Publishes `events` on `channel`; they are delivered when the transaction commits. With
/// the `origin` of the store that commits it, that store's listener skips them (see
/// [`crate::events::encode`]).
pub async fn notify<C: Conn>(
    c: &C,
    channel: &str,
    events: &[StoreEvent],
    origin: Option<&str>,
) -> Result<()> {
    let payloads = crate::events::encode(events, origin);
    if !payloads.is_empty() {
        execute(c, NOTIFY, &[&channel, &payloads]).await?;
    }
    Ok(())
}

/// Sends `$2`, payloads of [`crate::events::encode`], on channel `$1`.
pub(crate) const NOTIFY: &str = "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p";

/// The job with its runs.
pub async fn job_get<C: Conn>(c: &C, id: Uuid) -> Result<Option<Job>> {
    let sql = format!("SELECT {JOB_COLUMNS}, {RUNS_COLUMN} FROM jobs AS j WHERE j.id = $1");
    query_opt(c, &sql, &[&id])
        .await?
        .map(|row| job_with_runs(&row))
        .transpose()
}

/// A row of [`JOB_COLUMNS`] followed by [`RUNS_COLUMN`].
fn job_with_runs(row: &Row) -> Result<Job> {
    let mut job = job_from_row(row, 0)?;
    job.runs = runs_from_row(row, JOB_COLUMN_COUNT)?;
    Ok(job)
}

/// The follow-ups of job `id` (`parent_id = id`), oldest first, with their runs.
pub async fn job_followups<C: Conn>(c: &C, id: Uuid) -> Result<Vec<Job>> {
    let sql = format!(
        "SELECT {JOB_COLUMNS}, {RUNS_COLUMN} AS runs FROM jobs AS j
         WHERE j.parent_id = $1 ORDER BY j.seq"
    );
    query(c, &sql, &[&id])
        .await?
        .iter()
        .map(job_with_runs)
        .collect()
}

/// The runs of each of `ids` that exists.
pub async fn job_runs<C: Conn>(c: &C, ids: &[Uuid]) -> Result<HashMap<Uuid, Vec<Run>>> {
    let sql = format!("SELECT j.id, {RUNS_COLUMN} FROM jobs AS j WHERE j.id = ANY($1)");
    let mut out = HashMap::with_capacity(ids.len());
    for row in query(c, &sql, &[&ids]).await? {
        out.insert(get(&row, 0)?, runs_from_row(&row, 1)?);
    }
    Ok(out)
}

/// Which of `ids` exist.
async fn existing_ids<C: Conn>(c: &C, ids: &[Uuid]) -> Result<HashSet<Uuid>> {
    let rows = query(c, "SELECT id FROM jobs WHERE id = ANY($1)", &[&ids]).await?;
    rows.iter().map(|r| get::<Uuid>(r, 0)).collect()
}

/// Answers for a batch of guarded updates: `matched` holds the request positions that were
/// applied; every other item is `NotFound` or `StaleLease`.
async fn answers<C: Conn, T>(
    c: &C,
    ids: &[Uuid],
    mut matched: HashMap<usize, T>,
) -> Result<Vec<StoreResult<T>>> {
    let missing: Vec<Uuid> = (0..ids.len())
        .filter(|i| !matched.contains_key(i))
        .map(|i| ids[i])
        .collect();
    let exists = if missing.is_empty() {
        HashSet::new()
    } else {
        existing_ids(c, &missing).await?
    };
    Ok((0..ids.len())
        .map(|i| match matched.remove(&i) {
            Some(answer) => Ok(answer),
            None if exists.contains(&ids[i]) => Err(StoreError::StaleLease(ids[i])),
            None => Err(StoreError::NotFound(ids[i])),
        })
        .collect())
}

/// Request positions sorted by job id, so concurrent batches lock rows in one order.
fn by_id(ids: &[Uuid]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| ids[i]);
    order
}

fn position(i: usize) -> i32 {
    i32::try_from(i).unwrap_or(i32::MAX)
}

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

/// Most name locks one transaction takes; a batch naming more takes the global lock alone
/// (advisory locks share PostgreSQL's lock table, which a huge batch would exhaust).
const MAX_NAME_LOCKS: usize = 64;

/// Every name lock sits under this one: taken shared with name locks, exclusive instead of
/// them.
const ALL_NAMES_LOCK: &str = "\u{1f}hinter.names";

/// Serializes the transaction with every other one locking one of the same names, until it
/// ends. Locks are `pg_advisory_xact_lock`s on a 64-bit hash of the schema and the name,
/// taken in one global order (the shared lock of all names first, then by hash), so two
/// transactions never wait for each other in a cycle.
async fn lock_names<C: Conn>(c: &C, mut names: Vec<String>) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    names.dedup();
    let all_names = if names.len() > MAX_NAME_LOCKS {
        "SELECT pg_advisory_xact_lock(hashtextextended(coalesce(current_schema(), '') || $1, 0))"
    } else {
        "SELECT pg_advisory_xact_lock_shared(
             hashtextextended(coalesce(current_schema(), '') || $1, 0))"
    };
    execute(c, all_names, &[&ALL_NAMES_LOCK]).await?;
    if names.len() <= MAX_NAME_LOCKS {
        // The DISTINCT subquery is sorted before the outer query takes the locks in its order.
        execute(
            c,
            "SELECT pg_advisory_xact_lock(k) FROM (
                 SELECT DISTINCT hashtextextended(coalesce(current_schema(), '') || n, 0) AS k
                 FROM unnest($1::text[]) AS n ORDER BY k
             ) AS s",
            &[&names],
        )
        .await?;
    }
    Ok(())
}

fn unique_lock(job: &str, key: &str) -> String {
    format!("\u{1f}hinter.unique\u{1f}{job}\u{1f}{key}")
}

fn ordering_lock(queue: &str, key: &str) -> String {
    format!("\u{1f}hinter.ordering\u{1f}{queue}\u{1f}{key}")
}

const SINGLETON_LOCK_PREFIX: &str = "\u{1f}hinter.singleton\u{1f}";

/// How the insert answers one job of the batch.
enum Plan {
    New,
    /// A duplicate of an earlier job of this batch (its position).
    SameAs(usize),
    /// A duplicate of a stored job.
    Existing(Box<Job>),
}

pub async fn job_insert_many<C: Conn>(
    c: &C,
    jobs: &[NewJob],
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<Vec<Inserted>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    hinter_core::store::check_new_jobs(jobs)?;
    let now = truncate(now);

    // Concurrent inserts of one unique key must not both see "no duplicate", and jobs of one
    // ordering key must get their `seq` in commit order (the lease guard compares `seq`).
    let mut locks = Vec::new();
    for new in jobs {
        if let Some(key) = &new.unique_key {
            locks.push(unique_lock(&new.job, key));
        }
        if let Some(key) = &new.ordering_key {
            locks.push(ordering_lock(&new.queue, key));
        }
    }
    lock_names(c, locks).await?;

    // Stored duplicates: the newest job with the name and key that is unfinished (without a
    // window) or created inside the window.
    let mut existing: HashMap<usize, Job> = HashMap::new();
    let uniques: Vec<usize> = (0..jobs.len())
        .filter(|&i| jobs[i].unique_key.is_some())
        .collect();
    if !uniques.is_empty() {
        let positions: Vec<i32> = uniques.iter().map(|&i| position(i)).collect();
        let names: Vec<&str> = uniques.iter().map(|&i| jobs[i].job.as_str()).collect();
        let keys: Vec<&str> = uniques
            .iter()
            .map(|&i| jobs[i].unique_key.as_deref().unwrap_or_default())
            .collect();
        let since: Vec<Option<DateTime<Utc>>> = uniques
            .iter()
            .map(|&i| jobs[i].unique_for.map(|w| window_start(now, w)))
            .collect();
        let sql = format!(
            "SELECT u.i, {JOB_COLUMNS}
             FROM unnest($1::int4[], $2::text[], $3::text[], $4::timestamptz[])
                  AS u(i, job, key, since)
             CROSS JOIN LATERAL (
                 SELECT * FROM jobs AS d
                 WHERE d.job = u.job AND d.unique_key = u.key
                   AND CASE WHEN u.since IS NULL
                            THEN d.state IN ('scheduled', 'queued', 'running')
                            ELSE d.created_at > u.since END
                 ORDER BY d.seq DESC LIMIT 1
             ) AS j"
        );
        for row in query(c, &sql, &[&positions, &names, &keys, &since]).await? {
            let i = usize::try_from(get::<i32>(&row, 0)?).unwrap_or(usize::MAX);
            existing.insert(i, job_from_row(&row, 1)?);
        }
    }

    // Duplicates inside the batch: a later job with the same name and key answers the
    // earlier one, which is unfinished and was created now (inside any non-zero window).
    let mut latest: HashMap<(&str, &str), usize> = HashMap::new();
    let mut plans = Vec::with_capacity(jobs.len());
    for (i, new) in jobs.iter().enumerate() {
        if let Some(key) = &new.unique_key {
            let in_window = new.unique_for.is_none_or(|w| duration_ms(w) > 0);
            if let Some(&first) = latest.get(&(new.job.as_str(), key.as_str())) {
                if in_window {
                    plans.push(Plan::SameAs(first));
                    continue;
                }
            }
            if let Some(job) = existing.remove(&i) {
                plans.push(Plan::Existing(Box::new(job)));
                continue;
            }
            latest.insert((new.job.as_str(), key.as_str()), i);
        }
        plans.push(Plan::New);
    }

    let fresh: Vec<usize> = (0..jobs.len())
        .filter(|&i| matches!(plans[i], Plan::New))
        .collect();
    let state_of = |new: &NewJob| {
        if new.run_at.is_some_and(|at| at > now) {
            JobState::Scheduled
        } else {
            JobState::Queued
        }
    };
    let mut seqs: HashMap<Uuid, i64> = HashMap::new();
    if !fresh.is_empty() {
        let ids: Vec<Uuid> = fresh.iter().map(|&i| jobs[i].id).collect();
        let names: Vec<&str> = fresh.iter().map(|&i| jobs[i].job.as_str()).collect();
        let queues: Vec<&str> = fresh.iter().map(|&i| jobs[i].queue.as_str()).collect();
        let payloads: Vec<&Value> = fresh.iter().map(|&i| &jobs[i].payload).collect();
        let states: Vec<&str> = fresh.iter().map(|&i| state_of(&jobs[i]).as_str()).collect();
        let priorities: Vec<i32> = fresh.iter().map(|&i| jobs[i].priority).collect();
        let max_attempts: Vec<i64> = fresh
            .iter()
            .map(|&i| i64::from(jobs[i].max_attempts))
            .collect();
        let run_ats: Vec<DateTime<Utc>> = fresh
            .iter()
            .map(|&i| truncate(jobs[i].run_at.unwrap_or(now)))
            .collect();
        let unique_keys: Vec<Option<&str>> = fresh
            .iter()
            .map(|&i| jobs[i].unique_key.as_deref())
            .collect();
        let ordering_keys: Vec<Option<&str>> = fresh
            .iter()
            .map(|&i| jobs[i].ordering_key.as_deref())
            .collect();
        let timeouts: Vec<Option<i64>> = fresh
            .iter()
            .map(|&i| jobs[i].timeout.map(duration_ms))
            .collect();
        let singletons: Vec<bool> = fresh.iter().map(|&i| jobs[i].singleton).collect();
        // Replies and callbacks are rare: a batch without them sends four arrays fewer.
        let with_followups = fresh.iter().any(|&i| {
            let j = &jobs[i];
            j.reply_to.is_some()
                || j.correlation_id.is_some()
                || j.callback_url.is_some()
                || j.parent_id.is_some()
        });
        let (extra_columns, extra_values, extra_arrays, extra_names) = if with_followups {
            (
                ", reply_to, correlation_id, callback_url, parent_id",
                ", u.reply_to, u.correlation_id, u.callback_url, u.parent_id",
                ", $14::text[], $15::text[], $16::text[], $17::uuid[]",
                ", reply_to, correlation_id, callback_url, parent_id",
            )
        } else {
            ("", "", "", "")
        };
        let reply_tos: Vec<Option<&str>> =
            fresh.iter().map(|&i| jobs[i].reply_to.as_deref()).collect();
        let correlation_ids: Vec<Option<&str>> = fresh
            .iter()
            .map(|&i| jobs[i].correlation_id.as_deref())
            .collect();
        let callback_urls: Vec<Option<&str>> = fresh
            .iter()
            .map(|&i| jobs[i].callback_url.as_deref())
            .collect();
        let parent_ids: Vec<Option<Uuid>> = fresh.iter().map(|&i| jobs[i].parent_id).collect();
        let sql = format!(
            "WITH s AS MATERIALIZED (
                 -- The numbers in one array, taken by ordinal below: no join.
                 SELECT array_agg(v ORDER BY v) AS vs
                 FROM (SELECT nextval('jobs_seq_seq') AS v
                       FROM generate_series(1, cardinality($1::uuid[]))
                       -- The transaction id first, then the numbers (a one-time filter):
                       -- a listing's cursor relies on it (job_page).
                       WHERE pg_current_xact_id() IS NOT NULL) AS g
             ),
             ins AS (INSERT INTO jobs (seq, id, job, queue, payload, state, priority, max_attempts,
                               run_at, created_at, unique_key, ordering_key, timeout_ms,
                               singleton{extra_columns})
             SELECT s.vs[u.ord], u.id, u.job, u.queue, u.payload, u.state, u.priority, u.max_attempts,
                    u.run_at, $13, u.unique_key, u.ordering_key, u.timeout_ms,
                    u.singleton{extra_values}
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::json[], $5::text[],
                         $6::int4[], $7::int8[], $8::timestamptz[], $9::text[], $10::text[],
                         $11::int8[], $12::bool[]{extra_arrays})
                  WITH ORDINALITY AS u(id, job, queue, payload, state, priority, max_attempts,
                                       run_at, unique_key, ordering_key, timeout_ms,
                                       singleton{extra_names}, ord)
             CROSS JOIN s
             RETURNING seq, id, job, queue),
             logged AS (
                 INSERT INTO events (at, kind, job_id, job, queue, attempt)
                 SELECT $13, 'created', id, job, queue, 0 FROM ins ORDER BY seq)
             SELECT seq, id FROM ins"
        );
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
            &ids,
            &names,
            &queues,
            &payloads,
            &states,
            &priorities,
            &max_attempts,
            &run_ats,
            &unique_keys,
            &ordering_keys,
            &timeouts,
            &singletons,
            &now,
        ];
        if with_followups {
            params.extend([
                &reply_tos as &(dyn tokio_postgres::types::ToSql + Sync),
                &correlation_ids,
                &callback_urls,
                &parent_ids,
            ]);
        }
        // `seq` values are drawn first and handed out in ascending order, so they grow in
        // request order whatever order the database evaluates rows in; the `created` events
        // follow `seq`, so they are logged in request order too.
        let rows = query(c, &sql, &params).await.map_err(|e| match e {
            Error::Db(db) if db.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                Error::Store(StoreError::Conflict(format!(
                    "a job with this id already exists: {}",
                    describe(&db)
                )))
            }
            other => other,
        })?;
        for row in rows {
            seqs.insert(get(&row, 1)?, get(&row, 0)?);
        }
        events.push(StoreEvent::Logged);
    }

    let mut out: Vec<Inserted> = Vec::with_capacity(jobs.len());
    let mut ready: Vec<&str> = Vec::new();
    let mut ready_seen: HashSet<&str> = HashSet::new();
    for (new, plan) in jobs.iter().zip(plans) {
        let inserted = match plan {
            Plan::Existing(job) => Inserted {
                job: *job,
                duplicate: true,
            },
            Plan::SameAs(first) => Inserted {
                job: out[first].job.clone(),
                duplicate: true,
            },
            Plan::New => {
                let state = state_of(new);
                if state == JobState::Queued && ready_seen.insert(&new.queue) {
                    ready.push(&new.queue);
                }
                let seq = seqs.get(&new.id).copied().ok_or_else(|| {
                    StoreError::Corrupt(format!("job {} was not inserted", new.id))
                })?;
                Inserted {
                    job: new.clone().into_inserted(
                        seq,
                        state,
                        truncate(new.run_at.unwrap_or(now)),
                        now,
                    ),
                    duplicate: false,
                }
            }
        };
        out.push(inserted);
    }
    events.extend(ready.into_iter().map(|queue| StoreEvent::JobsAvailable {
        queue: queue.to_string(),
    }));
    Ok(out)
}

/// The start of a duplicate window ending `now`; clamped to a time PostgreSQL can store.
fn window_start(now: DateTime<Utc>, window: Duration) -> DateTime<Utc> {
    let floor = DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or(DateTime::UNIX_EPOCH);
    let window = chrono::Duration::milliseconds(duration_ms(window));
    now.checked_sub_signed(window)
        .filter(|t| *t > floor)
        .unwrap_or(floor)
}

pub async fn job_promote_scheduled<C: Conn>(
    c: &C,
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<u64> {
    let rows = query(c, PROMOTE_SCHEDULED, &[&now]).await?;
    promoted(&rows, events)
}

/// Scheduled jobs due at `$1` made queued. SKIP LOCKED: concurrent leasers promote disjoint
/// rows instead of queueing on each other.
const PROMOTE_SCHEDULED: &str = "UPDATE jobs SET state = 'queued'
     WHERE state = 'scheduled' AND seq IN (
         SELECT seq FROM jobs WHERE state = 'scheduled' AND run_at <= $1
         FOR UPDATE SKIP LOCKED)
     RETURNING queue";

/// The rows of [`PROMOTE_SCHEDULED`]: a `JobsAvailable` for each queue, and their count.
fn promoted(rows: &[Row], events: &mut Vec<StoreEvent>) -> Result<u64> {
    let mut queues: HashSet<String> = HashSet::new();
    for row in rows {
        queues.insert(get(row, 0)?);
    }
    events.extend(
        queues
            .into_iter()
            .map(|queue| StoreEvent::JobsAvailable { queue }),
    );
    Ok(rows.len() as u64)
}

/// Most candidate rounds of one lease; each round either leases or rules out a name.
const MAX_LEASE_ROUNDS: usize = 32;

/// The best eligible queued jobs of the requested, unpaused queues, locked for this
/// transaction; rows other leasers hold are skipped. `{limit}` is a literal
/// ([`lease_candidates`]).
const LEASE_CANDIDATES: &str = "
    SELECT c.seq, c.job, c.singleton, c.priority
    FROM unnest($1::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT j.seq, j.job, j.singleton, j.priority
        FROM jobs AS j
        WHERE j.state = 'queued' AND j.queue = q.name
          AND (j.ordering_key IS NULL OR NOT EXISTS (
                SELECT 1 FROM jobs AS o
                WHERE o.queue = j.queue AND o.ordering_key = j.ordering_key
                  AND o.state IN ('scheduled', 'queued', 'running')
                  AND (o.seq < j.seq OR o.state = 'running')))
          AND (NOT j.singleton OR (j.job <> ALL ($2::text[]) AND NOT EXISTS (
                SELECT 1 FROM jobs AS s
                WHERE s.job = j.job AND s.state = 'running' AND s.finished_at IS NULL)))
          AND (cardinality($3::text[]) = 0 OR j.job = ANY ($3::text[]))
        ORDER BY j.priority DESC, j.seq
        LIMIT {limit}
        FOR UPDATE OF j SKIP LOCKED
    ) AS c
    WHERE NOT EXISTS (SELECT 1 FROM queues AS p WHERE p.name = q.name AND p.paused)
    ORDER BY c.priority DESC, c.seq
    LIMIT {limit}";

/// Writes the lease of the jobs `{pick}` names (rows of `seq` and fencing token): each
/// job's state, its run and its `started` event, in one statement. `{worker}`, `{until}`
/// and `{now}` are its parameters.
const LEASE_WRITE: &str = "
    leased AS (
        UPDATE jobs AS j SET state = 'running', attempt = j.attempt + 1,
            worker_id = {worker}, lease_token = u.token, lease_expires_at = {until},
            started_at = {now},
            deadline_at = CASE WHEN j.timeout_ms IS NULL THEN NULL
                               ELSE {now}::timestamptz + j.timeout_ms * interval '1 millisecond' END
        FROM {pick} AS u(seq, token)
        WHERE j.seq = u.seq AND j.state = 'queued'
        RETURNING j.seq, j.id, j.job, j.queue, j.payload, j.attempt, j.max_attempts,
                  j.priority, j.created_at, j.timeout_ms, u.token, j.checkpoint),
    started AS (
        INSERT INTO runs (job_seq, attempt, worker_id, lease_token, started_at)
        SELECT seq, attempt, {worker}, token, {now} FROM leased),
    logged AS (
        INSERT INTO events (at, kind, job_id, job, queue, attempt, data)
        SELECT {now}, 'started', id, job, queue, attempt,
               json_build_object('worker_id', {worker}::text)
        FROM leased ORDER BY priority DESC, seq)";

/// The lease of the chosen jobs (`$1` their `seq`, `$2` their tokens; `$3` worker, `$4`
/// until, `$5` now), answering the rows [`leased_jobs`] reads.
fn lease_chosen() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let write = LEASE_WRITE
            .replace("{pick}", "unnest($1::int8[], $2::int8[])")
            .replace("{worker}", "$3")
            .replace("{until}", "$4")
            .replace("{now}", "$5");
        format!("WITH {write}\n    SELECT * FROM leased")
    })
}

/// A whole lease in one statement, for a limit: the candidates (`$1`–`$3` as in
/// [`LEASE_CANDIDATES`]), and unless one of them is a singleton, the best `$8` of them
/// leased with the tokens `$4` (`$5` worker, `$6` until, `$7` now). Its first column says
/// whether a singleton stopped it; the rest are [`leased_jobs`]'s, one row a job, or one row
/// of NULLs when none was leased. The singleton guard needs a lock and a second look
/// ([`blocked_singletons`]), so a lease meeting one takes the way of several statements.
fn lease_at_once(candidates: &str) -> String {
    let write = LEASE_WRITE
        .replace("{pick}", "pick")
        .replace("{worker}", "$5")
        .replace("{until}", "$6")
        .replace("{now}", "$7");
    format!(
        "WITH cand AS MATERIALIZED ({candidates}),
    pick AS (
        SELECT seq, ($4::int8[])[row_number() OVER (ORDER BY priority DESC, seq)]
        FROM cand
        WHERE NOT EXISTS (SELECT 1 FROM cand WHERE singleton)
        ORDER BY priority DESC, seq
        LIMIT $8::int8),
    {write}
    SELECT s.singletons, l.*
    FROM (SELECT EXISTS (SELECT 1 FROM cand WHERE singleton) AS singletons) AS s
    LEFT JOIN leased AS l ON true"
    )
}

/// A limit of [`lease_candidates`]: the limit, its candidates statement and its
/// [`lease_at_once`] statement.
struct LeaseLimit {
    limit: usize,
    candidates: String,
    at_once: String,
}

/// The lease limits [`lease_candidates`] rounds up to: 1, 2, 3, 4, 6, 8, 12, … 3,072, 4,096
/// (each at most half above the one before).
fn lease_limits() -> &'static [LeaseLimit] {
    static LIMITS: std::sync::OnceLock<Vec<LeaseLimit>> = std::sync::OnceLock::new();
    LIMITS.get_or_init(|| {
        let mut limits = vec![1usize, 2];
        for shift in 0..=10 {
            limits.extend([3usize << shift, 4usize << shift]);
        }
        limits
            .into_iter()
            .map(|limit| {
                let candidates = LEASE_CANDIDATES.replace("{limit}", &limit.to_string());
                let at_once = lease_at_once(&candidates);
                LeaseLimit {
                    limit,
                    candidates,
                    at_once,
                }
            })
            .collect()
    })
}

/// The statements for a lease of `want` jobs, and their limit: the smallest of
/// [`lease_limits`] not below `want` (the largest for more). A literal limit, not a
/// parameter, lets the statement take a generic plan, planned once per connection:
/// re-planned at each lease, as PostgreSQL does with a parameter, planning took 0.5 ms of
/// every lease. A generic plan with `LIMIT $2` is no good: it must guess the limit (a tenth
/// of the table), and with statistics it sorted a whole queue instead of reading its index
/// (docs/performance.md). The cost: a handful of statements per connection, and a lease may
/// lock up to half as many rows again as it takes, until its commit (leasers running beside
/// it pass over them).
fn lease_candidates(want: usize) -> &'static LeaseLimit {
    let limits = lease_limits();
    let at = limits
        .partition_point(|l| l.limit < want)
        .min(limits.len() - 1);
    &limits[at]
}

/// Leasing. Candidates are chosen and row-locked with `FOR UPDATE SKIP LOCKED`, so
/// concurrent leasers take disjoint jobs without waiting for each other. The ordering-key
/// guard needs nothing more: the next job of a key is ineligible while an older one is
/// unfinished, and inserts of one key get their `seq` in commit order.
///
/// The singleton guard does: two leasers could each see no running job of a name and lock
/// two different jobs of it. So a leaser takes `pg_try_advisory_xact_lock` on the name of each
/// singleton it would lease (held until commit; a name already held is passed over, never
/// waited for), then checks again in a new statement — whose snapshot is taken after the
/// lock, so it sees every leaser of that name that committed before — that none is
/// running. Only then are the jobs updated.
pub async fn job_lease<C: Conn>(
    c: &C,
    request: &LeaseRequest,
    events: &mut Vec<StoreEvent>,
) -> Result<Vec<LeasedJob>> {
    // Linear in the request: a set of names seen, not a scan of the list per name.
    let mut seen: HashSet<&str> = HashSet::with_capacity(request.queues.len());
    let queues: Vec<&str> = request
        .queues
        .iter()
        .map(String::as_str)
        .filter(|queue| seen.insert(queue))
        .collect();
    let now = truncate(request.now);
    let until = plus(request.now, request.lease_for);
    let max = request.max as usize;
    let mut leased: Vec<LeasedJob> = Vec::with_capacity(max);
    // The first round in one round trip: the promotion of due scheduled jobs, then generic
    // plans for the statements after it (`lease_candidates`), then the whole lease unless a
    // singleton is among its candidates. The server runs them in the order sent, so the
    // lease sees what was promoted. Both statements are prepared first (no round trip once
    // cached), as one still to prepare would be sent after the others.
    let first = lease_candidates(max);
    let promote = c.prepare_cached(PROMOTE_SCHEDULED).await?;
    let at_once = c.prepare_cached(&first.at_once).await?;
    let due: [&(dyn ToSql + Sync); 1] = [&request.now];
    let no_names: &[String] = &[];
    let tokens: Vec<i64> = (0..max).map(|_| new_lease_token()).collect();
    let want = max as i64;
    let params: [&(dyn ToSql + Sync); 8] = [
        &queues,
        &no_names,
        &request.jobs,
        &tokens,
        &request.worker_id,
        &until,
        &now,
        &want,
    ];
    let (promotion, set, rows) = tokio::join!(
        c.query(&promote, &due),
        c.batch_execute(crate::GENERIC_PLANS),
        c.query(&at_once, &params)
    );
    promoted(&promotion?, events)?;
    set?;
    let rows = rows?;
    let singletons = match rows.first() {
        Some(row) => get::<bool>(row, 0)?,
        None => false,
    };
    let mut jobs: Vec<&Row> = Vec::with_capacity(rows.len());
    for row in &rows {
        // The row of NULLs of a lease that took nothing.
        if get::<Option<i64>>(row, 1)?.is_some() {
            jobs.push(row);
        }
    }
    leased_jobs(&jobs, 1, until, &mut leased, events)?;
    // Done unless a singleton stopped it, or the limit capped it below the ask.
    if !singletons && (leased.len() >= max || leased.len() < first.limit) {
        return Ok(leased);
    }
    // Singleton names this call must not lease: held by another leaser, or running.
    let mut excluded: Vec<String> = Vec::new();
    for _ in 0..MAX_LEASE_ROUNDS {
        let want = max - leased.len();
        let LeaseLimit {
            limit, candidates, ..
        } = lease_candidates(want);
        let params: [&(dyn ToSql + Sync); 3] = [&queues, &excluded, &request.jobs];
        let rows = query(c, candidates, &params).await?;
        let found = rows.len();
        let mut take: Vec<(i64, String, bool)> = Vec::with_capacity(found.min(want));
        let mut singles: Vec<String> = Vec::new();
        let mut skipped = false;
        // The limit may be above the ask: the best `want` are taken.
        for row in rows.iter().take(want) {
            let (seq, job, singleton): (i64, String, bool) =
                (get(row, 0)?, get(row, 1)?, get(row, 2)?);
            if singleton {
                if singles.contains(&job) {
                    // A second job of a name taken in this round: the next round's guard
                    // sees the first running.
                    skipped = true;
                    continue;
                }
                singles.push(job.clone());
            }
            take.push((seq, job, singleton));
        }
        if !singles.is_empty() {
            let blocked = blocked_singletons(c, &singles).await?;
            if !blocked.is_empty() {
                skipped = true;
                take.retain(|(_, job, singleton)| !(*singleton && blocked.contains(job)));
                excluded.extend(blocked);
            }
        }
        if !take.is_empty() {
            let seqs: Vec<i64> = take.iter().map(|(seq, _, _)| *seq).collect();
            let tokens: Vec<i64> = seqs.iter().map(|_| new_lease_token()).collect();
            let rows = query(
                c,
                lease_chosen(),
                &[&seqs, &tokens, &request.worker_id, &until, &now],
            )
            .await?;
            let rows: Vec<&Row> = rows.iter().collect();
            leased_jobs(&rows, 0, until, &mut leased, events)?;
        }
        // Another round when one was passed over, or when the limit capped this one.
        if leased.len() >= max || found == 0 || (!skipped && found < *limit) {
            break;
        }
    }
    Ok(leased)
}

/// Reads the jobs a lease's statement leased ([`LEASE_WRITE`]'s `leased`, from column
/// `from`) onto `leased`, in the order their `started` events were logged.
fn leased_jobs(
    rows: &[&Row],
    from: usize,
    until: DateTime<Utc>,
    leased: &mut Vec<LeasedJob>,
    events: &mut Vec<StoreEvent>,
) -> Result<()> {
    let mut round: Vec<(i64, LeasedJob)> = Vec::with_capacity(rows.len());
    for row in rows {
        round.push((
            get(row, from)?,
            LeasedJob {
                id: get(row, from + 1)?,
                job: get(row, from + 2)?,
                queue: get(row, from + 3)?,
                payload: get(row, from + 4)?,
                attempt: to_u32(get(row, from + 5)?),
                max_attempts: to_u32(get(row, from + 6)?),
                priority: get(row, from + 7)?,
                created_at: get(row, from + 8)?,
                timeout: get::<Option<i64>>(row, from + 9)?.map(from_ms),
                lease_token: get(row, from + 10)?,
                lease_expires_at: until,
                checkpoint: get(row, from + 11)?,
            },
        ));
    }
    round.sort_by(|(sa, a), (sb, b)| b.priority.cmp(&a.priority).then(sa.cmp(sb)));
    if !round.is_empty() {
        events.push(StoreEvent::Logged);
    }
    leased.extend(round.into_iter().map(|(_, l)| l));
    Ok(())
}

/// Of the singleton `names` this transaction would lease, those it must not: another leaser
/// holds the name's lock, or (checked after taking the lock) a job of the name is running.
async fn blocked_singletons<C: Conn>(c: &C, names: &[String]) -> Result<Vec<String>> {
    let rows = query(
        c,
        "SELECT n, pg_try_advisory_xact_lock(
             hashtextextended(coalesce(current_schema(), '') || $2 || n, 0))
         FROM unnest($1::text[]) AS n",
        &[&names, &SINGLETON_LOCK_PREFIX],
    )
    .await?;
    let mut blocked = Vec::new();
    let mut locked = Vec::new();
    for row in &rows {
        let name: String = get(row, 0)?;
        if get::<bool>(row, 1)? {
            locked.push(name);
        } else {
            blocked.push(name);
        }
    }
    if !locked.is_empty() {
        // A new statement, so a new snapshot: it sees every leaser that held the lock before.
        let rows = query(
            c,
            "SELECT DISTINCT job FROM jobs
             WHERE state = 'running' AND finished_at IS NULL AND job = ANY($1)",
            &[&locked],
        )
        .await?;
        for row in &rows {
            blocked.push(get(row, 0)?);
        }
    }
    Ok(blocked)
}

/// A fencing token: random, positive, and exact in JSON numbers (below 2^53).
fn new_lease_token() -> i64 {
    rand::random_range(1..(1i64 << 53))
}

pub async fn job_heartbeat_many<C: Conn>(
    c: &C,
    heartbeats: &[Heartbeat],
    now: DateTime<Utc>,
) -> Result<Vec<StoreResult<HeartbeatAck>>> {
    let untils: Vec<DateTime<Utc>> = heartbeats
        .iter()
        .map(|hb| plus(now, hb.lease_for))
        .collect();
    // A job named twice with one token: the last heartbeat sets the expiry, all succeed.
    let mut last: HashMap<(Uuid, i64), usize> = HashMap::new();
    for (i, hb) in heartbeats.iter().enumerate() {
        last.insert((hb.id, hb.lease_token), i);
    }
    let ids: Vec<Uuid> = heartbeats.iter().map(|hb| hb.id).collect();
    let sent: Vec<usize> = by_id(&ids)
        .into_iter()
        .filter(|&i| last.get(&(ids[i], heartbeats[i].lease_token)) == Some(&i))
        .collect();
    let rows = query(
        c,
        "UPDATE jobs AS j SET lease_expires_at = u.until
         FROM unnest($1::uuid[], $2::int8[], $3::timestamptz[], $4::int4[])
              AS u(id, token, until, i)
         WHERE j.id = u.id AND j.state = 'running' AND j.lease_token = u.token
         RETURNING u.i, j.cancel_requested",
        &[
            &sent.iter().map(|&i| ids[i]).collect::<Vec<_>>(),
            &sent
                .iter()
                .map(|&i| heartbeats[i].lease_token)
                .collect::<Vec<_>>(),
            &sent.iter().map(|&i| untils[i]).collect::<Vec<_>>(),
            &sent.iter().map(|&i| position(i)).collect::<Vec<_>>(),
        ],
    )
    .await?;
    let mut cancel: HashMap<usize, bool> = HashMap::new();
    for row in &rows {
        let i = usize::try_from(get::<i32>(row, 0)?).unwrap_or(usize::MAX);
        cancel.insert(i, get(row, 1)?);
    }
    let mut matched = HashMap::new();
    for (i, hb) in heartbeats.iter().enumerate() {
        let Some(&sent_as) = last.get(&(hb.id, hb.lease_token)) else {
            continue;
        };
        if let Some(&cancel_requested) = cancel.get(&sent_as) {
            matched.insert(
                i,
                HeartbeatAck {
                    lease_expires_at: untils[i],
                    cancel_requested,
                },
            );
        }
    }
    answers(c, &ids, matched).await
}

pub async fn job_complete_many<C: Conn>(
    c: &C,
    completions: &[Completion],
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<Vec<StoreResult<Job>>> {
    let ids: Vec<Uuid> = completions.iter().map(|x| x.id).collect();
    let order = by_id(&ids);
    let sql = format!(
        "WITH done AS (
             UPDATE jobs AS j SET state = 'succeeded', result = u.result, finished_at = $4,
                 lease_token = NULL, lease_expires_at = NULL, deadline_at = NULL
             FROM unnest($1::uuid[], $2::int8[], $3::json[], $5::int4[]) AS u(id, token, result, i)
             WHERE j.id = u.id AND j.state = 'running' AND j.lease_token = u.token
             RETURNING u.i, {JOB_COLUMNS}, u.token AS run_token, 'succeeded'::text AS run_outcome,
                       NULL::text AS run_error, NULL::int4 AS run_exit_code),
         {},
         logged AS (
             INSERT INTO events (at, kind, job_id, job, queue, attempt)
             SELECT $4, 'succeeded', id, job, queue, attempt FROM done ORDER BY i)
         SELECT * FROM done",
        FINISH_RUNS.replace("$NOW", "$4")
    );
    let rows = query(
        c,
        &sql,
        &[
            &order.iter().map(|&i| ids[i]).collect::<Vec<_>>(),
            &order
                .iter()
                .map(|&i| completions[i].lease_token)
                .collect::<Vec<_>>(),
            &order
                .iter()
                .map(|&i| completions[i].result.as_ref())
                .collect::<Vec<_>>(),
            &truncate(now),
            &order.iter().map(|&i| position(i)).collect::<Vec<_>>(),
        ],
    )
    .await?;
    let mut matched = HashMap::new();
    for row in &rows {
        let i = usize::try_from(get::<i32>(row, 0)?).unwrap_or(usize::MAX);
        let job = job_from_row(row, 1)?;
        finished_events(&job, events);
        matched.insert(i, job);
    }
    if !rows.is_empty() {
        events.push(StoreEvent::Logged);
    }
    insert_followups(c, matched.values(), now, events).await?;
    answers(c, &ids, matched).await
}

/// Inserts the reply messages and callback deliveries of jobs that just finished, in the
/// transaction of their outcome ([`hinter_core::followup`]).
async fn insert_followups<'a, C: Conn>(
    c: &C,
    jobs: impl IntoIterator<Item = &'a Job>,
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<()> {
    let mut followups: Vec<(i64, NewJob)> = jobs
        .into_iter()
        .flat_map(|job| {
            hinter_core::followup::followups(job)
                .into_iter()
                .map(move |f| (job.seq, f))
        })
        .collect();
    if followups.is_empty() {
        return Ok(());
    }
    // In the order the jobs were enqueued, whatever order the batch came in.
    followups.sort_by_key(|(seq, _)| *seq);
    let followups: Vec<NewJob> = followups.into_iter().map(|(_, f)| f).collect();
    job_insert_many(c, &followups, now, events).await?;
    Ok(())
}

pub async fn job_fail_many<C: Conn>(
    c: &C,
    failures: &[Failure],
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<Vec<StoreResult<Job>>> {
    let now = truncate(now);
    let at = serde_time(now)?;
    let ids: Vec<Uuid> = failures.iter().map(|f| f.id).collect();
    let order = by_id(&ids);
    let states: Vec<&str> = order
        .iter()
        .map(|&i| match failures[i].outcome {
            // Due at once (a rescued lease): straight back to the queue.
            FailOutcome::Retry { run_at } if truncate(run_at) <= now => JobState::Queued.as_str(),
            FailOutcome::Retry { .. } => JobState::Scheduled.as_str(),
            FailOutcome::Dead => JobState::Dead.as_str(),
            FailOutcome::Cancelled => JobState::Cancelled.as_str(),
        })
        .collect();
    let run_ats: Vec<Option<DateTime<Utc>>> = order
        .iter()
        .map(|&i| match failures[i].outcome {
            FailOutcome::Retry { run_at } => Some(truncate(run_at)),
            _ => None,
        })
        .collect();
    let messages: Vec<String> = order
        .iter()
        .map(|&i| limits::bounded_error(&failures[i].error).into_owned())
        .collect();
    // A cancel request wins: the row's own flag decides, read under the row lock. The
    // history policy of `hinter_core::limits`: append, keep the first $9 and the last $10
    // entries, count the dropped ones.
    let exit_codes: Vec<Option<i32>> = order.iter().map(|&i| failures[i].exit_code).collect();
    // What the events' data holds: the retry's time as serde writes it, the rescue's reason.
    let run_at_texts: Vec<Option<String>> = run_ats
        .iter()
        .map(|t| t.map(serde_time).transpose())
        .collect::<Result<_>>()?;
    let reasons: Vec<Option<&str>> = order
        .iter()
        .map(|&i| failures[i].rescued.map(Expiry::as_str))
        .collect();
    let sql = format!(
        "WITH done AS (UPDATE jobs AS j SET
             state = CASE WHEN j.cancel_requested THEN 'cancelled' ELSE u.state END,
             run_at = CASE WHEN NOT j.cancel_requested AND u.run_at IS NOT NULL
                           THEN u.run_at ELSE j.run_at END,
             finished_at = CASE WHEN j.cancel_requested OR u.run_at IS NULL
                                THEN $5::timestamptz END,
             errors = (
                 SELECT jsonb_agg(e.value ORDER BY e.n)
                 FROM jsonb_array_elements(j.errors || jsonb_build_array(jsonb_build_object(
                          'attempt', j.attempt, 'at', $6::text, 'message', u.message)))
                      WITH ORDINALITY AS e(value, n)
                 WHERE e.n <= $9::int8 OR e.n > jsonb_array_length(j.errors) + 1 - $10::int8),
             errors_omitted = j.errors_omitted
                 + GREATEST(jsonb_array_length(j.errors) + 1 - ($9::int8 + $10::int8), 0),
             lease_token = NULL, lease_expires_at = NULL, deadline_at = NULL
         FROM unnest($1::uuid[], $2::int8[], $3::text[], $4::timestamptz[], $7::text[],
                     $8::int4[], $11::int4[], $12::text[], $13::text[])
              AS u(id, token, state, run_at, message, i, exit_code, run_at_text, reason)
         WHERE j.id = u.id AND j.state = 'running' AND j.lease_token = u.token
         RETURNING u.i, {JOB_COLUMNS}, u.token AS run_token,
                   CASE WHEN j.state = 'cancelled' THEN 'cancelled' ELSE 'failed' END
                       AS run_outcome,
                   u.message AS run_error, u.exit_code AS run_exit_code,
                   u.run_at_text AS ev_run_at, u.reason AS ev_reason),
         {},
         logged AS (
             INSERT INTO events (at, kind, job_id, job, queue, attempt, data)
             SELECT $5, e.kind, d.id, d.job, d.queue, d.attempt, e.data
             FROM done AS d CROSS JOIN LATERAL (VALUES
                 (1, CASE WHEN d.ev_reason IS NOT NULL THEN 'rescued' END,
                     json_build_object('reason', d.ev_reason)),
                 (2, 'failed',
                     json_build_object('error', d.run_error, 'exit_code', d.run_exit_code)),
                 (3, CASE d.state WHEN 'cancelled' THEN 'cancelled' WHEN 'dead' THEN 'dead'
                                  ELSE 'retry_scheduled' END,
                     CASE WHEN d.state IN ('queued', 'scheduled')
                          THEN json_build_object('run_at', d.ev_run_at) END)
             ) AS e(n, kind, data)
             WHERE e.kind IS NOT NULL
             ORDER BY d.i, e.n)
         SELECT * FROM done",
        FINISH_RUNS.replace("$NOW", "$5")
    );
    let rows = query(
        c,
        &sql,
        &[
            &order.iter().map(|&i| ids[i]).collect::<Vec<_>>(),
            &order
                .iter()
                .map(|&i| failures[i].lease_token)
                .collect::<Vec<_>>(),
            &states,
            &run_ats,
            &now,
            &at,
            &messages,
            &order.iter().map(|&i| position(i)).collect::<Vec<_>>(),
            &(limits::ERRORS_KEPT_FIRST as i64),
            &(limits::ERRORS_KEPT_LAST as i64),
            &exit_codes,
            &run_at_texts,
            &reasons,
        ],
    )
    .await?;
    let mut matched = HashMap::new();
    let mut finished = Vec::new();
    for row in &rows {
        let i = usize::try_from(get::<i32>(row, 0)?).unwrap_or(usize::MAX);
        let job = job_from_row(row, 1)?;
        if job.state.is_finished() {
            finished_events(&job, events);
            finished.push(job.clone());
        } else if job.state == JobState::Queued || job.ordering_key.is_some() || job.singleton {
            // Queued again, or no longer running: jobs it held back may start.
            events.push(StoreEvent::JobsAvailable {
                queue: job.queue.clone(),
            });
        }
        matched.insert(i, job);
    }
    if !rows.is_empty() {
        events.push(StoreEvent::Logged);
    }
    insert_followups(c, &finished, now, events).await?;
    answers(c, &ids, matched).await
}

pub async fn job_release_many<C: Conn>(
    c: &C,
    releases: &[Release],
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<Vec<StoreResult<()>>> {
    let ids: Vec<Uuid> = releases.iter().map(|r| r.id).collect();
    let order = by_id(&ids);
    let sql = format!(
        "WITH done AS (
             UPDATE jobs AS j SET state = 'queued', attempt = GREATEST(j.attempt - 1, 0),
                 worker_id = NULL, lease_token = NULL, lease_expires_at = NULL,
                 started_at = NULL, deadline_at = NULL
             FROM unnest($1::uuid[], $2::int8[], $3::int4[]) AS u(id, token, i)
             WHERE j.id = u.id AND j.state = 'running' AND j.lease_token = u.token
             RETURNING u.i, j.queue, j.seq, j.id, j.job, j.attempt, u.token AS run_token,
                       'released'::text AS run_outcome, NULL::text AS run_error,
                       NULL::int4 AS run_exit_code),
         {},
         logged AS (
             INSERT INTO events (at, kind, job_id, job, queue, attempt)
             SELECT $4, 'released', id, job, queue, attempt FROM done ORDER BY i)
         SELECT i, queue FROM done",
        FINISH_RUNS.replace("$NOW", "$4")
    );
    let rows = query(
        c,
        &sql,
        &[
            &order.iter().map(|&i| ids[i]).collect::<Vec<_>>(),
            &order
                .iter()
                .map(|&i| releases[i].lease_token)
                .collect::<Vec<_>>(),
            &order.iter().map(|&i| position(i)).collect::<Vec<_>>(),
            &truncate(now),
        ],
    )
    .await?;
    let mut matched = HashMap::new();
    for row in &rows {
        let i = usize::try_from(get::<i32>(row, 0)?).unwrap_or(usize::MAX);
        events.push(StoreEvent::JobsAvailable {
            queue: get(row, 1)?,
        });
        matched.insert(i, ());
    }
    if !rows.is_empty() {
        events.push(StoreEvent::Logged);
    }
    answers(c, &ids, matched).await
}

/// The state of job `id`, or `NotFound`.
async fn state_of<C: Conn>(c: &C, id: Uuid) -> Result<JobState> {
    let row = query_opt(c, "SELECT state FROM jobs WHERE id = $1", &[&id])
        .await?
        .ok_or(StoreError::NotFound(id))?;
    get::<String>(&row, 0)?
        .parse::<JobState>()
        .map_err(|e| Error::Store(StoreError::Corrupt(e.to_string())))
}

pub async fn job_cancel<C: Conn>(
    c: &C,
    id: Uuid,
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<Job> {
    // In SET, `state` is the value before the update. The row as it was (`old`, locked, so
    // the latest committed version) tells whether a running job's cancel request is new:
    // only a new one is logged.
    let sql = format!(
        "WITH old AS (SELECT id, state, cancel_requested FROM jobs WHERE id = $1 FOR UPDATE),
         done AS (
             UPDATE jobs AS j SET
                 state = CASE WHEN j.state = 'running' THEN j.state ELSE 'cancelled' END,
                 finished_at = CASE WHEN j.state = 'running' THEN j.finished_at ELSE $2 END,
                 cancel_requested = j.cancel_requested OR j.state = 'running'
             FROM old
             WHERE j.id = old.id AND j.state IN ('scheduled', 'queued', 'running')
             RETURNING {JOB_COLUMNS}, {RUNS_COLUMN} AS runs, old.state AS old_state,
                       old.cancel_requested AS old_cancel_requested),
         logged AS (
             INSERT INTO events (at, kind, job_id, job, queue, attempt)
             SELECT $2, CASE WHEN old_state = 'running' THEN 'cancel_requested'
                             ELSE 'cancelled' END,
                    id, job, queue, attempt
             FROM done WHERE old_state <> 'running' OR NOT old_cancel_requested)
         SELECT * FROM done"
    );
    match query_opt(c, &sql, &[&id, &truncate(now)]).await? {
        Some(row) => {
            let job = job_with_runs(&row)?;
            let old_state: String = get(&row, JOB_COLUMN_COUNT + 1)?;
            let old_cancel_requested: bool = get(&row, JOB_COLUMN_COUNT + 2)?;
            if old_state != JobState::Running.as_str() || !old_cancel_requested {
                events.push(StoreEvent::Logged);
            }
            if job.state == JobState::Running {
                events.push(StoreEvent::CancelRequested { id });
            } else {
                finished_events(&job, events);
                insert_followups(c, [&job], now, events).await?;
            }
            Ok(job)
        }
        None => {
            let state = state_of(c, id).await?;
            Err(StoreError::Conflict(format!(
                "job {id} is already {state} and cannot be cancelled"
            ))
            .into())
        }
    }
}

pub async fn job_retry<C: Conn>(
    c: &C,
    id: Uuid,
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<Job> {
    let sql = format!(
        "WITH done AS (
             UPDATE jobs AS j SET state = 'queued', run_at = $2, finished_at = NULL,
                 cancel_requested = false,
                 max_attempts = GREATEST(j.max_attempts, j.attempt + 1),
                 worker_id = NULL, lease_token = NULL, lease_expires_at = NULL,
                 deadline_at = NULL
             WHERE j.id = $1 AND j.state IN ('dead', 'cancelled')
             RETURNING {JOB_COLUMNS}, {RUNS_COLUMN} AS runs),
         logged AS (
             INSERT INTO events (at, kind, job_id, job, queue, attempt)
             SELECT $2, 'retried', id, job, queue, attempt FROM done)
         SELECT * FROM done"
    );
    match query_opt(c, &sql, &[&id, &truncate(now)]).await? {
        Some(row) => {
            let job = job_with_runs(&row)?;
            events.push(StoreEvent::Logged);
            events.push(StoreEvent::JobsAvailable {
                queue: job.queue.clone(),
            });
            Ok(job)
        }
        None => {
            let state = state_of(c, id).await?;
            Err(StoreError::Conflict(format!(
                "job {id} is {state}; only dead or cancelled jobs can be retried"
            ))
            .into())
        }
    }
}

/// Running jobs past their lease or deadline, the longest overdue first. A job past both is
/// listed once, as timed out.
pub async fn job_expired_list<C: Conn>(
    c: &C,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<Expired>> {
    let limit = i64::from(limit);
    let mut found: HashMap<Uuid, (DateTime<Utc>, i64, Expired)> = HashMap::new();
    for (sql, reason) in [
        (
            "SELECT seq, id, lease_token, attempt, max_attempts, cancel_requested, timeout_ms,
                    deadline_at
             FROM jobs
             WHERE state = 'running' AND deadline_at IS NOT NULL AND deadline_at <= $1
             ORDER BY deadline_at LIMIT $2",
            Expiry::TimedOut,
        ),
        (
            "SELECT seq, id, lease_token, attempt, max_attempts, cancel_requested, timeout_ms,
                    lease_expires_at
             FROM jobs
             WHERE state = 'running' AND lease_expires_at <= $1
             ORDER BY lease_expires_at LIMIT $2",
            Expiry::LeaseExpired,
        ),
    ] {
        for row in query(c, sql, &[&now, &limit]).await? {
            let id: Uuid = get(&row, 1)?;
            let due: DateTime<Utc> = get(&row, 7)?;
            if let Some((earliest, _, _)) = found.get_mut(&id) {
                *earliest = (*earliest).min(due);
                continue;
            }
            let expired = Expired {
                id,
                lease_token: get::<Option<i64>>(&row, 2)?.unwrap_or(0),
                attempt: to_u32(get(&row, 3)?),
                max_attempts: to_u32(get(&row, 4)?),
                cancel_requested: get(&row, 5)?,
                timeout: get::<Option<i64>>(&row, 6)?.map(from_ms),
                reason,
            };
            found.insert(id, (due, get(&row, 0)?, expired));
        }
    }
    let mut list: Vec<(DateTime<Utc>, i64, Expired)> = found.into_values().collect();
    list.sort_by_key(|(due, seq, _)| (*due, *seq));
    list.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(list.into_iter().map(|(_, _, e)| e).collect())
}

pub async fn job_next_scheduled_at<C: Conn>(c: &C) -> Result<Option<DateTime<Utc>>> {
    let rows = query(
        c,
        "SELECT min(run_at) FROM jobs WHERE state = 'scheduled'",
        &[],
    )
    .await?;
    match rows.first() {
        Some(row) => get(row, 0),
        None => Ok(None),
    }
}

/// The columns of a listing, named as in [`JOB_COLUMNS`]: `payload` and `result` only
/// when the filter asks for them, and with a byte budget `bytes`, what the budget counts.
fn list_columns(filter: &JobFilter) -> String {
    let mut columns = JOB_COLUMNS.to_string();
    let mut bytes = "octet_length(j.errors::text)".to_string();
    if filter.with_payload {
        bytes += " + octet_length(j.payload::text)";
    } else {
        columns = columns.replacen("j.payload,", "'null'::json AS payload,", 1);
    }
    if filter.with_result {
        bytes += " + coalesce(octet_length(j.result::text), 0)";
    } else {
        columns = columns.replacen("j.result", "NULL::json AS result", 1);
    }
    // A checkpoint can be large and is for the next attempt: `job_get` reads it.
    columns = columns.replacen("j.checkpoint", "NULL::json AS checkpoint", 1);
    if filter.max_bytes.is_none() {
        return columns;
    }
    format!("{columns}, {bytes} AS bytes")
}

/// The term that lets the planner use the partial listing indexes of migration 14 for a
/// state: a finished job has `finished_at`, an active one has not.
fn finished_term(state: JobState) -> &'static str {
    if state.is_finished() {
        " AND j.finished_at IS NOT NULL"
    } else {
        " AND j.finished_at IS NULL"
    }
}

pub async fn job_list<C: Conn>(c: &C, filter: &JobFilter) -> Result<Vec<Job>> {
    list_rows(c, filter, Rows::After(filter.after_seq.unwrap_or(0))).await
}

/// Which jobs a listing reads, before its filters.
enum Rows<'a> {
    /// Those after this sequence number.
    After(i64),
    /// Those a cursor names as unseen ([`ListCursor::unseen`], not empty).
    Unseen(&'a [Unseen]),
}

async fn list_rows<C: Conn>(c: &C, filter: &JobFilter, rows: Rows<'_>) -> Result<Vec<Job>> {
    list_query(c, filter, rows, "")
        .await?
        .iter()
        .map(|row| job_from_row(row, 0))
        .collect()
}

/// What the statement of a listing answers, `prefix` before it (an `EXPLAIN` in tests).
async fn list_query<C: Conn>(
    c: &C,
    filter: &JobFilter,
    rows: Rows<'_>,
    prefix: &str,
) -> Result<Vec<Row>> {
    let state = filter.state.map(JobState::as_str);
    let limit = i64::from(filter.limit);
    let columns = list_columns(filter);
    let after;
    let (oldest, highs, lows, snapshots): (String, Vec<i64>, Vec<i64>, Vec<String>);
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    let per_state = matches!(rows, Rows::After(_))
        && state.is_none()
        && (filter.queue.is_some() || filter.job.is_some());
    let mut sql = match rows {
        Rows::After(seq) => {
            after = seq;
            params.push(&after);
            // Only the keys here: the rows are read by key below.
            "SELECT j.seq FROM jobs AS j WHERE j.seq > $1".to_string()
        }
        Rows::Unseen(unseen) => {
            oldest = unseen
                .first()
                .map(|u| u.snapshot.as_str().to_string())
                .unwrap_or_default();
            highs = unseen.iter().map(|u| u.through).collect();
            lows = unseen
                .iter()
                .skip(1)
                .map(|u| u.through)
                .chain([0])
                .collect();
            snapshots = unseen
                .iter()
                .map(|u| u.snapshot.as_str().to_string())
                .collect();
            params.extend([&oldest as &(dyn ToSql + Sync), &highs, &lows, &snapshots]);
            // Every insert has its transaction id before it takes a sequence number
            // (job_insert_many). An unseen job took its number before the oldest snapshot
            // and was not visible in it, so its transaction id lies in that snapshot's
            // [xmin, xmax): a short range of the event log's key finds it by its `created`
            // entry.
            format!(
                "SELECT {columns} FROM jobs AS j
                 JOIN events AS e ON e.job_id = j.id AND e.kind = 'created'
                  AND e.xid >= pg_snapshot_xmin($1::text::pg_snapshot)
                  AND e.xid < pg_snapshot_xmax($1::text::pg_snapshot)
                  AND NOT pg_visible_in_snapshot(e.xid, $1::text::pg_snapshot)
                 WHERE EXISTS (
                  SELECT 1 FROM unnest($2::int8[], $3::int8[], $4::text[]) AS u(high, low, snap)
                  WHERE j.seq <= u.high AND j.seq > u.low
                   AND NOT pg_visible_in_snapshot(e.xid, u.snap::pg_snapshot))"
            )
        }
    };
    let state_at = state.as_ref().map(|state| {
        params.push(state);
        params.len()
    });
    if let Some(queue) = &filter.queue {
        params.push(queue);
        sql += &format!(" AND j.queue = ${}", params.len());
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
        sql += &format!(" AND j.queue = ANY(${}::text[])", params.len());
    }
    if let Some(job) = &filter.job {
        params.push(job);
        sql += &format!(" AND j.job = ${}", params.len());
    }
    params.push(&limit);
    let order = format!(" ORDER BY j.seq LIMIT ${}", params.len());
    // The keys of one state's jobs, `state_sql` its name in the statement. An active state
    // with neither a queue nor a name, after a sequence number: its indexes are by queue and
    // by name (`jobs_active_queue`, `jobs_active_job`), so each queue that holds the state
    // (by the counts of migration 12, exact in the statement's snapshot) is read on its own,
    // and the lists merged.
    let of_state = |state_sql: &str, state: JobState| {
        let of_state = format!("{sql} AND j.state = {state_sql}{}", finished_term(state));
        if matches!(rows, Rows::After(_))
            && filter.queue.is_none()
            && filter.job.is_none()
            && !state.is_finished()
        {
            format!(
                "SELECT j.seq FROM (
                     SELECT c.queue FROM (
                         SELECT queue, n FROM job_counts WHERE state = {state_sql}
                         UNION ALL
                         SELECT queue, n FROM job_count_deltas WHERE state = {state_sql}
                     ) AS c GROUP BY c.queue HAVING sum(c.n) > 0
                 ) AS q CROSS JOIN LATERAL ({of_state} AND j.queue = q.queue{order}) AS j{order}"
            )
        } else {
            format!("{of_state}{order}")
        }
    };
    // A queue or job name without a state, after a sequence number: each state's jobs come
    // in enqueue order straight from an index (migration 14's: (…, state, seq)), and the
    // page is the first of the merged lists. One list for every state instead would sort all
    // the queue's (or name's) jobs first.
    sql = if per_state {
        let branches: Vec<String> = JobState::ALL
            .iter()
            .map(|&s| format!("({})", of_state(&format!("'{}'", s.as_str()), s)))
            .collect();
        format!(
            "SELECT * FROM ({}) AS j{order}",
            branches.join(" UNION ALL ")
        )
    } else if let (Some(at), Some(state)) = (state_at, filter.state) {
        of_state(&format!("${at}"), state)
    } else {
        format!("{sql}{order}")
    };
    // After a sequence number, the page's keys come first, from an index alone (migration
    // 14's, each ending in (state, seq)), and then its rows by key. Asked for the rows
    // at once, the planner walks the primary key in order and filters, expecting the state's
    // share of rows to be spread evenly; but queued jobs are the newest, so a page of them
    // behind a million finished ones took 450 ms, and this takes a millisecond.
    if matches!(rows, Rows::After(_)) {
        sql = format!(
            "SELECT {columns} FROM jobs AS j WHERE j.seq = ANY(ARRAY({sql})) ORDER BY j.seq"
        );
    }
    // The budget is applied here, so the rows past it are never sent.
    let budget = filter
        .max_bytes
        .map(|b| i64::try_from(b).unwrap_or(i64::MAX));
    if let Some(budget) = &budget {
        params.push(budget);
        sql = format!(
            "SELECT {JOB_COLUMNS} FROM (
                 SELECT j.*, sum(j.bytes) OVER (ORDER BY j.seq) - j.bytes AS bytes_before
                 FROM ({sql}) AS j) AS j
             WHERE j.bytes_before < ${} ORDER BY j.seq",
            params.len()
        );
    }
    query(c, &format!("{prefix}{sql}"), &params).await
}

/// A page of a listing ([`hinter_core::Store::job_page`]), read in one `REPEATABLE READ`
/// transaction `c`: first the unseen jobs the cursor names that are visible now, then the
/// jobs after it. The next cursor names, with this page's snapshot, what it could not see.
pub async fn job_page<C: Conn>(
    c: &C,
    filter: &JobFilter,
    after: Option<ListCursor>,
) -> Result<JobPage> {
    let limit = filter.limit as usize;
    let now: Snapshot = query_opt(c, "SELECT pg_current_snapshot()::text", &[])
        .await?
        .ok_or_else(|| Error::Store(StoreError::Unavailable("no snapshot".into())))?
        .try_get::<_, String>(0)?
        .parse()
        .map_err(|e: String| Error::Store(StoreError::Unavailable(e)))?;
    let after = after.unwrap_or_else(|| ListCursor::after(0));
    let mut jobs = Vec::new();
    let mut budget = filter.max_bytes;
    if !after.unseen.is_empty() {
        let read = JobFilter {
            limit: filter.limit.saturating_add(1),
            ..filter.clone()
        };
        jobs = list_rows(c, &read, Rows::Unseen(&after.unseen)).await?;
        let more_late = if jobs.len() > limit {
            jobs.truncate(limit);
            true
        } else {
            match jobs.last() {
                // Cut by the byte budget: are there more?
                Some(last) if budget.is_some() => {
                    let rest = after.late_through(last.seq, now.clone());
                    !list_rows(c, &probe(filter), Rows::Unseen(&rest.unseen))
                        .await?
                        .is_empty()
                }
                _ => false,
            }
        };
        if let (true, Some(last)) = (more_late, jobs.last()) {
            let next = after.late_through(last.seq, now);
            return Ok(JobPage {
                jobs,
                next: Some(next),
            });
        }
        if let Some(budget) = &mut budget {
            *budget = budget.saturating_sub(jobs.iter().map(listed_bytes).sum());
        }
    }
    // Every unseen job visible now is listed: the jobs after the cursor, in the room left.
    let room = limit - jobs.len();
    let read = JobFilter {
        limit: u32::try_from(room + 1).unwrap_or(u32::MAX),
        max_bytes: budget,
        ..filter.clone()
    };
    let mut fresh = list_rows(c, &read, Rows::After(after.after_seq)).await?;
    let more = if fresh.len() > room {
        fresh.truncate(room);
        true
    } else {
        let last = fresh.last().map_or(after.after_seq, |j| j.seq);
        !list_rows(c, &probe(filter), Rows::After(last))
            .await?
            .is_empty()
    };
    let last = fresh.last().map_or(after.after_seq, |j| j.seq);
    jobs.append(&mut fresh);
    let next = (more && last > 0).then(|| ListCursor {
        after_seq: last,
        unseen: vec![Unseen {
            through: last,
            snapshot: now,
        }],
    });
    Ok(JobPage { jobs, next })
}

/// The filter that asks whether one more job exists.
fn probe(filter: &JobFilter) -> JobFilter {
    JobFilter {
        limit: 1,
        with_payload: false,
        with_result: false,
        max_bytes: None,
        ..filter.clone()
    }
}

/// About the bytes of a listed job that the budget counts (`list_columns`).
fn listed_bytes(job: &Job) -> u64 {
    let errors = serde_json::to_string(&job.errors).map_or(0, |s| s.len());
    let payload = serde_json::to_string(&job.payload).map_or(0, |s| s.len());
    let result = job
        .result
        .as_ref()
        .and_then(|r| serde_json::to_string(r).ok())
        .map_or(0, |s| s.len());
    (errors + payload + result) as u64
}

/// Deletes finished job `id` (runs and log lines go with it); the job as it was.
pub async fn job_delete<C: Conn>(c: &C, id: Uuid) -> Result<Job> {
    let sql = format!(
        "SELECT {JOB_COLUMNS}, {RUNS_COLUMN} FROM jobs AS j WHERE j.id = $1 FOR UPDATE OF j"
    );
    let job = query_opt(c, &sql, &[&id])
        .await?
        .map(|row| job_with_runs(&row))
        .transpose()?
        .ok_or(StoreError::NotFound(id))?;
    if !job.state.is_finished() {
        return Err(StoreError::Conflict(format!(
            "job {id} is {} and cannot be deleted; cancel it first",
            job.state
        ))
        .into());
    }
    execute(c, "DELETE FROM jobs WHERE id = $1", &[&id]).await?;
    Ok(job)
}

/// Deletes up to `purge.limit` finished jobs of a queue in the given states, longest finished
/// first.
pub async fn queue_purge<C: Conn>(c: &C, purge: &QueuePurge) -> Result<u64> {
    let states = purge.state_names()?;
    // `finished_at IS NOT NULL` (every finished job's, no other's) lets the planner use
    // `jobs_done_queue`, a partial index.
    execute(
        c,
        "DELETE FROM jobs WHERE seq IN (
             SELECT seq FROM jobs WHERE queue = $1 AND state = ANY($2::text[])
              AND finished_at IS NOT NULL
             ORDER BY finished_at, seq LIMIT $3)",
        &[&purge.queue, &states, &i64::from(purge.limit)],
    )
    .await
}

pub async fn job_prune<C: Conn>(c: &C, request: &PruneRequest) -> Result<u64> {
    let mut total = 0u64;
    let limit = u64::from(request.limit);
    for (state, before) in [
        (JobState::Succeeded, request.succeeded_before),
        (JobState::Dead, request.dead_before),
        (JobState::Cancelled, request.cancelled_before),
    ] {
        if total >= limit {
            break;
        }
        let left = i64::try_from(limit - total).unwrap_or(i64::MAX);
        total += execute(
            c,
            "DELETE FROM jobs WHERE seq IN (
                 SELECT seq FROM jobs WHERE state = $1 AND finished_at < $2
                 ORDER BY finished_at LIMIT $3)",
            &[&state.as_str(), &before, &left],
        )
        .await?;
    }
    Ok(total)
}

/// Folds the job count deltas written so far into the totals (see migration 12): one
/// statement, so the rows leave the deltas and reach the totals in one commit and a reader
/// counts them once either way. Skipped while another session folds (a transaction
/// advisory lock taken with `try`): nobody waits, and nothing is counted twice.
pub async fn queue_counts_fold<C: Conn>(c: &C) -> Result<u64> {
    execute(
        c,
        "WITH folder AS (
             SELECT pg_try_advisory_xact_lock(
                 hashtextextended('hinter.job_counts.' || current_schema(), 0)) AS locked
         ),
         moved AS (
             DELETE FROM job_count_deltas WHERE (SELECT locked FROM folder)
             RETURNING queue, state, n
         )
         INSERT INTO job_counts (queue, state, n)
         SELECT queue, state, sum(n) FROM moved GROUP BY queue, state ORDER BY queue, state
         ON CONFLICT (queue, state) DO UPDATE SET n = job_counts.n + excluded.n",
        &[],
    )
    .await
}

pub async fn queue_list<C: Conn>(c: &C) -> Result<Vec<QueueInfo>> {
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
    // Totals plus the deltas not folded into them yet (migration 12), in one statement:
    // exact in its snapshot, and a few rows whatever the number of jobs.
    let rows = query(
        c,
        "SELECT queue, state, sum(n)::int8 FROM (
             SELECT queue, state, n FROM job_counts
             UNION ALL
             SELECT queue, state, n FROM job_count_deltas
         ) AS counts
         GROUP BY queue, state HAVING sum(n) <> 0",
        &[],
    )
    .await?;
    for row in &rows {
        let (queue, state, count): (String, String, i64) =
            (get(row, 0)?, get(row, 1)?, get(row, 2)?);
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
    let waiting: Vec<String> = queues
        .values()
        .filter(|info| info.queued > 0)
        .map(|info| info.name.clone())
        .collect();
    if !waiting.is_empty() {
        let oldest = query(
            c,
            "SELECT q.queue, (SELECT min(run_at) FROM jobs
                              WHERE state = 'queued' AND queue = q.queue)
             FROM unnest($1::text[]) AS q(queue)",
            &[&waiting],
        )
        .await?;
        for row in &oldest {
            let (queue, at): (String, Option<DateTime<Utc>>) = (get(row, 0)?, get(row, 1)?);
            if let Some(info) = queues.get_mut(&queue) {
                info.oldest_queued_at = at;
            }
        }
    }
    for row in &query(c, "SELECT name, paused FROM queues", &[]).await? {
        let (name, paused): (String, bool) = (get(row, 0)?, get(row, 1)?);
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

pub async fn queue_set_paused<C: Conn>(
    c: &C,
    queue: &str,
    paused: bool,
    events: &mut Vec<StoreEvent>,
) -> Result<()> {
    execute(
        c,
        "INSERT INTO queues (name, paused) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
        &[&queue, &paused],
    )
    .await?;
    if !paused {
        events.push(StoreEvent::JobsAvailable {
            queue: queue.to_string(),
        });
    }
    Ok(())
}

/// Succeeds when the database answers and accepts writes (not a read-only standby).
pub async fn ping<C: Conn>(c: &C) -> Result<()> {
    let rows = query(
        c,
        "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'",
        &[],
    )
    .await?;
    let writable = match rows.first() {
        Some(row) => get::<bool>(row, 0)?,
        None => false,
    };
    if writable {
        Ok(())
    } else {
        Err(StoreError::Unavailable("the database is read-only (a standby?)".into()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store on a fresh schema (dropped with the `TestSchema`) of the test database.
    #[cfg(hinter_test_database)]
    async fn fresh_store(prefix: &str) -> (String, crate::TestSchema, crate::PostgresStore) {
        let url = std::env::var("HINTER_TEST_DATABASE_URL").expect("HINTER_TEST_DATABASE_URL");
        let schema = crate::TestSchema::fresh(&url, prefix);
        let options = crate::PostgresOptions {
            schema: Some(schema.name.clone()),
            ..crate::PostgresOptions::default()
        };
        let store = crate::PostgresStore::connect(&url, options)
            .await
            .expect("connect");
        (url, schema, store)
    }

    /// Rows of `jobs` a plan (EXPLAIN ANALYZE, JSON) read: returned or filtered out, every
    /// loop.
    #[cfg(hinter_test_database)]
    fn jobs_rows_read(plan: &serde_json::Value) -> f64 {
        let mut read = 0.0;
        if plan.get("Relation Name").and_then(|r| r.as_str()) == Some("jobs") {
            let number = |key: &str| plan.get(key).and_then(|v| v.as_f64()).unwrap_or(0.0);
            read += (number("Actual Rows") + number("Rows Removed by Filter"))
                * number("Actual Loops").max(1.0);
        }
        for child in plan
            .get("Plans")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
        {
            read += jobs_rows_read(child);
        }
        read
    }

    /// The rows of `jobs` the listing `filter` reads, and its plan (EXPLAIN ANALYZE).
    #[cfg(hinter_test_database)]
    async fn explained<C: Conn>(c: &C, filter: &JobFilter) -> (f64, serde_json::Value) {
        let answer = list_query(
            c,
            filter,
            Rows::After(filter.after_seq.unwrap_or(0)),
            "EXPLAIN (ANALYZE, FORMAT JSON) ",
        )
        .await
        .expect("explain");
        let plan: serde_json::Value = answer[0].get(0);
        (jobs_rows_read(&plan[0]["Plan"]), plan)
    }

    /// No shape of listing walks the table: with 30,000 jobs in three queues under three
    /// names, the oldest 27,000 finished (as in a busy system: the active jobs are the
    /// newest), a page of 50 reads at most 4,000 rows of `jobs`. (The planner may read a
    /// queue's active jobs of a state whole and sort them where they are few, as here; a walk
    /// of the table in `seq` order, which reading an active state without a queue did
    /// before it went queue by queue, reads 27,000.)
    #[cfg(hinter_test_database)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listings_read_about_a_page_of_jobs() {
        use hinter_core::{NewJob, Store};
        let (url, schema, store) = fresh_store("hinter_test_plans_").await;
        let now = chrono::Utc::now();
        for batch in 0..30 {
            let jobs = (0..1000)
                .map(|i| {
                    let n = batch * 1000 + i;
                    NewJob::new(["render", "send", "sync"][n % 3], serde_json::json!(n))
                        .queue(["q0", "q1", "q2"][(n / 3) % 3])
                })
                .collect();
            store.job_insert_many(jobs, now).await.expect("insert");
        }
        let mut client = crate::connect_session(&url).await.expect("session");
        client
            .batch_execute(&format!(
                "SET search_path TO \"{}\";
                 UPDATE jobs SET state = 'dead', finished_at = now()
                  WHERE seq < (SELECT min(seq) + 27000 FROM jobs);
                 UPDATE jobs SET state = 'running' WHERE state = 'queued' AND seq % 100 = 1;",
                schema.name
            ))
            .await
            .expect("finish most jobs");
        // Without the old row versions' index entries, as a busy table's autovacuum keeps it.
        client
            .batch_execute("VACUUM ANALYZE jobs")
            .await
            .expect("vacuum");
        let tx = client.transaction().await.expect("transaction");
        let mut shapes = Vec::new();
        for state in [
            None,
            Some(JobState::Queued),
            Some(JobState::Running),
            Some(JobState::Dead),
        ] {
            for queue in [None, Some("q1")] {
                for job in [None, Some("render")] {
                    shapes.push(JobFilter {
                        state,
                        queue: queue.map(str::to_string),
                        job: job.map(str::to_string),
                        limit: 50,
                        ..JobFilter::default()
                    });
                }
            }
        }
        shapes.push(JobFilter {
            state: Some(JobState::Queued),
            queues: Some(vec!["q0".into(), "q2".into()]),
            limit: 50,
            ..JobFilter::default()
        });
        // A name no job has: found so from an index, not by reading every active job.
        for state in [None, Some(JobState::Queued), Some(JobState::Scheduled)] {
            let filter = JobFilter {
                state,
                job: Some("rare".into()),
                limit: 50,
                ..JobFilter::default()
            };
            let (read, plan) = explained(&tx, &filter).await;
            assert!(
                read <= 10.0,
                "{filter:?} read {read} rows of jobs: {plan:#}"
            );
        }
        for filter in shapes {
            let (read, plan) = explained(&tx, &filter).await;
            assert!(
                read <= 4000.0,
                "{filter:?} read {read} rows of jobs: {plan:#}"
            );
        }
    }

    /// A connection that counts the statements run through it.
    #[cfg(hinter_test_database)]
    struct Counting<'a, C> {
        conn: &'a C,
        statements: std::sync::atomic::AtomicUsize,
    }

    #[cfg(hinter_test_database)]
    impl<C> Counting<'_, C> {
        fn count(&self) {
            self.statements
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        fn take(&self) -> usize {
            self.statements
                .swap(0, std::sync::atomic::Ordering::Relaxed)
        }
    }

    #[cfg(hinter_test_database)]
    #[async_trait]
    impl<C: Conn> Conn for Counting<'_, C> {
        async fn prepare_cached(&self, sql: &str) -> std::result::Result<Statement, PgError> {
            self.conn.prepare_cached(sql).await
        }
        async fn query(
            &self,
            stmt: &Statement,
            params: &[&(dyn ToSql + Sync)],
        ) -> std::result::Result<Vec<Row>, PgError> {
            self.count();
            self.conn.query(stmt, params).await
        }
        async fn query_opt(
            &self,
            stmt: &Statement,
            params: &[&(dyn ToSql + Sync)],
        ) -> std::result::Result<Option<Row>, PgError> {
            self.count();
            self.conn.query_opt(stmt, params).await
        }
        async fn execute(
            &self,
            stmt: &Statement,
            params: &[&(dyn ToSql + Sync)],
        ) -> std::result::Result<u64, PgError> {
            self.count();
            self.conn.execute(stmt, params).await
        }
        async fn batch_execute(&self, sql: &str) -> std::result::Result<(), PgError> {
            self.count();
            self.conn.batch_execute(sql).await
        }
    }

    /// A lease whose candidates hold no singleton is one statement after the promotion and
    /// the plan setting (all three sent at once); one meeting a singleton takes the long way
    /// — candidates, the singleton's lock and check, the update — and leases the same jobs
    /// in the same order.
    #[cfg(hinter_test_database)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_without_singletons_is_one_statement() {
        use hinter_core::{NewJob, Store};
        let (url, schema, store) = fresh_store("hinter_test_lease_").await;
        let now = chrono::Utc::now();
        let jobs = vec![
            NewJob::new("plain", serde_json::json!(1)).queue("plain"),
            NewJob::new("plain", serde_json::json!(2))
                .queue("plain")
                .priority(5),
            NewJob::new("plain", serde_json::json!(3)).queue("plain"),
            NewJob::new("plain", serde_json::json!(4)).queue("mixed"),
            NewJob::new("only", serde_json::json!(5))
                .queue("mixed")
                .singleton(true),
            NewJob::new("only", serde_json::json!(6))
                .queue("mixed")
                .singleton(true),
        ];
        let ids: Vec<Uuid> = store
            .job_insert_many(jobs, now)
            .await
            .expect("insert")
            .iter()
            .map(|i| i.job.id)
            .collect();
        let mut client = crate::connect_session(&url).await.expect("session");
        client
            .batch_execute(&format!("SET search_path TO \"{}\"", schema.name))
            .await
            .expect("schema");
        let tx = client.transaction().await.expect("transaction");
        let c = Counting {
            conn: &tx,
            statements: Default::default(),
        };
        let request = |queue: &str| LeaseRequest {
            queues: vec![queue.to_string()],
            jobs: Vec::new(),
            worker_id: "w".into(),
            max: 10,
            lease_for: Duration::from_secs(30),
            now,
        };
        let mut events = Vec::new();
        let leased = job_lease(&c, &request("plain"), &mut events)
            .await
            .expect("lease");
        assert_eq!(
            leased.iter().map(|j| j.id).collect::<Vec<_>>(),
            [ids[1], ids[0], ids[2]]
        );
        assert!(leased.iter().all(|j| j.attempt == 1 && j.lease_token > 0));
        assert_eq!(c.take(), 3, "promotion, plan setting, lease");

        let leased = job_lease(&c, &request("mixed"), &mut events)
            .await
            .expect("lease");
        // The singleton's second job waits for its first.
        assert_eq!(
            leased.iter().map(|j| j.id).collect::<Vec<_>>(),
            [ids[3], ids[4]]
        );
        assert!(c.take() > 3);
        let leased = job_lease(&c, &request("plain"), &mut events)
            .await
            .expect("lease");
        assert!(leased.is_empty());
        assert_eq!(c.take(), 3, "an empty lease is one statement too");
    }

    /// A lease's limit rounds up to one of a few literals, at most half above the ask.
    #[test]
    fn lease_limits_round_up_to_a_few_literals() {
        for (want, limit) in [
            (0, 1),
            (1, 1),
            (2, 2),
            (5, 6),
            (7, 8),
            (16, 16),
            (300, 384),
            (500, 512),
            (4096, 4096),
            (usize::MAX, 4096),
        ] {
            let l = lease_candidates(want);
            assert_eq!(l.limit, limit, "a lease of {want}");
            let sql = &l.candidates;
            assert_eq!(sql.matches(&format!("LIMIT {limit}\n")).count(), 1, "{sql}");
            assert!(sql.ends_with(&format!("LIMIT {limit}")), "{sql}");
            assert!(l.at_once.contains(sql.as_str()), "{}", l.at_once);
        }
        for want in 1..=4096 {
            let n = lease_candidates(want).limit;
            assert!(n >= want && n * 2 <= want * 3 + 1, "{want} → {n}");
        }
        assert_eq!(lease_limits().len(), 24);
    }

    #[test]
    fn disk_full_and_io_errors_are_storage_failures_that_say_so() {
        let full = classify(
            Some(&SqlState::DISK_FULL),
            "could not extend file \"base/1/2\": No space left on device".into(),
        );
        assert!(
            matches!(&full, StoreError::Storage(m) if m.starts_with("disk full")),
            "{full:?}"
        );
        let io = classify(Some(&SqlState::IO_ERROR), "could not read block".into());
        assert!(
            matches!(&io, StoreError::Storage(m) if m.starts_with("disk I/O error")),
            "{io:?}"
        );
        assert!(matches!(
            classify(Some(&SqlState::UNIQUE_VIOLATION), "taken".into()),
            StoreError::Conflict(_)
        ));
        assert!(matches!(
            classify(Some(&SqlState::ADMIN_SHUTDOWN), "bye".into()),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            classify(None, "connection refused".into()),
            StoreError::Unavailable(_)
        ));
    }
}
