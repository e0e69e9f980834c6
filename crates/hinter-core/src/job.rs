//! Jobs and their states.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::{fmt, str::FromStr, time::Duration};
use uuid::Uuid;

/// The queue a job goes to when neither the job nor its definition names one.
pub const DEFAULT_QUEUE: &str = "default";

/// Where a job is in its life. See `docs/state-machine.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for `run_at` (a delay or a retry backoff).
    Scheduled,
    /// Ready to be leased.
    Queued,
    /// Leased by a worker.
    Running,
    Succeeded,
    /// Attempts used up or failed permanently: the dead-letter set.
    Dead,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Scheduled,
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Dead,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// True once the job will not run again on its own.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of [`JobState::ALL`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown job state {0:?}: expected one of scheduled, queued, running, succeeded, dead, cancelled")]
pub struct UnknownState(pub String);

impl FromStr for JobState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

/// One failed attempt, kept in the job's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptError {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub message: String,
}

/// How an attempt ended, as far as the attempt itself is concerned; the job's state says
/// what followed (a retry, `dead`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RunOutcome {
    /// Leased and not finished yet.
    Running,
    /// Completed.
    Succeeded,
    /// Failed: an error of the handler or command, a timeout, or a lease that expired and
    /// was rescued. `error` says which.
    Failed,
    /// Stopped because the job was cancelled; the job ended `cancelled`.
    Cancelled,
    /// Handed back unfinished (graceful stop): the attempt was not counted.
    Released,
}

impl RunOutcome {
    pub const ALL: [RunOutcome; 5] = [
        RunOutcome::Running,
        RunOutcome::Succeeded,
        RunOutcome::Failed,
        RunOutcome::Cancelled,
        RunOutcome::Released,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Running => "running",
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Failed => "failed",
            RunOutcome::Cancelled => "cancelled",
            RunOutcome::Released => "released",
        }
    }
}

impl fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunOutcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("unknown run outcome {s:?}"))
    }
}

/// One attempt of a job: who ran it, when, and how it ended. Written by the store in the
/// same transaction as the job's state change (lease, complete, fail, release).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Run {
    /// The job's attempt number during this run. A released attempt is not counted, so the
    /// next run has the same number.
    pub attempt: u32,
    /// The worker that held the lease.
    pub worker_id: String,
    pub started_at: DateTime<Utc>,
    /// `None` while running.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: RunOutcome,
    /// The failure's message, bounded as in `errors`.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub error: Option<String>,
    /// The command's exit code, when a command ran and exited.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub exit_code: Option<i32>,
    /// `finished_at - started_at` in whole milliseconds.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub duration_ms: Option<u64>,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Job {
    pub id: Uuid,
    /// The job definition's name.
    pub job: String,
    pub queue: String,
    pub payload: Value,
    pub state: JobState,
    pub priority: i32,
    /// Attempts taken so far (counted when a job is leased).
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
    #[serde(with = "opt_duration")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::openapi::DurationText>, required = true))]
    pub timeout: Option<Duration>,
    pub singleton: bool,
    pub cancel_requested: bool,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub worker_id: Option<String>,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Errors of failed attempts, oldest first: the first and last ones when there were
    /// many (see [`crate::limits`]), each cut to a bounded length.
    pub errors: Vec<AttemptError>,
    /// How many errors were dropped from the middle of `errors` to keep it bounded.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub errors_omitted: u64,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub result: Option<Value>,
    /// Its attempts, oldest first. Read by `Store::job_get` (and `Store::job_runs`); empty
    /// in listings and in the answers of other operations.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub runs: Vec<Run>,
    /// The last progress an attempt reported (script jobs: `::progress::`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub progress: Option<crate::Progress>,
    /// The last checkpoint an attempt saved (`::checkpoint::`), handed to the next attempt.
    /// Read by `Store::job_get`; `None` in listings.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub checkpoint: Option<Value>,
    /// The queue that gets a reply message when the job finishes ([`crate::followup`]).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub reply_to: Option<String>,
    /// Given at enqueue; carried by the reply message and the callback.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub correlation_id: Option<String>,
    /// Gets a signed POST with the outcome when the job finishes ([`crate::followup`]).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub callback_url: Option<String>,
    /// For a reply message or a callback delivery: the job whose outcome it carries.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub parent_id: Option<Uuid>,
    /// The reply messages and callback deliveries this job sent when it finished, each with
    /// its runs (one per delivery attempt). Filled in by `GET /api/v1/jobs/{id}`
    /// ([`crate::Store::job_followups`]); empty, and left out, everywhere else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(no_recursion))]
    pub followups: Vec<Job>,
    /// Position in enqueue order; the cursor of job listings.
    #[serde(skip)]
    pub seq: i64,
}

