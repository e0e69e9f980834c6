//! A typed async client for hinter's HTTP API (`docs/http-api.md`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), hinter_client::Error> {
//! use hinter_client::{Client, EnqueueRequest};
//! use std::time::Duration;
//!
//! let client = Client::new("http://127.0.0.1:7433", None)?;
//! let enqueued = client
//!     .enqueue(&EnqueueRequest::new("thumbnail", serde_json::json!({"src": "a.png"})))
//!     .await?;
//! let job = client
//!     .wait_for_finish(enqueued.job.id, Some(Duration::from_secs(120)))
//!     .await?;
//! println!("{} ended {}", job.id, job.state);
//! # Ok(()) }
//! ```
//!
//! Every call answers `Result<_, `[`Error`]`>`: [`Error::Api`] when the server refused the
//! request (with its status, machine code and message), [`Error::Transport`] when the server
//! could not be reached, [`Error::Decode`] when its answer was not what the API promises.
//!
//! `https://` servers are reached with rustls: their certificate must chain up to one of the
//! system's root certificates, or to a CA given with [`ClientBuilder::ca_certificate_pem`] /
//! [`ClientBuilder::ca_file`] (for a private CA or a self-signed server):
//!
//! ```no_run
//! # fn demo() -> Result<(), hinter_client::Error> {
//! let client = hinter_client::Client::builder("https://jobs.internal:7433")
//!     .token(Some("…".into()))
//!     .ca_file("/etc/hinter/ca.pem")
//!     .build()?;
//! # Ok(()) }
//! ```

mod error;
mod types;

pub use error::{Error, TlsProblem};
pub use hinter_core::schedule::{Misfire, Occurrence, Outcome, Overlap, ScheduleSpec};
pub use hinter_core::store::Include;
pub use hinter_core::{
    AttemptError, EventFilter, EventKind, Job, JobEvent, JobState, LeasedJob, ProgressUpdate, Run,
    RunOutcome,
};
pub use types::{
    EnqueueRequest, Enqueued, EventsPage, Health, HeartbeatAck, HeartbeatReport, JobFilter,
    JobSummary, LeaseRequest, Leased, OccurrencePage, OutcomeAnswer, OutcomeItem, OutcomeKind,
    Page, QueueInfo, ScheduleInfo, UnreadableJob, WorkerReport, MAX_OUTCOMES,
};

use chrono::{DateTime, Utc};
use hinter_core::format_duration;
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::time::{Duration, Instant};
use types::{
    BatchAnswer, BatchRequest, CompleteBody, FailBody, HeartbeatBody, LeaseAnswer, LeaseHandle,
    OutcomesAnswer, QueuesAnswer, ReleaseBody,
};
use uuid::Uuid;

/// Where `hinter serve` listens unless told otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7433";

/// Longest `wait` the server accepts on `GET /api/v1/jobs/{id}` and `POST /api/v1/leases`.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// How long a request may take beyond any long-poll `wait` it asks for.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times an enqueue is sent at most (the first try and its retries), unless
/// [`Client::with_enqueue_retries`] says otherwise.
pub const ENQUEUE_ATTEMPTS: u32 = 4;
/// The wait before an enqueue's first retry; it doubles for each next one (with jitter).
pub const ENQUEUE_BACKOFF: Duration = Duration::from_millis(250);
/// Longest `Idempotency-Key` the server accepts.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

/// A handle on one hinter server. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    timeout: Duration,
    enqueue_attempts: u32,
    enqueue_backoff: Duration,
}

