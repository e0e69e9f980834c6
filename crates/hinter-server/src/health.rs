//! `/healthz` (the process runs) and `/readyz` (started and the store answers).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::wire::Status;
use crate::AppState;

/// Longest a readiness check waits for the store.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /healthz`.
pub async fn healthz() -> Json<Status> {
    Json(Status {
        status: "ok",
        reason: None,
    })
}

/// `GET /readyz`.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Status>) {
    let not_ready = |reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Status {
                status: "not_ready",
                reason: Some(reason),
            }),
        )
    };
    if !state.ready.load(Ordering::Acquire) {
        return not_ready("the server is starting or stopping".to_string());
    }
    match tokio::time::timeout(PING_TIMEOUT, state.store.ping()).await {
        Err(_) => not_ready(format!(
            "the store did not answer within {}s",
            PING_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check: store ping failed");
            not_ready(e.to_string())
        }
        Ok(Ok(())) => (
            StatusCode::OK,
            Json(Status {
                status: "ready",
                reason: None,
            }),
        ),
    }
}
