//! `GET /api/v1/stats?window=1h|1d`: jobs finished and failures per minute over the last
//! hour or day, per queue and in total, for the dashboard's charts.
//!
//! Every `serve` keeps per-minute counts of the last 24 hours in memory ([`Stats`]), fed by
//! the event-log follower it already runs for `/metrics` ([`crate::Metrics::observe`]): the
//! write path pays nothing, and since each server follows the whole store's log, every
//! server shows the cluster's figures. At start the last day is read back from the event log
//! in the background ([`backfill`]), so a restart loses no history the log still holds; until
//! then, and where the log keeps less than a day, the answer's `data_from` says from when the
//! counts are complete. Counts go to the minute of the event's own time (`at`), so the
//! backfill and the live follower agree and so do servers.

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::parse_query;
use crate::AppState;
use axum::extract::State;
use axum::http::Uri;
use axum::Json;
use chrono::{DateTime, Utc};
use hinter_core::store::StoreResult;
use hinter_core::{EventFilter, EventKind, JobEvent, Store};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Minutes kept: one day.
pub const MINUTES_KEPT: i64 = 24 * 60;
/// Events after the event log's last id that are read back at start at most: beyond it, the
/// counts start later and `data_from` says so.
pub const BACKFILL_MAX_EVENTS: i64 = 5_000_000;
/// Events read per page of the backfill.
const BACKFILL_PAGE: u32 = 1000;
/// An event this far ahead of the local clock (another machine's clock) still counts.
const FUTURE_MINUTES: i64 = 5;

/// What one minute (or one bucket of an answer) counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Attempts that failed (retried or not; a dead job's last attempt too).
    pub failed: u64,
    /// Jobs that ended dead.
    pub dead: u64,
    /// Jobs that ended cancelled.
    pub cancelled: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.dead += other.dead;
        self.cancelled += other.cancelled;
    }

    fn is_zero(&self) -> bool {
        *self == Counts::default()
    }
}

#[derive(Debug, Default)]
struct Minute {
    /// Minutes since the Unix epoch; a slot holding another minute is stale.
    minute: i64,
    total: Counts,
    queues: HashMap<String, Counts>,
}

#[derive(Debug)]
struct Inner {
    /// A ring of [`MINUTES_KEPT`] slots, minute `m` in slot `m mod MINUTES_KEPT`.
    slots: Vec<Minute>,
    /// Counts before this time are not complete (the backfill has not read them, or the log
    /// held no older entries). `None`: complete over the whole day.
    data_from: Option<DateTime<Utc>>,
}

/// Per-minute counts of the last 24 hours, per queue and in total. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Stats(Arc<Mutex<Inner>>);

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

fn minute_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(60)
}

fn slot_of(minute: i64) -> usize {
    minute.rem_euclid(MINUTES_KEPT) as usize
}

fn time_of(minute: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(minute.saturating_mul(60), 0).unwrap_or_default()
}

/// A window of an answer: how far back and in which steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last 60 minutes, one bucket a minute.
    Hour,
    /// The last 24 hours, one bucket per 10 minutes (144 buckets).
    Day,
}

impl Window {
    fn minutes(self) -> i64 {
        match self {
            Window::Hour => 60,
            Window::Day => MINUTES_KEPT,
        }
    }

    fn step_minutes(self) -> i64 {
        match self {
            Window::Hour => 1,
            Window::Day => 10,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Window::Hour => "1h",
            Window::Day => "1d",
        }
    }
}

impl std::str::FromStr for Window {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "1h" | "60m" => Ok(Window::Hour),
            "1d" | "24h" => Ok(Window::Day),
            other => Err(format!("{other:?} is not a window; use 1h or 1d")),
        }
    }
}

/// One series per kind, one number per bucket, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Series {
    pub succeeded: Vec<u64>,
    pub failed: Vec<u64>,
    pub dead: Vec<u64>,
    pub cancelled: Vec<u64>,
}

impl Series {
    fn zeros(buckets: usize) -> Self {
        Self {
            succeeded: vec![0; buckets],
            failed: vec![0; buckets],
            dead: vec![0; buckets],
            cancelled: vec![0; buckets],
        }
    }

    fn add(&mut self, bucket: usize, counts: &Counts) {
        self.succeeded[bucket] += counts.succeeded;
        self.failed[bucket] += counts.failed;
        self.dead[bucket] += counts.dead;
        self.cancelled[bucket] += counts.cancelled;
    }
}

/// A queue's series in an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct QueueSeries {
    pub name: String,
    #[serde(flatten)]
    pub series: Series,
}

