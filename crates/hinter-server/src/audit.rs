//! `GET /api/v1/audit`: the record of admin actions (cancel, retry, pause, resume, token
//! changes), newest first, with who made each one.

use axum::extract::State;
use axum::http::Uri;
use axum::Json;
use hinter_core::access::AuditEntry;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{non_empty, parse_limit, parse_query};
use crate::AppState;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    before: Option<String>,
    limit: Option<String>,
}

/// A page of the audit record.
#[derive(Debug, Serialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass back as `before` for older entries; `null` at the oldest.
    pub next_before: Option<i64>,
}

/// `GET /api/v1/audit?before=&limit=`.
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
