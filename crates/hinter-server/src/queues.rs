//! `/api/v1/queues…`: list, pause, resume, purge.

use axum::extract::State;
use axum::Json;
use hinter_core::access::NewAudit;
use hinter_core::store::{QueueInfo, QueuePurge, WriteOp, WriteResult};
use hinter_core::JobState;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::QueueName;
use crate::wire::{PurgeBody, Purged, QueueList};
use crate::AppState;

/// `GET /api/v1/queues`.
/// A token limited to some queues sees only those.
#[utoipa::path(
    get, path = "/api/v1/queues", tag = "queues", operation_id = "list_queues",
    summary = "Queues with their job counts per state",
    description = "A token limited to some queues sees only those.",
    responses((status = 200, description = "The queues.", body = crate::wire::QueueList))
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<QueueList>> {
    let mut queues = state.store.queue_list().await?;
    queues.retain(|q| caller.may_use(&q.name));
    Ok(Json(QueueList { queues }))
}

/// `POST /api/v1/queues/{name}/pause`.
#[utoipa::path(
    post, path = "/api/v1/queues/{name}/pause", tag = "queues", operation_id = "pause_queue",
    summary = "Pause a queue",
    description = "Recorded in the audit record in the same write.",
    params(("name" = String, Path, description = "The queue: 1 to 200 of letters, digits, `-`, `_`, `.`, `:` (not `.` or `..`); another name is 400.")),
    responses(
        (status = 200, description = "The queue as listed (zero counts for a queue without jobs).", body = hinter_core::store::QueueInfo),
        (status = 400, description = "`bad_request`: a bad queue name.", body = crate::wire::ErrorBody),
        (status = 403, description = "`forbidden`: the token may not use the queue.", body = crate::wire::ErrorBody)
    )
)]
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    QueueName(name): QueueName,
) -> ApiResult<Json<QueueInfo>> {
    set_paused(state, caller, name, true).await
}

/// `POST /api/v1/queues/{name}/resume`.
#[utoipa::path(
    post, path = "/api/v1/queues/{name}/resume", tag = "queues", operation_id = "resume_queue",
    summary = "Resume a queue",
    description = "Recorded in the audit record in the same write.",
    params(("name" = String, Path, description = "The queue: 1 to 200 of letters, digits, `-`, `_`, `.`, `:` (not `.` or `..`); another name is 400.")),
    responses(
        (status = 200, description = "The queue as listed (zero counts for a queue without jobs).", body = hinter_core::store::QueueInfo),
        (status = 400, description = "`bad_request`: a bad queue name.", body = crate::wire::ErrorBody),
        (status = 403, description = "`forbidden`: the token may not use the queue.", body = crate::wire::ErrorBody)
    )
)]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    QueueName(name): QueueName,
) -> ApiResult<Json<QueueInfo>> {
    set_paused(state, caller, name, false).await
}

/// Sets the flag, then answers the queue as listed; a queue without jobs that the store no
/// longer lists (resumed, never used) is shown with zero counts.
/// The flag and its audit entry are written together.
async fn set_paused(
    state: AppState,
    caller: Caller,
    name: String,
    paused: bool,
) -> ApiResult<Json<QueueInfo>> {
    caller.check_queue(&name)?;
    let audit = NewAudit {
        actor: caller.actor().to_string(),
        action: if paused {
            "queue.pause"
        } else {
            "queue.resume"
        }
        .into(),
        target: name.clone(),
        detail: serde_json::Value::Null,
    };
    let results = state
        .store
        .write_unit(
            vec![
                WriteOp::QueuePause {
                    queue: name.clone(),
                    paused,
                },
                WriteOp::Audit(audit),
            ],
            state.clock.now(),
        )
        .await?;
    if !matches!(results.first(), Some(WriteResult::QueuePaused)) {
        return Err(ApiError::unavailable(
            "the store answered a pause with something else",
        ));
    }
    let info = state
        .store
        .queue_list()
        .await?
        .into_iter()
        .find(|q| q.name == name)
        .unwrap_or(QueueInfo {
            name,
            paused,
            scheduled: 0,
            queued: 0,
            running: 0,
            succeeded: 0,
            dead: 0,
            cancelled: 0,
            oldest_queued_at: None,
        });
    Ok(Json(info))
}

/// Jobs deleted per unit of a purge: each unit is one short write with its audit entry.
const PURGE_BATCH: u32 = 5_000;

/// `POST /api/v1/queues/{name}/purge` `{"states": ["dead"]}`: deletes the queue's finished
/// jobs in those states (default `succeeded`, `dead`, `cancelled`) with their runs and logs,
/// in units of [`PURGE_BATCH`], each audited; answers how many.
#[utoipa::path(
    post, path = "/api/v1/queues/{name}/purge", tag = "queues", operation_id = "purge_queue",
    summary = "Delete a queue's finished jobs with their runs and logs",
    params(("name" = String, Path, description = "The queue: 1 to 200 of letters, digits, `-`, `_`, `.`, `:` (not `.` or `..`); another name is 400.")),
    request_body(content = Option<crate::wire::PurgeBody>, description = "Optional; an empty body purges `succeeded`, `dead` and `cancelled` jobs."),
    responses(
        (status = 200, description = "How many jobs were deleted.", body = crate::wire::Purged),
        (status = 400, description = "`bad_request`: a bad queue name.", body = crate::wire::ErrorBody),
        (status = 403, description = "`forbidden`: the token may not use the queue.", body = crate::wire::ErrorBody),
        (status = 422, description = "`invalid_field`: `states` empty, or naming a state that can still run.", body = crate::wire::ErrorBody)
    )
)]
pub async fn purge(
    State(state): State<AppState>,
    caller: Caller,
    QueueName(name): QueueName,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> ApiResult<Json<Purged>> {
    caller.check_queue(&name)?;
    let bytes = crate::extract::read_body(
        &headers,
        body,
        state.config.max_job_bytes,
        state.config.body_timeout,
    )
    .await?;
    let request: PurgeBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        PurgeBody::default()
    } else {
        crate::extract::parse_json(&bytes, None)?
    };
    let states = request
        .states
        .unwrap_or_else(|| vec![JobState::Succeeded, JobState::Dead, JobState::Cancelled]);
    if states.is_empty() {
        return Err(ApiError::invalid_field("states: name at least one state"));
    }
    if let Some(state) = states.iter().find(|s| !s.is_finished()) {
        return Err(ApiError::invalid_field(format!(
            "states: {state} jobs can still run; a purge deletes succeeded, dead or cancelled jobs"
        )));
    }
    let mut deleted = 0u64;
    loop {
        let audit = NewAudit {
            actor: caller.actor().to_string(),
            action: "queue.purge".into(),
            target: name.clone(),
            detail: serde_json::json!({ "states": states }),
        };
        let results = state
            .store
            .write_unit(
                vec![
                    WriteOp::QueuePurge(QueuePurge {
                        queue: name.clone(),
                        states: states.clone(),
                        limit: PURGE_BATCH,
                    }),
                    WriteOp::Audit(audit),
                ],
                state.clock.now(),
            )
            .await?;
        let Some(WriteResult::QueuePurged(n)) = results.first() else {
            return Err(ApiError::unavailable(
                "the store answered a purge with something else",
            ));
        };
        deleted += n;
        if *n < u64::from(PURGE_BATCH) {
            break;
        }
    }
    Ok(Json(Purged {
        queue: name,
        states,
        deleted,
    }))
}
