//! `GET /metrics`: Prometheus (OpenMetrics) text.
//!
//! Two kinds of figures:
//! - **What the store holds**, read at each scrape: jobs per queue and state, the age of the
//!   oldest queued job per queue (the autoscaling signal), paused queues, and whether this
//!   process leads maintenance. The same on every server of a cluster (but the leader flag).
//! - **What happened**, counted from the durable event log by a follower that every `serve`
//!   runs from its start ([`Metrics::observe`]): jobs enqueued, started, succeeded, failed
//!   (attempts), dead, cancelled; rescues by reason (lease expiries and timeouts); and the run
//!   duration per job name, from each attempt's `started` to its outcome. Counting the log
//!   rather than this process's own calls means every server reports the cluster's totals, so
//!   one scrape target is enough and `max` (not `sum`) combines several.

use chrono::{DateTime, Utc};
use hinter_core::store::QueueInfo;
use hinter_core::{EventKind, JobEvent};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Content type of the answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Attempts whose start is remembered to time them; the oldest are forgotten beyond this.
const STARTS_KEPT: usize = 100_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    queue: String,
    job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    queue: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    queue: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    job: String,
}

type Float = Gauge<f64, AtomicU64>;

/// The metrics of one server. Cheap to clone (shared).
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    enqueued: Family<JobLabels, Counter>,
    started: Family<JobLabels, Counter>,
    succeeded: Family<JobLabels, Counter>,
    failed: Family<JobLabels, Counter>,
    dead: Family<JobLabels, Counter>,
    cancelled: Family<JobLabels, Counter>,
    rescued: Family<ReasonLabels, Counter>,
    durations: Family<NameLabels, Histogram>,
    jobs: Family<StateLabels, Gauge>,
    oldest: Family<QueueLabels, Float>,
    paused: Family<QueueLabels, Gauge>,
    processes: Family<RoleLabels, Gauge>,
    leader: Gauge,
    events_seen: Counter,
    commit_seconds: Histogram,
    commit_group: Histogram,
    /// When each running attempt started, by job: the run duration's start.
    starts: Mutex<Starts>,
    /// Scrapes fill the store gauges and encode under this lock, so two scrapes never mix.
    scrape: tokio::sync::Mutex<()>,
    leader_source: Mutex<Option<LeaderSource>>,
    /// Per-minute counts of the last day for `GET /api/v1/stats`, fed by the same follower.
    stats: crate::stats::Stats,
}

