//! `/api/v1/queues…`: list, pause, resume.

use axum::extract::State;
use axum::Json;
use hinter_core::store::QueueInfo;

use crate::error::ApiResult;
use crate::extract::QueueName;
use crate::wire::QueueList;
use crate::AppState;

/// `GET /api/v1/queues`.
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<QueueList>> {
    let queues = state.store.queue_list().await?;
    Ok(Json(QueueList { queues }))
}

/// `POST /api/v1/queues/{name}/pause`.
pub async fn pause(
    State(state): State<AppState>,
    QueueName(name): QueueName,
) -> ApiResult<Json<QueueInfo>> {
    set_paused(state, name, true).await
}

/// `POST /api/v1/queues/{name}/resume`.
pub async fn resume(
    State(state): State<AppState>,
    QueueName(name): QueueName,
) -> ApiResult<Json<QueueInfo>> {
    set_paused(state, name, false).await
}

/// Sets the flag, then answers the queue as listed; a queue without jobs that the store no
/// longer lists (resumed, never used) is shown with zero counts.
async fn set_paused(state: AppState, name: String, paused: bool) -> ApiResult<Json<QueueInfo>> {
    state.store.queue_set_paused(&name, paused).await?;
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
        });
    Ok(Json(info))
}
