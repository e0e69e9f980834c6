//! The worker protocol: lease (with long-poll), heartbeat, complete, fail, release, and
//! outcomes (many jobs' complete, fail or release in one request).

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
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_json, BatchBody, JobBody, JobId};
use crate::jobs::check_job_queue;
use crate::wire::{
    CompleteBody, FailBody, HeartbeatBody, Leases, OutcomeAnswer, OutcomeItem, OutcomeKind,
    OutcomesAnswer, RawOutcomes, ReleaseBody, MAX_OUTCOMES,
};
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
        (status = 200, description = "The jobs leased, each with its `lease_token`; none when nothing was ready within `wait`. With `outcomes` in the request, one answer each, as `POST /api/v1/outcomes` gives them.", body = crate::wire::Leases),
        (status = 403, description = "`forbidden`: the token may not use one of the queues, or one of the jobs an outcome names.", body = crate::wire::ErrorBody),
        (status = 422, description = "`invalid_field`: `queues`, `jobs`, `worker_id`, `max` (1 to 1000), `lease` (1s to 1h), `outcomes` (at most 1000, each with the fields of an outcome); nothing changed.", body = crate::wire::ErrorBody)
    )
)]
pub async fn lease(
    State(state): State<AppState>,
    caller: Caller,
    // As large as an outcomes request: the lease may carry the last batch's outcomes.
    BatchBody(bytes): BatchBody,
) -> ApiResult<Json<Leases>> {
    let body: crate::wire::LeaseRequest = parse_json(&bytes, None)?;
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
    if body.outcomes.len() > MAX_OUTCOMES {
        return Err(FieldError::new(
            "outcomes",
            format!(
                "must hold at most {MAX_OUTCOMES} items, not {}",
                body.outcomes.len()
            ),
        )
        .into());
    }
    // Reported first, so the slots they free are leased again in this same request.
    let outcomes = if body.outcomes.is_empty() {
        None
    } else {
        let items = body
            .outcomes
            .into_iter()
            .map(|item| {
                (
                    serde_json::to_vec(&item).map_or(usize::MAX, |v| v.len()),
                    item,
                )
            })
            .collect();
        Some(apply_outcomes(&state, &caller, items).await?)
    };
    let request = LeaseRequest {
        jobs: job_names,
        queues,
        worker_id: body.worker_id,
        max,
        lease_for,
        now: state.clock.now(),
    };
    let jobs = lease_with_wait(&state, request, wait).await?;
    Ok(Json(Leases { jobs, outcomes }))
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
/// Meanwhile the request is parked with the store, so a job enqueued through this process
/// is leased for it in the enqueue's own transaction.
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
        // Parked with the store meanwhile: an insert in this process leases for the request
        // in its own transaction (`hinter_core::handoff`) and the jobs are the answer.
        let mut parked = state.store.park_lease(request.clone());
        let handed = async {
            match parked.as_mut() {
                Some(handoff) => handoff.jobs().await,
                None => std::future::pending().await,
            }
        };
        let woken = async {
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
        };
        let jobs = tokio::select! {
            jobs = handed => jobs,
            () = woken => Vec::new(),
        };
        // Withdrawn, with what an insert that had taken it leased meanwhile. (A caller gone
        // before this drops the request: jobs leased for it then are released.)
        let withdrawn = match parked {
            Some(handoff) => handoff.withdraw().await,
            None => Vec::new(),
        };
        if !jobs.is_empty() || !withdrawn.is_empty() {
            return Ok(jobs.into_iter().chain(withdrawn).collect());
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
    let now = state.clock.now();
    let failure = failure_of(&job, body.lease_token, body.error, body.retry, now)?;
    let failure = Failure {
        exit_code: body.exit_code,
        ..failure
    };
    let results = state.store.job_fail_many(vec![failure], now).await?;
    Ok(Json(single(results)??))
}

/// The failure of `job`'s attempt under `lease_token`, its outcome decided by the retry
/// policy; a stale lease (409) when the job is not running.
fn failure_of(
    job: &Job,
    lease_token: i64,
    error: String,
    retry: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> ApiResult<Failure> {
    if job.state != JobState::Running {
        return Err(ApiError::stale_lease(format!(
            "lease of job {} is stale: the job is {}, not running",
            job.id, job.state
        )));
    }
    let outcome = decide_failure(
        job.attempt,
        job.max_attempts,
        retry,
        job.cancel_requested,
        now,
        &mut rand::rng(),
    );
    Ok(Failure {
        id: job.id,
        lease_token,
        error,
        outcome,
        exit_code: None,
        rescued: None,
    })
}

/// The only answer of a one-item batch operation.
fn single<T>(results: Vec<T>) -> ApiResult<T> {
    results
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::unavailable("the store answered with no result"))
}

/// `POST /api/v1/outcomes`: the outcomes of many leased jobs in one request — what a worker
/// that runs many jobs at once sends instead of one request per job. A request its schema
/// calls malformed (not 1 to 1000 items, an item that does not parse) is refused whole (422)
/// and changes nothing, as is one that names a job of a queue the token may not use (403).
/// Otherwise each item is applied as its one-job route would apply it and answered on its
/// own: a stale token, a refused result, a field that does not go with the item's outcome or
/// a job named a second time fails that item alone.
#[utoipa::path(
    post, path = "/api/v1/outcomes", tag = "worker protocol", operation_id = "outcomes",
    summary = "Complete, fail or release many leased jobs in one request",
    request_body(content = crate::wire::OutcomesBody),
    responses(
        (status = 200, description = "One answer per outcome, in order: its `status` is what the job's own route would have answered (200, 404, 409, 413, 422; 503 when the store could not answer for it), with the job's `state` after it or the `error`. An item with a field that does not go with its `outcome`, a `fail` without `error`, or a job named a second time is a 422 of its own.", body = crate::wire::OutcomesAnswer),
        (status = 403, description = "`forbidden`: a job named is of a queue the token may not use; nothing changed.", body = crate::wire::ErrorBody),
        (status = 422, description = "`invalid_field`: `outcomes` must hold 1 to 1000 items, each with the fields of an outcome; nothing changed.", body = crate::wire::ErrorBody)
    )
)]
pub async fn outcomes(
    State(state): State<AppState>,
    caller: Caller,
    BatchBody(bytes): BatchBody,
) -> ApiResult<Json<OutcomesAnswer>> {
    let request: RawOutcomes<'_> = parse_json(&bytes, None)?;
    if request.outcomes.is_empty() || request.outcomes.len() > MAX_OUTCOMES {
        return Err(ApiError::invalid_field(format!(
            "outcomes: must hold 1 to {MAX_OUTCOMES} items, not {}",
            request.outcomes.len()
        )));
    }
    let mut items = Vec::with_capacity(request.outcomes.len());
    for (i, raw) in request.outcomes.iter().enumerate() {
        let prefix = format!("outcomes[{i}]");
        let item: OutcomeItem = parse_json(raw.get().as_bytes(), Some(&prefix))?;
        items.push((raw.get().len(), item));
    }
    let outcomes = apply_outcomes(&state, &caller, items).await?;
    Ok(Json(OutcomesAnswer { outcomes }))
}

