//! `/api/v1/jobs…`: enqueue, batch, show (with long-poll), list, cancel, retry.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use hinter_core::access::NewAudit;
use hinter_core::store::{
    Idempotent, IdempotentInsert, Include, JobFilter, StoreEvent, WriteOp, WriteResult,
};
use hinter_core::{Inserted, Job, JobSpec, JobState, ListCursor, NewJob};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{
    name_filter, non_empty, parse_json, parse_limit, parse_query, parse_wait, read_body, BatchBody,
    JobId,
};
use crate::idempotency;
use crate::wire::{BatchResponse, Enqueued, GetJobQuery, JobList, ListQuery, RawBatchRequest};
use crate::AppState;

/// Most jobs in one batch.
pub const MAX_BATCH_JOBS: usize = 10_000;
/// Default and largest page of a job listing.
pub const DEFAULT_LIST_LIMIT: u32 = 100;
pub const MAX_LIST_LIMIT: u32 = 1000;
/// How often a waiting `GET /jobs/{id}?wait=` re-reads the job even without an event, for
/// stores whose events do not cross processes.
const WAIT_RECHECK: Duration = Duration::from_secs(1);

/// `POST /api/v1/jobs`. With an `Idempotency-Key`, see [`insert_jobs`].
#[utoipa::path(
    post, path = "/api/v1/jobs", tag = "jobs", operation_id = "enqueue",
    summary = "Enqueue a job",
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable ASCII characters (space to `~`), else 400. Within the retention (default 24h) the same request with the key (same credentials, route and JSON body) gets the first answer again, with `Idempotent-Replayed: true`, and inserts nothing; a different request with it is 422 `idempotency_key_reused`.")),
    request_body(content = hinter_core::JobSpec, description = "One job; only `job` is required. Unset options fall back to the job's definition, then to hinter's defaults."),
    responses(
        (status = 201, description = "Enqueued.", body = crate::wire::Enqueued, headers(("Location" = String, description = "`/api/v1/jobs/{id}` of the job."), ("Idempotent-Replayed" = String, description = "`true` when an `Idempotency-Key` replayed a kept answer; absent otherwise."))),
        (status = 200, description = "A duplicate: an earlier job with the same `unique_key` (`duplicate`: true); nothing new was enqueued.", body = crate::wire::Enqueued, headers(("Idempotent-Replayed" = String, description = "`true` when an `Idempotency-Key` replayed a kept answer; absent otherwise."))),
        (status = 400, description = "`bad_request`: the `Idempotency-Key` header is not 1 to 255 printable ASCII characters, or given twice.", body = crate::wire::ErrorBody),
        (status = 403, description = "`forbidden`: the token may not use the job's queue (after definitions apply).", body = crate::wire::ErrorBody),
        (status = 422, description = "`invalid_field` naming the field; `idempotency_key_reused`.", body = crate::wire::ErrorBody)
    )
)]
pub async fn enqueue(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let config = &state.config;
    let bytes = read_body(&headers, body, config.max_job_bytes, config.body_timeout).await?;
    let spec: JobSpec = parse_json(&bytes, None)?;
    let now = state.clock.now();
    let new_job = state.definitions.resolve(spec, now)?;
    check_callback(&state.config.callbacks, &new_job)?;
    caller.check_queue(&new_job.queue)?;
    let (inserted, replayed) =
        insert_jobs(&state, &headers, ENQUEUE_PATH, &bytes, vec![new_job], now).await?;
    let inserted = inserted
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::unavailable("the store answered an insert with no job"))?;
    let body = Enqueued {
        duplicate: inserted.duplicate,
        job: inserted.job,
    };
    let mut response = if body.duplicate {
        (StatusCode::OK, Json(body)).into_response()
    } else {
        let location = format!("/api/v1/jobs/{}", body.job.id);
        (
            StatusCode::CREATED,
            [(header::LOCATION, location)],
            Json(body),
        )
            .into_response()
    };
    mark_replayed(&mut response, replayed);
    Ok(response)
}