/// A job to insert. Defaults (queue, attempts, singleton) are resolved before it reaches the
/// store, so the store only stores.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub id: Uuid,
    pub job: String,
    pub queue: String,
    pub payload: Value,
    pub priority: i32,
    /// `None`: run now (`queued`); in the future: `scheduled`.
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: u32,
    pub unique_key: Option<String>,
    /// With a `unique_key`: how long after the first enqueue a duplicate is recognised.
    /// `None` means "while the first job is not finished".
    pub unique_for: Option<Duration>,
    pub ordering_key: Option<String>,
    pub timeout: Option<Duration>,
    pub singleton: bool,
    /// Queue of the reply message sent when the job finishes ([`crate::followup`]).
    pub reply_to: Option<String>,
    pub correlation_id: Option<String>,
    /// Where the outcome is posted when the job finishes ([`crate::followup`]).
    pub callback_url: Option<String>,
    /// Set on follow-ups: the job whose outcome this one carries.
    pub parent_id: Option<Uuid>,
}

impl NewJob {
    /// The job a store answers for this one once inserted: in `state` from `run_at` (both
    /// as the store decided and stored them), created at `now` under `seq`, its timeout at
    /// the whole milliseconds the stores keep.
    pub fn into_inserted(
        self,
        seq: i64,
        state: JobState,
        run_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Job {
        Job {
            id: self.id,
            job: self.job,
            queue: self.queue,
            payload: self.payload,
            state,
            priority: self.priority,
            attempt: 0,
            max_attempts: self.max_attempts,
            run_at,
            created_at: now,
            started_at: None,
            finished_at: None,
            unique_key: self.unique_key,
            ordering_key: self.ordering_key,
            timeout: self.timeout.map(|t| {
                let ms = t.as_millis().min(i64::MAX as u128);
                Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
            }),
            singleton: self.singleton,
            cancel_requested: false,
            worker_id: None,
            lease_expires_at: None,
            errors: Vec::new(),
            errors_omitted: 0,
            runs: Vec::new(),
            result: None,
            progress: None,
            checkpoint: None,
            reply_to: self.reply_to,
            correlation_id: self.correlation_id,
            callback_url: self.callback_url,
            parent_id: self.parent_id,
            followups: Vec::new(),
            seq,
        }
    }

    /// A job with every option at its default.
    pub fn new(job: impl Into<String>, payload: Value) -> Self {
        Self {
            id: Uuid::now_v7(),
            job: job.into(),
            queue: DEFAULT_QUEUE.to_string(),
            payload,
            priority: 0,
            run_at: None,
            max_attempts: crate::retry::DEFAULT_MAX_ATTEMPTS,
            unique_key: None,
            unique_for: None,
            ordering_key: None,
            timeout: None,
            singleton: false,
            reply_to: None,
            correlation_id: None,
            callback_url: None,
            parent_id: None,
        }
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }
    pub fn unique(mut self, key: impl Into<String>, window: Option<Duration>) -> Self {
        self.unique_key = Some(key.into());
        self.unique_for = window;
        self
    }
    pub fn ordering_key(mut self, key: impl Into<String>) -> Self {
        self.ordering_key = Some(key.into());
        self
    }
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
    pub fn singleton(mut self, singleton: bool) -> Self {
        self.singleton = singleton;
        self
    }
    /// When the job finishes, put a reply message ([`crate::followup::Outcome`]) on `queue`,
    /// carrying `correlation_id`.
    pub fn reply_to(mut self, queue: impl Into<String>, correlation_id: Option<String>) -> Self {
        self.reply_to = Some(queue.into());
        self.correlation_id = correlation_id;
        self
    }
    /// When the job finishes, post its outcome to `url` (signed; see docs/results.md).
    pub fn callback_url(mut self, url: impl Into<String>) -> Self {
        self.callback_url = Some(url.into());
        self
    }

    /// Checks that the job can be stored and computed with on every backend
    /// ([`crate::limits`]): stores refuse a job that fails this, whoever built it.
    pub fn check(&self) -> Result<(), crate::FieldError> {
        use crate::limits::{check_duration, check_json, check_text, check_time};
        check_text("job", &self.job)?;
        check_text("queue", &self.queue)?;
        if let Some(queue) = &self.reply_to {
            crate::definition::validate_name("reply_to", queue)?;
        }
        if let Some(url) = &self.callback_url {
            crate::followup::check_callback_url("callback_url", url)?;
        }
        for (field, value) in [
            ("unique_key", &self.unique_key),
            ("ordering_key", &self.ordering_key),
            ("correlation_id", &self.correlation_id),
        ] {
            if let Some(value) = value {
                check_text(field, value)?;
            }
        }
        for (field, value) in [("unique_for", self.unique_for), ("timeout", self.timeout)] {
            if let Some(value) = value {
                check_duration(field, value)?;
            }
        }
        if let Some(at) = self.run_at {
            check_time("run_at", at)?;
        }
        check_json("payload", &self.payload)
    }
}

/// The answer to an insert: the job, and whether it already existed (`unique_key`).
/// Serialisable, because an idempotency key keeps it ([`crate::store::IdempotentInsert`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inserted {
    pub job: Job,
    pub duplicate: bool,
}

