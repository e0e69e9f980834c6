//! The store interface: everything hinter keeps, behind one trait with a backend per database.
//!
//! Architecture invariant: backends know SQL and nothing else. Policy (defaults, backoff, what a
//! failure leads to) is decided above the store and handed in; the store applies each change as
//! one guarded statement, so concurrent callers can never move a job through an illegal
//! transition. Guards the store enforces itself, because only it can do so atomically:
//! - a lease token must match for heartbeat, complete, fail and release (fencing);
//! - a job with an `ordering_key` is leased only when it is the oldest unfinished job with that
//!   key in its queue, and none with that key is running;
//! - a `singleton` job is leased only when no job of the same name is running;
//! - a paused queue hands out no leases;
//! - a cancel request wins over a concurrent failure (the job ends `cancelled`).
//!
//! Operations take batches where workers produce many at once (leases, heartbeats,
//! completions), so backends can write them in one transaction.

use crate::access::{AuditEntry, NewAudit, NewToken, TokenInfo};
use crate::event::{EventFilter, EventPage};
use crate::job::{Inserted, Job, JobState, LeasedJob, NewJob, Run};
use crate::listing::{JobPage, ListCursor};
use crate::retry::FailOutcome;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

/// What can go wrong in a store operation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("job {0} not found")]
    NotFound(Uuid),
    /// The lease token does not match the job's current lease: it expired and the job was
    /// rescued, or the job finished. Nothing was changed.
    #[error("lease of job {0} is stale: the job was rescued, finished or cancelled")]
    StaleLease(Uuid),
    /// The input cannot be stored (see [`crate::limits`]); nothing was changed.
    #[error("{0}")]
    Invalid(crate::FieldError),
    /// The job is not in a state that allows the operation.
    #[error("{0}")]
    Conflict(String),
    /// The database cannot be reached or refused to work (disk full, read-only, gone).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The stored data could not be read back; a bug or a damaged database.
    #[error("store data error: {0}")]
    Corrupt(String),
    /// The database's storage refuses to work: disk full, an I/O error, or (SQLite) its file
    /// was deleted or replaced while open. Nothing was changed. Unlike
    /// [`StoreError::Unavailable`], the message names the cause in words fit for clients
    /// ("disk full …"), without paths or SQL.
    #[error("store cannot write: {0}")]
    Storage(String),
    /// A named thing (a token) does not exist; the message names it. Nothing was changed.
    #[error("{0}")]
    Unknown(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

fn no_schedules() -> StoreError {
    StoreError::Unavailable("this store keeps no schedules".into())
}

/// Checks every job of an insert with [`NewJob::check`]; each backend calls it first, so a
/// job built in code is held to the same bounds as one that came through the API.
pub fn check_new_jobs(jobs: &[NewJob]) -> StoreResult<()> {
    for (i, job) in jobs.iter().enumerate() {
        job.check().map_err(|e| {
            StoreError::Invalid(if jobs.len() == 1 {
                e
            } else {
                e.within(&format!("jobs[{i}]"))
            })
        })?;
    }
    Ok(())
}

/// Something that changed in the store that waiting parties care about. Delivered on a best
/// effort basis; listeners fall back to polling.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreEvent {
    /// Jobs became ready to lease in this queue.
    JobsAvailable { queue: String },
    /// A job reached a finished state.
    JobFinished { id: Uuid, state: JobState },
    /// Someone asked a running job to stop; its worker should stop it.
    CancelRequested { id: Uuid },
    /// Another process changed the store, and what changed is not known (SQLite: another
    /// process committed to the same file). Waiting parties look again.
    Changed,
    /// New entries may be in the event log ([`Store::events_read`]). A hint: on PostgreSQL
    /// sent at most every few milliseconds per process, after the commit.
    Logged,
}

/// Ask for up to `max` jobs from `queues`, leased to `worker_id` for `lease_for`.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseRequest {
    pub queues: Vec<String>,
    /// Only jobs of these definitions (job names); empty: any. A worker that can run only
    /// some names leaves the others in a shared queue for workers that can.
    pub jobs: Vec<String>,
    pub worker_id: String,
    pub max: u32,
    pub lease_for: Duration,
    pub now: DateTime<Utc>,
}

