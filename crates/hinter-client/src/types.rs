//! Request and answer bodies of the HTTP API, as the client sends and reads them.
//!
//! They are `hinter-wire`'s (shared with the server, so both sides read and write one
//! definition) and hinter-core's (jobs, events, queues), re-exported here under the names
//! this crate has always used. What stays here is the client's own: the listing filter,
//! what a heartbeat may carry, the lease answer read job by job, and the schedule view.
//!
//! Kept lenient on purpose, for servers newer or older than the client: every answer
//! ignores fields it does not know; [`JobSummary`], [`QueueInfo`] and [`Page`] give fields
//! an older server does not send their defaults; error and health codes are read as text;
//! a lease answer is read one job at a time ([`Leased::unreadable`]); and [`ScheduleInfo`]
//! is a flat view that ignores unknown fields (the server's `ScheduleView` flattens a spec
//! that refuses them).

use chrono::{DateTime, Utc};
use hinter_core::store::Include;
use hinter_core::JobState;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use hinter_core::store::{HeartbeatAck, QueueInfo};
pub use hinter_wire::{Enqueued, Status as Health};
pub use hinter_wire::{
    EventsPage, JobSummary, LeaseRequest, OccurrenceList as OccurrencePage, Page, WorkerReport,
};
pub use hinter_wire::{OutcomeAnswer, OutcomeItem, OutcomeKind, MAX_OUTCOMES};

pub(crate) use hinter_wire::{
    BatchRequest, BatchResponse as BatchAnswer, CompleteBody, FailBody, HeartbeatBody,
    OutcomesAnswer, QueueList as QueuesAnswer, ReleaseBody,
};

/// The body of `POST /api/v1/jobs`: one job to enqueue. Only `job` is required; unset options
/// fall back to the job's definition on the server, then to hinter's defaults. It is the
/// server's own [`hinter_core::JobSpec`], sent with only the options that are set.
pub type EnqueueRequest = hinter_core::JobSpec;

/// Filters of `GET /api/v1/jobs`. Unset fields do not filter; `limit` defaults to 100 on the
/// server (1…1000).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub queue: Option<String>,
    pub job: Option<String>,
    pub limit: Option<u32>,
    /// What the summaries hold beyond their fixed fields.
    pub include: Include,
}

impl JobFilter {
    pub fn state(mut self, state: JobState) -> Self {
        self.state = Some(state);
        self
    }
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }
    pub fn job(mut self, job: impl Into<String>) -> Self {
        self.job = Some(job.into());
        self
    }
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }
    pub fn include(mut self, include: Include) -> Self {
        self.include = include;
        self
    }
}

/// Items stay raw so that one job this client cannot read does not hide the others.
#[derive(Deserialize)]
pub(crate) struct LeaseAnswer {
    pub jobs: Vec<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    pub outcomes: Option<Vec<hinter_wire::OutcomeAnswer>>,
}

/// Just enough of a leased job to hand it back: read without building its payload, so it
/// succeeds however deeply the payload nests.
#[derive(Deserialize)]
pub(crate) struct LeaseHandle {
    pub id: uuid::Uuid,
    pub lease_token: i64,
}

/// The answer to a lease: the jobs, and any the client could not read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Leased {
    pub jobs: Vec<hinter_core::LeasedJob>,
    /// Leased to this worker but unreadable (say, a payload nested deeper than the JSON
    /// parser allows). The caller should report them (`fail`) at once, so that they do not
    /// wait for their lease to expire and other jobs are not held up.
    pub unreadable: Vec<UnreadableJob>,
    /// With [`LeaseRequest::outcomes`]: one answer each, in order, as
    /// [`crate::Client::outcomes`] gives them.
    pub outcomes: Vec<hinter_wire::OutcomeAnswer>,
}

/// A leased job whose body could not be read; see [`Leased::unreadable`].
#[derive(Debug, Clone, PartialEq)]
pub struct UnreadableJob {
    pub id: uuid::Uuid,
    pub lease_token: i64,
    /// Why it could not be read.
    pub error: String,
}

/// What a heartbeat may carry besides the lease extension ([`crate::Client::heartbeat_with`]):
/// every part optional, stored under the same lease token as the extension.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HeartbeatReport {
    /// Replaces the job's progress (0 to 100, and a message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<hinter_core::ProgressUpdate>,
    /// Replaces the job's checkpoint; the next attempt is handed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Value>,
    /// Appended to the attempt's log.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<hinter_core::NewLogLine>,
}

impl HeartbeatReport {
    /// Progress of `percent` (0 to 100) with an optional message.
    pub fn progress(mut self, percent: f64, message: Option<&str>) -> Self {
        self.progress = Some(hinter_core::ProgressUpdate::new(
            percent,
            message.map(str::to_string),
        ));
        self
    }