/// Shows the server, never the token.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base_url())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Sets up a [`Client`] with more than [`Client::new`] takes: made by [`Client::builder`].
#[derive(Clone)]
pub struct ClientBuilder {
    base_url: String,
    token: Option<String>,
    /// PEM texts of extra trusted CAs, each with where it came from (for messages).
    cas: Vec<(String, Vec<u8>)>,
    ca_files: Vec<std::path::PathBuf>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_files", &self.ca_files)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// The token sent as `Authorization: Bearer <token>` (none, or empty: no header).
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Trusts the CA certificates in `pem` (one or more `BEGIN CERTIFICATE` blocks) for
    /// `https://` servers, besides the system's root certificates.
    pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.cas.push(("(PEM text)".to_string(), pem.into()));
        self
    }

    /// As [`ClientBuilder::ca_certificate_pem`], from a PEM file, read by
    /// [`ClientBuilder::build`].
    pub fn ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.ca_files.push(path.into());
        self
    }

    /// The client. A CA file that cannot be read or holds no certificate is
    /// [`Error::InvalidCaCertificate`]; a bad URL [`Error::InvalidUrl`].
    pub fn build(self) -> Result<Client, Error> {
        let base = parse_base_url(&self.base_url)?;
        let mut cas = self.cas;
        for path in &self.ca_files {
            let pem = std::fs::read(path).map_err(|e| Error::InvalidCaCertificate {
                origin: path.display().to_string(),
                message: format!("cannot read it: {e}"),
            })?;
            cas.push((path.display().to_string(), pem));
        }
        let mut http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(CONNECT_TIMEOUT)
            // Below `hinter serve --idle-timeout`'s default (60s): a pooled connection is
            // dropped here before the server closes it, not reused as it does.
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("hinter-client/", env!("CARGO_PKG_VERSION")));
        for (source, pem) in cas {
            let invalid = |message: String| Error::InvalidCaCertificate {
                origin: source.clone(),
                message,
            };
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| invalid(format!("not valid PEM: {e}")))?;
            if certs.is_empty() {
                return Err(invalid(
                    "it holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
                ));
            }
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build().map_err(|e| Error::InvalidUrl {
            url: self.base_url.clone(),
            message: format!("cannot set up the HTTP client: {}", root_cause(&e)),
        })?;
        Ok(Client {
            http,
            base,
            token: self.token.filter(|t| !t.is_empty()),
            timeout: DEFAULT_TIMEOUT,
            enqueue_attempts: ENQUEUE_ATTEMPTS,
            enqueue_backoff: ENQUEUE_BACKOFF,
        })
    }
}

impl Client {
    /// A client for the server at `base_url` (`http://host:port` or `https://host:port`,
    /// optionally with a path prefix when the server sits behind a proxy; a missing scheme
    /// means `http://`). The `token`, if any and not empty, is sent as
    /// `Authorization: Bearer <token>`. [`Client::builder`] takes more options.
    pub fn new(base_url: impl AsRef<str>, token: Option<String>) -> Result<Self, Error> {
        Self::builder(base_url.as_ref()).token(token).build()
    }

