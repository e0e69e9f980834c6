//! `GET /api/v1/events`: the durable event log after an id, either as JSON pages with an
//! optional long-poll, or, when the request accepts `text/event-stream`, as a stream of
//! Server-Sent Events. Clients keep the id of the last event they handled and ask for what
//! follows (`after=`, or the `Last-Event-ID` header a reconnecting `EventSource` sends).
//!
//! Each SSE stream takes its events from the server's one follower of the log
//! ([`crate::live::EventHub`]), filtered in memory, only when its client has taken the
//! previous ones (the response body is polled only when the connection can write), so a slow
//! or stuck client holds up no one else: once the hub has moved on past what it keeps, the
//! stream reads the store a page at a time until it has caught up. Where no follower feeds
//! the hub, each stream reads the store itself, waking on the store's hints (and every
//! second, since hints are best effort). With `every=`, a stream sends one `summary` per
//! interval instead of each event: what a dashboard needs to know that it should refresh.
//! The number of open streams is capped per server ([`crate::ServerConfig::max_event_streams`]);
//! a stream ends within a second once the server begins to stop.

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{name_filter, non_empty, parse_limit, parse_query, parse_wait};
use crate::wire::EventsPage;
use crate::AppState;
use axum::extract::State;
use axum::http::header::{ACCEPT, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use hinter_core::{EventFilter, JobEvent, Store, StoreEvent};
use hinter_engine::EventBatch;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Events per page unless `limit` says otherwise.
const DEFAULT_LIMIT: u32 = 100;
/// Most events per page.
const MAX_LIMIT: u32 = 1000;
/// Longest wait without a hint before reading again: hints are best effort.
const RECHECK: Duration = Duration::from_secs(1);
/// Events an SSE stream reads from the store at a time: all it ever holds.
const STREAM_PAGE: u32 = 100;
/// What an SSE stream tells `EventSource` to wait before reconnecting.
const RECONNECT: Duration = Duration::from_millis(2000);
/// `Retry-After` of the 503 past the cap on streams, in seconds.
const STREAMS_FULL_RETRY_AFTER: &str = "5";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    after: Option<String>,
    wait: Option<String>,
    limit: Option<String>,
    queue: Option<String>,
    job: Option<String>,
    job_id: Option<String>,
    every: Option<String>,
}

/// The places for SSE streams of one server (one [`crate::router`]).
#[derive(Clone)]
pub struct Streams {
    slots: Arc<Semaphore>,
    max: usize,
}

impl Streams {
    pub fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }
}

