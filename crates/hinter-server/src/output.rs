//! What running attempts report, and reading it back: `POST /api/v1/jobs/{id}/report`
//! (worker protocol), `GET /api/v1/jobs/{id}/logs`, and `GET /api/v1/definitions`.

use crate::auth::Caller;
use crate::jobs::check_job_queue;
use axum::extract::State;
use axum::http::Uri;
use axum::Json;
use hinter_core::output::{DefinitionList, LogPage, ReportBody, MAX_LOG_PAGE};
use hinter_core::LogQuery;
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::extract::{non_empty, parse_limit, parse_query, JobBody, JobId};
use crate::AppState;

/// `POST /api/v1/jobs/{id}/report`: appends log lines to the attempt the caller runs and
/// sets the job's progress and checkpoint; 409 when the lease token is stale.
pub async fn report(
    State(state): State<AppState>,
    caller: Caller,
    JobId(id): JobId,
    JobBody(body): JobBody<ReportBody>,
) -> ApiResult<Json<serde_json::Value>> {
    check_job_queue(&state, &caller, id).await?;
    let lines = body.logs.len();
    state
        .store
        .job_report(body.into_report(id), state.clock.now())
        .await?;
    Ok(Json(serde_json::json!({ "logged": lines })))
}

/// `GET /api/v1/jobs/{id}/logs` query.
#[derive(Debug, Default, Deserialize)]
pub struct LogsQuery {
    pub attempt: Option<String>,
    pub after: Option<String>,
    pub limit: Option<String>,
}

/// `GET /api/v1/jobs/{id}/logs[?attempt=&after=&limit=]`: the job's log lines in the order
/// written; `next_after` continues from the last one (to page, or to follow a running job).
pub async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    JobId(id): JobId,
    uri: Uri,
) -> ApiResult<Json<LogPage>> {
    check_job_queue(&state, &caller, id).await?;
    let query: LogsQuery = parse_query(&uri)?;
    let attempt = match non_empty(query.attempt) {
        None => None,
        Some(raw) => Some(raw.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
            ApiError::bad_request(format!("attempt: {raw:?} is not a number from 1"))
        })?),
    };
    let after = match non_empty(query.after) {
        None => 0,
        Some(raw) => raw.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::bad_request(format!("after: {raw:?} is not a line id (0 or more)"))
        })?,
    };
    let limit = parse_limit(query.limit, MAX_LOG_PAGE, MAX_LOG_PAGE)?;
    let lines = state
        .store
        .job_logs(
            id,
            LogQuery {
                attempt,
                after,
                limit,
            },
        )
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job with id {id}")))?;
    let next_after = lines.last().map_or(after, |line| line.id);
    Ok(Json(LogPage {
        job_id: id,
        lines,
        next_after,
    }))
}

/// `GET /api/v1/definitions`: the job definitions loaded (script folders with their file,
/// interpreter and settings, or the error that keeps one from loading; definitions
/// registered in code).
pub async fn definitions(State(state): State<AppState>) -> Json<DefinitionList> {
    Json(DefinitionList {
        definitions: state.definitions.describe(),
    })
}
