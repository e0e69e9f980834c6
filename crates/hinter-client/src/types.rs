//! Request and answer bodies of the HTTP API, as the client sends and reads them.
//!
//! Jobs themselves are [`hinter_core::Job`] and [`hinter_core::LeasedJob`]; the types here are
//! the ones hinter-core does not provide in a form that can be sent or read.

use chrono::{DateTime, Utc};
use hinter_core::job::opt_duration;
use hinter_core::store::Include;
use hinter_core::{AttemptError, Job, JobSpec, JobState, Run};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

/// The body of `POST /api/v1/jobs`: one job to enqueue. Only `job` is required; unset options
/// fall back to the job's definition on the server, then to hinter's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EnqueueRequest {
    /// The job definition's name.
    pub job: String,
    /// Any JSON; `null` when not given.
    pub payload: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// −1000…1000, higher runs first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Run no earlier than this; excludes `delay`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    /// Run no earlier than this long from now; excludes `run_at`.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub delay: Option<Duration>,
    /// 1…1000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// A second enqueue with the same job name and key is a duplicate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    /// How long after the first enqueue duplicates are recognised (requires `unique_key`);
    /// unset: while the first job is unfinished.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub unique_for: Option<Duration>,
    /// Jobs with the same key in a queue run one at a time, in enqueue order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    /// Longest one attempt may run.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// A queue that gets a reply message (`hinter.reply`) when the job finishes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Carried by the reply message and the callback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// An http(s) URL that gets a signed POST with the outcome when the job finishes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

impl EnqueueRequest {
    /// A job with every option left to the server's defaults.
    pub fn new(job: impl Into<String>, payload: Value) -> Self {
        Self {
            job: job.into(),
            payload,
            ..Self::default()
        }
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
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
    /// When the job finishes, put a reply message on `queue`, carrying `correlation_id`.
    pub fn reply_to(mut self, queue: impl Into<String>, correlation_id: Option<String>) -> Self {
        self.reply_to = Some(queue.into());
        self.correlation_id = correlation_id;
        self
    }
    /// When the job finishes, post its outcome to `url`.
    pub fn callback_url(mut self, url: impl Into<String>) -> Self {
        self.callback_url = Some(url.into());
        self
    }
}

impl From<JobSpec> for EnqueueRequest {
    fn from(spec: JobSpec) -> Self {
        Self {
            job: spec.job,
            payload: spec.payload,
            queue: spec.queue,
            priority: spec.priority,
            run_at: spec.run_at,
            delay: spec.delay,
            max_attempts: spec.max_attempts,
            unique_key: spec.unique_key,
            unique_for: spec.unique_for,
            ordering_key: spec.ordering_key,
            timeout: spec.timeout,
            reply_to: spec.reply_to,
            correlation_id: spec.correlation_id,
            callback_url: spec.callback_url,
        }
    }
}

/// The answer to an enqueue: the job, and whether it is an earlier job with the same
/// `unique_key` (then nothing new was enqueued).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enqueued {
    pub duplicate: bool,
    pub job: Job,
}

/// One job of a listing: every field of a [`Job`], but `payload`, `result` and `errors` only
/// when the listing asked for them ([`JobFilter::include`]); `error_count` and `last_error`
/// always. `Client::get_job` has the whole job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub unique_key: Option<String>,
    pub ordering_key: Option<String>,
    #[serde(default, with = "opt_duration")]
    pub timeout: Option<Duration>,
    pub singleton: bool,
    pub cancel_requested: bool,
    pub worker_id: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// How many failed attempts the error history holds.
    #[serde(default)]
    pub error_count: u32,
    /// The latest error, its message cut to 500 characters.
    #[serde(default)]
    pub last_error: Option<AttemptError>,
    /// Only with `include` payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// Only with `include` result (and then `None` too while the job has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Only with `include` errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<AttemptError>>,
    /// Only with `include` runs: the job's attempts, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<Vec<Run>>,
}

/// One page of the event log (`GET /api/v1/events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsPage {
    pub events: Vec<hinter_core::JobEvent>,
    /// Pass back as `after` for the next page.
    pub next_after: i64,
}

