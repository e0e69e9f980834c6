//! `/api/v1/queues…`: list, pause, resume.

use axum::extract::State;
use axum::Json;
use hinter_core::access::NewAudit;
use hinter_core::store::{QueueInfo, WriteOp, WriteResult};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::QueueName;
use crate::wire::QueueList;
use crate::AppState;

/// `GET /api/v1/queues`.
/// A token limited to some queues sees only those.
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<QueueList>> {
    let mut queues = state.store.queue_list().await?;
    queues.retain(|q| caller.may_use(&q.name));
    Ok(Json(QueueList { queues }))
}

/// `POST /api/v1/queues/{name}/pause`.
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    QueueName(name): QueueName,
) -> ApiResult<Json<QueueInfo>> {
    set_paused(state, caller, name, true).await
}

/// `POST /api/v1/queues/{name}/resume`.
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
