//! The request and answer bodies of hinter's HTTP API (`docs/http-api.md`), defined once for
//! the server, which reads requests and writes answers, and for the Rust client, which does
//! the reverse.
//!
//! The things these bodies carry (a [`Job`], a [`LeasedJob`], a [`JobEvent`], a
//! [`QueueInfo`]…) are hinter-core's own types; this crate holds the envelopes around them
//! and the bodies that exist only on the wire.
//!
//! With the feature `openapi` every type here (and every hinter-core type it carries) derives
//! a `utoipa` schema, from which the server builds its OpenAPI document
//! (`GET /api/v1/openapi.json`); the client leaves the feature off and pays nothing for it.

use chrono::{DateTime, Utc};
use hinter_core::access::AuditEntry;
use hinter_core::job::opt_duration;
use hinter_core::schedule::{Occurrence, Schedule};
use hinter_core::store::QueueInfo;
use hinter_core::{AttemptError, Job, JobEvent, JobSpec, JobState, LeasedJob, ProcessInfo, Run};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;
use std::time::Duration;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// Errors

/// The machine code of an error answer: what went wrong, for code that acts on it. The
/// message says the rest, naming the field, parameter or header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the body is not JSON, or not UTF-8.
    MalformedJson,
    /// 400: a query, path or header parameter is wrong; the message names it.
    BadRequest,
    /// 422: a body field has the wrong type, is missing, unknown or out of range.
    InvalidField,
    /// 422: the `Idempotency-Key` was used before for a different request.
    IdempotencyKeyReused,
    /// 401: no token, or one that is not valid; answered with `WWW-Authenticate: Bearer`.
    Unauthorized,
    /// 403: the token lacks the route's scope, or may not use the queue.
    Forbidden,
    /// 403: a browser request that may come from another site.
    Csrf,
    /// 404: no such job, schedule or route.
    NotFound,
    /// 405: the route exists, but not with this method.
    MethodNotAllowed,
    /// 409: the lease token is not current.
    StaleLease,
    /// 409: the job's (or schedule's) state does not allow the operation.
    Conflict,
    /// 413: the body is over the limit.
    TooLarge,
    /// 408: the body did not arrive whole in time.
    RequestTimeout,
    /// 503: too many connections, or event streams, are open; try again later.
    Overloaded,
    /// 503: the store cannot be reached or written; nothing was changed.
    Unavailable,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::MalformedJson,
        ErrorCode::BadRequest,
        ErrorCode::InvalidField,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::Csrf,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::StaleLease,
        ErrorCode::Conflict,
        ErrorCode::TooLarge,
        ErrorCode::RequestTimeout,
        ErrorCode::Overloaded,
        ErrorCode::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Csrf => "csrf",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::StaleLease => "stale_lease",
            ErrorCode::Conflict => "conflict",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// One of [`ErrorCode`]; read as text, so a client meets codes newer than itself.
    #[cfg_attr(feature = "openapi", schema(value_type = ErrorCode))]
    pub code: Cow<'static, str>,
    /// What is wrong and where, for people.
    pub message: String,
}

// ---------------------------------------------------------------------------------------
// Jobs

/// The answer to an enqueue (`201`, or `200` for a duplicate), and one item of a batch answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Enqueued {
    /// An earlier job with the same `unique_key`: nothing new was enqueued.
    pub duplicate: bool,
    pub job: Job,
}

/// `POST /api/v1/jobs/batch` body: 1 to 10,000 jobs, all inserted or none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 10000))]
    pub jobs: Vec<JobSpec>,
}

/// `POST /api/v1/jobs/batch` answer, in request order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchResponse {
    pub jobs: Vec<Enqueued>,
}