/// `GET /api/v1/events?after=&limit=&wait=&queue=&job=&job_id=`.
///
/// JSON: events after `after` (default 0: the oldest retained), oldest first; with `wait`,
/// an empty page waits up to that long for the first matching event.
///
/// `Accept: text/event-stream`: a stream of the events after `Last-Event-ID`, else after
/// `after`, else from now on; `limit` and `wait` do not apply; `every` asks for summaries.
#[utoipa::path(
    get, path = "/api/v1/events", tag = "events", operation_id = "events",
    summary = "The durable event log: JSON pages, or Server-Sent Events",
    description = "JSON: the events after `after` (default 0: the oldest kept), oldest first; with `wait`, an empty page waits up to that long for the first matching event.\n\nWith `Accept: text/event-stream`: a stream of the events after `Last-Event-ID`, else after `after`, else from now on (`limit` and `wait` do not apply). Each event is `id:` its id, `event:` its kind, `data:` the event as JSON; a `gap` event tells of events pruned before the reader got them; comment lines keep the stream alive. With `every`, `summary` events stand for the events instead.",
    params(
        ("after" = Option<i64>, Query, minimum = 0, description = "Only events after this id (0 or more)."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Most items answered, 1 to 1000 (default 100); another value is 400."),
        ("wait" = Option<String>, Query, description = "Long-poll: a duration such as `30s` (cut to the server's `--max-wait`, default 60s); bad: 400."),
        ("queue" = Option<String>, Query, description = "Only events of jobs of this queue; required for a token limited to some queues."),
        ("job" = Option<String>, Query, description = "Only events of jobs of this definition name."),
        ("job_id" = Option<uuid::Uuid>, Query, description = "Only events of this job."),
        ("every" = Option<String>, Query, description = "Event stream only: instead of each event, at most one `summary` event per interval (a duration such as `1s`, cut to `100ms`..`1h`), sent as soon as an event arrives once the interval since the last one has passed. Its data: `first_id`, `last_id` (also its SSE id), `events` (how many), `kinds` (how many of each kind), `queues` (up to 100), `job_ids` (up to 100 distinct jobs) and `more_jobs` (whether more jobs had events). Not a duration: 400. JSON pages ignore it."),
        ("Last-Event-ID" = Option<String>, Header, description = "Event stream only: resume after this event id (0 or more; empty: as absent), as `EventSource` sends it on reconnecting.")
    ),
    responses(
        (status = 200, description = "A page of events (JSON), or the stream (`text/event-stream`, as the `Accept` header asks).",
            content(
                (crate::wire::EventsPage = "application/json"),
                (String = "text/event-stream")
            )),
        (status = 400, description = "`bad_request` naming the parameter or `Last-Event-ID`; an unknown query parameter.", body = crate::wire::ErrorBody),
        (status = 403, description = "`forbidden`: a token limited to some queues without `queue=` naming one of them.", body = crate::wire::ErrorBody),
        (status = 503, description = "`overloaded`: the server has `--max-event-streams` streams open (with `Retry-After`).", body = crate::wire::ErrorBody, headers(("Retry-After" = String, description = "Seconds to wait before trying again.")))
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(streams): Extension<Streams>,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Response> {
    let query: EventsQuery = parse_query(&uri)?;
    let after = match non_empty(query.after) {
        None => None,
        Some(s) => Some(parse_id(&s).ok_or_else(|| {
            ApiError::bad_request(format!("after: {s:?} is not an event id (0 or more)"))
        })?),
    };
    let limit = parse_limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let wait = parse_wait(query.wait, state.config.max_wait)?;
    let every = parse_every(query.every)?;
    let queue = name_filter("queue", query.queue)?;
    // A token limited to queues follows all of them unless it names one.
    let queues = caller.listing_queues(queue.as_deref())?;
    let filter = EventFilter {
        queue,
        queues,
        job: name_filter("job", query.job)?,
        job_id: match non_empty(query.job_id) {
            None => None,
            Some(s) => Some(s.parse().map_err(|_| {
                ApiError::bad_request(format!("job_id: {s:?} is not a job id (a UUID)"))
            })?),
        },
    };
    if wants_event_stream(&headers) {
        let last_event_id = match headers.get("last-event-id") {
            None => None,
            Some(value) => {
                let text = value.to_str().unwrap_or("").trim();
                // EventSource sends an empty header when it never saw an id.
                if text.is_empty() {
                    None
                } else {
                    Some(parse_id(text).ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "Last-Event-ID: {text:?} is not an event id (0 or more)"
                        ))
                    })?)
                }
            }
        };
        return stream(state, streams, filter, last_event_id.or(after), every).await;
    }
    Ok(Json(long_poll(&state, after.unwrap_or(0), &filter, limit, wait).await?).into_response())
}

/// Shortest and longest `every=`: a value outside is cut to them, as `wait` is.
const EVERY: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(3600));

fn parse_every(value: Option<String>) -> ApiResult<Option<Duration>> {
    let Some(raw) = non_empty(value) else {
        return Ok(None);
    };
    let every = hinter_core::parse_duration(&raw)
        .map_err(|e| ApiError::bad_request(format!("every: {e}")))?;
    Ok(Some(every.clamp(EVERY.0, EVERY.1)))
}

fn parse_id(s: &str) -> Option<i64> {
    s.parse::<i64>().ok().filter(|n| *n >= 0)
}

/// Whether the `Accept` header asks for `text/event-stream`.
fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT).iter().any(|value| {
        value.to_str().is_ok_and(|text| {
            text.split(',').any(|item| {
                item.split(';')
                    .next()
                    .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/event-stream"))
            })
        })
    })
}