/// A job handed to a worker together with its lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeasedJob {
    pub id: Uuid,
    pub job: String,
    pub queue: String,
    pub payload: Value,
    pub attempt: u32,
    pub max_attempts: u32,
    pub priority: i32,
    pub created_at: DateTime<Utc>,
    /// Fencing token: every heartbeat, complete and fail must present it.
    pub lease_token: i64,
    pub lease_expires_at: DateTime<Utc>,
    #[serde(with = "opt_duration")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::openapi::DurationText>, required = true))]
    pub timeout: Option<Duration>,
    /// The last checkpoint an earlier attempt saved, to resume from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Value>,
}

/// Durations on the wire are strings such as `30s`.
pub mod opt_duration {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&crate::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    /// A string (`"30s"`) or a number of seconds (`30`, `0.5`). Numbers are read through their
    /// decimal text, so `0.1` is exactly 100 ms; every bound of [`crate::parse_duration`]
    /// applies to both forms.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<serde_json::Value>::deserialize(d)? {
            None => Ok(None),
            Some(serde_json::Value::String(t)) => crate::parse_duration(&t)
                .map(Some)
                .map_err(D::Error::custom),
            Some(serde_json::Value::Number(n)) => {
                // `1e19` is a number too; Rust prints floats without exponents.
                let text = n.to_string();
                let text = match n.as_f64() {
                    Some(f) if text.contains(['e', 'E']) => format!("{f}"),
                    _ => text,
                };
                crate::parse_duration(&text)
                    .map(Some)
                    .map_err(D::Error::custom)
            }
            Some(other) => Err(D::Error::custom(format!(
                "invalid duration {other}: expected a string such as \"30s\" or a number of seconds"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_outcomes_parse_and_print() {
        for outcome in RunOutcome::ALL {
            assert_eq!(outcome.as_str().parse::<RunOutcome>().unwrap(), outcome);
            assert_eq!(
                serde_json::to_value(outcome).unwrap(),
                serde_json::json!(outcome.as_str())
            );
        }
    }

    #[test]
    fn states_parse_and_print() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().unwrap(), state);
        }
        assert!("done".parse::<JobState>().is_err());
        assert!(JobState::Dead.is_finished() && !JobState::Running.is_finished());
    }
}
