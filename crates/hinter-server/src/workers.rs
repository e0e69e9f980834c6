//! `GET /api/v1/workers`: the live hinter processes sharing this store; `PUT` and `DELETE
//! /api/v1/workers/{id}`: a worker that leases over HTTP reports itself alive, and leaves.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use hinter_core::{limits, FieldError, ProcessInfo};

use crate::extract::JobBody;
use crate::wire::{WorkerList, WorkerReport, WorkerView};
use crate::{ApiError, ApiResult, AppState};

/// Longest process id or host name accepted, in characters (as a lease's `worker_id`, which
/// is the same id; the document's `maxLength` counts characters too).
const MAX_TEXT: usize = 200;

fn check_text(field: &str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() || value.chars().count() > MAX_TEXT {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {MAX_TEXT} characters long"),
        ));
    }
    limits::check_text(field, value)
}

/// `PUT /api/v1/workers/{id}`: records (or refreshes) a worker process; listed by `GET
/// /api/v1/workers` until it is silent for `process_dead_after` or leaves.
#[utoipa::path(
    put, path = "/api/v1/workers/{id}", tag = "worker protocol", operation_id = "report_worker",
    summary = "A worker that leases over HTTP reports itself alive",
    params(("id" = String, Path, description = "The worker process's id (1 to 200 characters, no NUL); also its `worker_id`.")),
    request_body(content = crate::wire::WorkerReport),
    responses(
        (status = 200, description = "The process as recorded.", body = hinter_core::ProcessInfo),
        (status = 400, description = "`bad_request`: a bad id.", body = crate::wire::ErrorBody),
        (status = 422, description = "`invalid_field` naming the field.", body = crate::wire::ErrorBody)
    )
)]
pub async fn report(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JobBody(body): JobBody<WorkerReport>,
) -> ApiResult<Json<ProcessInfo>> {
    check_text("id", &id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    check_text("host", &body.host)?;
    if !body.queues.is_empty() {
        limits::check_lease_queues("queues", &body.queues)?;
    }
    limits::check_time("started_at", body.started_at)?;
    let process = ProcessInfo {
        id,
        host: body.host,
        pid: body.pid,
        role: "worker".into(),
        queues: body.queues,
        concurrency: body.concurrency,
        started_at: body.started_at,
        last_heartbeat_at: state.clock.now(),
        // An HTTP worker's pid means nothing to the server's machine.
        machine: String::new(),
    };
    state.cluster.process_heartbeat(process.clone()).await?;
    Ok(Json(process))
}

/// `DELETE /api/v1/workers/{id}`: a worker that stops leaves the list at once.
#[utoipa::path(
    delete, path = "/api/v1/workers/{id}", tag = "worker protocol", operation_id = "remove_worker",
    summary = "A worker that stops leaves the list at once",
    params(("id" = String, Path, description = "The worker process's id (1 to 200 characters, no NUL); also its `worker_id`.")),
    responses(
        (status = 204, description = "Removed (or was not listed)."),
        (status = 400, description = "`bad_request`: a bad id.", body = crate::wire::ErrorBody)
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    check_text("id", &id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    state.cluster.process_remove(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/workers`: processes heard from within `process_dead_after`, oldest first.
#[utoipa::path(
    get, path = "/api/v1/workers", tag = "workers", operation_id = "list_workers",
    summary = "The live hinter processes sharing the store",
    responses((status = 200, description = "Processes heard from within `--process-dead-after`, oldest first.", body = crate::wire::WorkerList))
)]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<WorkerList>> {
    let now = state.clock.now();
    let dead_after = chrono::Duration::from_std(state.config.process_dead_after)
        .unwrap_or(chrono::Duration::seconds(30));
    let processes = state.cluster.process_list(now - dead_after).await?;
    let leader = state
        .cluster
        .leader_get(hinter_core::cluster::MAINTENANCE_LEADERSHIP)
        .await?
        .filter(|l| l.expires_at > now)
        .map(|l| l.holder);
    Ok(Json(WorkerList {
        workers: processes
            .into_iter()
            .map(|process| WorkerView {
                leader: leader.as_deref() == Some(process.id.as_str()),
                process,
            })
            .collect(),
    }))
}