/// One job of a listing (`GET /api/v1/jobs`): every field of a [`Job`], but `payload`,
/// `result`, `errors` and `runs` only when the listing asked for them (`include=`);
/// `error_count` and `last_error` always.
///
/// Read leniently: fields a newer server adds are ignored, and fields an older one lacks
/// take their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobSummary {
    pub id: Uuid,
    /// The job definition's name.
    pub job: String,
    pub queue: String,
    pub state: JobState,
    pub priority: i32,
    /// Attempts taken so far.
    pub attempt: u32,
    pub max_attempts: u32,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub started_at: Option<DateTime<Utc>>,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub finished_at: Option<DateTime<Utc>>,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub unique_key: Option<String>,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub ordering_key: Option<String>,
    #[serde(default, with = "opt_duration")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<hinter_core::openapi::DurationText>, required = true)
    )]
    pub timeout: Option<Duration>,
    pub singleton: bool,
    pub cancel_requested: bool,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub worker_id: Option<String>,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// How many failed attempts there were (also those dropped from a long history).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub error_count: u32,
    /// The latest error, its message cut to 500 characters.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub last_error: Option<AttemptError>,
    /// Only with `include` payload: any JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// Only with `include` result (and then `null` too while the job has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Only with `include` errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<AttemptError>>,
    /// Only with `include` runs: the job's attempts, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<Vec<Run>>,
}

/// The fields of a [`Job`] that a listing writes too but [`JobSummary`] does not read (it
/// ignores them, and the CLI prints what it read); the document's `JobSummary` has them.
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct JobSummaryMore {
    #[schema(required = true)]
    errors_omitted: u64,
    #[schema(required = true)]
    progress: Option<hinter_core::Progress>,
    /// Always `null` in listings.
    #[schema(required = true)]
    checkpoint: Option<Value>,
    #[schema(required = true)]
    reply_to: Option<String>,
    #[schema(required = true)]
    correlation_id: Option<String>,
    #[schema(required = true)]
    callback_url: Option<String>,
    #[schema(required = true)]
    parent_id: Option<Uuid>,
}

/// `GET /api/v1/jobs` answer: a page of job summaries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page {
    pub jobs: Vec<JobSummary>,
    /// Pass back as `cursor` for the next page; `null` on the last page.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub next_cursor: Option<String>,
}

/// `POST /hooks/{job}` answer (`202`): the job's id (also in `Location`) and the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Accepted {
    pub id: Uuid,
    pub job: Job,
}

// ---------------------------------------------------------------------------------------
// The worker protocol

/// `POST /api/v1/leases` body: ask for jobs to work on. Absent and `null` fields take their
/// defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// Queues to take jobs from (1 to 1000 distinct names); default `["default"]`.
    #[serde(default = "default_queues", deserialize_with = "queues_or_default")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<hinter_core::openapi::Name>>, min_items = 1))]
    pub queues: Vec<String>,
    /// Only jobs of these names (a worker that runs only some; at most 1000 distinct);
    /// empty: any.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<hinter_core::openapi::Name>>))]
    pub jobs: Vec<String>,
    /// Who holds the lease (1 to 200 characters, no NUL; shown in job listings), e.g.
    /// `host-1:4711`.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")
    )]
    pub worker_id: String,
    /// Most jobs to take, 1 to 1000; default 1.
    #[serde(default = "one", deserialize_with = "max_or_one")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u32>, minimum = 1, maximum = 1000))]
    pub max: u32,
    /// How long the lease lasts without a heartbeat, 1s to 1h; absent: the server's default
    /// (60s).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<hinter_core::openapi::LeaseDurationInput>))]
    pub lease: Option<Duration>,
    /// Long-poll up to this long (cut to the server's `--max-wait`, default 60s) while no
    /// job is ready; absent: answer at once.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<hinter_core::openapi::DurationInput>))]
    pub wait: Option<Duration>,
    /// Outcomes of jobs leased before (at most 1000), applied before leasing as
    /// `POST /api/v1/outcomes` applies them, and answered in the answer's `outcomes`: a
    /// worker reports a batch and asks for the next in one request.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<OutcomeItem>>, max_items = 1000))]
    pub outcomes: Vec<OutcomeItem>,
}

fn default_queues() -> Vec<String> {
    vec![hinter_core::DEFAULT_QUEUE.to_string()]
}

