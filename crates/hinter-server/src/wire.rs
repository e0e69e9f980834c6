//! Request and response bodies as they appear on the wire (see `docs/http-api.md`).

use hinter_core::job::opt_duration;
use hinter_core::store::QueueInfo;
use hinter_core::{Job, LeasedJob};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use std::time::Duration;

/// `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    pub code: &'static str,
    pub message: String,
}

/// Answer to an enqueue, and one item of a batch answer.
#[derive(Debug, Serialize)]
pub struct Enqueued {
    pub duplicate: bool,
    pub job: Job,
}

/// `POST /api/v1/jobs/batch` body; items are kept raw so each can be size-checked and
/// parsed with its index in error messages.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest<'a> {
    #[serde(borrow)]
    pub jobs: Vec<&'a RawValue>,
}

/// `POST /api/v1/jobs/batch` answer.
#[derive(Debug, Serialize)]
pub struct BatchResponse {
    pub jobs: Vec<Enqueued>,
}

/// `GET /api/v1/jobs/{id}` query.
#[derive(Debug, Default, Deserialize)]
pub struct GetJobQuery {
    pub wait: Option<String>,
}

/// `GET /api/v1/jobs` query; every value is parsed by hand to name the bad one.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    pub state: Option<String>,
    pub queue: Option<String>,
    pub job: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
    /// Comma-separated: `payload`, `result`, `errors`.
    pub include: Option<String>,
}

/// `GET /api/v1/jobs` answer. Each job is a summary: every field of a [`Job`] but
/// `payload`, `result` and `errors` (each there only when asked for with `include`), plus
/// `error_count` and `last_error`.
#[derive(Debug, Serialize)]
pub struct JobList {
    pub jobs: Vec<Value>,
    pub next_cursor: Option<String>,
}

/// `POST /api/v1/leases` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseBody {
    #[serde(default)]
    pub queues: Option<Vec<String>>,
    /// Only jobs of these names; absent or empty: any.
    #[serde(default)]
    pub jobs: Option<Vec<String>>,
    pub worker_id: String,
    #[serde(default)]
    pub max: Option<u32>,
    #[serde(default, with = "opt_duration")]
    pub lease: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub wait: Option<Duration>,
}

/// `POST /api/v1/leases` answer.
#[derive(Debug, Serialize)]
pub struct Leases {
    pub jobs: Vec<LeasedJob>,
}

/// `POST /api/v1/jobs/{id}/heartbeat` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    pub lease_token: i64,
    #[serde(default, with = "opt_duration")]
    pub lease: Option<Duration>,
    /// Replaces the job's progress, with the lease extension.
    #[serde(default)]
    pub progress: Option<hinter_core::ProgressUpdate>,
    /// Replaces the job's checkpoint (the next attempt is handed it).
    #[serde(default)]
    pub checkpoint: Option<Value>,
    /// Appended to the attempt's log (as in `POST /api/v1/jobs/{id}/report`).
    #[serde(default)]
    pub logs: Vec<hinter_core::NewLogLine>,
}

impl HeartbeatBody {
    /// The report this heartbeat carries, if it carries anything besides the lease.
    pub fn report(
        &self,
        id: uuid::Uuid,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<hinter_core::JobReport> {
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    pub lease_token: i64,
    #[serde(default)]
    pub result: Option<Value>,
}

/// `POST /api/v1/jobs/{id}/release` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    pub lease_token: i64,
}

/// `POST /api/v1/jobs/{id}/fail` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailBody {
    pub lease_token: i64,
    pub error: String,
    #[serde(default = "default_true")]
    pub retry: bool,
    /// The exit code of the command that ran the attempt, if one ran and exited; kept in the
    /// attempt's record (`runs`).
    #[serde(default)]
    pub exit_code: Option<i32>,
}

fn default_true() -> bool {
    true
}

/// `GET /api/v1/queues` answer.
#[derive(Debug, Serialize)]
pub struct QueueList {
    pub queues: Vec<QueueInfo>,
}

/// `/healthz` and `/readyz` answers.
#[derive(Debug, Serialize)]
pub struct Status {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the store reports besides readiness (SQLite: the WAL size and its bound).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Map<String, Value>>,
}