/// `POST /api/v1/jobs/batch`: every item is checked before anything is inserted. With an
/// `Idempotency-Key`, see [`insert_jobs`].
#[utoipa::path(
    post, path = "/api/v1/jobs/batch", tag = "jobs", operation_id = "enqueue_batch",
    summary = "Enqueue 1 to 10,000 jobs, all or nothing",
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable ASCII characters (space to `~`), else 400. Within the retention (default 24h) the same request with the key (same credentials, route and JSON body) gets the first answer again, with `Idempotent-Replayed: true`, and inserts nothing; a different request with it is 422 `idempotency_key_reused`.")),
    request_body(content = crate::wire::BatchRequest, description = "Every item is checked before anything is inserted; errors name the item (`jobs[3].priority`)."),
    responses(
        (status = 201, description = "The jobs in request order, each with `duplicate`.", body = crate::wire::BatchResponse, headers(("Idempotent-Replayed" = String, description = "`true` when an `Idempotency-Key` replayed a kept answer; absent otherwise."))),
        (status = 400, description = "`bad_request`: a bad `Idempotency-Key` header.", body = crate::wire::ErrorBody),
        (status = 403, description = "`forbidden`: the token may not use the queue of an item (`jobs[i].queue`).", body = crate::wire::ErrorBody),
        (status = 413, description = "`too_large`: an item is over the per-job limit (default 1 MiB).", body = crate::wire::ErrorBody),
        (status = 422, description = "`invalid_field` naming the item and field, or `jobs` not holding 1 to 10,000 jobs; `idempotency_key_reused`.", body = crate::wire::ErrorBody)
    )
)]
pub async fn enqueue_batch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    BatchBody(bytes): BatchBody,
) -> ApiResult<Response> {
    let request: RawBatchRequest<'_> = parse_json(&bytes, None)?;
    if request.jobs.is_empty() || request.jobs.len() > MAX_BATCH_JOBS {
        return Err(ApiError::invalid_field(format!(
            "jobs: must hold 1 to {MAX_BATCH_JOBS} jobs, not {}",
            request.jobs.len()
        )));
    }
    let now = state.clock.now();
    let limit = state.config.max_job_bytes;
    let mut new_jobs: Vec<NewJob> = Vec::with_capacity(request.jobs.len());
    for (i, raw) in request.jobs.iter().enumerate() {
        let prefix = format!("jobs[{i}]");
        if raw.get().len() > limit {
            return Err(ApiError::too_large(format!(
                "{prefix} is over the limit of {limit} bytes per job"
            )));
        }
        let spec: JobSpec = parse_json(raw.get().as_bytes(), Some(&prefix))?;
        let new_job = state
            .definitions
            .resolve(spec, now)
            .map_err(|e| e.within(&prefix))?;
        check_callback(&state.config.callbacks, &new_job).map_err(|e| e.within(&prefix))?;
        caller
            .check_queue(&new_job.queue)
            .map_err(|e| ApiError::forbidden(format!("{prefix}.queue: {}", e.message)))?;
        new_jobs.push(new_job);
    }
    let (inserted, replayed) =
        insert_jobs(&state, &headers, BATCH_PATH, &bytes, new_jobs, now).await?;
    let jobs = inserted
        .into_iter()
        .map(|i| Enqueued {
            duplicate: i.duplicate,
            job: i.job,
        })
        .collect();
    let mut response = (StatusCode::CREATED, Json(BatchResponse { jobs })).into_response();
    mark_replayed(&mut response, replayed);
    Ok(response)
}

/// A `callback_url` this server can send: it has a secret to sign with, and the URL's host
/// is not a literal address (or `localhost`) the address policy refuses. Host names are
/// checked at delivery, for every address they resolve to then.
fn check_callback(
    config: &crate::CallbackConfig,
    job: &NewJob,
) -> Result<(), hinter_core::FieldError> {
    let Some(url) = &job.callback_url else {
        return Ok(());
    };
    if !config.signing {
        return Err(hinter_core::FieldError::new(
            "callback_url",
            "this server has no --callback-secret; callbacks are signed, so it cannot send them",
        ));
    }
    config.policy.check_url("callback_url", url)
}

const ENQUEUE_PATH: &str = "/api/v1/jobs";
const BATCH_PATH: &str = "/api/v1/jobs/batch";