fn one() -> u32 {
    1
}

fn queues_or_default<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(de)?.unwrap_or_else(default_queues))
}

fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

fn max_or_one<'de, D: serde::Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    Ok(hinter_core::number::opt_u32(de)?.unwrap_or(1))
}

impl LeaseRequest {
    /// One job from the `default` queue, answered at once.
    pub fn new(worker_id: impl Into<String>) -> Self {
        Self {
            queues: default_queues(),
            jobs: Vec::new(),
            worker_id: worker_id.into(),
            max: 1,
            lease: None,
            wait: None,
            outcomes: Vec::new(),
        }
    }

    /// Reports these outcomes of jobs leased before with this lease request.
    pub fn outcomes(mut self, outcomes: Vec<OutcomeItem>) -> Self {
        self.outcomes = outcomes;
        self
    }

    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// Takes only jobs of these names; none: any.
    pub fn jobs<I, S>(mut self, jobs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.jobs = jobs.into_iter().map(Into::into).collect();
        self
    }

    pub fn max(mut self, max: u32) -> Self {
        self.max = max;
        self
    }

    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }
}

/// `POST /api/v1/leases` answer: the jobs leased (none when nothing was ready in time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Leases {
    pub jobs: Vec<LeasedJob>,
    /// When the request carried `outcomes`: one answer each, in order, as
    /// `POST /api/v1/outcomes` gives them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcomes: Option<Vec<OutcomeAnswer>>,
}

/// `POST /api/v1/jobs/{id}/heartbeat` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    #[serde(deserialize_with = "hinter_core::number::i64")]
    pub lease_token: i64,
    /// The lease's new length from now, 1s to 1h; absent: the server's default.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<hinter_core::openapi::LeaseDurationInput>))]
    pub lease: Option<Duration>,
    /// Replaces the job's progress, with the lease extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<hinter_core::ProgressUpdate>,
    /// Replaces the job's checkpoint (the next attempt is handed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Value>,
    /// Appended to the attempt's log (as in `POST /api/v1/jobs/{id}/report`; at most 1000).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(max_items = 1000))]
    pub logs: Vec<hinter_core::NewLogLine>,
}

impl HeartbeatBody {
    /// The report this heartbeat carries, if it carries anything besides the lease.
    pub fn report(&self, id: Uuid, now: DateTime<Utc>) -> Option<hinter_core::JobReport> {
        if self.progress.is_none() && self.checkpoint.is_none() && self.logs.is_empty() {
            return None;
        }
        Some(hinter_core::JobReport {
            id,
            lease_token: self.lease_token,
            logs: self.logs.clone(),
            progress: self.progress.clone().map(|p| p.at(now)),
            checkpoint: self.checkpoint.clone(),
        })
    }
}

/// `POST /api/v1/jobs/{id}/complete` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    #[serde(deserialize_with = "hinter_core::number::i64")]
    pub lease_token: i64,
    /// Any JSON, kept as the job's `result`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// `POST /api/v1/jobs/{id}/release` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    #[serde(deserialize_with = "hinter_core::number::i64")]
    pub lease_token: i64,
}

/// `POST /api/v1/jobs/{id}/fail` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FailBody {
    #[serde(deserialize_with = "hinter_core::number::i64")]
    pub lease_token: i64,
    /// What went wrong; kept (bounded) in the job's `errors`.
    pub error: String,
    /// `false`: the failure is permanent, the job goes `dead` at once. Default `true`.
    #[serde(default = "default_true")]
    pub retry: bool,
    /// The exit code of the command that ran the attempt, if one ran and exited; kept in the
    /// attempt's record (`runs`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "hinter_core::number::opt_i32"
    )]
    pub exit_code: Option<i32>,
}

fn default_true() -> bool {
    true
}

/// The most outcomes one `POST /api/v1/outcomes` may carry: as many as one lease hands out.
pub const MAX_OUTCOMES: usize = 1000;