impl LeaseRequest {
    /// The request as a store serves it: `None` when it can lease nothing (`max` 0, no
    /// queues), else with `max` held to [`crate::limits::MAX_LEASE_JOBS`] (a lease hands out
    /// *up to* `max`; a larger one through the Rust API would size buffers by it).
    pub fn bounded(mut self) -> Option<Self> {
        if self.max == 0 || self.queues.is_empty() {
            return None;
        }
        self.max = self.max.min(crate::limits::MAX_LEASE_JOBS);
        Some(self)
    }
}

/// Extend the lease of a running job.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    pub id: Uuid,
    pub lease_token: i64,
    pub lease_for: Duration,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatAck {
    pub lease_expires_at: DateTime<Utc>,
    /// The job was cancelled: the worker should stop it and report a failure.
    pub cancel_requested: bool,
}

/// A successful attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub id: Uuid,
    pub lease_token: i64,
    pub result: Option<Value>,
}

/// A failed attempt, with the outcome decided by [`crate::retry::decide_failure`].
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub id: Uuid,
    pub lease_token: i64,
    pub error: String,
    pub outcome: FailOutcome,
    /// The exit code of the command that ran the attempt, if one ran and exited; kept in the
    /// attempt's [`crate::Run`].
    pub exit_code: Option<i32>,
    /// Set when maintenance fails the attempt because its lease expired or its timeout
    /// passed: the log then records a `rescued` event before `failed`.
    pub rescued: Option<Expiry>,
}

/// A leased job handed back unstarted or interrupted by shutdown: it returns to `queued`
/// and the attempt is not counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    pub id: Uuid,
    pub lease_token: i64,
}

impl From<&LeasedJob> for Release {
    /// Hands back `job` under the lease it was given.
    fn from(job: &LeasedJob) -> Self {
        Release {
            id: job.id,
            lease_token: job.lease_token,
        }
    }
}

/// One write of a unit of work ([`Store::write_unit`]).
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// As [`Store::job_insert_many`]; a duplicate (`unique_key`) is an answer, not an error.
    Insert(Vec<NewJob>),
    /// As [`Store::job_complete_many`].
    Complete(Vec<Completion>),
    /// As [`Store::job_fail_many`].
    Fail(Vec<Failure>),
    /// As [`Store::job_release_many`].
    Release(Vec<Release>),
    /// As [`Store::job_cancel`].
    Cancel(Uuid),
    /// As [`Store::job_retry`].
    Retry(Uuid),
    /// As [`Store::queue_set_paused`].
    QueuePause { queue: String, paused: bool },
    /// Stores a token ([`NewToken::check`]ed); a taken name is a [`StoreError::Conflict`].
    TokenCreate(NewToken),
    /// Deletes the token of this name; an unknown name is a [`StoreError::Unknown`].
    TokenRevoke(String),
    /// Appends an entry to the audit record.
    Audit(NewAudit),
    /// An insert guarded by an idempotency key: see [`IdempotentInsert`].
    InsertOnce(IdempotentInsert),
    /// Creates or replaces a schedule (`create_only`: a name in use is a `Conflict`).
    ScheduleSave(crate::schedule::NewSchedule),
    /// Deletes a schedule and its occurrence history (`Unknown` when there is none).
    ScheduleDelete(String),
    /// Pauses or resumes a schedule; `next_fire_at` replaces the stored one when given
    /// (resuming starts from now: ticks due while paused are not missed ones).
    SchedulePause {
        name: String,
        paused: bool,
        next_fire_at: Option<Option<DateTime<Utc>>>,
    },
    /// One firing: occurrences and their jobs (see [`crate::schedule::ScheduleFiring`]).
    ScheduleFire(crate::schedule::ScheduleFiring),
    /// Deletes a finished job with its runs and log lines: `NotFound` for an unknown id,
    /// `Conflict` unless it is `succeeded`, `dead` or `cancelled`.
    JobDelete(Uuid),
    /// Deletes up to `limit` finished jobs of `queue` whose state is one of `states` (each a
    /// finished state), the longest finished first; answers how many.
    QueuePurge(QueuePurge),
}

/// What [`WriteOp::QueuePurge`] deletes.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuePurge {
    pub queue: String,
    pub states: Vec<JobState>,
    pub limit: u32,
}