async fn long_poll(
    state: &AppState,
    after: i64,
    filter: &EventFilter,
    limit: u32,
    wait: Duration,
) -> ApiResult<EventsPage> {
    let deadline = crate::deadline_after(wait);
    // Subscribed before the first read, so a commit between the read and the wait wakes us.
    let mut hints = (!wait.is_zero()).then(|| state.store.subscribe());
    let mut after = after;
    loop {
        let page = state.store.events_read(after, filter, limit).await?;
        after = page.next_after;
        let stopping = !state.ready.load(Ordering::Acquire);
        let rx = match hints.as_mut() {
            Some(rx) if page.events.is_empty() && Instant::now() < deadline && !stopping => rx,
            _ => {
                return Ok(EventsPage {
                    events: page.events,
                    next_after: page.next_after,
                })
            }
        };
        let recheck = deadline.min(Instant::now() + RECHECK);
        // A hint, lag or the recheck time: read again. No more hints: poll.
        if let Ok(Err(RecvError::Closed)) = tokio::time::timeout_at(recheck, rx.recv()).await {
            tokio::time::sleep_until(recheck).await;
        }
    }
}

/// Opens an SSE stream of the events after `resume` (`None`: from the end of the log now).
async fn stream(
    state: AppState,
    streams: Streams,
    filter: EventFilter,
    resume: Option<i64>,
    every: Option<Duration>,
) -> ApiResult<Response> {
    let Ok(permit) = streams.slots.clone().try_acquire_owned() else {
        let mut response = ApiError::overloaded(format!(
            "the server has {} event streams open, its limit (--max-event-streams); \
             try again later",
            streams.max
        ))
        .into_response();
        response.headers_mut().insert(
            RETRY_AFTER,
            HeaderValue::from_static(STREAMS_FULL_RETRY_AFTER),
        );
        return Ok(response);
    };
    // Subscribed before the first read, so no batch or hint between the two is missed.
    let source = match state.hub.subscribe() {
        Some(batches) => Source::Hub {
            batches,
            behind: resume.is_some(),
        },
        None => Source::Store(state.store.subscribe()),
    };
    let mut lead = VecDeque::from([Event::default().retry(RECONNECT)]);
    let after = match resume {
        Some(after) => {
            if let Some(gap) = find_gap(&*state.store, after).await? {
                lead.push_back(gap);
            }
            after
        }
        None => state.store.events_last_id().await?,
    };
    let follow = Follow {
        store: state.store.clone(),
        filter,
        after,
        lead,
        page: VecDeque::new(),
        source,
        summary: every.map(Summary::new),
        recheck: Default::default(),
        ready: state.ready.clone(),
        _permit: permit,
    };
    let events = futures_util::stream::unfold(follow, |mut follow| async move {
        let event = follow.next().await?;
        Some((Ok::<_, Infallible>(event), follow))
    });
    Ok(Sse::new(events)
        .keep_alive(
            KeepAlive::new()
                .interval(state.config.event_keep_alive)
                .text("keep-alive"),
        )
        .into_response())
}

/// The `gap` event for a reader resuming after `after`, when entries it has not seen were
/// pruned: the entry `after` itself is gone and the oldest entry kept is more than one past
/// it. (Ids need not be dense, so on PostgreSQL the ids named may not all have held
/// entries; a real loss is never left unsaid.)
async fn find_gap(store: &dyn Store, after: i64) -> ApiResult<Option<Event>> {
    if after == 0 {
        return Ok(None);
    }
    let everything = EventFilter::default();
    let oldest = store.events_read(0, &everything, 1).await?;
    let Some(oldest) = oldest.events.first().map(|e| e.id) else {
        return Ok(None);
    };
    if oldest <= after.saturating_add(1) {
        return Ok(None);
    }
    let data = serde_json::json!({
        "after": after,
        "oldest_kept": oldest,
        "message": format!(
            "events after {after} and before {oldest} are no longer kept (--retain-events); \
             this stream goes on from {oldest}"
        ),
    });
    // Its id resumes a reconnect after the gap, so the gap is told once.
    Ok(Some(
        Event::default()
            .id((oldest - 1).to_string())
            .event("gap")
            .data(data.to_string()),
    ))
}

