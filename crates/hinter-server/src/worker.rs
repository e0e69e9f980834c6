//! The worker protocol: lease (with long-poll), heartbeat, complete, fail.

use axum::extract::State;
use axum::Json;
use hinter_core::limits;
use hinter_core::retry::decide_failure;
use hinter_core::store::{
    Completion, Failure, Heartbeat, HeartbeatAck, LeaseRequest, Release, StoreEvent, StoreResult,
};
use hinter_core::{FieldError, Job, JobReport, JobState, LeasedJob};
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JobBody, JobId};
use crate::jobs::check_job_queue;
use crate::wire::{CompleteBody, FailBody, HeartbeatBody, Leases, ReleaseBody};
use crate::AppState;

/// Shortest and longest lease a worker may ask for.
pub const MIN_LEASE: Duration = Duration::from_secs(1);
pub const MAX_LEASE: Duration = Duration::from_secs(3600);
/// Longest worker id accepted, in characters.
pub const MAX_WORKER_ID_LEN: usize = 200;
/// How often an idle lease long-poll tries again without an event (scheduled jobs becoming
/// due, events from other processes).
const LEASE_REPOLL: Duration = Duration::from_millis(250);

/// `POST /api/v1/leases`.
#[utoipa::path(
    post, path = "/api/v1/leases", tag = "worker protocol", operation_id = "lease",
    summary = "Lease jobs to work on (with long-poll)",
    request_body(content = crate::wire::LeaseRequest),
    responses(
        (status = 200, description = "The jobs leased, each with its `lease_token`; none when nothing was ready within `wait`.", body = crate::wire::Leases),
        (status = 403, description = "`forbidden`: the token may not use one of the queues.", body = crate::wire::ErrorBody),
        (status = 422, description = "`invalid_field`: `queues`, `jobs`, `worker_id`, `max` (1 to 1000), `lease` (1s to 1h).", body = crate::wire::ErrorBody)
    )
)]
pub async fn lease(
    State(state): State<AppState>,
    caller: Caller,
    JobBody(body): JobBody<crate::wire::LeaseRequest>,
) -> ApiResult<Json<Leases>> {
    let queues = body.queues;
    limits::check_lease_queues("queues", &queues)?;
    for queue in &queues {
        caller.check_queue(queue)?;
    }
    let job_names = body.jobs;
    limits::check_lease_job_names("jobs", &job_names)?;
    if body.worker_id.is_empty() || body.worker_id.chars().count() > MAX_WORKER_ID_LEN {
        return Err(FieldError::new(
            "worker_id",
            format!("must be 1 to {MAX_WORKER_ID_LEN} characters long"),
        )
        .into());
    }
    hinter_core::limits::check_text("worker_id", &body.worker_id)?;
    let max = body.max;
    limits::check_lease_max("max", max)?;
    let lease_for = check_lease(body.lease, state.config.default_lease)?;
    let wait = body.wait.unwrap_or_default().min(state.config.max_wait);
    let request = LeaseRequest {
        jobs: job_names,
        queues,
        worker_id: body.worker_id,
        max,
        lease_for,
        now: state.clock.now(),
    };
    let jobs = lease_with_wait(&state, request, wait).await?;
    Ok(Json(Leases { jobs }))
}

fn check_lease(lease: Option<Duration>, default: Duration) -> ApiResult<Duration> {
    let lease = lease.unwrap_or(default);
    if lease < MIN_LEASE || lease > MAX_LEASE {
        return Err(FieldError::new("lease", "must be from 1s to 1h").into());
    }
    Ok(lease)
}

