//! The durable event log: one row per change of a job, written by the store in the same
//! transaction as the change, with an id that increases in the order readers see the log.
//!
//! Readers ask for everything after an id ([`crate::Store::events_read`]) and resume from
//! the last id they handled; wake-ups ([`crate::StoreEvent`]) only say "look again". Ids
//! increase but need not be dense: a reader must not infer a gap from a missing number.
//!
//! What each store operation logs (every backend, checked by the conformance suite), with
//! `at` = the operation's `now` and `attempt` = the job's attempt after the change:
//! - insert: `created` per inserted job, in request order (a duplicate logs nothing);
//! - lease: `started` per leased job, `data = {"worker_id": …}`; promotion of due
//!   `scheduled` jobs logs nothing;
//! - complete: `succeeded`;
//! - fail: `rescued` (`{"reason": "lease_expired" | "timed_out"}`) when
//!   [`crate::store::Failure::rescued`] is set, then `failed`
//!   (`{"error": <bounded message>, "exit_code": <int or null>}`), then the job's outcome:
//!   `retry_scheduled` (`{"run_at": <RFC 3339 as serde writes it>}`, also when due at once),
//!   `dead`, or `cancelled` (a pending cancel request wins);
//! - release: `released`;
//! - cancel: `cancelled` for a `scheduled`/`queued` job; `cancel_requested` for a running
//!   job whose request is new;
//! - retry (by hand): `retried`;
//! - report ([`crate::Store::job_report`]): `progress` when the report sets the job's
//!   progress, `data = {"percent": <0..=100>, "message": <text or null>}`, in the same
//!   write and under the same lease token (a stale report logs nothing); a report of only
//!   log lines or a checkpoint logs nothing;
//! - heartbeat, pause, prune: nothing.
//!
//! A unit of work logs what its operations would, in their order.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// What happened to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Inserted (`queued` or `scheduled`); duplicates refused by `unique_key` log nothing.
    Created,
    /// Leased: an attempt began. `data.worker_id` names the worker.
    Started,
    /// The running attempt reported its progress: `data.percent` (0 to 100) and
    /// `data.message` (text or `null`).
    Progress,
    /// The attempt completed; the job is `succeeded`.
    Succeeded,
    /// An attempt failed: `data.error`, and `data.exit_code` when a command exited. The
    /// job's next state follows as its own event (`retry_scheduled`, `dead`, `cancelled`).
    Failed,
    /// After a failed attempt the job waits for another (`data.run_at`).
    RetryScheduled,
    /// No attempts left, or the failure was permanent.
    Dead,
    /// The job ended `cancelled`.
    Cancelled,
    /// Someone asked the running job to stop; its worker will.
    CancelRequested,
    /// The worker handed the job back unfinished (graceful stop); the attempt is not counted.
    Released,
    /// The job's lease expired or its timeout passed and maintenance took it back
    /// (`data.reason`: `lease_expired` or `timed_out`); `failed` follows.
    Rescued,
    /// A `dead` or `cancelled` job was put back in its queue by hand.
    Retried,
}

impl EventKind {
    pub const ALL: [EventKind; 12] = [
        EventKind::Created,
        EventKind::Started,
        EventKind::Progress,
        EventKind::Succeeded,
        EventKind::Failed,
        EventKind::RetryScheduled,
        EventKind::Dead,
        EventKind::Cancelled,
        EventKind::CancelRequested,
        EventKind::Released,
        EventKind::Rescued,
        EventKind::Retried,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Started => "started",
            EventKind::Progress => "progress",
            EventKind::Succeeded => "succeeded",
            EventKind::Failed => "failed",
            EventKind::RetryScheduled => "retry_scheduled",
            EventKind::Dead => "dead",
            EventKind::Cancelled => "cancelled",
            EventKind::CancelRequested => "cancel_requested",
            EventKind::Released => "released",
            EventKind::Rescued => "rescued",
            EventKind::Retried => "retried",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown event kind {s:?}"))
    }
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobEvent {
    /// Position in the log: larger ids come later for every reader.
    pub id: i64,
    /// The store time of the change.
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    pub job_id: Uuid,
    /// The job definition's name.
    pub job: String,
    pub queue: String,
    /// The job's attempt number after the change.
    pub attempt: u32,
    /// What the kind documents; `null` for kinds without data.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub data: Value,
}

/// Which events a reader wants; `None` fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub queue: Option<String>,
    /// Only events of these queues (a token's queues); with `queue` too, both apply.
    pub queues: Option<Vec<String>>,
    pub job: Option<String>,
    pub job_id: Option<Uuid>,
}

impl EventFilter {
    pub fn matches(&self, event: &JobEvent) -> bool {
        self.queue.as_ref().is_none_or(|q| *q == event.queue)
            && self
                .queues
                .as_ref()
                .is_none_or(|qs| qs.contains(&event.queue))
            && self.job.as_ref().is_none_or(|j| *j == event.job)
            && self.job_id.is_none_or(|id| id == event.job_id)
    }
}

/// The answer to [`crate::Store::events_read`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventPage {
    /// Matching events after the requested id, in log order.
    pub events: Vec<JobEvent>,
    /// Where the next read resumes: the last event's id when the page is full, else the end
    /// of the log as far as it is settled, so a filter that matches nothing still moves on.
    pub next_after: i64,
}