/// One SSE stream's reader: what it has to send before the log, one page of the log, and
/// where it reads next.
struct Follow {
    store: Arc<dyn Store>,
    filter: EventFilter,
    /// Every matching event up to this id has been read.
    after: i64,
    /// `retry:` and a `gap`, sent first.
    lead: VecDeque<Event>,
    page: VecDeque<JobEvent>,
    /// Where events come from while the stream is not behind; `None`: the store only.
    source: Source,
    /// With `every=`: one summary per interval instead of each event.
    summary: Option<Summary>,
    /// How soon a store-mode stream looks again after an empty read.
    recheck: hinter_engine::Recheck,
    /// Cleared when the server begins to stop: the stream then ends.
    ready: Arc<AtomicBool>,
    /// Its place under the cap on streams, given back when the stream is dropped.
    _permit: OwnedSemaphorePermit,
}

enum Source {
    /// The server's one follower of the log ([`crate::live`]); `behind` while the stream
    /// reads the store to catch up with it.
    Hub {
        batches: broadcast::Receiver<Arc<EventBatch>>,
        behind: bool,
    },
    /// No follower feeds the server: the stream reads the store on each of its hints.
    Store(broadcast::Receiver<StoreEvent>),
}

/// What a summary stream has seen since its last summary.
struct Summary {
    every: Duration,
    /// When the next summary may go: the last one's time plus `every`.
    due: Instant,
    first_id: i64,
    last_id: i64,
    events: u64,
    kinds: BTreeMap<&'static str, u64>,
    queues: BTreeSet<String>,
    /// Distinct jobs, up to [`SUMMARY_JOBS`].
    jobs: BTreeSet<uuid::Uuid>,
    more_jobs: bool,
}

/// Most job ids a summary names.
const SUMMARY_JOBS: usize = 100;
/// Most queue names a summary names.
const SUMMARY_QUEUES: usize = 100;

impl Summary {
    fn new(every: Duration) -> Self {
        Self {
            every,
            due: Instant::now(),
            first_id: 0,
            last_id: 0,
            events: 0,
            kinds: BTreeMap::new(),
            queues: BTreeSet::new(),
            jobs: BTreeSet::new(),
            more_jobs: false,
        }
    }

    fn add(&mut self, event: &JobEvent) {
        if self.events == 0 {
            self.first_id = event.id;
        }
        self.last_id = event.id;
        self.events += 1;
        *self.kinds.entry(event.kind.as_str()).or_default() += 1;
        if self.queues.len() < SUMMARY_QUEUES && !self.queues.contains(&event.queue) {
            self.queues.insert(event.queue.clone());
        }
        if self.jobs.len() < SUMMARY_JOBS {
            self.jobs.insert(event.job_id);
        } else if !self.jobs.contains(&event.job_id) {
            self.more_jobs = true;
        }
    }

    /// The `summary` event of what was seen, and a fresh start; `None` when nothing was.
    fn take(&mut self, now: Instant) -> Option<Event> {
        if self.events == 0 {
            return None;
        }
        let data = serde_json::json!({
            "first_id": self.first_id,
            "last_id": self.last_id,
            "events": self.events,
            "kinds": self.kinds,
            "queues": self.queues,
            "job_ids": self.jobs,
            "more_jobs": self.more_jobs,
        });
        let event = Event::default()
            .id(self.last_id.to_string())
            .event("summary")
            .data(data.to_string());
        *self = Self {
            due: now + self.every,
            ..Self::new(self.every)
        };
        Some(event)
    }
}

impl Follow {
    /// The next SSE event; `None` ends the stream (the server is stopping).
    async fn next(&mut self) -> Option<Event> {
        if let Some(event) = self.lead.pop_front() {
            return Some(event);
        }
        loop {
            if !self.ready.load(Ordering::Acquire) {
                return None;
            }
            match &mut self.summary {
                None => {
                    if let Some(event) = self.page.pop_front() {
                        return Some(sse_event(&event));
                    }
                }
                Some(summary) => {
                    for event in self.page.drain(..) {
                        summary.add(&event);
                    }
                    let now = Instant::now();
                    if now >= summary.due {
                        if let Some(event) = summary.take(now) {
                            return Some(event);
                        }
                    }
                }
            }
            self.fill().await;
        }
    }