/// What became of a leased job's attempt, in [`OutcomeItem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// As `POST /api/v1/jobs/{id}/complete`: the attempt succeeded, with an optional `result`.
    Complete,
    /// As `POST /api/v1/jobs/{id}/fail`: the attempt failed with `error`; the retry policy
    /// decides what follows (`retry: false` makes it permanent).
    Fail,
    /// As `POST /api/v1/jobs/{id}/release`: back to the queue, the attempt not counted.
    Release,
}

impl OutcomeKind {
    /// The name on the wire: `complete`, `fail` or `release`.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Complete => "complete",
            OutcomeKind::Fail => "fail",
            OutcomeKind::Release => "release",
        }
    }
}

/// `POST /api/v1/outcomes` body: the outcomes of many leased jobs in one request, each
/// applied as its one-job route would (and answered on its own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OutcomesBody {
    /// 1 to 1000 outcomes, each of a different job.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 1000))]
    pub outcomes: Vec<OutcomeItem>,
}

/// One job's outcome in [`OutcomesBody`]. `result` goes only with `complete`; `error`
/// (required), `retry` and `exit_code` only with `fail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OutcomeItem {
    pub id: Uuid,
    #[serde(deserialize_with = "hinter_core::number::i64")]
    pub lease_token: i64,
    pub outcome: OutcomeKind,
    /// `complete` only: any JSON, kept as the job's `result`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// `fail` only, and required there: what went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `fail` only: `false` makes the failure permanent. Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<bool>,
    /// `fail` only: the exit code of the command that ran the attempt.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "hinter_core::number::opt_i32"
    )]
    pub exit_code: Option<i32>,
}

impl OutcomeItem {
    /// A `complete` outcome.
    pub fn complete(id: Uuid, lease_token: i64, result: Option<Value>) -> Self {
        Self::new(id, lease_token, OutcomeKind::Complete, result)
    }

    /// A `fail` outcome.
    pub fn fail(
        id: Uuid,
        lease_token: i64,
        error: impl Into<String>,
        retry: bool,
        exit_code: Option<i32>,
    ) -> Self {
        Self {
            error: Some(error.into()),
            retry: Some(retry),
            exit_code,
            ..Self::new(id, lease_token, OutcomeKind::Fail, None)
        }
    }

    /// A `release` outcome.
    pub fn release(id: Uuid, lease_token: i64) -> Self {
        Self::new(id, lease_token, OutcomeKind::Release, None)
    }

    fn new(id: Uuid, lease_token: i64, outcome: OutcomeKind, result: Option<Value>) -> Self {
        Self {
            id,
            lease_token,
            outcome,
            result,
            error: None,
            retry: None,
            exit_code: None,
        }
    }
}

/// `POST /api/v1/outcomes` answer: one item per outcome asked, in the same order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutcomesAnswer {
    pub outcomes: Vec<OutcomeAnswer>,
}

/// How one outcome went: `status` is what its one-job route would have answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutcomeAnswer {
    pub id: Uuid,
    /// 200 applied; 404 no such job; 409 the lease token is not current (nothing changed);
    /// 413 / 422 the result was refused (too large, too deep); 503 the store could not
    /// answer for it.
    #[cfg_attr(feature = "openapi", schema(minimum = 200, maximum = 599))]
    pub status: u16,
    /// With 200: the job's state after the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,
    /// With any other status: what went wrong, as an error answer's `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// `POST /api/v1/jobs/{id}/report` answer: how many log lines were appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Logged {
    pub logged: u64,
}

/// `PUT /api/v1/workers/{id}` body: what a worker says of itself. The server adds the role
/// (`worker`) and the time it heard from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WorkerReport {
    /// 1 to 200 characters, no NUL.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")
    )]
    pub host: String,
    /// 0 to 4294967295 (an unsigned 32-bit number).
    #[serde(deserialize_with = "hinter_core::number::u32")]
    #[cfg_attr(feature = "openapi", schema(value_type = i64, minimum = 0, maximum = 4294967295_i64))]
    pub pid: u32,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<hinter_core::openapi::Name>))]
    pub queues: Vec<String>,
    /// 0 to 4294967295 (an unsigned 32-bit number).
    #[serde(deserialize_with = "hinter_core::number::u32")]
    #[cfg_attr(feature = "openapi", schema(value_type = i64, minimum = 0, maximum = 4294967295_i64))]
    pub concurrency: u32,
    pub started_at: DateTime<Utc>,
}