/// Inserts `jobs`; answers them and whether the answer is a kept one. With an
/// `Idempotency-Key`, the key is kept with the answer in the insert's transaction, for
/// [`crate::ServerConfig::idempotency_ttl`]; the same request (same caller, route and
/// canonical body, see [`idempotency`]) with the key again gets that answer and inserts
/// nothing, and a different one is 422 `idempotency_key_reused`. A concurrent request with
/// the key waits in the store for the first one and then gets its answer.
async fn insert_jobs(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
    jobs: Vec<NewJob>,
    now: DateTime<Utc>,
) -> ApiResult<(Vec<Inserted>, bool)> {
    let Some(key) = idempotency::key(headers)? else {
        return Ok((state.store.job_insert_many(jobs, now).await?, false));
    };
    let ttl = state.config.idempotency_ttl;
    let expires_at = chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|ttl| now.checked_add_signed(ttl))
        .ok_or_else(|| {
            ApiError::unavailable("the server's idempotency key retention is out of range")
        })?;
    let request = IdempotentInsert {
        scope: idempotency::scope(headers),
        key,
        fingerprint: idempotency::fingerprint("POST", path, body)?,
        expires_at,
        jobs,
    };
    let answer = state
        .store
        .write_unit(vec![WriteOp::InsertOnce(request)], now)
        .await?;
    match answer.into_iter().next() {
        Some(WriteResult::InsertedOnce(Idempotent::Inserted(inserted))) => Ok((inserted, false)),
        Some(WriteResult::InsertedOnce(Idempotent::Replayed(inserted))) => Ok((inserted, true)),
        Some(WriteResult::InsertedOnce(Idempotent::KeyReused)) => {
            Err(ApiError::idempotency_key_reused(format!(
                "Idempotency-Key: this key was used for a different request (another route or \
                 body) within the last {}; send a new key with a new request",
                hinter_core::format_duration(ttl)
            )))
        }
        _ => Err(ApiError::unavailable(
            "the store answered an insert with no result",
        )),
    }
}

fn mark_replayed(response: &mut Response, replayed: bool) {
    if replayed {
        response.headers_mut().insert(
            idempotency::REPLAYED,
            axum::http::HeaderValue::from_static("true"),
        );
    }
}

/// `GET /api/v1/jobs/{id}[?wait=30s]`.
#[utoipa::path(
    get, path = "/api/v1/jobs/{id}", tag = "jobs", operation_id = "get_job",
    summary = "A job, with its runs and follow-ups",
    params(("id" = uuid::Uuid, Path, description = "The job's id. One that is not a UUID names no job: 404."), ("wait" = Option<String>, Query, description = "Long-poll: a duration such as `30s` (cut to the server's `--max-wait`, default 60s); bad: 400.")),
    responses(
        (status = 200, description = "The job; with `wait`, once it is finished or the wait is over.", body = hinter_core::Job),
        (status = 400, description = "`bad_request`: a bad `wait`; an unknown query parameter.", body = crate::wire::ErrorBody),
        (status = 404, description = "`not_found`: no job with this id.", body = crate::wire::ErrorBody)
    )
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    JobId(id): JobId,
    uri: Uri,
) -> ApiResult<Json<Job>> {
    let query: GetJobQuery = parse_query(&uri)?;
    check_job_queue(&state, &caller, id).await?;
    let wait = parse_wait(query.wait, state.config.max_wait)?;
    let mut job = wait_until_finished(&state, id, wait).await?;
    if job.reply_to.is_some() || job.callback_url.is_some() {
        job.followups = state.store.job_followups(id).await?;
    }
    Ok(Json(job))
}

/// 403 when a caller limited to some queues names a job of another queue. An unknown job
/// passes: the handler answers 404 as for everyone.
pub async fn check_job_queue(state: &AppState, caller: &Caller, id: Uuid) -> ApiResult<()> {
    if !caller.limited() {
        return Ok(());
    }
    if let Some(job) = state.store.job_get(id).await? {
        caller.check_queue(&job.queue)?;
    }
    Ok(())
}

async fn get_job(state: &AppState, id: Uuid) -> ApiResult<Job> {
    state
        .store
        .job_get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job with id {id}")))
}