impl QueuePurge {
    /// The states as stored, checked to be finished ones (a purge never touches a job that
    /// can still run).
    pub fn state_names(&self) -> StoreResult<Vec<&'static str>> {
        self.states
            .iter()
            .map(|s| {
                if s.is_finished() {
                    Ok(s.as_str())
                } else {
                    Err(StoreError::Conflict(format!(
                        "a purge deletes finished jobs only, not {s} ones"
                    )))
                }
            })
            .collect()
    }
}

/// An insert that a key makes safe to repeat ([`WriteOp::InsertOnce`]). The first use of
/// `(scope, key)` inserts the jobs and keeps their answer with the key, in the same
/// transaction, so an answer lost with its connection can be asked for again. Until
/// `expires_at`, the same key with the same `fingerprint` answers that kept answer and inserts
/// nothing; with another fingerprint it answers [`Idempotent::KeyReused`]. A concurrent use of
/// the key waits for the first one's transaction and then answers as if it came after it.
/// An expired key counts as unused. Any error undoes the whole unit, key included.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotentInsert {
    /// Whose key it is: keys of different scopes never meet. The server uses a hash of the
    /// caller's `Authorization` header.
    pub scope: String,
    /// The caller's key.
    pub key: String,
    /// What the request was (the server: a hash of method, path and canonical body). Only the
    /// same request gets the kept answer.
    pub fingerprint: String,
    /// The key answers until this time (exclusive); [`Store::idempotency_prune`] deletes it
    /// after.
    pub expires_at: DateTime<Utc>,
    pub jobs: Vec<NewJob>,
}

impl IdempotentInsert {
    /// Checks that the key and the jobs can be stored ([`check_new_jobs`]); each backend
    /// calls it first.
    pub fn check(&self) -> StoreResult<()> {
        use crate::limits::{check_text, check_time};
        for (field, value) in [
            ("idempotency scope", &self.scope),
            ("idempotency key", &self.key),
            ("idempotency fingerprint", &self.fingerprint),
        ] {
            check_text(field, value).map_err(StoreError::Invalid)?;
        }
        check_time("idempotency expires_at", self.expires_at).map_err(StoreError::Invalid)?;
        check_new_jobs(&self.jobs)
    }
}

/// The answer an idempotency key keeps, as stored text (JSON); the same on every backend.
pub fn encode_kept_answer(answer: &[Inserted]) -> StoreResult<String> {
    serde_json::to_string(answer)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode an idempotency answer: {e}")))
}

/// Reads back what [`encode_kept_answer`] wrote.
pub fn decode_kept_answer(text: &str) -> StoreResult<Vec<Inserted>> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("a kept idempotency answer: {e}")))
}

/// The answer to a [`WriteOp::InsertOnce`].
#[derive(Debug, Clone, PartialEq)]
pub enum Idempotent {
    /// The key was unused: the jobs were inserted (as by [`WriteOp::Insert`]) and this answer
    /// kept with the key.
    Inserted(Vec<Inserted>),
    /// The key was used for the same request: its kept answer (the jobs as they were then,
    /// `seq` not kept). Nothing was inserted.
    Replayed(Vec<Inserted>),
    /// The key was used for a different request. Nothing was inserted.
    KeyReused,
}

/// What one write of a unit of work did, in the order of the writes.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteResult {
    Inserted(Vec<Inserted>),
    Completed(Vec<Job>),
    Failed(Vec<Job>),
    /// How many jobs were handed back.
    Released(usize),
    Cancelled(Box<Job>),
    InsertedOnce(Idempotent),
    Retried(Box<Job>),
    QueuePaused,
    TokenCreated(TokenInfo),
    /// The token as it was before it was deleted.
    TokenRevoked(TokenInfo),
    /// The id of the new audit entry.
    Audited(i64),
    ScheduleSaved(Box<crate::schedule::Schedule>),
    ScheduleDeleted(Box<crate::schedule::Schedule>),
    ScheduleFired(crate::schedule::FireReport),
    /// The job as it was before it was deleted.
    JobDeleted(Box<Job>),
    /// How many jobs were deleted.
    QueuePurged(u64),
}

/// Why a running job is due for rescue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No heartbeat within the lease.
    LeaseExpired,
    /// Ran longer than its `timeout`.
    TimedOut,
}

impl Expiry {
    /// The name in event data (`rescued` events' `reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            Expiry::LeaseExpired => "lease_expired",
            Expiry::TimedOut => "timed_out",
        }
    }
}

