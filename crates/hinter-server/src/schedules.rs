//! `/api/v1/schedules…`: list, create, show, replace, delete, pause, resume, history
//! (`docs/schedules.md`). Every change is written with its audit entry in one unit of work.
//! Times a schedule starts from are on the store's clock (`Store::store_time`), as the
//! scheduler's.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use hinter_core::access::NewAudit;
use hinter_core::schedule::{NewSchedule, Schedule, ScheduleSpec, SOURCE_API};
use hinter_core::store::{WriteOp, WriteResult};
use serde::Deserialize;
use serde_json::Value;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{non_empty, parse_json, parse_limit, parse_query, read_body};
use crate::wire::{OccurrenceList, ScheduleList, ScheduleView};
use crate::AppState;

pub use crate::wire::NEXT_FIRE_TIMES;

const DEFAULT_HISTORY: u32 = 100;
/// Schedules may enqueue on any queue: tokens limited to some queues are refused.
const SPANS: &str = "schedules";
const MAX_HISTORY: u32 = 1000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    limit: Option<String>,
    before: Option<String>,
}

fn audit(caller: &Caller, action: &str, name: &str, detail: Value) -> WriteOp {
    WriteOp::Audit(NewAudit {
        actor: caller.actor().to_string(),
        action: action.into(),
        target: name.to_string(),
        detail,
    })
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("no schedule named {name:?}"))
}

/// Runs `op` and its audit entry; the schedule the op answered.
async fn write(state: &AppState, op: WriteOp, audit: WriteOp) -> ApiResult<Schedule> {
    let results = state
        .store
        .write_unit(vec![op, audit], state.clock.now())
        .await?;
    match results.into_iter().next() {
        Some(WriteResult::ScheduleSaved(s) | WriteResult::ScheduleDeleted(s)) => Ok(*s),
        _ => Err(ApiError::unavailable(
            "the store answered a schedule change with no schedule",
        )),
    }
}

fn store_now(state: &AppState) -> DateTime<Utc> {
    state.store.store_time(state.clock.now())
}

/// `GET /api/v1/schedules`.
#[utoipa::path(
    get, path = "/api/v1/schedules", tag = "schedules", operation_id = "list_schedules",
    summary = "Every schedule",
    responses((status = 200, description = "The schedules, each with its next fire times.", body = crate::wire::ScheduleList), (status = 403, description = "`forbidden`: a token limited to some queues (schedules may enqueue on any).", body = crate::wire::ErrorBody))
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<ScheduleList>> {
    caller.check_unlimited(SPANS)?;
    let schedules = state.store.schedule_list().await?;
    Ok(Json(ScheduleList {
        schedules: schedules.into_iter().map(ScheduleView::from).collect(),
    }))
}

/// `POST /api/v1/schedules`: 201 with `Location`; a taken name is 409.
#[utoipa::path(
    post, path = "/api/v1/schedules", tag = "schedules", operation_id = "create_schedule",
    summary = "Create a schedule",
    request_body(content = hinter_core::schedule::ScheduleSpec),
    responses(
        (status = 201, description = "Created.", body = crate::wire::ScheduleView, headers(("Location" = String, description = "`/api/v1/schedules/{name}`."))),
        (status = 403, description = "`forbidden`: a token limited to some queues (schedules may enqueue on any).", body = crate::wire::ErrorBody),
        (status = 409, description = "`conflict`: the name is taken.", body = crate::wire::ErrorBody),
        (status = 422, description = "`invalid_field` naming the field (`cron`, `time_zone`…).", body = crate::wire::ErrorBody)
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.check_unlimited(SPANS)?;
    let config = &state.config;
    let bytes = read_body(&headers, body, config.max_job_bytes, config.body_timeout).await?;
    let spec: ScheduleSpec = parse_json(&bytes, None)?;
    let new = NewSchedule::from_spec(spec, SOURCE_API, store_now(&state), true)?;
    let name = new.spec.name.clone();
    let saved = write(
        &state,
        WriteOp::ScheduleSave(new),
        audit(&caller, "schedule.create", &name, Value::Null),
    )
    .await?;
    let location = format!("/api/v1/schedules/{name}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(ScheduleView::from(saved)),
    )
        .into_response())
}