/// Applies outcomes (each with the size of its JSON, held to the job size limit) as
/// `POST /api/v1/outcomes` does, and answers each. `Err` refuses them all, before anything
/// is written (a job of a queue the token may not use), or is the store failing.
async fn apply_outcomes(
    state: &AppState,
    caller: &Caller,
    items: Vec<(usize, OutcomeItem)>,
) -> ApiResult<Vec<OutcomeAnswer>> {
    let ids: Vec<Uuid> = items.iter().map(|(_, item)| item.id).collect();
    let mut seen = HashSet::with_capacity(items.len());
    let now = state.clock.now();
    let mut answers: Vec<Option<Result<JobState, ApiError>>> = items.iter().map(|_| None).collect();
    let (mut completions, mut failures, mut releases) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (size, item)) in items.into_iter().enumerate() {
        let prefix = format!("outcomes[{i}]");
        // Rules the schema cannot state refuse the item alone, as its own route would.
        let checked = check_outcome_fields(&item).map_err(|e| e.within(&prefix).into());
        let checked = checked.and_then(|()| {
            if seen.insert(item.id) {
                Ok(())
            } else {
                Err(ApiError::invalid_field(format!(
                    "{prefix}.id: job {} has an outcome earlier in this request",
                    item.id
                )))
            }
        });
        if let Err(e) = checked {
            answers[i] = Some(Err(e));
            continue;
        }
        match admit_outcome(state, caller, i, size, item, now).await? {
            Admitted::Refused(e) => answers[i] = Some(Err(e)),
            Admitted::Complete(c) => completions.push((i, c)),
            Admitted::Fail(f) => failures.push((i, f)),
            Admitted::Release(r) => releases.push((i, r)),
        }
    }
    let store = &state.store;
    if !completions.is_empty() {
        let (at, batch): (Vec<_>, Vec<_>) = completions.into_iter().unzip();
        let results = store.job_complete_many(batch, now).await?;
        place(&mut answers, at, results, |job| job.state);
    }
    if !failures.is_empty() {
        let (at, batch): (Vec<_>, Vec<_>) = failures.into_iter().unzip();
        let results = store.job_fail_many(batch, now).await?;
        place(&mut answers, at, results, |job| job.state);
    }
    if !releases.is_empty() {
        let (at, batch): (Vec<_>, Vec<_>) = releases.into_iter().unzip();
        let results = store.job_release_many(batch, now).await?;
        place(&mut answers, at, results, |()| JobState::Queued);
    }
    let outcomes: Vec<OutcomeAnswer> = answers
        .into_iter()
        .zip(ids)
        .map(|(answer, id)| {
            let answer = answer.unwrap_or_else(|| {
                Err(ApiError::unavailable(
                    "the store gave no answer for this job; try again",
                ))
            });
            match answer {
                Ok(state) => OutcomeAnswer {
                    id,
                    status: 200,
                    state: Some(state),
                    error: None,
                },
                Err(e) => OutcomeAnswer {
                    id,
                    status: e.status.as_u16(),
                    state: None,
                    error: Some(e.detail()),
                },
            }
        })
        .collect();
    Ok(outcomes)
}