/// Reads the job until it is finished or `wait` is over. Subscribes before the first read so
/// a finish between the read and the wait is not missed; re-reads on every event about the
/// job, on lag, and every [`WAIT_RECHECK`].
async fn wait_until_finished(state: &AppState, id: Uuid, wait: Duration) -> ApiResult<Job> {
    let deadline = crate::deadline_after(wait);
    let mut events = (!wait.is_zero()).then(|| state.store.subscribe());
    loop {
        let job = get_job(state, id).await?;
        let Some(rx) = events.as_mut() else {
            return Ok(job);
        };
        let stopping = !state.ready.load(std::sync::atomic::Ordering::Acquire);
        if job.state.is_finished() || Instant::now() >= deadline || stopping {
            return Ok(job);
        }
        let recheck = deadline.min(Instant::now() + WAIT_RECHECK);
        loop {
            match tokio::time::timeout_at(recheck, rx.recv()).await {
                Err(_elapsed) => break,
                Ok(Ok(StoreEvent::JobFinished { id: finished, .. })) if finished == id => break,
                Ok(Ok(StoreEvent::Changed)) => break,
                Ok(Ok(_)) => continue,
                Ok(Err(RecvError::Lagged(_))) => break,
                Ok(Err(RecvError::Closed)) => {
                    // No more events: plain polling until the deadline.
                    tokio::time::sleep_until(recheck).await;
                    break;
                }
            }
        }
    }
}

/// `GET /api/v1/jobs?state=&queue=&job=&limit=&cursor=&include=`: a page of job
/// summaries, ended early by [`crate::ServerConfig::list_max_bytes`].
#[utoipa::path(
    get, path = "/api/v1/jobs", tag = "jobs", operation_id = "list_jobs",
    summary = "A page of job summaries, newest first",
    description = "A page ends early once its jobs hold `--list-max-bytes` of payload, result and error history (always at least one job). Empty parameters (`state=`) count as absent.",
    params(
        ("state" = Option<hinter_core::JobState>, Query, description = "Only jobs in this state."),
        ("queue" = Option<String>, Query, description = "Only jobs of this queue; required for a token limited to some queues."),
        ("job" = Option<String>, Query, description = "Only jobs of this definition name."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Most items answered, 1 to 1000 (default 100); another value is 400."),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page, as it was given (its form is the pattern; one of that form that no page gave is 404)."),
        ("include" = Option<String>, Query, description = "Comma-separated: `payload`, `result`, `errors`, `runs`, or `all`; what the summaries hold besides their fixed fields.")
    ),
    responses(
        (status = 200, description = "A page; `next_cursor` is `null` on the last.", body = crate::wire::Page),
        (status = 400, description = "`bad_request` naming the parameter (`state`, `queue`, `job`, `limit`, `cursor`, `include`); an unknown query parameter.", body = crate::wire::ErrorBody),
        (status = 404, description = "`not_found`: a `cursor` of the form of `next_cursor` that no listing gave (no page starts there).", body = crate::wire::ErrorBody),
        (status = 403, description = "`forbidden`: a token limited to some queues without `queue=` naming one of them.", body = crate::wire::ErrorBody)
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> ApiResult<Json<JobList>> {
    let query: ListQuery = parse_query(&uri)?;
    let job_state = match non_empty(query.state) {
        None => None,
        Some(s) => Some(
            s.parse::<JobState>()
                .map_err(|e| ApiError::bad_request(format!("state: {e}")))?,
        ),
    };
    let limit = parse_limit(query.limit, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)?;
    let after = match non_empty(query.cursor) {
        None => None,
        Some(s) => Some(parse_cursor(&s)?),
    };
    let include: Include = query
        .include
        .as_deref()
        .unwrap_or("")
        .parse()
        .map_err(|e| ApiError::bad_request(format!("include: {e}")))?;
    let queue = name_filter("queue", query.queue)?;
    // A token limited to queues lists all of them unless it names one.
    let queues = caller.listing_queues(queue.as_deref())?;
    let filter = JobFilter {
        state: job_state,
        queue,
        queues,
        job: name_filter("job", query.job)?,
        after_seq: None,
        limit,
        with_payload: include.payload,
        with_result: include.result,
        max_bytes: Some(state.config.list_max_bytes),
    };
    let page = state.store.job_page(filter, after).await?;
    let mut jobs = page.jobs;
    let next_cursor = page.next.map(|cursor| cursor.to_string());
    if include.runs && !jobs.is_empty() {
        // Read only when asked for: one more read for the page.
        let mut runs = state
            .store
            .job_runs(jobs.iter().map(|j| j.id).collect())
            .await?;
        for job in &mut jobs {
            job.runs = runs.remove(&job.id).unwrap_or_default();
        }
    }
    let jobs = jobs
        .into_iter()
        .map(|job| summary(job, include))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(JobList { jobs, next_cursor }))
}

