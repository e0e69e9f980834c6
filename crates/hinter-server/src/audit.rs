//! `GET /api/v1/audit`: the record of admin actions (cancel, retry, pause, resume, token
//! changes), newest first, with who made each one.

use axum::extract::State;
use axum::http::Uri;
use axum::Json;
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{non_empty, parse_limit, parse_query};
use crate::wire::AuditPage;
use crate::AppState;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    before: Option<String>,
    limit: Option<String>,
}

/// `GET /api/v1/audit?before=&limit=`.
#[utoipa::path(
    get, path = "/api/v1/audit", tag = "audit", operation_id = "audit",
    summary = "The record of admin actions, newest first",
    params(
        ("before" = Option<i64>, Query, minimum = 1, description = "Only entries older than this id (`next_before` of the previous page)."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Most items answered, 1 to 1000 (default 100); another value is 400.")
    ),
    responses(
        (status = 200, description = "A page; `next_before` is `null` at the oldest.", body = crate::wire::AuditPage),
        (status = 400, description = "`bad_request` naming the parameter; an unknown query parameter.", body = crate::wire::ErrorBody),
        (status = 403, description = "`forbidden`: a token limited to some queues.", body = crate::wire::ErrorBody)
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> ApiResult<Json<AuditPage>> {
    caller.check_unlimited("the audit record")?;
    let query: AuditQuery = parse_query(&uri)?;
    let before = match non_empty(query.before) {
        None => None,
        Some(s) => Some(s.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
            ApiError::bad_request(format!(
                "before: {s:?} is not an audit entry id (1 or more)"
            ))
        })?),
    };
    let limit = parse_limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let entries = state.store.audit_list(before, limit).await?;
    let next_before = match entries.last() {
        Some(last) if entries.len() == limit as usize => Some(last.id),
        _ => None,
    };
    Ok(Json(AuditPage {
        entries,
        next_before,
    }))
}