/// Tries to lease; while nothing is available and `wait` is not over, waits for a
/// `JobsAvailable` event for one of the queues or the [`LEASE_REPOLL`] tick, then tries again.
async fn lease_with_wait(
    state: &AppState,
    mut request: LeaseRequest,
    wait: Duration,
) -> StoreResult<Vec<LeasedJob>> {
    let deadline = crate::deadline_after(wait);
    let mut events = (!wait.is_zero()).then(|| state.store.subscribe());
    let queues: HashSet<String> = request.queues.iter().cloned().collect();
    loop {
        request.now = state.clock.now();
        let jobs = state.store.job_lease(request.clone()).await?;
        let Some(rx) = events.as_mut() else {
            return Ok(jobs);
        };
        // A stopping server answers long-polls at the next tick instead of holding its
        // shutdown for the whole wait.
        let stopping = !state.ready.load(std::sync::atomic::Ordering::Acquire);
        if !jobs.is_empty() || Instant::now() >= deadline || stopping {
            return Ok(jobs);
        }
        let tick = deadline.min(Instant::now() + LEASE_REPOLL);
        loop {
            match tokio::time::timeout_at(tick, rx.recv()).await {
                Err(_elapsed) => break,
                Ok(Ok(StoreEvent::JobsAvailable { queue })) if queues.contains(&queue) => break,
                Ok(Ok(StoreEvent::Changed)) => break,
                Ok(Ok(_)) => continue,
                Ok(Err(RecvError::Lagged(_))) => break,
                Ok(Err(RecvError::Closed)) => {
                    tokio::time::sleep_until(tick).await;
                    break;
                }
            }
        }
    }
}

/// `POST /api/v1/jobs/{id}/heartbeat`.
#[utoipa::path(
    post, path = "/api/v1/jobs/{id}/heartbeat", tag = "worker protocol", operation_id = "heartbeat",
    summary = "Extend a lease; may carry progress, a checkpoint and log lines",
    params(("id" = uuid::Uuid, Path, description = "The job's id. One that is not a UUID names no job: 404.")),
    request_body(content = crate::wire::HeartbeatBody),
    responses(
        (status = 200, description = "The new lease expiry, and whether the job was cancelled (stop it and call fail).", body = hinter_core::store::HeartbeatAck),
        (status = 404, description = "`not_found`: no job with this id.", body = crate::wire::ErrorBody),
        (status = 409, description = "`stale_lease`: the lease token is not current (the job was rescued, finished or released); nothing changed.", body = crate::wire::ErrorBody),
        (status = 422, description = "`invalid_field` naming the field.", body = crate::wire::ErrorBody)
    )
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
    JobId(id): JobId,
    JobBody(body): JobBody<HeartbeatBody>,
) -> ApiResult<Json<HeartbeatAck>> {
    check_job_queue(&state, &caller, id).await?;
    let lease_for = check_lease(body.lease, state.config.default_lease)?;
    let now = state.clock.now();
    // A report riding on the heartbeat is mended and checked first, so a bad one (422)
    // changes nothing, not even the lease.
    let report = body.report(id, now).map(JobReport::storable);
    if let Some(report) = &report {
        report.check()?;
    }
    let results = state
        .store
        .job_heartbeat_many(
            vec![Heartbeat {
                id,
                lease_token: body.lease_token,
                lease_for,
            }],
            now,
        )
        .await?;
    let ack = single(results)??;
    // Only under a lease the heartbeat found current: a stale token (409) wrote nothing. The
    // report is guarded by the same token, so if the job finished in between it is refused
    // (409) too.
    if let Some(report) = report {
        state.store.job_report(report, now).await?;
    }
    Ok(Json(ack))
}

/// `POST /api/v1/jobs/{id}/complete`.
#[utoipa::path(
    post, path = "/api/v1/jobs/{id}/complete", tag = "worker protocol", operation_id = "complete",
    summary = "Complete a leased job with its result",
    params(("id" = uuid::Uuid, Path, description = "The job's id. One that is not a UUID names no job: 404.")),
    request_body(content = crate::wire::CompleteBody),
    responses(
        (status = 200, description = "The job as it is after.", body = hinter_core::Job),
        (status = 404, description = "`not_found`: no job with this id.", body = crate::wire::ErrorBody),
        (status = 409, description = "`stale_lease`: the lease token is not current (the job was rescued, finished or released); nothing changed.", body = crate::wire::ErrorBody),
        (status = 422, description = "`invalid_field` naming the field.", body = crate::wire::ErrorBody)
    )
)]
pub async fn complete(
    State(state): State<AppState>,
    caller: Caller,
    JobId(id): JobId,
    JobBody(body): JobBody<CompleteBody>,
) -> ApiResult<Json<Job>> {
    check_job_queue(&state, &caller, id).await?;
    if let Some(result) = &body.result {
        hinter_core::limits::check_json("result", result)?;
    }
    let results = state
        .store
        .job_complete_many(
            vec![Completion {
                id,
                lease_token: body.lease_token,
                result: body.result,
            }],
            state.clock.now(),
        )
        .await?;
    Ok(Json(single(results)??))
}

