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
use crate::wire::Logged;
use crate::AppState;

/// `POST /api/v1/jobs/{id}/report`: appends log lines to the attempt the caller runs and
/// sets the job's progress and checkpoint; 409 when the lease token is stale.
#[utoipa::path(
    post, path = "/api/v1/jobs/{id}/report", tag = "worker protocol", operation_id = "report",
    summary = "Append log lines, set progress and checkpoint of the running attempt",
    params(("id" = uuid::Uuid, Path, description = "The job's id. One that is not a UUID names no job: 404.")),
    request_body(content = hinter_core::output::ReportBody),
    responses(
        (status = 200, description = "How many lines were appended.", body = crate::wire::Logged),
        (status = 404, description = "`not_found`: no job with this id.", body = crate::wire::ErrorBody),
        (status = 409, description = "`stale_lease`: the lease token is not current (the job was rescued, finished or released); nothing changed.", body = crate::wire::ErrorBody),
        (status = 422, description = "`invalid_field` naming the field (`logs[3].line`, `progress.percent`).", body = crate::wire::ErrorBody)
    )
)]
pub async fn report(
    State(state): State<AppState>,
    caller: Caller,
    JobId(id): JobId,
    JobBody(body): JobBody<ReportBody>,
) -> ApiResult<Json<Logged>> {
    check_job_queue(&state, &caller, id).await?;
    let lines = body.logs.len();
    state
        .store
        .job_report(body.into_report(id), state.clock.now())
        .await?;
    Ok(Json(Logged {
        logged: lines as u64,
    }))
}

/// `GET /api/v1/jobs/{id}/logs` query (an unknown parameter is 400).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    pub attempt: Option<String>,
    pub after: Option<String>,
    pub limit: Option<String>,
}

/// `GET /api/v1/jobs/{id}/logs[?attempt=&after=&limit=]`: the job's log lines in the order
/// written; `next_after` continues from the last one (to page, or to follow a running job).
#[utoipa::path(
    get, path = "/api/v1/jobs/{id}/logs", tag = "jobs", operation_id = "job_logs",
    summary = "A job's log lines, in the order written",
    params(
        ("id" = uuid::Uuid, Path, description = "The job's id. One that is not a UUID names no job: 404."),
        ("attempt" = Option<i64>, Query, minimum = 1, maximum = 4294967295_i64, description = "Only the lines of this attempt (1 to 4294967295)."),
        ("after" = Option<i64>, Query, minimum = 0, description = "Only lines after this line id (`next_after` of the previous page); default 0."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Most items answered, 1 to 1000 (default 1000); another value is 400.")
    ),
    responses(
        (status = 200, description = "The lines; `next_after` continues from the last one (to page, or to follow a running job).", body = hinter_core::output::LogPage),
        (status = 400, description = "`bad_request` naming the parameter; an unknown query parameter.", body = crate::wire::ErrorBody),
        (status = 404, description = "`not_found`: no job with this id.", body = crate::wire::ErrorBody)
    )
)]
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
#[utoipa::path(
    get, path = "/api/v1/definitions", tag = "jobs", operation_id = "definitions",
    summary = "The job definitions loaded",
    responses((status = 200, description = "Script folders with their file, interpreter and settings, or the error that keeps one from loading; definitions registered in code.", body = hinter_core::output::DefinitionList))
)]
pub async fn definitions(State(state): State<AppState>) -> Json<DefinitionList> {
    Json(DefinitionList {
        definitions: state.definitions.describe(),
    })
}