/// The form of a `next_cursor` (`ListCursor`'s text): a sequence number, then on PostgreSQL
/// `~SNAPSHOT` and any number of `~SEQ~SNAPSHOT`, a snapshot being `XMIN:XMAX:XIP,…`. The
/// OpenAPI document gives it as the `cursor` parameter's pattern.
pub const CURSOR_PATTERN: &str = "^[0-9]{1,19}(?:~[0-9]{1,20}:[0-9]{1,20}:(?:[0-9]{1,20}(?:,[0-9]{1,20})*)?(?:~[0-9]{1,19}~[0-9]{1,20}:[0-9]{1,20}:(?:[0-9]{1,20}(?:,[0-9]{1,20})*)?)*)?$";

/// A `cursor`: 400 when it does not have the form of [`CURSOR_PATTERN`]; 404 when it has the
/// form but names no place a listing can give (numbers out of order, a snapshot PostgreSQL
/// cannot have taken): no page starts there, as no job has an id that is not a UUID.
fn parse_cursor(text: &str) -> ApiResult<ListCursor> {
    text.parse::<ListCursor>().map_err(|e| {
        if has_cursor_form(text) {
            ApiError::not_found(format!("cursor: no page starts at {text:?} ({e})"))
        } else {
            ApiError::bad_request(format!("cursor: {e}"))
        }
    })
}

/// Whether `text` matches [`CURSOR_PATTERN`].
fn has_cursor_form(text: &str) -> bool {
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    let snapshot = |s: &str| {
        let mut parts = s.split(':');
        let (Some(xmin), Some(xmax), Some(xip), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        digits(xmin, 20)
            && digits(xmax, 20)
            && (xip.is_empty() || xip.split(',').all(|x| digits(x, 20)))
    };
    let parts: Vec<&str> = text.split('~').collect();
    // SEQ alone, or SEQ and SNAPSHOT followed by pairs of SEQ and SNAPSHOT: one part or an
    // even number.
    (parts.len() == 1 || parts.len().is_multiple_of(2))
        && parts.iter().enumerate().all(|(i, part)| {
            if i % 2 == 0 {
                digits(part, 19)
            } else {
                snapshot(part)
            }
        })
}

/// Longest `last_error.message` of a job summary, in characters.
pub const LAST_ERROR_CHARS: usize = 500;

/// A job as listed: without what `include` does not ask for, with `error_count` and
/// `last_error` (its message cut to [`LAST_ERROR_CHARS`]).
fn summary(job: Job, include: Include) -> ApiResult<serde_json::Value> {
    // Every failed attempt, also those dropped from the middle of a long history.
    let error_count = (job.errors.len() as u64).saturating_add(job.errors_omitted);
    let last_error = job.errors.last().map(|e| {
        let mut e = e.clone();
        if let Some((cut, _)) = e.message.char_indices().nth(LAST_ERROR_CHARS) {
            e.message.truncate(cut);
            e.message.push('…');
        }
        e
    });
    let mut value = serde_json::to_value(&job)
        .map_err(|e| ApiError::unavailable(format!("cannot show job {}: {e}", job.id)))?;
    if let Some(fields) = value.as_object_mut() {
        for (name, wanted) in [
            ("payload", include.payload),
            ("result", include.result),
            ("errors", include.errors),
            ("runs", include.runs),
        ] {
            if !wanted {
                fields.remove(name);
            }
        }
        fields.insert("error_count".into(), error_count.into());
        fields.insert(
            "last_error".into(),
            serde_json::to_value(last_error).unwrap_or_default(),
        );
    }
    Ok(value)
}

/// `POST /api/v1/jobs/{id}/cancel`: cancels and records it in the audit record, together.
#[utoipa::path(
    post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", operation_id = "cancel_job",
    summary = "Cancel a job (a running one is asked to stop)",
    description = "Recorded in the audit record in the same write.",
    params(("id" = uuid::Uuid, Path, description = "The job's id. One that is not a UUID names no job: 404.")),
    responses(
        (status = 200, description = "The job as it is after (deleted: as it was).", body = hinter_core::Job),
        (status = 404, description = "`not_found`: no job with this id.", body = crate::wire::ErrorBody),
        (status = 409, description = "`conflict`: the job is finished.", body = crate::wire::ErrorBody)
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    JobId(id): JobId,
) -> ApiResult<Json<Job>> {
    admin_action(&state, &caller, id, WriteOp::Cancel(id), "job.cancel").await
}

/// `POST /api/v1/jobs/{id}/retry`: retries and records it in the audit record, together.
#[utoipa::path(
    post, path = "/api/v1/jobs/{id}/retry", tag = "jobs", operation_id = "retry_job",
    summary = "Put a dead or cancelled job back in its queue",
    description = "Recorded in the audit record in the same write.",
    params(("id" = uuid::Uuid, Path, description = "The job's id. One that is not a UUID names no job: 404.")),
    responses(
        (status = 200, description = "The job as it is after (deleted: as it was).", body = hinter_core::Job),
        (status = 404, description = "`not_found`: no job with this id.", body = crate::wire::ErrorBody),
        (status = 409, description = "`conflict`: the job is not dead or cancelled.", body = crate::wire::ErrorBody)
    )
)]
pub async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    JobId(id): JobId,
) -> ApiResult<Json<Job>> {
    admin_action(&state, &caller, id, WriteOp::Retry(id), "job.retry").await
}