/// A running job whose lease expired or whose timeout passed.
#[derive(Debug, Clone, PartialEq)]
pub struct Expired {
    pub id: Uuid,
    pub lease_token: i64,
    pub attempt: u32,
    pub max_attempts: u32,
    pub cancel_requested: bool,
    pub timeout: Option<Duration>,
    pub reason: Expiry,
}

/// What a job listing adds to its summaries (`include=` of `GET /api/v1/jobs`): each field
/// costs memory and time on the server, and a page with them ends early at its byte budget.
/// One type for the server that parses it and the clients that send it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Include {
    pub payload: bool,
    pub result: bool,
    pub errors: bool,
    /// The attempts (`runs`); read with one more query per page.
    pub runs: bool,
}

impl Include {
    /// Everything: payload, result, errors and runs.
    pub fn all() -> Self {
        Self {
            payload: true,
            result: true,
            errors: true,
            runs: true,
        }
    }

    /// The `include` query value, e.g. `payload,errors`; `None` when nothing is asked for.
    pub fn query_value(self) -> Option<String> {
        let names: Vec<&str> = [
            ("payload", self.payload),
            ("result", self.result),
            ("errors", self.errors),
            ("runs", self.runs),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        (!names.is_empty()).then(|| names.join(","))
    }
}

impl std::str::FromStr for Include {
    type Err = String;

    /// A comma-separated list of `payload`, `result`, `errors`, `runs`, or `all`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut include = Include::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item {
                "payload" => include.payload = true,
                "result" => include.result = true,
                "errors" => include.errors = true,
                "runs" => include.runs = true,
                "all" => include = Include::all(),
                other => {
                    return Err(format!(
                        "{other:?} is not one of payload, result, errors, runs, all"
                    ))
                }
            }
        }
        Ok(include)
    }
}

/// Filters of a job listing; results come in enqueue order after `after_seq`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub queue: Option<String>,
    /// Only jobs of these queues (a token's queues); with `queue` too, both apply.
    pub queues: Option<Vec<String>>,
    pub job: Option<String>,
    /// Cursor: only jobs enqueued after the job with this sequence number.
    pub after_seq: Option<i64>,
    /// Most jobs returned; callers choose it (0 returns none).
    pub limit: u32,
    /// Read each job's `payload`; when false it is not read and comes back `null`.
    pub with_payload: bool,
    /// Read each job's `result`; when false it is not read and comes back `None`.
    pub with_result: bool,
    /// A byte budget: a job is returned only while the jobs before it in this listing hold
    /// fewer than this many bytes of stored JSON in the fields read (`payload` and `result`
    /// when asked for, and `errors`); the first job is always returned. `None`: no budget.
    pub max_bytes: Option<u64>,
}

impl JobFilter {
    /// Every job field read (payload and result too), no byte budget.
    pub fn complete(mut self) -> Self {
        self.with_payload = true;
        self.with_result = true;
        self
    }
}

/// A queue with its job counts per state. Read leniently by the client: a count an older
/// server does not send is 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueInfo {
    pub name: String,
    pub paused: bool,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub scheduled: u64,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub queued: u64,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub running: u64,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub succeeded: u64,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub dead: u64,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub cancelled: u64,
    /// The `run_at` of the longest-waiting `queued` job: how long work has waited for a
    /// worker (the autoscaling signal). `None` when nothing is queued.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub oldest_queued_at: Option<DateTime<Utc>>,
}

/// Finished jobs older than these cut-offs are deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneRequest {
    pub succeeded_before: DateTime<Utc>,
    pub dead_before: DateTime<Utc>,
    pub cancelled_before: DateTime<Utc>,
    pub limit: u32,
}

/// Told of every committed write transaction: how long it took (begin to commit) and how
/// many operations it carried (SQLite: the writer's group; PostgreSQL: 1, a batch counting
/// once). For `GET /metrics`; must be quick, it runs on the write path.
pub type CommitObserver = std::sync::Arc<dyn Fn(std::time::Duration, usize) + Send + Sync>;

