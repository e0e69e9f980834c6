//! Where a [`crate::Worker`] gets its jobs and reports their outcomes: straight from a store
//! ([`StoreSource`]), or from a `hinter serve` over the HTTP worker protocol
//! ([`HttpSource`]). Both run through the same worker runtime, so both behave the same:
//! outcomes, heartbeats, timeouts, cancellation and graceful stop (jobs handed back
//! uncounted).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use hinter_client::{
    Client, Error as ClientError, LeaseRequest as HttpLease, OutcomeItem, MAX_OUTCOMES,
};
use hinter_core::handoff::Handoff;
use hinter_core::retry::FailOutcome;
use hinter_core::store::{
    Completion, Failure, Heartbeat, HeartbeatAck, LeaseRequest, Release, StoreResult,
};
use hinter_core::{FieldError, JobReport, LeasedJob, Store, StoreError, StoreEvent};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use uuid::Uuid;

/// The operations a worker needs: lease, heartbeat, and the three outcomes.
#[async_trait]
pub trait JobSource: Send + Sync {
    /// Leases up to `request.max` jobs. A source that cannot ever serve this request (the
    /// server refuses it as invalid) answers [`StoreError::Invalid`]: the worker then stops.
    async fn lease(&self, request: LeaseRequest) -> StoreResult<Vec<LeasedJob>>;
    async fn heartbeat_many(
        &self,
        heartbeats: Vec<Heartbeat>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<HeartbeatAck>>>;
    async fn complete_many(
        &self,
        completions: Vec<Completion>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<()>>>;
    async fn fail_many(
        &self,
        failures: Vec<Failure>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<()>>>;
    async fn release_many(
        &self,
        releases: Vec<Release>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<()>>>;
    /// Appends a running attempt's log lines and sets its progress and checkpoint
    /// ([`Store::job_report`]); fenced by the lease token like the outcomes.
    async fn report(&self, report: JobReport, now: DateTime<Utc>) -> StoreResult<()>;
    /// Wake-ups (jobs available, cancel requests). A source without them hands out a
    /// receiver that never yields; it relies on [`JobSource::lease_waits`] and heartbeats.
    fn subscribe(&self) -> broadcast::Receiver<StoreEvent>;
    /// True when `lease` itself waits a while for jobs (a long-poll), so an empty answer
    /// needs no pause before asking again.
    fn lease_waits(&self) -> bool {
        false
    }
    /// Parks `request` with the store while the worker idles ([`Store::park_lease`]): an
    /// insert in this process then leases for it in its own transaction. `None`: this source
    /// does not hand jobs over.
    fn park(&self, request: LeaseRequest) -> Option<Handoff> {
        let _ = request;
        None
    }
}

/// Jobs straight from a store (in-process, or `hinter worker --database`).
pub struct StoreSource(pub Arc<dyn Store>);

fn unit<T>(answers: Vec<StoreResult<T>>) -> Vec<StoreResult<()>> {
    answers.into_iter().map(|a| a.map(|_| ())).collect()
}

#[async_trait]
impl JobSource for StoreSource {
    async fn lease(&self, request: LeaseRequest) -> StoreResult<Vec<LeasedJob>> {
        self.0.job_lease(request).await
    }
    async fn heartbeat_many(
        &self,
        heartbeats: Vec<Heartbeat>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<HeartbeatAck>>> {
        self.0.job_heartbeat_many(heartbeats, now).await
    }
    async fn complete_many(
        &self,
        completions: Vec<Completion>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<()>>> {
        self.0.job_complete_many(completions, now).await.map(unit)
    }
    async fn fail_many(
        &self,
        failures: Vec<Failure>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<()>>> {
        self.0.job_fail_many(failures, now).await.map(unit)
    }
    async fn release_many(
        &self,
        releases: Vec<Release>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<()>>> {
        self.0.job_release_many(releases, now).await
    }
    async fn report(&self, report: JobReport, now: DateTime<Utc>) -> StoreResult<()> {
        self.0.job_report(report, now).await
    }
    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.0.subscribe()
    }
    fn park(&self, request: LeaseRequest) -> Option<Handoff> {
        self.0.park_lease(request)
    }
}

/// Jobs from a `hinter serve` over the HTTP worker protocol (`hinter worker --server`, or any
/// Rust program on another machine). Leases long-poll for up to `lease_wait`; cancel
/// requests arrive in heartbeat answers. The server applies the retry policy itself, so a
/// failure sends only whether a retry is wanted.
pub struct HttpSource {
    client: Client,
    lease_wait: Duration,
    /// Kept so that [`JobSource::subscribe`] receivers stay open (and silent).
    events: broadcast::Sender<StoreEvent>,
    /// Whether the server takes `POST /api/v1/outcomes`; cleared when it answers that it
    /// has no such route.
    batched: AtomicBool,
}

impl HttpSource {
    /// A source over `client`; each lease waits up to `lease_wait` for jobs. A worker waits
    /// for an open lease to end before it stops, so keep it short (about a second).
    pub fn new(client: Client, lease_wait: Duration) -> Self {
        Self {
            client,
            lease_wait,
            events: broadcast::channel(1).0,
            batched: AtomicBool::new(true),
        }
    }
}

/// One outcome's answer: done, or refused (status, error code, message).
type OutcomeResult = Result<(), Refusal>;

/// An outcome the server refused: its status, error code and message.
struct Refusal {
    status: u16,
    code: String,
    message: String,
}

impl HttpSource {
    /// Sends outcomes in as few `POST /api/v1/outcomes` requests as the server takes, and
    /// reads each item's answer. `None`: the server has no such route (it is older than this
    /// worker) or refused a request as too large; the caller then sends them job by job
    /// (those of chunks already applied come back stale, which is harmless). A
    /// request that did not get through, or an item the store could not answer, fails the
    /// whole batch as [`StoreError::Unavailable`], so the worker tries it again later (items
    /// already written then come back stale, which is harmless).
    async fn outcomes(&self, items: Vec<OutcomeItem>) -> StoreResult<Option<Vec<OutcomeResult>>> {
        if !self.batched.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let mut results = Vec::with_capacity(items.len());
        for chunk in items.chunks(MAX_OUTCOMES) {
            let answers = match self.client.outcomes(chunk).await {
                Ok(answers) if answers.len() == chunk.len() => answers,
                Ok(answers) => {
                    return Err(StoreError::Unavailable(format!(
                        "the server answered {} of {} outcomes",
                        answers.len(),
                        chunk.len()
                    )))
                }
                Err(e) if matches!(e.status(), Some(404 | 405)) => {
                    tracing::info!(
                        "the server has no POST /api/v1/outcomes (it is older than this \
                         worker): outcomes go one request per job"
                    );
                    self.batched.store(false, Ordering::Relaxed);
                    return Ok(None);
                }
                Err(e) if e.status() == Some(413) => return Ok(None),
                Err(e) => return Err(store_error(None, e)),
            };
            for answer in answers {
                if answer.status == 200 {
                    results.push(Ok(()));
                    continue;
                }
                let (code, message) = answer
                    .error
                    .map(|e| (e.code.into_owned(), e.message))
                    .unwrap_or_default();
                if answer.status == 503 {
                    return Err(StoreError::Unavailable(message));
                }
                results.push(Err(Refusal {
                    status: answer.status,
                    code,
                    message,
                }));
            }
        }
        Ok(Some(results))
    }

    /// A result the server refused (too large, too deep): the attempt fails for good, as the
    /// handler would produce the same result again.
    async fn refused_result(&self, c: &Completion, why: &str) -> StoreResult<()> {
        let message = format!("the server refused the job's result: {why}");
        tracing::warn!(job_id = %c.id, "{message}");
        self.client
            .fail(c.id, c.lease_token, &message, false)
            .await
            .map(|_| ())
            .map_err(|e| store_error(Some(c.id), e))
    }
}

impl Refusal {
    /// As the worker understands store errors (as [`store_error`] does for one-job calls).
    fn into_store_error(self, id: Uuid) -> StoreError {
        let text = format!("{} {}: {}", self.status, self.code, self.message);
        match self.status {
            409 if self.code == "stale_lease" => StoreError::StaleLease(id),
            404 => StoreError::NotFound(id),
            409 => StoreError::Conflict(text),
            400 | 413 | 422 => StoreError::Invalid(FieldError::new("request", text)),
            _ => StoreError::Unavailable(text),
        }
    }
}

/// A client error as the worker understands store errors: whether to retry the call, or that
/// the lease is gone.
fn store_error(id: Option<Uuid>, e: ClientError) -> StoreError {
    match (id, e.status()) {
        (Some(id), Some(409)) if e.is_stale_lease() => StoreError::StaleLease(id),
        (Some(id), Some(404)) => StoreError::NotFound(id),
        (_, Some(409)) => StoreError::Conflict(e.to_string()),
        (_, Some(400 | 413 | 422)) => {
            StoreError::Invalid(FieldError::new("request", e.to_string()))
        }
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// Runs one call per item, all at once, and collects the answers in order. A call that
/// could not reach the server fails the whole batch, so the worker tries it again later
/// (items already written then come back stale, which is harmless).
async fn each<T, F, Fut>(items: Vec<T>, call: F) -> StoreResult<Vec<StoreResult<()>>>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = StoreResult<()>>,
{
    let answers = join_all(items.into_iter().map(call)).await;
    if let Some(e) = answers.iter().find_map(|a| match a {
        Err(e @ StoreError::Unavailable(_)) => Some(e.clone()),
        _ => None,
    }) {
        return Err(e);
    }
    Ok(answers)
}

#[async_trait]
impl JobSource for HttpSource {
    async fn lease(&self, request: LeaseRequest) -> StoreResult<Vec<LeasedJob>> {
        let asked = tokio::time::Instant::now();
        let http = HttpLease::new(request.worker_id)
            .queues(request.queues)
            .jobs(request.jobs)
            .max(request.max)
            .lease(request.lease_for)
            .wait(self.lease_wait);
        let leased = self
            .client
            .lease(&http)
            .await
            .map_err(|e| match e.status() {
                // The server will refuse this request every time: say so, the worker stops.
                Some(status) if (400..500).contains(&status) && !matches!(status, 408 | 429) => {
                    StoreError::Invalid(FieldError::new(
                        "lease",
                        format!("the server refused to lease jobs: {e}"),
                    ))
                }
                _ => StoreError::Unavailable(e.to_string()),
            })?;
        // A job this worker cannot read is failed at once, for good (reading it again would
        // fail the same way), instead of waiting for its lease to expire.
        for job in leased.unreadable {
            let message = format!("hinter worker could not read the leased job: {}", job.error);
            tracing::error!(job_id = %job.id, "{message}");
            if let Err(e) = self
                .client
                .fail(job.id, job.lease_token, &message, false)
                .await
            {
                tracing::warn!(job_id = %job.id, error = %e, "could not fail the unreadable job");
            }
        }
        // A server that answers at once with nothing (it is stopping, say) is not asked again
        // at once: the long-poll's time passes here instead.
        if leased.jobs.is_empty() {
            tokio::time::sleep_until(asked + self.lease_wait).await;
        }
        Ok(leased.jobs)
    }

    async fn heartbeat_many(
        &self,
        heartbeats: Vec<Heartbeat>,
        _now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<HeartbeatAck>>> {
        let answers = join_all(heartbeats.into_iter().map(|beat| async move {
            self.client
                .heartbeat(beat.id, beat.lease_token, Some(beat.lease_for))
                .await
                .map(|ack| HeartbeatAck {
                    lease_expires_at: ack.lease_expires_at,
                    cancel_requested: ack.cancel_requested,
                })
                .map_err(|e| store_error(Some(beat.id), e))
        }))
        .await;
        Ok(answers)
    }

    async fn complete_many(
        &self,
        completions: Vec<Completion>,
        _now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<()>>> {
        let items = completions
            .iter()
            .map(|c| OutcomeItem::complete(c.id, c.lease_token, c.result.clone()))
            .collect();
        if let Some(answers) = self.outcomes(items).await? {
            let mut results = Vec::with_capacity(answers.len());
            for (c, answer) in completions.iter().zip(answers) {
                results.push(match answer {
                    Ok(()) => Ok(()),
                    Err(r) if matches!(r.status, 413 | 422) => {
                        self.refused_result(c, &r.message).await
                    }
                    Err(r) => Err(r.into_store_error(c.id)),
                });
            }
            return Ok(results);
        }
        each(completions, |c| async move {
            match self
                .client
                .complete(c.id, c.lease_token, c.result.as_ref())
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if matches!(e.status(), Some(413 | 422)) => {
                    self.refused_result(&c, &e.to_string()).await
                }
                Err(e) => Err(store_error(Some(c.id), e)),
            }
        })
        .await
    }

    async fn fail_many(
        &self,
        failures: Vec<Failure>,
        _now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<()>>> {
        // The server decides the outcome again from the job as it stands; it only needs to
        // know whether this failure may be retried.
        let retry = |f: &Failure| matches!(f.outcome, FailOutcome::Retry { .. });
        let items = failures
            .iter()
            .map(|f| OutcomeItem::fail(f.id, f.lease_token, &f.error, retry(f), f.exit_code))
            .collect();
        if let Some(answers) = self.outcomes(items).await? {
            return Ok(failures
                .iter()
                .zip(answers)
                .map(|(f, a)| a.map_err(|r| r.into_store_error(f.id)))
                .collect());
        }
        each(failures, |f| async move {
            self.client
                .fail_with_exit_code(f.id, f.lease_token, &f.error, retry(&f), f.exit_code)
                .await
                .map(|_| ())
                .map_err(|e| store_error(Some(f.id), e))
        })
        .await
    }

    async fn release_many(
        &self,
        releases: Vec<Release>,
        _now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<()>>> {
        let items = releases
            .iter()
            .map(|r| OutcomeItem::release(r.id, r.lease_token))
            .collect();
        if let Some(answers) = self.outcomes(items).await? {
            return Ok(releases
                .iter()
                .zip(answers)
                .map(|(r, a)| a.map_err(|e| e.into_store_error(r.id)))
                .collect());
        }
        each(releases, |r| async move {
            self.client
                .release(r.id, r.lease_token)
                .await
                .map(|_| ())
                .map_err(|e| store_error(Some(r.id), e))
        })
        .await
    }

    async fn report(&self, report: JobReport, _now: DateTime<Utc>) -> StoreResult<()> {
        let id = report.id;
        self.client
            .report(&report)
            .await
            .map_err(|e| store_error(Some(id), e))
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }

    fn lease_waits(&self) -> bool {
        true
    }
}