/// `DELETE /api/v1/jobs/{id}`: deletes a finished job (409 for one that can still run) with
/// its runs and log lines; answers it as it was. Audited in the same unit.
#[utoipa::path(
    delete, path = "/api/v1/jobs/{id}", tag = "jobs", operation_id = "delete_job",
    summary = "Delete a finished job with its runs and logs",
    description = "Recorded in the audit record in the same write.",
    params(("id" = uuid::Uuid, Path, description = "The job's id. One that is not a UUID names no job: 404.")),
    responses(
        (status = 200, description = "The job as it is after (deleted: as it was).", body = hinter_core::Job),
        (status = 404, description = "`not_found`: no job with this id.", body = crate::wire::ErrorBody),
        (status = 409, description = "`conflict`: the job can still run.", body = crate::wire::ErrorBody)
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    JobId(id): JobId,
) -> ApiResult<Json<Job>> {
    admin_action(&state, &caller, id, WriteOp::JobDelete(id), "job.delete").await
}

/// Runs `op` on job `id` and its audit entry as one unit; the job as it is after.
async fn admin_action(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    op: WriteOp,
    action: &str,
) -> ApiResult<Json<Job>> {
    check_job_queue(state, caller, id).await?;
    let results = state
        .store
        .write_unit(vec![op, audit(caller, action, id)], state.clock.now())
        .await?;
    match results.into_iter().next() {
        Some(
            WriteResult::Cancelled(job) | WriteResult::Retried(job) | WriteResult::JobDeleted(job),
        ) => Ok(Json(*job)),
        _ => Err(ApiError::unavailable(format!(
            "the store answered {action} with no job"
        ))),
    }
}

fn audit(caller: &Caller, action: &str, id: Uuid) -> WriteOp {
    WriteOp::Audit(NewAudit {
        actor: caller.actor().to_string(),
        action: action.into(),
        target: id.to_string(),
        detail: serde_json::Value::Null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_of_the_documented_form_are_404_else_400() {
        for (cursor, status) in [
            ("5", None),
            ("0", Some(404)),
            ("007", Some(404)),
            ("28~0:25300:40920750236945797887,80680078", Some(404)),
            ("28~5:9:", None),
            ("28~9:5:", Some(404)),
            ("28~5:9:6,7~20~5:9:", None),
            ("28~5:9:6,7~30~5:9:", Some(404)),
            ("28~5:9:6,7~20", Some(400)),
            ("abc", Some(400)),
            ("5~", Some(400)),
            ("5~1:2", Some(400)),
            ("-5", Some(400)),
        ] {
            let got = parse_cursor(cursor).err().map(|e| e.status.as_u16());
            assert_eq!(got, status, "{cursor}");
        }
    }
}