    /// Reads more events into the page, or waits for them: until a summary is due, a hint
    /// or batch arrives, or [`RECHECK`] (so a stopping server is noticed within a second).
    async fn fill(&mut self) {
        let recheck = Instant::now() + RECHECK;
        let until = match &self.summary {
            Some(summary) if summary.events > 0 => summary.due.min(recheck),
            _ => recheck,
        };
        match self.source {
            Source::Hub { behind: false, .. } => match self.take_batch(until).await {
                Take::Batch(batch) => {
                    if batch.after > self.after {
                        // A stretch of the log before the batch is unseen: the store has it.
                        self.set_behind(true);
                    } else {
                        let (filter, after) = (&self.filter, self.after);
                        let new = batch
                            .events
                            .iter()
                            .filter(|e| e.id > after && filter.matches(e));
                        // A summary counts the events where they are; a copy is for sending.
                        match &mut self.summary {
                            Some(summary) => new.for_each(|e| summary.add(e)),
                            None => self.page.extend(new.cloned()),
                        }
                        self.after = self.after.max(batch.next_after);
                    }
                }
                Take::Lagged => self.set_behind(true),
                // Quiet: the store is read once in case the follower is stuck, unless a
                // summary is waiting to go (its time has come, or comes soon).
                Take::Idle => {
                    let waiting = self.summary.as_ref().is_some_and(|s| s.events > 0);
                    self.set_behind(!waiting);
                }
                // The feeder is gone: the store is all that is left.
                Take::Closed => self.source = Source::Store(self.store.subscribe()),
            },
            Source::Hub { behind: true, .. } => {
                if self.read().await == Read::Nothing {
                    self.set_behind(false);
                }
            }
            Source::Store(_) => {
                let before = self.after;
                match self.read().await {
                    Read::Nothing => {
                        let soon = self.recheck.wait_for(self.after != before, RECHECK);
                        let hinted = self.wait(until.min(Instant::now() + soon)).await;
                        self.recheck.waited(hinted, RECHECK);
                    }
                    Read::Some => self.recheck.found(),
                    Read::Failed => {}
                }
            }
        }
    }

    fn set_behind(&mut self, to: bool) {
        if let Source::Hub { behind, .. } = &mut self.source {
            *behind = to;
        }
    }

    /// The hub's next batch, waiting until `until`.
    async fn take_batch(&mut self, until: Instant) -> Take {
        let Source::Hub { batches, .. } = &mut self.source else {
            return Take::Closed;
        };
        match tokio::time::timeout_at(until, batches.recv()).await {
            Ok(Ok(batch)) => Take::Batch(batch),
            Ok(Err(RecvError::Lagged(_))) => Take::Lagged,
            Ok(Err(RecvError::Closed)) => Take::Closed,
            Err(_) => Take::Idle,
        }
    }

    /// One page from the store.
    async fn read(&mut self) -> Read {
        match self
            .store
            .events_read(self.after, &self.filter, STREAM_PAGE)
            .await
        {
            Ok(page) => {
                self.after = page.next_after;
                if page.events.is_empty() {
                    Read::Nothing
                } else {
                    self.page.extend(page.events);
                    Read::Some
                }
            }
            // Keep-alives go on meanwhile; the client sees a quiet stream, not an end.
            Err(e) => {
                tracing::warn!(error = %e, "event stream cannot read the event log");
                tokio::time::sleep_until(Instant::now() + RECHECK).await;
                Read::Failed
            }
        }
    }

    /// Waits for a hint that the store changed, or `until`; true when a hint came.
    async fn wait(&mut self, until: Instant) -> bool {
        let Source::Store(hints) = &mut self.source else {
            return false;
        };
        let hint = async {
            loop {
                match hints.recv().await {
                    Ok(_) | Err(RecvError::Lagged(_)) => return,
                    Err(RecvError::Closed) => std::future::pending().await,
                }
            }
        };
        tokio::time::timeout_at(until, hint).await.is_ok()
    }
}

enum Take {
    Batch(Arc<EventBatch>),
    Lagged,
    Idle,
    Closed,
}

#[derive(Debug, PartialEq, Eq)]
enum Read {
    Some,
    Nothing,
    Failed,
}

/// `id:` the event's id, `event:` its kind, `data:` the event as the JSON API gives it.
fn sse_event(event: &JobEvent) -> Event {
    let sse = Event::default()
        .id(event.id.to_string())
        .event(event.kind.as_str());
    match serde_json::to_string(event) {
        Ok(json) => sse.data(json),
        // Cannot happen for these types; say so rather than drop the event silently.
        Err(e) => sse.data(serde_json::json!({"id": event.id, "error": e.to_string()}).to_string()),
    }
}
