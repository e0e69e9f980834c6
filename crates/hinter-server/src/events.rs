//! `GET /api/v1/events`: the durable event log after an id, as JSON pages with an optional
//! long-poll. Clients keep the id of the last event they handled and ask for what follows.

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{name_filter, non_empty, parse_limit, parse_query, parse_wait};
use crate::AppState;
use axum::extract::State;
use axum::http::Uri;
use axum::Json;
use hinter_core::{EventFilter, JobEvent};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

/// Events per page unless `limit` says otherwise.
const DEFAULT_LIMIT: u32 = 100;
/// Most events per page.
const MAX_LIMIT: u32 = 1000;
/// Longest wait without a hint before reading again: hints are best effort.
const RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    after: Option<String>,
    wait: Option<String>,
    limit: Option<String>,
    queue: Option<String>,
    job: Option<String>,
    job_id: Option<String>,
}

/// A page of the event log.
#[derive(Debug, Serialize)]
pub struct EventsPage {
    pub events: Vec<JobEvent>,
    /// Pass back as `after` for the next page. Past the last event when a filter skipped
    /// entries after it; never past an event not yet returned.
    pub next_after: i64,
}

/// `GET /api/v1/events?after=&limit=&wait=&queue=&job=&job_id=`: events after `after`
/// (default 0: the oldest retained), oldest first; with `wait`, an empty page waits up to
/// that long for the first matching event.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> ApiResult<Json<EventsPage>> {
    let query: EventsQuery = parse_query(&uri)?;
    let after = match non_empty(query.after) {
        None => 0,
        Some(s) => s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::bad_request(format!("after: {s:?} is not an event id (0 or more)"))
        })?,
    };
    let limit = parse_limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let wait = parse_wait(query.wait, state.config.max_wait)?;
    let queue = name_filter("queue", query.queue)?;
    caller.check_filter(queue.as_deref())?;
    let filter = EventFilter {
        queue,
        job: name_filter("job", query.job)?,
        job_id: match non_empty(query.job_id) {
            None => None,
            Some(s) => Some(s.parse().map_err(|_| {
                ApiError::bad_request(format!("job_id: {s:?} is not a job id (a UUID)"))
            })?),
        },
    };
    let deadline = crate::deadline_after(wait);
    // Subscribed before the first read, so a commit between the read and the wait wakes us.
    let mut hints = (!wait.is_zero()).then(|| state.store.subscribe());
    let mut after = after;
    loop {
        let page = state.store.events_read(after, &filter, limit).await?;
        after = page.next_after;
        let stopping = !state.ready.load(std::sync::atomic::Ordering::Acquire);
        let rx = match hints.as_mut() {
            Some(rx) if page.events.is_empty() && Instant::now() < deadline && !stopping => rx,
            _ => {
                return Ok(Json(EventsPage {
                    events: page.events,
                    next_after: page.next_after,
                }))
            }
        };
        let recheck = deadline.min(Instant::now() + RECHECK);
        // A hint, lag or the recheck time: read again. No more hints: poll.
        if let Ok(Err(RecvError::Closed)) = tokio::time::timeout_at(recheck, rx.recv()).await {
            tokio::time::sleep_until(recheck).await;
        }
    }
}
