//! `GET /api/v1/workers`: the live hinter processes sharing this store; `PUT` and `DELETE
//! /api/v1/workers/{id}`: a worker that leases over HTTP reports itself alive, and leaves.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use hinter_core::{limits, FieldError, ProcessInfo};
use serde::{Deserialize, Serialize};

use crate::extract::JobBody;
use crate::{ApiError, ApiResult, AppState};

/// `PUT /api/v1/workers/{id}` body: what a worker says of itself. The server adds the role
/// (`worker`) and the time it heard from it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerReport {
    pub host: String,
    pub pid: u32,
    #[serde(default)]
    pub queues: Vec<String>,
    pub concurrency: u32,
    pub started_at: DateTime<Utc>,
}

/// Longest process id or host name accepted.
const MAX_TEXT: usize = 200;

fn check_text(field: &str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() || value.len() > MAX_TEXT {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {MAX_TEXT} bytes long"),
        ));
    }
    limits::check_text(field, value)
}

/// `PUT /api/v1/workers/{id}`: records (or refreshes) a worker process; listed by `GET
/// /api/v1/workers` until it is silent for `process_dead_after` or leaves.
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
pub async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    check_text("id", &id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    state.cluster.process_remove(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A live process, and whether it is the elected leader that runs maintenance.
#[derive(Debug, Serialize)]
pub struct WorkerView {
    #[serde(flatten)]
    pub process: ProcessInfo,
    pub leader: bool,
}

#[derive(Debug, Serialize)]
pub struct WorkerList {
    pub workers: Vec<WorkerView>,
}

/// `GET /api/v1/workers`: processes heard from within `process_dead_after`, oldest first.
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