/// Checks that an outcome carries only the fields of its kind, and `fail` its `error`.
fn check_outcome_fields(item: &OutcomeItem) -> Result<(), FieldError> {
    if item.outcome == OutcomeKind::Fail && item.error.is_none() {
        return Err(FieldError::new("error", "is required with `fail`"));
    }
    let set = [
        ("result", item.result.is_some(), OutcomeKind::Complete),
        ("error", item.error.is_some(), OutcomeKind::Fail),
        ("retry", item.retry.is_some(), OutcomeKind::Fail),
        ("exit_code", item.exit_code.is_some(), OutcomeKind::Fail),
    ];
    match set
        .into_iter()
        .find(|(_, present, belongs)| *present && *belongs != item.outcome)
    {
        Some((field, _, _)) => Err(FieldError::new(
            field,
            format!("does not go with outcome `{}`", item.outcome.as_str()),
        )),
        None => Ok(()),
    }
}

/// An outcome ready for the store, or refused before it (its answer).
enum Admitted {
    Complete(Completion),
    Fail(Failure),
    Release(Release),
    Refused(ApiError),
}

/// What `POST /api/v1/jobs/{id}/complete|fail|release` would check before writing, for item
/// `i` of an outcomes request (`size`: its bytes). `Err` refuses the whole request (nothing
/// is written before every item is admitted): the store failing, or a job of a queue the
/// token may not use.
async fn admit_outcome(
    state: &AppState,
    caller: &Caller,
    i: usize,
    size: usize,
    item: OutcomeItem,
    now: chrono::DateTime<chrono::Utc>,
) -> ApiResult<Admitted> {
    let limit = state.config.max_job_bytes;
    if size > limit {
        return Ok(Admitted::Refused(ApiError::too_large(format!(
            "outcomes[{i}] is over the limit of {limit} bytes per job"
        ))));
    }
    // Read only when needed: a token limited to some queues, or a failure (the retry policy
    // needs the job's attempts).
    let job = if caller.limited() || item.outcome == OutcomeKind::Fail {
        let Some(job) = state.store.job_get(item.id).await? else {
            return Ok(Admitted::Refused(ApiError::not_found(format!(
                "no job with id {}",
                item.id
            ))));
        };
        // As the batch enqueue: a job of a queue the token may not use refuses the request.
        caller
            .check_queue(&job.queue)
            .map_err(|e| ApiError::forbidden(format!("outcomes[{i}]: {}", e.message)))?;
        Some(job)
    } else {
        None
    };
    Ok(match item.outcome {
        OutcomeKind::Complete => {
            if let Some(result) = &item.result {
                if let Err(e) = limits::check_json("result", result) {
                    return Ok(Admitted::Refused(
                        e.within(&format!("outcomes[{i}]")).into(),
                    ));
                }
            }
            Admitted::Complete(Completion {
                id: item.id,
                lease_token: item.lease_token,
                result: item.result,
            })
        }
        OutcomeKind::Release => Admitted::Release(Release {
            id: item.id,
            lease_token: item.lease_token,
        }),
        OutcomeKind::Fail => {
            // Read above for every failure.
            let Some(job) = job else {
                return Ok(Admitted::Refused(ApiError::not_found(format!(
                    "no job with id {}",
                    item.id
                ))));
            };
            let error = item.error.unwrap_or_default();
            let retry = item.retry.unwrap_or(true);
            match failure_of(&job, item.lease_token, error, retry, now) {
                Ok(failure) => Admitted::Fail(Failure {
                    exit_code: item.exit_code,
                    ..failure
                }),
                Err(e) => Admitted::Refused(e),
            }
        }
    })
}

/// Puts the store's answers for the items at `at` in their places.
fn place<T>(
    answers: &mut [Option<Result<JobState, ApiError>>],
    at: Vec<usize>,
    results: Vec<StoreResult<T>>,
    state_after: impl Fn(T) -> JobState,
) {
    for (i, result) in at.into_iter().zip(results) {
        answers[i] = Some(result.map(&state_after).map_err(ApiError::from));
    }
}