/// A live process, and whether it is the elected leader that runs maintenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerView {
    #[serde(flatten)]
    pub process: ProcessInfo,
    pub leader: bool,
}

/// `GET /api/v1/workers` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerList {
    pub workers: Vec<WorkerView>,
}

// ---------------------------------------------------------------------------------------
// Events, queues, audit, health

/// `GET /api/v1/events` answer: a page of the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventsPage {
    pub events: Vec<JobEvent>,
    /// Pass back as `after` for the next page. Past the last event when a filter skipped
    /// entries after it; never past an event not yet returned.
    pub next_after: i64,
}

/// `GET /api/v1/queues` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueList {
    pub queues: Vec<QueueInfo>,
}

/// `POST /api/v1/queues/{name}/purge` body (optional: an empty body purges all three).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PurgeBody {
    /// Finished states to delete (`succeeded`, `dead`, `cancelled`; at least one); absent:
    /// all three.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<FinishedState>>, min_items = 1))]
    pub states: Option<Vec<JobState>>,
}

/// A state a job ends in: what a purge may delete (the document's name for the subset of
/// [`JobState`] that `PurgeBody::states` takes).
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum FinishedState {
    Succeeded,
    Dead,
    Cancelled,
}

/// `POST /api/v1/queues/{name}/purge` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Purged {
    pub queue: String,
    pub states: Vec<JobState>,
    pub deleted: u64,
}

/// `GET /api/v1/audit` answer: a page of the audit record, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass back as `before` for older entries; `null` at the oldest.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub next_before: Option<i64>,
}

/// `status` of `/healthz` and `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// `/healthz`: the process runs.
    Ok,
    /// `/readyz` 200: started, and the store answers.
    Ready,
    /// `/readyz` 503: starting or stopping, or the store does not answer; `reason` says.
    NotReady,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Ok => "ok",
            HealthStatus::Ready => "ready",
            HealthStatus::NotReady => "not_ready",
        }
    }
}

/// `/healthz` and `/readyz` answers (`hinter_client::Health`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Status {
    /// One of [`HealthStatus`]; read as text, so a client meets statuses newer than itself.
    #[cfg_attr(feature = "openapi", schema(value_type = HealthStatus))]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the store reports besides readiness (SQLite: the WAL size and its bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub details: Option<serde_json::Map<String, Value>>,
}

// ---------------------------------------------------------------------------------------
// Schedules

/// How many next fire times a schedule shows.
pub const NEXT_FIRE_TIMES: usize = 5;

/// A schedule as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleView {
    #[serde(flatten)]
    pub schedule: Schedule,
    /// The next fire times (none while paused).
    pub next_fire_times: Vec<DateTime<Utc>>,
}

impl From<Schedule> for ScheduleView {
    fn from(schedule: Schedule) -> Self {
        Self {
            next_fire_times: schedule.next_fire_times(NEXT_FIRE_TIMES),
            schedule,
        }
    }
}

/// `GET /api/v1/schedules` answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
}

/// `GET /api/v1/schedules/{name}/occurrences` answer, latest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OccurrenceList {
    pub occurrences: Vec<Occurrence>,
    /// Pass as `before=` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<DateTime<Utc>>,
}

/// Schemas the document lists besides those the routes name (feature `openapi`).
#[cfg(feature = "openapi")]
pub mod openapi {
    /// The summary's documented-only fields, merged into `JobSummary` by the server's
    /// document builder.
    pub fn job_summary_more() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <super::JobSummaryMore as utoipa::PartialSchema>::schema()
    }
}