    /// A builder for a client of the server at `base_url` (as [`Client::new`] takes it).
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            token: None,
            cas: Vec::new(),
            ca_files: Vec::new(),
        }
    }

    /// How enqueues are retried: sent at most `attempts` times in all (at least once), the
    /// first retry after `first_backoff`, doubling after that (default [`ENQUEUE_ATTEMPTS`],
    /// [`ENQUEUE_BACKOFF`]). See [`Client::enqueue`].
    pub fn with_enqueue_retries(mut self, attempts: u32, first_backoff: Duration) -> Self {
        self.enqueue_attempts = attempts.max(1);
        self.enqueue_backoff = first_backoff;
        self
    }

    /// How long a request may take beyond the long-poll `wait` it asks for
    /// (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The server's base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    // Jobs

    /// `POST /api/v1/jobs`. A `unique_key` duplicate answers the first job with
    /// `duplicate: true`.
    ///
    /// Safe to retry: the request carries a new random `Idempotency-Key`, and is sent again
    /// with the same key when the server could not be reached, the connection broke before
    /// the answer arrived, or the server answered 503 or 408 (see
    /// [`Client::with_enqueue_retries`]). A retry of a request the server did commit gets
    /// the first answer, so a lost reply never makes a second job.
    pub async fn enqueue(&self, request: &EnqueueRequest) -> Result<Enqueued, Error> {
        self.enqueue_with_key(request, &new_idempotency_key()).await
    }

    /// [`Client::enqueue`] with the caller's own `Idempotency-Key` (1 to 255 printable ASCII
    /// characters): the same key from the same token within the server's retention
    /// (`--idempotency-ttl`, 24 h by default) answers the first answer again, even across
    /// processes. The same key with a different request is a 422 `idempotency_key_reused`.
    pub async fn enqueue_with_key(
        &self,
        request: &EnqueueRequest,
        key: &str,
    ) -> Result<Enqueued, Error> {
        self.post_idempotent(self.url(&["api", "v1", "jobs"]), request, key)
            .await
    }

    /// `POST /api/v1/jobs/batch`: all jobs or none; answers in request order. Retried as
    /// [`Client::enqueue`].
    pub async fn enqueue_batch(&self, requests: &[EnqueueRequest]) -> Result<Vec<Enqueued>, Error> {
        self.enqueue_batch_with_key(requests, &new_idempotency_key())
            .await
    }

    /// [`Client::enqueue_batch`] with the caller's own `Idempotency-Key` (see
    /// [`Client::enqueue_with_key`]).
    pub async fn enqueue_batch_with_key(
        &self,
        requests: &[EnqueueRequest],
        key: &str,
    ) -> Result<Vec<Enqueued>, Error> {
        let body = BatchRequest {
            jobs: requests.to_vec(),
        };
        let answer: BatchAnswer = self
            .post_idempotent(self.url(&["api", "v1", "jobs", "batch"]), &body, key)
            .await?;
        Ok(answer.jobs)
    }

    /// `GET /api/v1/jobs/{id}`. With `wait` (at most [`MAX_WAIT`]) the server holds the answer
    /// until the job is finished or the wait is over, then answers the job as it is.
    pub async fn get_job(&self, id: Uuid, wait: Option<Duration>) -> Result<Job, Error> {
        let mut url = self.url(&["api", "v1", "jobs", &id.to_string()]);
        if let Some(wait) = wait {
            url.query_pairs_mut()
                .append_pair("wait", &format_duration(wait));
        }
        self.send(Method::GET, url, None::<&()>, wait.unwrap_or_default())
            .await
    }

    /// Waits until the job is finished (`succeeded`, `dead`, `cancelled`) or `timeout` passed
    /// (`None`: no limit), long-polling the server; answers the job as it is then.
    pub async fn wait_for_finish(&self, id: Uuid, timeout: Option<Duration>) -> Result<Job, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let wait = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => MAX_WAIT,
            }
            .min(MAX_WAIT);
            let job = self.get_job(id, Some(wait)).await?;
            let over = deadline.is_some_and(|d| Instant::now() >= d);
            if job.state.is_finished() || over {
                return Ok(job);
            }
        }
    }

    /// `GET /api/v1/events?…`: the events after `after` that match `filter`, oldest first, at
    /// most `limit` (server default 100); with `wait`, an empty answer waits up to that long
    /// for one. Pass the page's `next_after` back as `after`.
    pub async fn events(
        &self,
        after: i64,
        filter: &EventFilter,
        limit: Option<u32>,
        wait: Option<Duration>,
    ) -> Result<EventsPage, Error> {
        let mut url = self.url(&["api", "v1", "events"]);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("after", &after.to_string());
            if let Some(queue) = &filter.queue {
                query.append_pair("queue", queue);
            }
            if let Some(job) = &filter.job {
                query.append_pair("job", job);
            }
            if let Some(id) = filter.job_id {
                query.append_pair("job_id", &id.to_string());
            }
            if let Some(limit) = limit {
                query.append_pair("limit", &limit.to_string());
            }
            if let Some(wait) = wait {
                query.append_pair("wait", &format_duration(wait));
            }
        }
        self.send(Method::GET, url, None::<&()>, wait.unwrap_or_default())
            .await
    }

    /// `GET /api/v1/jobs?…`: one page of job summaries in enqueue order. Pass the page's
    /// `next_cursor` back as `cursor` for the next one.
    pub async fn list_jobs(&self, filter: &JobFilter, cursor: Option<&str>) -> Result<Page, Error> {
        let mut url = self.url(&["api", "v1", "jobs"]);
        {
            let mut query = url.query_pairs_mut();
            if let Some(state) = filter.state {
                query.append_pair("state", state.as_str());
            }
            if let Some(queue) = &filter.queue {
                query.append_pair("queue", queue);
            }
            if let Some(job) = &filter.job {
                query.append_pair("job", job);
            }
            if let Some(limit) = filter.limit {
                query.append_pair("limit", &limit.to_string());
            }
            if let Some(cursor) = cursor {
                query.append_pair("cursor", cursor);
            }
            if let Some(include) = filter.include.query_value() {
                query.append_pair("include", &include);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        self.call(Method::GET, url, None::<&()>).await
    }

    /// `POST /api/v1/jobs/{id}/cancel`: a waiting job is cancelled at once, a running one gets
    /// `cancel_requested`. A finished job is a 409 `conflict`.
    pub async fn cancel(&self, id: Uuid) -> Result<Job, Error> {
        self.job_action(id, "cancel", None::<&()>).await
    }

    /// `POST /api/v1/jobs/{id}/retry`: a `dead` or `cancelled` job goes back to `queued`.
    /// Other states are a 409 `conflict`.
    pub async fn retry(&self, id: Uuid) -> Result<Job, Error> {
        self.job_action(id, "retry", None::<&()>).await
    }

    /// `DELETE /api/v1/jobs/{id}`: deletes a finished job with its runs and logs; the job as
    /// it was. A job that can still run is a 409 `conflict`.
    pub async fn delete_job(&self, id: Uuid) -> Result<Job, Error> {
        let url = self.url(&["api", "v1", "jobs", &id.to_string()]);
        self.call(Method::DELETE, url, None::<&()>).await
    }

    // Worker protocol

    /// `POST /api/v1/leases`: up to `max` jobs, each with its `lease_token`. Possibly none.
    /// Each job is read on its own: one that cannot be read is returned in
    /// [`Leased::unreadable`] with its id and token instead of failing the whole answer.
    pub async fn lease(&self, request: &LeaseRequest) -> Result<Leased, Error> {
        let url = self.url(&["api", "v1", "leases"]);
        let answer: LeaseAnswer = self
            .send(
                Method::POST,
                url.clone(),
                Some(request),
                request.wait.unwrap_or_default(),
            )
            .await?;
        let mut leased = Leased {
            outcomes: answer.outcomes.unwrap_or_default(),
            ..Leased::default()
        };
        for raw in answer.jobs {
            match serde_json::from_str::<LeasedJob>(raw.get()) {
                Ok(job) => leased.jobs.push(job),
                Err(e) => match serde_json::from_str::<LeaseHandle>(raw.get()) {
                    Ok(handle) => leased.unreadable.push(UnreadableJob {
                        id: handle.id,
                        lease_token: handle.lease_token,
                        error: e.to_string(),
                    }),
                    Err(_) => {
                        return Err(Error::Decode {
                            url: url.to_string(),
                            status: 200,
                            message: format!("a leased job without an id and lease_token: {e}"),
                        })
                    }
                },
            }
        }
        Ok(leased)
    }

    /// `POST /api/v1/jobs/{id}/heartbeat`: extends the lease (by `lease`, or the server's
    /// default). A 409 `stale_lease` means the job is no longer this worker's.
    pub async fn heartbeat(
        &self,
        id: Uuid,
        lease_token: i64,
        lease: Option<Duration>,
    ) -> Result<HeartbeatAck, Error> {
        let body = HeartbeatBody {
            lease_token,
            lease,
            progress: None,
            checkpoint: None,
            logs: Vec::new(),
        };
        self.job_action(id, "heartbeat", Some(&body)).await
    }

    /// [`Client::heartbeat`] carrying progress, a checkpoint and log lines
    /// ([`HeartbeatReport`]), stored with the lease extension under the same lease token: a
    /// 409 `stale_lease` stored none of it, and a 422 `invalid_field` (progress out of 0 to
    /// 100, say) neither extended the lease nor stored anything.
    pub async fn heartbeat_with(
        &self,
        id: Uuid,
        lease_token: i64,
        lease: Option<Duration>,
        report: &HeartbeatReport,
    ) -> Result<HeartbeatAck, Error> {
        let body = HeartbeatBody {
            lease_token,
            lease,
            progress: report.progress.clone(),
            checkpoint: report.checkpoint.clone(),
            logs: report.logs.clone(),
        };
        self.job_action(id, "heartbeat", Some(&body)).await
    }

    /// `POST /api/v1/jobs/{id}/complete`: the attempt succeeded, with an optional result.
    pub async fn complete(
        &self,
        id: Uuid,
        lease_token: i64,
        result: Option<&Value>,
    ) -> Result<Job, Error> {
        let body = CompleteBody {
            lease_token,
            result: result.cloned(),
        };
        self.job_action(id, "complete", Some(&body)).await
    }

    /// `POST /api/v1/jobs/{id}/fail`: the attempt failed. With `retry: false` the job goes to
    /// `dead` at once; otherwise it is retried with backoff while attempts remain.
    pub async fn fail(
        &self,
        id: Uuid,
        lease_token: i64,
        error: &str,
        retry: bool,
    ) -> Result<Job, Error> {
        self.fail_with_exit_code(id, lease_token, error, retry, None)
            .await
    }

    /// [`Client::fail`] for an attempt that ran a command: its exit code (if it exited) is
    /// kept in the attempt's record.
    pub async fn fail_with_exit_code(
        &self,
        id: Uuid,
        lease_token: i64,
        error: &str,
        retry: bool,
        exit_code: Option<i32>,
    ) -> Result<Job, Error> {
        let body = FailBody {
            lease_token,
            error: error.to_string(),
            retry,
            exit_code,
        };
        self.job_action(id, "fail", Some(&body)).await
    }

    /// `POST /api/v1/jobs/{id}/release`: hands a leased job back to the queue unfinished; the
    /// attempt is not counted. For a worker that stops before it could finish the job, or
    /// leased more than it can run.
    pub async fn release(&self, id: Uuid, lease_token: i64) -> Result<Job, Error> {
        self.job_action(id, "release", Some(&ReleaseBody { lease_token }))
            .await
    }

    /// `POST /api/v1/outcomes`: completes, fails or releases many leased jobs in one request
    /// (at most [`MAX_OUTCOMES`], each of a different job). The answers come in the order
    /// asked, each with the status its one-job route would have given: a stale lease token
    /// is a 409 of that item alone. `Err` only when the request as a whole was refused
    /// (malformed: nothing changed) or did not get through.
    pub async fn outcomes(&self, outcomes: &[OutcomeItem]) -> Result<Vec<OutcomeAnswer>, Error> {
        let url = self.url(&["api", "v1", "outcomes"]);
        /// [`hinter_wire::OutcomesBody`], borrowed.
        #[derive(Serialize)]
        struct Body<'a> {
            outcomes: &'a [OutcomeItem],
        }
        let body = Body { outcomes };
        let answer: OutcomesAnswer = self.call(Method::POST, url, Some(&body)).await?;
        Ok(answer.outcomes)
    }

    /// `POST /api/v1/jobs/{id}/report`: appends log lines to the attempt a worker runs and
    /// sets the job's progress and checkpoint, under its lease token (409 when stale).
    pub async fn report(&self, report: &hinter_core::JobReport) -> Result<(), Error> {
        let body = hinter_core::output::ReportBody {
            lease_token: report.lease_token,
            logs: report.logs.clone(),
            progress: report.progress.clone(),
            checkpoint: report.checkpoint.clone(),
        };
        let _: serde::de::IgnoredAny = self.job_action(report.id, "report", Some(&body)).await?;
        Ok(())
    }

    /// `GET /api/v1/jobs/{id}/logs`: the job's log lines after `after` (0: from the start),
    /// of one attempt if given, at most `limit` (server default 1000).
    pub async fn job_logs(
        &self,
        id: Uuid,
        attempt: Option<u32>,
        after: i64,
        limit: Option<u32>,
    ) -> Result<hinter_core::output::LogPage, Error> {
        let mut url = self.url(&["api", "v1", "jobs", &id.to_string(), "logs"]);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("after", &after.to_string());
            if let Some(attempt) = attempt {
                query.append_pair("attempt", &attempt.to_string());
            }
            if let Some(limit) = limit {
                query.append_pair("limit", &limit.to_string());
            }
        }
        self.call(Method::GET, url, None::<&()>).await
    }

    /// `GET /api/v1/definitions`: the job definitions the server has loaded, with the error
    /// of each script folder that could not be loaded.
    pub async fn definitions(&self) -> Result<Vec<hinter_core::DefinitionInfo>, Error> {
        let url = self.url(&["api", "v1", "definitions"]);
        let list: hinter_core::output::DefinitionList =
            self.call(Method::GET, url, None::<&()>).await?;
        Ok(list.definitions)
    }

    // Workers

    /// `PUT /api/v1/workers/{id}`: reports this worker process alive, so `GET
    /// /api/v1/workers` lists it; repeat well within the server's `--dead-after`.
    pub async fn report_worker(&self, id: &str, report: &WorkerReport) -> Result<(), Error> {
        let url = self.url(&["api", "v1", "workers", id]);
        let _: serde::de::IgnoredAny = self.call(Method::PUT, url, Some(report)).await?;
        Ok(())
    }

    /// `DELETE /api/v1/workers/{id}`: this worker process stops; it leaves the list at once.
    pub async fn remove_worker(&self, id: &str) -> Result<(), Error> {
        let url = self.url(&["api", "v1", "workers", id]);
        let (status, bytes) = self
            .exchange(Method::DELETE, url, None::<&()>, Duration::ZERO)
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(Error::from_response(status.as_u16(), &bytes))
        }
    }

    // Queues

    /// `GET /api/v1/queues`.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>, Error> {
        let answer: QueuesAnswer = self
            .call(Method::GET, self.url(&["api", "v1", "queues"]), None::<&()>)
            .await?;
        Ok(answer.queues)
    }

    /// `POST /api/v1/queues/{name}/pause`: the queue hands out no more leases.
    pub async fn pause_queue(&self, name: &str) -> Result<QueueInfo, Error> {
        let url = self.url(&["api", "v1", "queues", name, "pause"]);
        self.call(Method::POST, url, None::<&()>).await
    }

    /// `POST /api/v1/queues/{name}/resume`.
    pub async fn resume_queue(&self, name: &str) -> Result<QueueInfo, Error> {
        let url = self.url(&["api", "v1", "queues", name, "resume"]);
        self.call(Method::POST, url, None::<&()>).await
    }

    /// `POST /api/v1/queues/{name}/purge`: deletes the queue's finished jobs in `states`
    /// (empty: succeeded, dead and cancelled); how many.
    pub async fn purge_queue(&self, name: &str, states: &[JobState]) -> Result<u64, Error> {
        let url = self.url(&["api", "v1", "queues", name, "purge"]);
        let body = (!states.is_empty()).then(|| serde_json::json!({ "states": states }));
        let purged: hinter_wire::Purged = self.call(Method::POST, url, body.as_ref()).await?;
        Ok(purged.deleted)
    }

    // Schedules

    /// `GET /api/v1/schedules`.
    pub async fn schedules(&self) -> Result<Vec<ScheduleInfo>, Error> {
        let url = self.url(&["api", "v1", "schedules"]);
        let answer: types::SchedulesAnswer = self.call(Method::GET, url, None::<&()>).await?;
        Ok(answer.schedules)
    }

    /// `GET /api/v1/schedules/{name}`.
    pub async fn schedule(&self, name: &str) -> Result<ScheduleInfo, Error> {
        let url = self.url(&["api", "v1", "schedules", name]);
        self.call(Method::GET, url, None::<&()>).await
    }

    /// `POST /api/v1/schedules`: a taken name is a 409 `conflict`.
    pub async fn create_schedule(
        &self,
        spec: &hinter_core::schedule::ScheduleSpec,
    ) -> Result<ScheduleInfo, Error> {
        let url = self.url(&["api", "v1", "schedules"]);
        self.call(Method::POST, url, Some(spec)).await
    }

    /// `PUT /api/v1/schedules/{name}`: creates or replaces.
    pub async fn put_schedule(
        &self,
        spec: &hinter_core::schedule::ScheduleSpec,
    ) -> Result<ScheduleInfo, Error> {
        let url = self.url(&["api", "v1", "schedules", &spec.name]);
        self.call(Method::PUT, url, Some(spec)).await
    }

    /// `DELETE /api/v1/schedules/{name}`: the schedule as it was.
    pub async fn delete_schedule(&self, name: &str) -> Result<ScheduleInfo, Error> {
        let url = self.url(&["api", "v1", "schedules", name]);
        self.call(Method::DELETE, url, None::<&()>).await
    }

    /// `POST /api/v1/schedules/{name}/pause`.
    pub async fn pause_schedule(&self, name: &str) -> Result<ScheduleInfo, Error> {
        let url = self.url(&["api", "v1", "schedules", name, "pause"]);
        self.call(Method::POST, url, None::<&()>).await
    }

    /// `POST /api/v1/schedules/{name}/resume`: goes on from now.
    pub async fn resume_schedule(&self, name: &str) -> Result<ScheduleInfo, Error> {
        let url = self.url(&["api", "v1", "schedules", name, "resume"]);
        self.call(Method::POST, url, None::<&()>).await
    }

    /// `GET /api/v1/schedules/{name}/occurrences`: latest first, up to `limit`, older than
    /// `before` when given.
    pub async fn schedule_history(
        &self,
        name: &str,
        limit: Option<u32>,
        before: Option<DateTime<Utc>>,
    ) -> Result<OccurrencePage, Error> {
        let mut url = self.url(&["api", "v1", "schedules", name, "occurrences"]);
        {
            let mut query = url.query_pairs_mut();
            if let Some(limit) = limit {
                query.append_pair("limit", &limit.to_string());
            }
            if let Some(before) = before {
                query.append_pair(
                    "before",
                    &before.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                );
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        self.call(Method::GET, url, None::<&()>).await
    }

    // Health

    /// `GET /healthz`: the process runs.
    pub async fn healthz(&self) -> Result<Health, Error> {
        self.call(Method::GET, self.url(&["healthz"]), None::<&()>)
            .await
    }

    /// `GET /readyz`: the server started and its store answers. Not ready is an
    /// [`Error::Api`] with status 503 and code `not_ready`, the reason as message.
    pub async fn readyz(&self) -> Result<Health, Error> {
        self.call(Method::GET, self.url(&["readyz"]), None::<&()>)
            .await
    }

    // Plumbing

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        // `parse_base_url` made sure the base can have a path.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn job_action<T: DeserializeOwned>(
        &self,
        id: Uuid,
        action: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, Error> {
        let url = self.url(&["api", "v1", "jobs", &id.to_string(), action]);
        self.call(Method::POST, url, body).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&impl Serialize>,
    ) -> Result<T, Error> {
        self.send(method, url, body, Duration::ZERO).await
    }

    /// Sends one request; `wait` is the long-poll the request asks for, added to the timeout.
    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&impl Serialize>,
        wait: Duration,
    ) -> Result<T, Error> {
        let (status, bytes) = self.exchange(method, url.clone(), body, wait).await?;
        decode(&url, status, &bytes)
    }

    /// POSTs `body` with `Idempotency-Key: key`, sending it again with the same key while
    /// the failure is one a retry may cure ([`retry_may_help`]) and attempts are left.
    async fn post_idempotent<T: DeserializeOwned>(
        &self,
        url: Url,
        body: &impl Serialize,
        key: &str,
    ) -> Result<T, Error> {
        check_idempotency_key(key)?;
        let bytes = encode_body(body)?;
        let mut attempt = 1;
        loop {
            let answer = self
                .exchange_encoded(
                    Method::POST,
                    url.clone(),
                    Some(bytes.clone()),
                    Duration::ZERO,
                    Some(key),
                )
                .await
                .and_then(|(status, body)| decode(&url, status, &body));
            match answer {
                Err(e) if attempt < self.enqueue_attempts && retry_may_help(&e) => {
                    tokio::time::sleep(backoff(self.enqueue_backoff, attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Sends one request and returns the status and body of any answer.
    async fn exchange(
        &self,
        method: Method,
        url: Url,
        body: Option<&impl Serialize>,
        wait: Duration,
    ) -> Result<(StatusCode, bytes::Bytes), Error> {
        let bytes = body.map(encode_body).transpose()?;
        self.exchange_encoded(method, url, bytes, wait, None).await
    }

    /// [`Client::exchange`] with the body encoded, and an `Idempotency-Key` if given.
    async fn exchange_encoded(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        wait: Duration,
        idempotency_key: Option<&str>,
    ) -> Result<(StatusCode, bytes::Bytes), Error> {
        let timeout = self.timeout + wait;
        let mut request = self
            .http
            .request(method, url.clone())
            .timeout(timeout)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        if let Some(bytes) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport(&e, timeout))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport(&e, timeout))?;
        Ok((status, bytes))
    }

    fn transport(&self, error: &reqwest::Error, timeout: Duration) -> Error {
        if let Some(tls) = tls_error(error) {
            let (problem, reason) = tls_reason(tls);
            return Error::Tls {
                url: self.base_url().to_string(),
                problem,
                reason,
            };
        }
        let timed_out = error.is_timeout();
        let reason = if timed_out {
            format!("no answer within {}", format_duration(timeout))
        } else {
            root_cause(error)
        };
        Error::Transport {
            url: self.base_url().to_string(),
            reason,
            timed_out,
            connect_failed: error.is_connect(),
        }
    }
}

fn encode_body(body: &impl Serialize) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(body).map_err(|e| Error::InvalidRequest {
        message: e.to_string(),
    })
}

/// A fresh `Idempotency-Key`: a random UUID, unique to this request.
pub fn new_idempotency_key() -> String {
    Uuid::new_v4().to_string()
}

/// The server's rule for `Idempotency-Key`s, checked before sending: 1 to 255 printable
/// ASCII characters; else [`Error::InvalidRequest`].
pub fn check_idempotency_key(key: &str) -> Result<(), Error> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY_CHARS
        || !key.bytes().all(|b| (0x20..=0x7e).contains(&b))
    {
        return Err(Error::InvalidRequest {
            message: format!(
                "Idempotency-Key: must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII \
                 characters"
            ),
        });
    }
    Ok(())
}

/// Failures after which the same request may succeed: no connection, a connection that
/// broke or stalled before the answer (the request may or may not have been committed: the
/// key makes the retry safe), or a server that said it changed nothing and is busy or down
/// (503) or did not get the body in time (408).
fn retry_may_help(error: &Error) -> bool {
    matches!(error, Error::Transport { .. }) || matches!(error.status(), Some(503 | 408))
}

/// The wait before retry number `retry` (1 for the first): `first` doubled per retry, between
/// half and all of it, so clients cut off together do not come back together.
fn backoff(first: Duration, retry: u32) -> Duration {
    let full = first.saturating_mul(1 << retry.saturating_sub(1).min(10));
    full.mul_f64(rand::random_range(0.5..=1.0))
}

/// The rustls error under `error`, if TLS is why it failed.
fn tls_error(error: &reqwest::Error) -> Option<&rustls::Error> {
    find_rustls_error(error)
}

/// Looks through the causes, into `io::Error`s too: their `source` skips the error they wrap
/// (hyper-rustls wraps rustls' error in one, and the connector that in another).
fn find_rustls_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(inner) = error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        return find_rustls_error(inner);
    }
    find_rustls_error(error.source()?)
}