    /// A checkpoint to resume from.
    pub fn checkpoint(mut self, checkpoint: Value) -> Self {
        self.checkpoint = Some(checkpoint);
        self
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hinter_core::{Job, JobSpec};
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn enqueue_request_sends_only_what_is_set() {
        let req = EnqueueRequest::new("thumbnail", json!({"src": "a.png"}));
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            json!({"job": "thumbnail", "payload": {"src": "a.png"}})
        );
        let req = EnqueueRequest::new("mail", Value::Null)
            .queue("mailers")
            .priority(5)
            .delay(Duration::from_secs(30))
            .max_attempts(3)
            .unique("img-42", Some(Duration::from_secs(600)))
            .ordering_key("customer-7")
            .timeout(Duration::from_millis(1500));
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            json!({"job": "mail", "payload": null, "queue": "mailers", "priority": 5,
                   "delay": "30s", "max_attempts": 3, "unique_key": "img-42",
                   "unique_for": "10m", "ordering_key": "customer-7", "timeout": "1500ms"})
        );
    }

    #[test]
    fn enqueue_request_round_trips_through_job_spec() {
        let req = EnqueueRequest::new("mail", json!([1, 2]))
            .run_at("2026-11-24T10:00:00Z".parse().unwrap())
            .unique("k", None)
            .timeout(Duration::from_secs(300))
            .reply_to("replies", Some("order-7".into()))
            .callback_url("https://example.com/done");
        let spec: JobSpec = serde_json::from_value(serde_json::to_value(&req).unwrap()).unwrap();
        assert_eq!(spec, req, "the client sends the type the server reads");
    }

    #[test]
    fn lease_request_uses_duration_strings() {
        let req = LeaseRequest::new("host-1:4711")
            .queues(["a", "b"])
            .max(10)
            .lease(Duration::from_secs(60))
            .wait(Duration::from_secs(20));
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            json!({"queues": ["a", "b"], "worker_id": "host-1:4711", "max": 10,
                   "lease": "1m", "wait": "20s"})
        );
    }

    #[test]
    fn reads_the_documented_job_object() {
        let body = json!({
            "id": "0192f1c2-0000-7000-8000-000000000000", "job": "thumbnail", "queue": "default",
            "payload": {"src": "a.png"}, "state": "queued", "priority": 0, "attempt": 0,
            "max_attempts": 10, "run_at": "2026-11-24T10:00:00Z",
            "created_at": "2026-11-24T10:00:00Z", "started_at": null, "finished_at": null,
            "unique_key": null, "ordering_key": null, "timeout": "5m", "singleton": false,
            "cancel_requested": false, "worker_id": null, "lease_expires_at": null,
            "errors": [{"attempt": 1, "at": "2026-11-24T10:00:01Z", "message": "boom"}],
            "result": null
        });
        let page: Page =
            serde_json::from_value(json!({"jobs": [body], "next_cursor": "42"})).unwrap();
        assert_eq!(page.next_cursor.as_deref(), Some("42"));
        assert_eq!(page.jobs[0].state, JobState::Queued);
        assert_eq!(page.jobs[0].timeout, Some(Duration::from_secs(300)));
        let errors = page.jobs[0].errors.as_ref().expect("errors included");
        assert_eq!(errors[0].message, "boom");

        let mut with_runs = body.clone();
        with_runs["runs"] = json!([{
            "attempt": 1, "worker_id": "host-1:4711", "started_at": "2026-11-24T10:00:00Z",
            "finished_at": "2026-11-24T10:00:01Z", "outcome": "failed", "error": "boom",
            "exit_code": 3, "duration_ms": 1000
        }]);
        let job: Job = serde_json::from_value(with_runs).unwrap();
        assert_eq!(job.runs[0].outcome, hinter_core::RunOutcome::Failed);
        assert_eq!(
            (job.runs[0].exit_code, job.runs[0].duration_ms),
            (Some(3), Some(1000))
        );
        let job: Job = serde_json::from_value(body.clone()).unwrap();
        assert!(
            job.runs.is_empty(),
            "a server without runs answers without them"
        );

        let mut summary = body.clone();
        let fields = summary.as_object_mut().unwrap();
        for gone in ["payload", "result", "errors"] {
            fields.remove(gone);
        }
        fields.insert("error_count".into(), json!(1));
        fields.insert(
            "last_error".into(),
            json!({"attempt": 1, "at": "2026-11-24T10:00:01Z", "message": "boom"}),
        );
        let page: Page = serde_json::from_value(json!({"jobs": [summary]})).unwrap();
        let job = &page.jobs[0];
        assert_eq!((job.payload.as_ref(), job.errors.as_ref()), (None, None));
        assert_eq!(job.error_count, 1);
        assert_eq!(job.last_error.as_ref().map(|e| e.attempt), Some(1));
        assert_eq!(
            serde_json::to_value(job).unwrap().get("payload"),
            None,
            "what was not listed is not printed"
        );
    }
}

/// A schedule as the API shows it (`GET /api/v1/schedules/{name}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    pub time_zone: String,
    pub job: String,
    #[serde(default)]
    pub payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    pub overlap: hinter_core::schedule::Overlap,
    pub misfire: hinter_core::schedule::Misfire,
    pub paused: bool,
    pub source: String,
    #[serde(default)]
    pub next_fire_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The next fire times (none while paused).
    #[serde(default)]
    pub next_fire_times: Vec<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SchedulesAnswer {
    pub schedules: Vec<ScheduleInfo>,
}