/// `GET /api/v1/schedules/{name}`.
#[utoipa::path(
    get, path = "/api/v1/schedules/{name}", tag = "schedules", operation_id = "get_schedule",
    summary = "A schedule",
    params(("name" = String, Path, description = "The schedule's name.")),
    responses((status = 200, description = "The schedule.", body = crate::wire::ScheduleView), (status = 403, description = "`forbidden`: a token limited to some queues (schedules may enqueue on any).", body = crate::wire::ErrorBody), (status = 404, description = "`not_found`: no schedule of this name.", body = crate::wire::ErrorBody))
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    caller.check_unlimited(SPANS)?;
    let schedule = state
        .store
        .schedule_get(&name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    Ok(Json(schedule.into()))
}

/// `PUT /api/v1/schedules/{name}`: creates or replaces (the body's `name` may be left out;
/// given, it must be the path's). The next fire time is computed again from now.
#[utoipa::path(
    put, path = "/api/v1/schedules/{name}", tag = "schedules", operation_id = "replace_schedule",
    summary = "Create or replace a schedule",
    description = "The body's `name` may be left out; given, it must be the path's. The next fire time is computed again from now.",
    params(("name" = String, Path, description = "The schedule's name.")),
    request_body(content = hinter_core::schedule::ScheduleSpec),
    responses(
        (status = 200, description = "Replaced.", body = crate::wire::ScheduleView),
        (status = 201, description = "Created.", body = crate::wire::ScheduleView),
        (status = 403, description = "`forbidden`: a token limited to some queues (schedules may enqueue on any).", body = crate::wire::ErrorBody),
        (status = 422, description = "`invalid_field` naming the field; a `name` other than the path's.", body = crate::wire::ErrorBody)
    )
)]
pub async fn replace(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.check_unlimited(SPANS)?;
    let config = &state.config;
    let bytes = read_body(&headers, body, config.max_job_bytes, config.body_timeout).await?;
    let mut object: serde_json::Map<String, Value> = parse_json(&bytes, None)?;
    match object.get("name") {
        None => {
            object.insert("name".into(), Value::String(name.clone()));
        }
        Some(Value::String(given)) if *given == name => {}
        Some(other) => {
            return Err(ApiError::invalid_field(format!(
                "name: {other} differs from the name in the path ({name:?})"
            )))
        }
    }
    let spec: ScheduleSpec = serde_json::from_value(Value::Object(object))
        .map_err(|e| ApiError::invalid_field(e.to_string()))?;
    let existed = state.store.schedule_get(&name).await?.is_some();
    let new = NewSchedule::from_spec(spec, SOURCE_API, store_now(&state), false)?;
    let saved = write(
        &state,
        WriteOp::ScheduleSave(new),
        audit(&caller, "schedule.replace", &name, Value::Null),
    )
    .await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(ScheduleView::from(saved))).into_response())
}

/// `DELETE /api/v1/schedules/{name}`: the schedule as it was; its history goes with it.
#[utoipa::path(
    delete, path = "/api/v1/schedules/{name}", tag = "schedules", operation_id = "delete_schedule",
    summary = "Delete a schedule and its history",
    params(("name" = String, Path, description = "The schedule's name.")),
    responses((status = 200, description = "The schedule as it was.", body = crate::wire::ScheduleView), (status = 403, description = "`forbidden`: a token limited to some queues (schedules may enqueue on any).", body = crate::wire::ErrorBody), (status = 404, description = "`not_found`: no schedule of this name.", body = crate::wire::ErrorBody))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    caller.check_unlimited(SPANS)?;
    let deleted = write(
        &state,
        WriteOp::ScheduleDelete(name.clone()),
        audit(&caller, "schedule.delete", &name, Value::Null),
    )
    .await?;
    Ok(Json(deleted.into()))
}