/// What went wrong, and in words, then rustls' own.
fn tls_reason(error: &rustls::Error) -> (TlsProblem, String) {
    use rustls::CertificateError as C;
    let (problem, what) = match error {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => (
            TlsProblem::UntrustedCertificate,
            "the server's certificate is not signed by a CA this client trusts",
        ),
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => (
            TlsProblem::WrongHostName,
            "the server's certificate is not for the host name in the server URL",
        ),
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            (TlsProblem::Other, "the server's certificate has expired")
        }
        rustls::Error::InvalidCertificate(_) => {
            (TlsProblem::Other, "the server's certificate was refused")
        }
        _ => (TlsProblem::Other, "the TLS handshake failed"),
    };
    (problem, format!("{what} ({error})"))
}

/// Accepts `http://host:port[/prefix]`, `https://host:port[/prefix]` or `host:port`.
fn parse_base_url(input: &str) -> Result<Url, Error> {
    let invalid = |message: &str| Error::InvalidUrl {
        url: input.to_string(),
        message: message.to_string(),
    };
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(invalid("it is empty"));
    }
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    };
    let mut url = Url::parse(&with_scheme).map_err(|e| invalid(&e.to_string()))?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(invalid(&format!(
                "unsupported scheme {other:?}; use http:// or https://"
            )))
        }
    }
    if url.cannot_be_a_base() || url.host_str().is_none() {
        return Err(invalid("expected http://HOST:PORT or https://HOST:PORT"));
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

fn decode<T: DeserializeOwned>(url: &Url, status: StatusCode, body: &[u8]) -> Result<T, Error> {
    if !status.is_success() {
        return Err(Error::from_response(status.as_u16(), body));
    }
    serde_json::from_slice(body).map_err(|e| Error::Decode {
        url: url.to_string(),
        status: status.as_u16(),
        message: if body.is_empty() {
            "empty body".to_string()
        } else {
            e.to_string()
        },
    })
}

/// The innermost cause, which says what actually happened ("Connection refused (os error
/// 111)") rather than what was attempted.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalised() {
        let client = Client::new("http://127.0.0.1:7433/", None).unwrap();
        assert_eq!(client.base_url(), "http://127.0.0.1:7433");
        assert_eq!(
            client.url(&["api", "v1", "jobs"]).as_str(),
            "http://127.0.0.1:7433/api/v1/jobs"
        );
        let client = Client::new("localhost:9000", None).unwrap();
        assert_eq!(
            client.url(&["healthz"]).as_str(),
            "http://localhost:9000/healthz"
        );
        let client = Client::new("http://proxy/hinter/", None).unwrap();
        assert_eq!(
            client
                .url(&["api", "v1", "queues", "a/b c", "pause"])
                .as_str(),
            "http://proxy/hinter/api/v1/queues/a%2Fb%20c/pause"
        );
    }

    #[test]
    fn bad_base_urls_are_refused() {
        assert_eq!(
            Client::new("https://example.com:7433/", None)
                .unwrap()
                .base_url(),
            "https://example.com:7433"
        );
        for bad in ["", "ftp://x", "http://", "file:///tmp/x", "a b:1"] {
            assert!(
                matches!(Client::new(bad, None), Err(Error::InvalidUrl { .. })),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn unusable_ca_files_are_named() {
        let dir = std::env::temp_dir().join(format!("hinter-client-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let missing = dir.join("missing.pem");
        for (path, expected) in [
            (&missing, "cannot read it"),
            (&empty, "holds no PEM certificate"),
        ] {
            let err = Client::builder("https://localhost:7433")
                .ca_file(path)
                .build()
                .unwrap_err();
            assert!(
                matches!(&err, Error::InvalidCaCertificate { origin, .. } if *origin == path.display().to_string()),
                "{err:?}"
            );
            assert!(err.to_string().contains(expected), "{err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn debug_hides_the_token() {
        let client = Client::new(DEFAULT_SERVER, Some("s3cret".into())).unwrap();
        let shown = format!("{client:?}");
        assert!(
            shown.contains("<redacted>") && !shown.contains("s3cret"),
            "{shown}"
        );
    }

    #[test]
    fn empty_token_is_no_token() {
        assert!(Client::new(DEFAULT_SERVER, Some(String::new()))
            .unwrap()
            .token
            .is_none());
    }

    #[test]
    fn success_bodies_must_match() {
        let url = Url::parse("http://h/api/v1/queues").unwrap();
        let err = decode::<QueueInfo>(&url, StatusCode::OK, b"{}").unwrap_err();
        assert!(
            matches!(&err, Error::Decode { status: 200, message, .. } if message.contains("name")),
            "{err}"
        );
        let err = decode::<QueueInfo>(&url, StatusCode::OK, b"").unwrap_err();
        assert!(err.to_string().contains("empty body"), "{err}");
        let err = decode::<QueueInfo>(
            &url,
            StatusCode::NOT_FOUND,
            br#"{"error":{"code":"not_found","message":"no such job"}}"#,
        )
        .unwrap_err();
        assert!(err.is_not_found());
    }
}