/// `POST /api/v1/jobs/{id}/release`: hands a leased job back to the queue unfinished (the
/// worker is stopping, or took more than it can run); the attempt is not counted.
#[utoipa::path(
    post, path = "/api/v1/jobs/{id}/release", tag = "worker protocol", operation_id = "release",
    summary = "Hand a leased job back unfinished (the attempt is not counted)",
    params(("id" = uuid::Uuid, Path, description = "The job's id. One that is not a UUID names no job: 404.")),
    request_body(content = crate::wire::ReleaseBody),
    responses(
        (status = 200, description = "The job as it is after.", body = hinter_core::Job),
        (status = 404, description = "`not_found`: no job with this id.", body = crate::wire::ErrorBody),
        (status = 409, description = "`stale_lease`: the lease token is not current (the job was rescued, finished or released); nothing changed.", body = crate::wire::ErrorBody),
        (status = 422, description = "`invalid_field` naming the field.", body = crate::wire::ErrorBody)
    )
)]
pub async fn release(
    State(state): State<AppState>,
    caller: Caller,
    JobId(id): JobId,
    JobBody(body): JobBody<ReleaseBody>,
) -> ApiResult<Json<Job>> {
    check_job_queue(&state, &caller, id).await?;
    let results = state
        .store
        .job_release_many(
            vec![Release {
                id,
                lease_token: body.lease_token,
            }],
            state.clock.now(),
        )
        .await?;
    single(results)??;
    let job = state
        .store
        .job_get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job with id {id}")))?;
    Ok(Json(job))
}

/// `POST /api/v1/jobs/{id}/fail`: the retry policy decides the outcome, the store applies it
/// only if the lease token is current.
#[utoipa::path(
    post, path = "/api/v1/jobs/{id}/fail", tag = "worker protocol", operation_id = "fail",
    summary = "Fail an attempt; the retry policy decides what follows",
    params(("id" = uuid::Uuid, Path, description = "The job's id. One that is not a UUID names no job: 404.")),
    request_body(content = crate::wire::FailBody),
    responses(
        (status = 200, description = "The job as it is after.", body = hinter_core::Job),
        (status = 404, description = "`not_found`: no job with this id.", body = crate::wire::ErrorBody),
        (status = 409, description = "`stale_lease`: the lease token is not current (the job was rescued, finished or released); nothing changed.", body = crate::wire::ErrorBody),
        (status = 422, description = "`invalid_field` naming the field.", body = crate::wire::ErrorBody)
    )
)]
pub async fn fail(
    State(state): State<AppState>,
    caller: Caller,
    JobId(id): JobId,
    JobBody(body): JobBody<FailBody>,
) -> ApiResult<Json<Job>> {
    check_job_queue(&state, &caller, id).await?;
    let job = state
        .store
        .job_get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job with id {id}")))?;
    if job.state != JobState::Running {
        return Err(ApiError::stale_lease(format!(
            "lease of job {id} is stale: the job is {}, not running",
            job.state
        )));
    }
    let now = state.clock.now();
    let outcome = decide_failure(
        job.attempt,
        job.max_attempts,
        body.retry,
        job.cancel_requested,
        now,
        &mut rand::rng(),
    );
    let results = state
        .store
        .job_fail_many(
            vec![Failure {
                id,
                lease_token: body.lease_token,
                error: body.error,
                outcome,
                exit_code: body.exit_code,
                rescued: None,
            }],
            now,
        )
        .await?;
    Ok(Json(single(results)??))
}

/// The only answer of a one-item batch operation.
fn single<T>(results: Vec<T>) -> ApiResult<T> {
    results
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::unavailable("the store answered with no result"))
}
