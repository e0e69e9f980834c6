//! `/healthz` (the process runs) and `/readyz` (started and the store answers).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::wire::{HealthStatus, Status};
use crate::AppState;

/// Longest a readiness check waits for the store.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /healthz`.
#[utoipa::path(
    get, path = "/healthz", tag = "health", operation_id = "healthz",
    summary = "Liveness: the process runs",
    responses((status = 200, description = "`{\"status\": \"ok\"}`.", body = crate::wire::Status))
)]
pub async fn healthz() -> Json<Status> {
    Json(Status {
        status: HealthStatus::Ok.as_str().into(),
        reason: None,
        details: None,
    })
}

/// `GET /readyz`: 200 `ready`, or 503 `not_ready` with the reason (the server is starting
/// or stopping; the store does not answer, cannot write, or its file was deleted). The
/// store's `details` (SQLite: `wal_bytes`, `wal_limit_bytes`, and a `warning` when the WAL
/// is far over its bound) come with either answer and never decide readiness.
#[utoipa::path(
    get, path = "/readyz", tag = "health", operation_id = "readyz",
    summary = "Readiness: started, and the store answers",
    description = "The store's `details` (SQLite: `wal_bytes`, `wal_limit_bytes`, and a `warning` when the WAL is far over its bound) come with either answer and never decide readiness.",
    responses(
        (status = 200, description = "`status`: `ready`.", body = crate::wire::Status),
        (status = 503, description = "`status`: `not_ready`, with the `reason` (starting or stopping; the store does not answer, cannot write, or its file was deleted).", body = crate::wire::Status)
    )
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Status>) {
    let details = Some(state.store.details()).filter(|d| !d.is_empty());
    let not_ready = |reason: String, details| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Status {
                status: HealthStatus::NotReady.as_str().into(),
                reason: Some(reason),
                details,
            }),
        )
    };
    if !state.ready.load(Ordering::Acquire) {
        return not_ready("the server is starting or stopping".to_string(), details);
    }
    match tokio::time::timeout(PING_TIMEOUT, state.store.ping()).await {
        Err(_) => not_ready(
            format!(
                "the store did not answer within {}s",
                PING_TIMEOUT.as_secs()
            ),
            details,
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check: store ping failed");
            not_ready(e.to_string(), details)
        }
        Ok(Ok(())) => (
            StatusCode::OK,
            Json(Status {
                status: HealthStatus::Ready.as_str().into(),
                reason: None,
                details,
            }),
        ),
    }
}