/// Where all of hinter's state lives. See the module documentation for the guards every
/// implementation enforces.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts all jobs or none. A job whose `unique_key` matches an existing job of the same
    /// name (inside `unique_for`, or while that job is unfinished) is not inserted; the
    /// existing job is returned with `duplicate: true`.
    async fn job_insert_many(
        &self,
        jobs: Vec<NewJob>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Inserted>>;

    async fn job_get(&self, id: Uuid) -> StoreResult<Option<Job>>;

    async fn job_list(&self, filter: JobFilter) -> StoreResult<Vec<Job>>;

    /// A page of a job listing: at most `filter.limit` jobs after `after` (its
    /// `filter.after_seq` is not used), and where the next page starts. Each job is listed
    /// once across the pages, also one whose insert commits after a later job was listed
    /// (see [`crate::listing`]). This default suits a store that commits inserts in sequence
    /// order (SQLite); PostgreSQL overrides it.
    async fn job_page(&self, filter: JobFilter, after: Option<ListCursor>) -> StoreResult<JobPage> {
        let limit = filter.limit as usize;
        if limit == 0 {
            return Ok(JobPage::default());
        }
        let read = JobFilter {
            after_seq: after.map(|c| c.after_seq),
            limit: filter.limit.saturating_add(1),
            ..filter.clone()
        };
        let mut jobs = self.job_list(read).await?;
        let more = if jobs.len() > limit {
            jobs.truncate(limit);
            true
        } else {
            match jobs.last() {
                // A short page: the end, or the byte budget was reached.
                Some(last) => {
                    let next = JobFilter {
                        after_seq: Some(last.seq),
                        limit: 1,
                        with_payload: false,
                        with_result: false,
                        max_bytes: None,
                        ..filter
                    };
                    !self.job_list(next).await?.is_empty()
                }
                None => false,
            }
        };
        let next = match jobs.last() {
            Some(last) if more => Some(ListCursor::after(last.seq)),
            _ => None,
        };
        Ok(JobPage { jobs, next })
    }

    /// Sets the observer of committed writes (once; later calls are ignored). Default: none
    /// is kept.
    fn observe_commits(&self, observer: CommitObserver) {
        let _ = observer;
    }

    /// The jobs that carry job `id`'s outcome ([`crate::followup`]: reply messages and
    /// callback deliveries), oldest first, with their runs (each delivery attempt).
    async fn job_followups(&self, id: uuid::Uuid) -> StoreResult<Vec<Job>>;

    /// The attempts of each of `ids` that exists, oldest first (what [`Store::job_get`]
    /// puts in [`Job::runs`]); for listings that ask for them. Default: none recorded.
    async fn job_runs(&self, ids: Vec<uuid::Uuid>) -> StoreResult<HashMap<uuid::Uuid, Vec<Run>>> {
        let _ = ids;
        Ok(HashMap::new())
    }

    /// Moves due `scheduled` jobs to `queued`, then leases up to `max` queued jobs by priority
    /// (higher first), then enqueue order. Each leased job's attempt is counted now.
    async fn job_lease(&self, request: LeaseRequest) -> StoreResult<Vec<LeasedJob>>;

    /// Parks the lease request of an idle in-process worker ([`crate::handoff`]): the next
    /// insert of a job ready to run in one of its queues leases for it in the insert's own
    /// transaction, and the jobs arrive on the answer. `None` (the default): this store does
    /// not hand jobs over, or the request can lease nothing ([`LeaseRequest::bounded`]); the
    /// worker waits for [`StoreEvent::JobsAvailable`].
    fn park_lease(&self, request: LeaseRequest) -> Option<crate::handoff::Handoff> {
        let _ = request;
        None
    }

    /// Extends leases; each item fails alone with [`StoreError::StaleLease`] (or
    /// [`StoreError::NotFound`] for an unknown id). A lease that expired but was not yet
    /// rescued is still honoured: nobody else has the job.
    async fn job_heartbeat_many(
        &self,
        heartbeats: Vec<Heartbeat>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<HeartbeatAck>>>;

    /// Marks jobs `succeeded`; each item fails alone with [`StoreError::StaleLease`] (or
    /// [`StoreError::NotFound`]).
    async fn job_complete_many(
        &self,
        completions: Vec<Completion>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<Job>>>;

    /// Records failed attempts and applies their outcomes; each item fails alone with
    /// [`StoreError::StaleLease`].
    async fn job_fail_many(
        &self,
        failures: Vec<Failure>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<Job>>>;

    /// Returns leased jobs to `queued` without counting the attempt (graceful stop).
    async fn job_release_many(
        &self,
        releases: Vec<Release>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<()>>>;

    /// Runs several writes as one unit of work: all are committed together (one SQLite
    /// writer transaction, one PostgreSQL transaction), or none is. Any error undoes the
    /// whole unit and is returned, including one item's (a stale lease token, an unknown or
    /// finished job); events are published only after the commit. For writes that belong
    /// together: a completion and the jobs it sets off, a reply and the job it answers.
    async fn write_unit(
        &self,
        ops: Vec<WriteOp>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<WriteResult>>;

    /// Cancels a job: `scheduled`/`queued` become `cancelled` at once; `running` gets
    /// `cancel_requested`. A finished job is a [`StoreError::Conflict`].
    async fn job_cancel(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Job>;

    /// Puts a `dead` or `cancelled` job back to `queued`, keeping its history and granting at
    /// least one more attempt. Other states are a [`StoreError::Conflict`].
    async fn job_retry(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Job>;

    /// Running jobs whose lease expired or whose timeout passed, the longest overdue
    /// first (by the earlier of lease expiry and deadline), at most `limit`.
    async fn job_expired_list(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Expired>>;

    /// Moves due `scheduled` jobs to `queued`; returns how many.
    async fn job_promote_scheduled(&self, now: DateTime<Utc>) -> StoreResult<u64>;

    /// The earliest `run_at` of any `scheduled` job.
    async fn job_next_scheduled_at(&self) -> StoreResult<Option<DateTime<Utc>>>;

    /// Deletes finished jobs older than the cut-offs, at most `request.limit` in all;
    /// returns how many.
    async fn job_prune(&self, request: PruneRequest) -> StoreResult<u64>;

    /// Every queue that has jobs or a pause flag, with counts per state. Exact, and cheap
    /// whatever the number of jobs: the backends keep the counts as jobs change.
    async fn queue_list(&self) -> StoreResult<Vec<QueueInfo>>;

    /// Folds job count changes kept apart from their totals into the totals, where a backend
    /// keeps them apart (PostgreSQL, so concurrent writers never share a counter row); the
    /// maintenance leader calls it every second. Counts are exact with or without it.
    async fn queue_counts_fold(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn queue_set_paused(&self, queue: &str, paused: bool) -> StoreResult<()>;

    /// Succeeds when the store can be read and written. Fails while the last write failed
    /// for lack of storage (disk full, I/O error) and none has succeeded since.
    async fn ping(&self) -> StoreResult<()>;

    /// Observations for readiness reports that do not make the store unready (SQLite: the
    /// size of its write-ahead log and its bound). Cheap; no I/O. Default: none.
    fn details(&self) -> serde_json::Map<String, Value> {
        serde_json::Map::new()
    }

    /// Tidies up at a clean shutdown (SQLite: folds the write-ahead log into the database
    /// and truncates it); writes that arrive later are refused. Default: nothing to do.
    async fn close(&self) -> StoreResult<()> {
        Ok(())
    }

    /// Event log entries after `after` (0: from the start) that match `filter`, at most
    /// `limit`, in log order. Only entries no earlier one can still join are returned
    /// (PostgreSQL: entries of transactions still in flight wait, and so does everything
    /// after them), so a reader that resumes from the last id it handled misses nothing.
    async fn events_read(
        &self,
        after: i64,
        filter: &EventFilter,
        limit: u32,
    ) -> StoreResult<EventPage>;

    /// The id of the last settled entry of the event log (0 when empty): a reader that
    /// starts here sees what happens from now on.
    async fn events_last_id(&self) -> StoreResult<i64>;

    /// Deletes event log entries from before `before` among the oldest `limit` (so the work
    /// is bounded however long the log is), never the newest entry; returns how many.
    async fn events_prune(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<u64>;

    /// Deletes up to `limit` idempotency keys ([`WriteOp::InsertOnce`]) whose `expires_at`
    /// is at or before `now`, earliest first; returns how many.
    async fn idempotency_prune(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<u64>;

    /// Appends a running attempt's log lines and sets its progress and checkpoint, in one
    /// write guarded by the lease token: a stale token is [`StoreError::StaleLease`] and
    /// changes nothing; an unknown job [`StoreError::NotFound`]; a report that cannot be
    /// stored ([`crate::JobReport::check`]) [`StoreError::Invalid`]. Lines are stored under
    /// the job's current attempt, in order, and deleted with the job.
    async fn job_report(&self, report: crate::JobReport, now: DateTime<Utc>) -> StoreResult<()>;

    /// A job's log lines matching `query`, in the order they were written; `None` when the
    /// job does not exist.
    async fn job_logs(
        &self,
        id: Uuid,
        query: crate::LogQuery,
    ) -> StoreResult<Option<Vec<crate::LogLine>>>;

    /// Events about changes, for long-polls and idle workers.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<StoreEvent>;

    /// `t`, a time on the caller's clock, on the store's clock (PostgreSQL: the database's;
    /// see `hinter-postgres/src/clock.rs`). The scheduler reads its "now" through this, so
    /// every server of a cluster fires a tick at the same instant whatever its own clock.
    fn store_time(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        t
    }

    /// One schedule by name.
    async fn schedule_get(&self, name: &str) -> StoreResult<Option<crate::schedule::Schedule>> {
        let _ = name;
        Err(no_schedules())
    }

    /// Every schedule, by name.
    async fn schedule_list(&self) -> StoreResult<Vec<crate::schedule::Schedule>> {
        Err(no_schedules())
    }

    /// Schedules not paused whose `next_fire_at` is at or before `now`, earliest first.
    /// `now` is on the store's clock ([`Store::store_time`]).
    async fn schedule_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<crate::schedule::Schedule>> {
        let _ = (now, limit);
        Err(no_schedules())
    }

    /// The earliest `next_fire_at` of the schedules not paused.
    async fn schedule_next_fire_at(&self) -> StoreResult<Option<DateTime<Utc>>> {
        Err(no_schedules())
    }

    /// A schedule's occurrences, latest first, before `before` (a fire time) when given.
    async fn occurrence_list(
        &self,
        schedule: &str,
        before: Option<DateTime<Utc>>,
        limit: u32,
    ) -> StoreResult<Vec<crate::schedule::Occurrence>> {
        let _ = (schedule, before, limit);
        Err(no_schedules())
    }

    /// Every stored token, by name. Servers keep them in a cache refreshed from here.
    async fn token_list(&self) -> StoreResult<Vec<TokenInfo>>;

    /// Audit entries with an id below `before` (`None`: from the newest), newest first, at
    /// most `limit`.
    async fn audit_list(&self, before: Option<i64>, limit: u32) -> StoreResult<Vec<AuditEntry>>;

    /// Stores a token and records `token.create` by `actor`, in one unit of work.
    async fn token_create(
        &self,
        token: NewToken,
        actor: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<TokenInfo> {
        let audit = NewAudit {
            actor: actor.to_string(),
            action: "token.create".into(),
            target: token.name.clone(),
            detail: serde_json::json!({"scopes": token.scopes, "queues": token.queues}),
        };
        let results = self
            .write_unit(
                vec![WriteOp::TokenCreate(token), WriteOp::Audit(audit)],
                now,
            )
            .await?;
        match results.into_iter().next() {
            Some(WriteResult::TokenCreated(info)) => Ok(info),
            other => Err(StoreError::Corrupt(format!(
                "token_create answered {other:?}"
            ))),
        }
    }

    /// Deletes the token `name` and records `token.revoke` by `actor`, in one unit of work;
    /// answers the token as it was. An unknown name is a [`StoreError::Unknown`].
    async fn token_revoke(
        &self,
        name: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<TokenInfo> {
        let audit = NewAudit {
            actor: actor.to_string(),
            action: "token.revoke".into(),
            target: name.to_string(),
            detail: Value::Null,
        };
        let results = self
            .write_unit(
                vec![
                    WriteOp::TokenRevoke(name.to_string()),
                    WriteOp::Audit(audit),
                ],
                now,
            )
            .await?;
        match results.into_iter().next() {
            Some(WriteResult::TokenRevoked(info)) => Ok(info),
            other => Err(StoreError::Corrupt(format!(
                "token_revoke answered {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_parses_and_renders() {
        let include: Include = "payload, errors".parse().expect("parses");
        assert_eq!(include.query_value().as_deref(), Some("payload,errors"));
        assert_eq!(Include::default().query_value(), None);
        assert_eq!("all".parse::<Include>().expect("parses"), Include::all());
        let runs: Include = "runs".parse().expect("parses");
        assert!(runs.runs && !runs.errors);
        assert_eq!(runs.query_value().as_deref(), Some("runs"));
        assert!("secrets".parse::<Include>().is_err());
    }
}
