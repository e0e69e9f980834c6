//! `GET /api/v1/workers`: the live hinter processes sharing this store.

use axum::extract::State;
use axum::Json;
use hinter_core::ProcessInfo;
use serde::Serialize;

use crate::{ApiResult, AppState};

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