/// `POST /api/v1/schedules/{name}/pause`.
#[utoipa::path(
    post, path = "/api/v1/schedules/{name}/pause", tag = "schedules", operation_id = "pause_schedule",
    summary = "Pause a schedule",
    params(("name" = String, Path, description = "The schedule's name.")),
    responses((status = 200, description = "The schedule.", body = crate::wire::ScheduleView), (status = 403, description = "`forbidden`: a token limited to some queues (schedules may enqueue on any).", body = crate::wire::ErrorBody), (status = 404, description = "`not_found`: no schedule of this name.", body = crate::wire::ErrorBody))
)]
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    caller.check_unlimited(SPANS)?;
    let op = WriteOp::SchedulePause {
        name: name.clone(),
        paused: true,
        next_fire_at: None,
    };
    let saved = write(
        &state,
        op,
        audit(&caller, "schedule.pause", &name, Value::Null),
    )
    .await?;
    Ok(Json(saved.into()))
}

/// `POST /api/v1/schedules/{name}/resume`: ticks due while it was paused are not fired; it
/// goes on from now (a one-shot whose time passed fires at once).
#[utoipa::path(
    post, path = "/api/v1/schedules/{name}/resume", tag = "schedules", operation_id = "resume_schedule",
    summary = "Resume a schedule from now (ticks due meanwhile are not fired)",
    params(("name" = String, Path, description = "The schedule's name.")),
    responses((status = 200, description = "The schedule.", body = crate::wire::ScheduleView), (status = 403, description = "`forbidden`: a token limited to some queues (schedules may enqueue on any).", body = crate::wire::ErrorBody), (status = 404, description = "`not_found`: no schedule of this name.", body = crate::wire::ErrorBody))
)]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    caller.check_unlimited(SPANS)?;
    let current = state
        .store
        .schedule_get(&name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    let next = match (&current.spec.at, current.next_fire_at) {
        (Some(_), next) => next,
        (None, None) => None,
        (None, Some(_)) => current.spec.validate()?.first_from(store_now(&state)),
    };
    let op = WriteOp::SchedulePause {
        name: name.clone(),
        paused: false,
        next_fire_at: Some(next),
    };
    let saved = write(
        &state,
        op,
        audit(&caller, "schedule.resume", &name, Value::Null),
    )
    .await?;
    Ok(Json(saved.into()))
}

/// `GET /api/v1/schedules/{name}/occurrences[?limit=&before=]`: latest first.
#[utoipa::path(
    get, path = "/api/v1/schedules/{name}/occurrences", tag = "schedules", operation_id = "schedule_occurrences",
    summary = "A schedule's history, latest first",
    params(
        ("name" = String, Path, description = "The schedule's name."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Most items answered, 1 to 1000 (default 100); another value is 400."),
        ("before" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "Only occurrences before this time (`next_before` of the previous page), RFC 3339.")
    ),
    responses(
        (status = 200, description = "A page; `next_before` is absent on the last.", body = crate::wire::OccurrenceList),
        (status = 400, description = "`bad_request`: a bad `limit`; an unknown query parameter.", body = crate::wire::ErrorBody),
        (status = 403, description = "`forbidden`: a token limited to some queues (schedules may enqueue on any).", body = crate::wire::ErrorBody),
        (status = 404, description = "`not_found`: no schedule of this name.", body = crate::wire::ErrorBody),
        (status = 422, description = "`invalid_field`: `before` is not an RFC 3339 time.", body = crate::wire::ErrorBody)
    )
)]
pub async fn occurrences(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    uri: Uri,
) -> ApiResult<Json<OccurrenceList>> {
    caller.check_unlimited(SPANS)?;
    let query: HistoryQuery = parse_query(&uri)?;
    let limit = parse_limit(query.limit, DEFAULT_HISTORY, MAX_HISTORY)?;
    let before = non_empty(query.before)
        .map(|b| {
            b.parse::<DateTime<Utc>>().map_err(|e| {
                ApiError::invalid_field(format!("before: {b:?} is not an RFC 3339 time: {e}"))
            })
        })
        .transpose()?;
    if state.store.schedule_get(&name).await?.is_none() {
        return Err(not_found(&name));
    }
    let mut occurrences = state
        .store
        .occurrence_list(&name, before, limit.saturating_add(1))
        .await?;
    let more = occurrences.len() > limit as usize;
    occurrences.truncate(limit as usize);
    let next_before = if more {
        occurrences.last().map(|o| o.fire_time)
    } else {
        None
    };
    Ok(Json(OccurrenceList {
        occurrences,
        next_before,
    }))
}