/// Tells whether this process leads maintenance now.
pub type LeaderSource = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Default)]
struct Starts {
    by_job: HashMap<Uuid, DateTime<Utc>>,
    order: VecDeque<Uuid>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hinter");
        let enqueued = Family::<JobLabels, Counter>::default();
        let started = Family::<JobLabels, Counter>::default();
        let succeeded = Family::<JobLabels, Counter>::default();
        let failed = Family::<JobLabels, Counter>::default();
        let dead = Family::<JobLabels, Counter>::default();
        let cancelled = Family::<JobLabels, Counter>::default();
        let rescued = Family::<ReasonLabels, Counter>::default();
        // 1 ms to about 4.6 hours, doubling.
        let durations = Family::<NameLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 24))
        });
        let jobs = Family::<StateLabels, Gauge>::default();
        let oldest = Family::<QueueLabels, Float>::default();
        let paused = Family::<QueueLabels, Gauge>::default();
        let processes = Family::<RoleLabels, Gauge>::default();
        let leader = Gauge::default();
        let events_seen = Counter::default();
        // 50 µs to about 1.6 s.
        let commit_seconds = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        // 1 to 4096 operations.
        let commit_group = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        registry.register(
            "jobs_enqueued",
            "Jobs created (API, schedules, hooks, file triggers, replies, callbacks)",
            enqueued.clone(),
        );
        registry.register(
            "jobs_started",
            "Attempts started (jobs leased)",
            started.clone(),
        );
        registry.register("jobs_succeeded", "Jobs that succeeded", succeeded.clone());
        registry.register(
            "jobs_failed",
            "Attempts that failed (retried or not)",
            failed.clone(),
        );
        registry.register(
            "jobs_dead",
            "Jobs that ended dead (attempts used up or failed permanently)",
            dead.clone(),
        );
        registry.register(
            "jobs_cancelled",
            "Jobs that ended cancelled",
            cancelled.clone(),
        );
        registry.register(
            "jobs_rescued",
            "Running jobs failed by maintenance: reason lease_expired (a worker died or hung) or timed_out",
            rescued.clone(),
        );
        registry.register(
            "job_run_duration_seconds",
            "Time from an attempt's start to its outcome",
            durations.clone(),
        );
        registry.register("jobs", "Jobs in the store by queue and state", jobs.clone());
        registry.register(
            "queue_oldest_queued_age_seconds",
            "How long the longest-waiting queued job of the queue has been due (0 when none is queued)",
            oldest.clone(),
        );
        registry.register("queue_paused", "1 when the queue is paused", paused.clone());
        registry.register(
            "processes",
            "Live processes sharing the store (serve, worker), by role",
            processes.clone(),
        );
        registry.register(
            "leader",
            "1 when this process leads maintenance (lease rescue, promotion, retention)",
            leader.clone(),
        );
        registry.register(
            "store_commit_duration_seconds",
            "This process's write transactions, begin to commit (SQLite: one group of the writer)",
            commit_seconds.clone(),
        );
        registry.register(
            "store_commit_group_size",
            "Operations per committed write transaction of this process (SQLite group commit; PostgreSQL: 1)",
            commit_group.clone(),
        );
        registry.register(
            "events_observed",
            "Event log entries counted by this server since it started",
            events_seen.clone(),
        );
        Self(Arc::new(Inner {
            registry,
            enqueued,
            started,
            succeeded,
            failed,
            dead,
            cancelled,
            rescued,
            durations,
            jobs,
            oldest,
            paused,
            processes,
            leader,
            events_seen,
            commit_seconds,
            commit_group,
            starts: Mutex::new(Starts::default()),
            scrape: tokio::sync::Mutex::new(()),
            leader_source: Mutex::new(None),
            stats: crate::stats::Stats::new(),
        }))
    }

    /// Sets where the leader flag comes from.
    pub fn set_leader_source(&self, source: LeaderSource) {
        *self
            .0
            .leader_source
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// What the store tells of each commit ([`hinter_core::Store::observe_commits`]).
    pub fn commit_observer(&self) -> hinter_core::store::CommitObserver {
        let metrics = self.clone();
        Arc::new(move |took, operations| {
            metrics.0.commit_seconds.observe(took.as_secs_f64());
            metrics.0.commit_group.observe(operations as f64);
        })
    }

    /// The per-minute counts of the last day (`GET /api/v1/stats`); whoever feeds
    /// [`Metrics::observe`] feeds them too ([`crate::stats::Stats::observe`]).
    pub fn stats(&self) -> &crate::stats::Stats {
        &self.0.stats
    }

    /// Counts one event of the log.
    pub fn observe(&self, event: &JobEvent) {
        let m = &self.0;
        m.events_seen.inc();
        let labels = JobLabels {
            queue: event.queue.clone(),
            job: event.job.clone(),
        };
        match event.kind {
            EventKind::Created => {
                m.enqueued.get_or_create(&labels).inc();
            }
            EventKind::Started => {
                m.started.get_or_create(&labels).inc();
                self.remember_start(event.job_id, event.at);
            }
            EventKind::Succeeded => {
                m.succeeded.get_or_create(&labels).inc();
                self.time_run(event);
            }
            EventKind::Failed => {
                m.failed.get_or_create(&labels).inc();
                self.time_run(event);
            }
            EventKind::Dead => {
                m.dead.get_or_create(&labels).inc();
            }
            EventKind::Cancelled => {
                m.cancelled.get_or_create(&labels).inc();
                // A cancelled running job also logs `failed`, which timed it.
                self.forget_start(event.job_id);
            }
            EventKind::Released => self.forget_start(event.job_id),
            EventKind::Rescued => {
                let reason = event
                    .data
                    .get("reason")
                    .and_then(|r| r.as_str())
                    .unwrap_or("unknown")
                    .to_string();
                m.rescued
                    .get_or_create(&ReasonLabels {
                        queue: event.queue.clone(),
                        reason,
                    })
                    .inc();
            }
            _ => {}
        }
    }

    fn remember_start(&self, id: Uuid, at: DateTime<Utc>) {
        let mut starts = self.0.starts.lock().unwrap_or_else(|e| e.into_inner());
        if starts.by_job.insert(id, at).is_none() {
            starts.order.push_back(id);
        }
        while starts.order.len() > STARTS_KEPT {
            if let Some(old) = starts.order.pop_front() {
                starts.by_job.remove(&old);
            }
        }
    }

    fn forget_start(&self, id: Uuid) {
        let mut starts = self.0.starts.lock().unwrap_or_else(|e| e.into_inner());
        starts.by_job.remove(&id);
        // Its place in `order` goes when it reaches the front: a stale id removes nothing.
    }

    fn time_run(&self, event: &JobEvent) {
        let started = {
            let mut starts = self.0.starts.lock().unwrap_or_else(|e| e.into_inner());
            starts.by_job.remove(&event.job_id)
        };
        if let Some(started) = started {
            let seconds = (event.at - started).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
            self.0
                .durations
                .get_or_create(&NameLabels {
                    job: event.job.clone(),
                })
                .observe(seconds);
        }
    }

    /// The text of one scrape: the store figures in `queues` and the live processes' roles
    /// (as of `now`) and the counters.
    pub async fn render(
        &self,
        queues: &[QueueInfo],
        roles: &[String],
        now: DateTime<Utc>,
    ) -> String {
        let m = &self.0;
        let _one_at_a_time = m.scrape.lock().await;
        // Queues and roles that are gone must not linger with their last values.
        m.jobs.clear();
        m.oldest.clear();
        m.paused.clear();
        m.processes.clear();
        for role in roles {
            m.processes
                .get_or_create(&RoleLabels { role: role.clone() })
                .inc();
        }
        for q in queues {
            for (state, n) in [
                ("scheduled", q.scheduled),
                ("queued", q.queued),
                ("running", q.running),
                ("succeeded", q.succeeded),
                ("dead", q.dead),
                ("cancelled", q.cancelled),
            ] {
                m.jobs
                    .get_or_create(&StateLabels {
                        queue: q.name.clone(),
                        state: state.to_string(),
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            let queue = QueueLabels {
                queue: q.name.clone(),
            };
            let age = q
                .oldest_queued_at
                .map(|at| (now - at).num_milliseconds().max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            m.oldest.get_or_create(&queue).set(age);
            m.paused.get_or_create(&queue).set(i64::from(q.paused));
        }
        let leading = m
            .leader_source
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|source| source());
        m.leader.set(i64::from(leading));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &m.registry);
        text
    }
}

/// `GET /metrics` (scope `read`, every queue).
#[utoipa::path(
    get, path = "/metrics", tag = "metrics", operation_id = "metrics",
    summary = "Prometheus metrics (OpenMetrics text)",
    responses(
        (status = 200, description = "Queue depths, job counts, latencies, processes.", content((String = "application/openmetrics-text; version=1.0.0; charset=utf-8"))),
        (status = 403, description = "`forbidden`: a token limited to some queues.", body = crate::wire::ErrorBody)
    )
)]
pub async fn scrape(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    caller: crate::Caller,
) -> crate::ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    caller.check_unlimited("the metrics")?;
    let queues = state.store.queue_list().await?;
    let now = state.clock.now();
    let dead_after = chrono::Duration::from_std(state.config.process_dead_after)
        .unwrap_or(chrono::Duration::seconds(30));
    let roles: Vec<String> = state
        .cluster
        .process_list(now - dead_after)
        .await?
        .into_iter()
        .map(|p| p.role)
        .collect();
    let text = state.metrics.render(&queues, &roles, now).await;
    Ok(([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: EventKind, id: Uuid, at_ms: i64, data: serde_json::Value) -> JobEvent {
        JobEvent {
            id: 1,
            at: DateTime::<Utc>::from_timestamp_millis(at_ms).unwrap(),
            kind,
            job_id: id,
            job: "resize".into(),
            queue: "media".into(),
            attempt: 1,
            data,
        }
    }

    #[tokio::test]
    async fn counts_events_and_times_runs() {
        let metrics = Metrics::new();
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        for e in [
            event(EventKind::Created, a, 0, json!(null)),
            event(EventKind::Created, b, 0, json!(null)),
            event(EventKind::Started, a, 1_000, json!(null)),
            event(EventKind::Succeeded, a, 1_250, json!(null)),
            event(EventKind::Started, b, 2_000, json!(null)),
            event(
                EventKind::Rescued,
                b,
                9_000,
                json!({"reason": "lease_expired"}),
            ),
            event(EventKind::Failed, b, 9_000, json!({"error": "x"})),
            event(EventKind::Dead, b, 9_000, json!(null)),
        ] {
            metrics.observe(&e);
        }
        let queues = [QueueInfo {
            name: "media".into(),
            paused: true,
            scheduled: 0,
            queued: 3,
            running: 0,
            succeeded: 1,
            dead: 1,
            cancelled: 0,
            oldest_queued_at: DateTime::<Utc>::from_timestamp(100, 0),
        }];
        let now = DateTime::<Utc>::from_timestamp(130, 0).unwrap();
        let roles = [
            "serve".to_string(),
            "worker".to_string(),
            "worker".to_string(),
        ];
        let text = metrics.render(&queues, &roles, now).await;
        for line in [
            "hinter_jobs_enqueued_total{queue=\"media\",job=\"resize\"} 2",
            "hinter_jobs_started_total{queue=\"media\",job=\"resize\"} 2",
            "hinter_jobs_succeeded_total{queue=\"media\",job=\"resize\"} 1",
            "hinter_jobs_failed_total{queue=\"media\",job=\"resize\"} 1",
            "hinter_jobs_dead_total{queue=\"media\",job=\"resize\"} 1",
            "hinter_jobs_rescued_total{queue=\"media\",reason=\"lease_expired\"} 1",
            "hinter_job_run_duration_seconds_count{job=\"resize\"} 2",
            "hinter_job_run_duration_seconds_sum{job=\"resize\"} 7.25",
            "hinter_jobs{queue=\"media\",state=\"queued\"} 3",
            "hinter_queue_oldest_queued_age_seconds{queue=\"media\"} 30.0",
            "hinter_queue_paused{queue=\"media\"} 1",
            "hinter_leader 0",
            "hinter_processes{role=\"worker\"} 2",
            "hinter_processes{role=\"serve\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        // A queue that is gone is not reported any more.
        let text = metrics.render(&[], &[], now).await;
        assert!(!text.contains("hinter_jobs{"), "{text}");
    }
}