/// One page of a job listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    pub jobs: Vec<JobSummary>,
    /// Pass back as the cursor for the next page; `None` on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

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

/// The body of `POST /api/v1/leases`: ask for jobs to work on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseRequest {
    /// Queues to take jobs from; the server's default is `["default"]`.
    pub queues: Vec<String>,
    /// Only jobs of these names (a worker that runs only some); empty: any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<String>,
    /// Who holds the lease (shown in job listings), e.g. `host-1:4711`.
    pub worker_id: String,
    /// 1…1000 jobs at most.
    pub max: u32,
    /// How long the lease lasts without a heartbeat (1s…1h; server default 60s).
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub lease: Option<Duration>,
    /// Long-poll up to this long (0…60s) when no job is ready; unset: answer at once.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub wait: Option<Duration>,
}

impl LeaseRequest {
    /// One job from the `default` queue, answered at once.
    pub fn new(worker_id: impl Into<String>) -> Self {
        Self {
            queues: vec![hinter_core::DEFAULT_QUEUE.to_string()],
            jobs: Vec::new(),
            worker_id: worker_id.into(),
            max: 1,
            lease: None,
            wait: None,
        }
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

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    pub lease_expires_at: DateTime<Utc>,
    /// The job was cancelled: stop it and call `fail`.
    pub cancel_requested: bool,
}

/// A queue with its job counts per state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueInfo {
    pub name: String,
    pub paused: bool,
    #[serde(default)]
    pub scheduled: u64,
    #[serde(default)]
    pub queued: u64,
    #[serde(default)]
    pub running: u64,
    #[serde(default)]
    pub succeeded: u64,
    #[serde(default)]
    pub dead: u64,
    #[serde(default)]
    pub cancelled: u64,
    /// The `run_at` of the longest-waiting queued job; `None` when nothing is queued.
    #[serde(default)]
    pub oldest_queued_at: Option<DateTime<Utc>>,
}

/// The answer of `/healthz` or `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`, `ready` or `not_ready`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

// Bodies only the client sends.

#[derive(Serialize)]
pub(crate) struct BatchRequest<'a> {
    pub jobs: &'a [EnqueueRequest],
}

#[derive(Deserialize)]
pub(crate) struct BatchAnswer {
    pub jobs: Vec<Enqueued>,
}

/// Items stay raw so that one job this client cannot read does not hide the others.
#[derive(Deserialize)]
pub(crate) struct LeaseAnswer {
    pub jobs: Vec<Box<serde_json::value::RawValue>>,
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
}

/// A leased job whose body could not be read; see [`Leased::unreadable`].
#[derive(Debug, Clone, PartialEq)]
pub struct UnreadableJob {
    pub id: uuid::Uuid,
    pub lease_token: i64,
    /// Why it could not be read.
    pub error: String,
}

#[derive(Deserialize)]
pub(crate) struct QueuesAnswer {
    pub queues: Vec<QueueInfo>,
}

#[derive(Serialize)]
pub(crate) struct HeartbeatBody<'a> {
    pub lease_token: i64,
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub lease: Option<Duration>,
    #[serde(flatten)]
    pub report: Option<&'a HeartbeatReport>,
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

#[derive(Serialize)]
pub(crate) struct CompleteBody<'a> {
    pub lease_token: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<&'a Value>,
}

/// `PUT /api/v1/workers/{id}` body: a worker process as it reports itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerReport {
    pub host: String,
    pub pid: u32,
    pub queues: Vec<String>,
    pub concurrency: u32,
    pub started_at: DateTime<Utc>,
}

#[derive(Serialize)]
pub(crate) struct ReleaseBody {
    pub lease_token: i64,
}

#[derive(Serialize)]
pub(crate) struct FailBody<'a> {
    pub lease_token: i64,
    pub error: &'a str,
    pub retry: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

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
        assert_eq!(EnqueueRequest::from(spec), req);
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

/// A page of a schedule's history, latest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OccurrencePage {
    pub occurrences: Vec<hinter_core::schedule::Occurrence>,
    /// Pass as `before` for the next (older) page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<DateTime<Utc>>,
}