/// The answer of `GET /api/v1/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StatsAnswer {
    /// `1h` or `1d`.
    #[schema(value_type = String, pattern = "^1[hd]$")]
    pub window: &'static str,
    /// Length of one bucket: 60 (1h) or 600 (1d).
    pub step_seconds: i64,
    /// Start of the first bucket.
    pub from: DateTime<Utc>,
    /// End of the last bucket, the current one (still filling).
    pub to: DateTime<Utc>,
    /// Counts before this time are incomplete: the server is still reading the event log
    /// back, or the log keeps no older entries. `null`: complete over the window.
    pub data_from: Option<DateTime<Utc>>,
    /// Every queue the caller may see.
    pub total: Series,
    /// Each queue with something counted in the window, by name.
    pub queues: Vec<QueueSeries>,
}

impl Stats {
    /// Empty counts, complete from `now` on until [`Stats::set_data_from`] says otherwise
    /// (`None` here: no backfill is expected and nothing is known before).
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(Inner {
            slots: (0..MINUTES_KEPT)
                .map(|_| Minute {
                    minute: i64::MIN,
                    ..Minute::default()
                })
                .collect(),
            data_from: None,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets from when the counts are complete (`None`: the whole day).
    pub fn set_data_from(&self, from: Option<DateTime<Utc>>) {
        self.lock().data_from = from;
    }

    /// Counts one event of the log at its own time, if it is one of the kinds counted and
    /// falls in the day before `now` (or a few minutes after: clocks differ).
    pub fn observe(&self, event: &JobEvent, now: DateTime<Utc>) {
        let mut counts = Counts::default();
        match event.kind {
            EventKind::Succeeded => counts.succeeded = 1,
            EventKind::Failed => counts.failed = 1,
            EventKind::Dead => counts.dead = 1,
            EventKind::Cancelled => counts.cancelled = 1,
            _ => return,
        }
        let minute = minute_of(event.at);
        let current = minute_of(now);
        if minute <= current - MINUTES_KEPT || minute > current + FUTURE_MINUTES {
            return;
        }
        let mut inner = self.lock();
        let slot = &mut inner.slots[slot_of(minute)];
        if slot.minute != minute {
            // A minute a day older (or a stale one): its place is reused.
            *slot = Minute {
                minute,
                ..Minute::default()
            };
        }
        slot.total.add(&counts);
        match slot.queues.get_mut(event.queue.as_str()) {
            Some(queue) => queue.add(&counts),
            None => {
                slot.queues.insert(event.queue.clone(), counts);
            }
        }
    }

    /// The buckets of `window` ending with `now`'s minute, counting only the queues
    /// `may_see` lets through.
    pub fn window(
        &self,
        window: Window,
        now: DateTime<Utc>,
        may_see: impl Fn(&str) -> bool,
    ) -> StatsAnswer {
        let step = window.step_minutes();
        let buckets = (window.minutes() / step) as usize;
        // Buckets are aligned to whole steps, the last one holding `now`.
        let last_start = minute_of(now).div_euclid(step) * step;
        let first = last_start - (buckets as i64 - 1) * step;
        let mut total = Series::zeros(buckets);
        let mut queues: BTreeMap<String, Series> = BTreeMap::new();
        let inner = self.lock();
        let oldest_kept = minute_of(now) - MINUTES_KEPT + 1;
        for minute in first.max(oldest_kept)..last_start + step {
            let slot = &inner.slots[slot_of(minute)];
            if slot.minute != minute {
                continue;
            }
            let bucket = ((minute - first) / step) as usize;
            for (name, counts) in &slot.queues {
                if counts.is_zero() || !may_see(name) {
                    continue;
                }
                total.add(bucket, counts);
                queues
                    .entry(name.clone())
                    .or_insert_with(|| Series::zeros(buckets))
                    .add(bucket, counts);
            }
        }
        let from = time_of(first);
        StatsAnswer {
            window: window.name(),
            step_seconds: step * 60,
            from,
            to: time_of(last_start + step),
            data_from: inner.data_from.filter(|at| *at > from),
            total,
            queues: queues
                .into_iter()
                .map(|(name, series)| QueueSeries { name, series })
                .collect(),
        }
    }
}

/// Reads the last day of the event log, up to the entry `until` (the first one the live
/// follower counts comes after it), into `stats`, and sets `data_from`. At most
/// [`BACKFILL_MAX_EVENTS`] entries are read; the entry a day old is found by bisecting ids,
/// so a long log costs a few reads, not a scan. Meant to run in the background at start.
pub async fn backfill(
    store: &dyn Store,
    stats: &Stats,
    until: i64,
    now: impl Fn() -> DateTime<Utc>,
) -> StoreResult<()> {
    let everything = EventFilter::default();
    let began = now();
    let cutoff = time_of(minute_of(began) - MINUTES_KEPT + 1);
    // The greatest id known to be older than the cutoff (or 0), then the least after it that
    // is not: ids grow with time (commit order), so this is a bisection.
    let (mut older, mut newer) = (0i64, until);
    while newer - older > 1 {
        let mid = older + (newer - older) / 2;
        let page = store.events_read(mid, &everything, 1).await?;
        match page.events.first() {
            Some(event) if event.id <= until && event.at < cutoff => older = event.id,
            _ => newer = mid,
        }
    }
    let mut after = older.max(until.saturating_sub(BACKFILL_MAX_EVENTS));
    let mut first_seen: Option<DateTime<Utc>> = None;
    let mut complete_back_to_cutoff = after == older && older > 0;
    while after < until {
        let page = store.events_read(after, &everything, BACKFILL_PAGE).await?;
        let now = now();
        for event in page.events.iter().filter(|e| e.id <= until) {
            if first_seen.is_none() {
                first_seen = Some(event.at);
                // An entry as old as the cutoff read first: nothing between is missing.
                complete_back_to_cutoff |= event.at <= cutoff;
            }
            stats.observe(event, now);
        }
        if page.next_after <= after || page.events.is_empty() {
            break;
        }
        after = page.next_after;
        // Leave the runtime to the server's own work between pages.
        tokio::task::yield_now().await;
    }
    // Else the log held nothing older than its first entry read (or nothing at all before
    // `until`: then nothing is known before the start).
    stats.set_data_from(if complete_back_to_cutoff {
        None
    } else {
        first_seen.or(Some(began))
    });
    Ok(())
}

/// Starts [`backfill`] in the background, retrying after store errors (with a pause) until
/// it completes. Until then `data_from` is `started`.
pub fn spawn_backfill(
    store: Arc<dyn Store>,
    stats: Stats,
    until: i64,
    clock: Arc<dyn hinter_core::Clock>,
) -> tokio::task::JoinHandle<()> {
    stats.set_data_from(Some(clock.now()));
    tokio::spawn(async move {
        loop {
            match backfill(&*store, &stats, until, || clock.now()).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the last day of the event log for the dashboard's charts; retrying");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    window: Option<String>,
}

/// `GET /api/v1/stats?window=1h|1d` (scope `read`; a token limited to queues sees those).
#[utoipa::path(
    get, path = "/api/v1/stats", tag = "stats", operation_id = "show_stats",
    summary = "Jobs finished and failed attempts per minute (1h) or per 10 minutes (1d)",
    description = "Counted by this server from the event log (the whole cluster's) in memory: a server started recently reads the log back in the background, and `data_from` says from when counts are complete. A token limited to some queues sees only those, totals included.",
    params(("window" = Option<String>, Query, description = "`1h` (default; also `60m`) or `1d` (also `24h`); another value is 400.")),
    responses(
        (status = 200, description = "The counts of the window.", body = StatsAnswer),
        (status = 400, description = "`bad_request`: a bad `window`, or an unknown query parameter.", body = crate::wire::ErrorBody)
    )
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
) -> ApiResult<Json<StatsAnswer>> {
    let query: StatsQuery = parse_query(&uri)?;
    // Exactly as documented (an enum): no blanks around the value.
    let window = match query.window.as_deref() {
        None | Some("") => Window::Hour,
        Some(text) => text
            .parse::<Window>()
            .map_err(|e| ApiError::bad_request(format!("window: {e}")))?,
    };
    let answer = state
        .metrics
        .stats()
        .window(window, state.clock.now(), |queue| caller.may_use(queue));
    Ok(Json(answer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn at(minute: i64, second: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(minute * 60 + second, 0).unwrap()
    }

    fn event(kind: EventKind, queue: &str, when: DateTime<Utc>) -> JobEvent {
        JobEvent {
            id: 1,
            at: when,
            kind,
            job_id: Uuid::now_v7(),
            job: "work".into(),
            queue: queue.into(),
            attempt: 1,
            data: serde_json::Value::Null,
        }
    }

    const BASE: i64 = 29_000_000; // some minute in 2025, a multiple of 10.

    #[test]
    fn counts_land_in_their_minute_and_roll_over() {
        let stats = Stats::new();
        let now = at(BASE + 5, 30);
        stats.observe(&event(EventKind::Succeeded, "a", at(BASE + 5, 1)), now);
        stats.observe(&event(EventKind::Succeeded, "b", at(BASE + 5, 59)), now);
        stats.observe(&event(EventKind::Failed, "a", at(BASE + 4, 0)), now);
        stats.observe(&event(EventKind::Dead, "a", at(BASE + 4, 0)), now);
        // Not counted: other kinds.
        stats.observe(&event(EventKind::Started, "a", at(BASE + 5, 0)), now);
        let answer = stats.window(Window::Hour, now, |_| true);
        assert_eq!(answer.total.succeeded.len(), 60);
        assert_eq!(answer.step_seconds, 60);
        assert_eq!(answer.to, at(BASE + 6, 0));
        assert_eq!(answer.from, at(BASE + 6 - 60, 0));
        assert_eq!(answer.total.succeeded[59], 2);
        assert_eq!(answer.total.failed[58], 1);
        assert_eq!(answer.total.dead[58], 1);
        assert_eq!(answer.queues.len(), 2);
        assert_eq!(answer.queues[0].name, "a");
        assert_eq!(answer.queues[0].series.succeeded[59], 1);
        // The next minute: the counts move one bucket back, the new minute starts at 0.
        let later = at(BASE + 6, 10);
        stats.observe(&event(EventKind::Succeeded, "a", at(BASE + 6, 5)), later);
        let answer = stats.window(Window::Hour, later, |_| true);
        assert_eq!(answer.total.succeeded[58], 2);
        assert_eq!(answer.total.succeeded[59], 1);
        assert_eq!(answer.total.failed[57], 1);
        // A caller limited to queue b sees b only.
        let answer = stats.window(Window::Hour, later, |q| q == "b");
        assert_eq!(answer.total.succeeded.iter().sum::<u64>(), 1);
        assert_eq!(answer.total.failed.iter().sum::<u64>(), 0);
        assert_eq!(answer.queues.len(), 1);
    }

    #[test]
    fn the_window_trims_what_is_older_and_the_day_sums_ten_minutes() {
        let stats = Stats::new();
        let now = at(BASE + 100, 0);
        stats.observe(&event(EventKind::Succeeded, "a", at(BASE + 30, 0)), now);
        stats.observe(&event(EventKind::Succeeded, "a", at(BASE + 31, 0)), now);
        stats.observe(&event(EventKind::Succeeded, "a", at(BASE + 99, 0)), now);
        // Older than a day, or too far ahead: not counted at all.
        stats.observe(
            &event(EventKind::Succeeded, "a", at(BASE + 100 - MINUTES_KEPT, 0)),
            now,
        );
        stats.observe(&event(EventKind::Succeeded, "a", at(BASE + 106, 0)), now);
        // The hour holds only the last one.
        let hour = stats.window(Window::Hour, now, |_| true);
        assert_eq!(hour.total.succeeded.iter().sum::<u64>(), 1);
        assert_eq!(hour.total.succeeded[58], 1);
        // The day: 144 buckets of 10 minutes, minutes 30 and 31 in one.
        let day = stats.window(Window::Day, now, |_| true);
        assert_eq!(day.total.succeeded.len(), 144);
        assert_eq!(day.step_seconds, 600);
        assert_eq!(day.total.succeeded.iter().sum::<u64>(), 3);
        assert_eq!(day.total.succeeded[143 - 7], 2);
        assert_eq!(day.total.succeeded[142], 1);
        // A day later the slots of those minutes are stale: nothing shows, and a new count
        // in a reused slot starts from zero.
        let next_day = at(BASE + 30 + MINUTES_KEPT, 20);
        assert_eq!(
            stats
                .window(Window::Day, next_day, |_| true)
                .total
                .succeeded
                .iter()
                .sum::<u64>(),
            1,
            "only minute 99 is within the day"
        );
        stats.observe(
            &event(EventKind::Succeeded, "a", at(BASE + 30 + MINUTES_KEPT, 0)),
            next_day,
        );
        let hour = stats.window(Window::Hour, next_day, |_| true);
        assert_eq!(hour.total.succeeded[59], 1);
    }

    #[test]
    fn data_from_is_told_only_inside_the_window() {
        let stats = Stats::new();
        let now = at(BASE + 100, 0);
        stats.set_data_from(Some(at(BASE + 20, 0)));
        assert_eq!(stats.window(Window::Hour, now, |_| true).data_from, None);
        assert_eq!(
            stats.window(Window::Day, now, |_| true).data_from,
            Some(at(BASE + 20, 0))
        );
    }

    #[test]
    fn windows_parse_and_bad_ones_are_named() {
        assert_eq!("1h".parse::<Window>(), Ok(Window::Hour));
        assert_eq!("1d".parse::<Window>(), Ok(Window::Day));
        assert!("2h".parse::<Window>().unwrap_err().contains("1h or 1d"));
    }
}
