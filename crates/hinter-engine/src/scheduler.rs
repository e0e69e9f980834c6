//! The scheduler: fires due schedules (`hinter_core::schedule`).
//!
//! Every process connected to the store runs one, with no leader: each wakes at the earliest
//! `next_fire_at`, reads the due schedules and writes one [`ScheduleFiring`] per schedule in a
//! unit of work. The store decides who fires: the firing advances `next_fire_at` only if it is
//! still the time read (on PostgreSQL the row lock makes a second server wait and then find it
//! moved), and each (schedule, fire time) is recorded once, in the transaction of its job. So a
//! tick fires once however many servers try, and when the server that fired last dies the
//! others fire the next tick on time: there is no leadership to fail over.
//!
//! Times are on the store's clock ([`Store::store_time`]: PostgreSQL's), so servers whose
//! clocks disagree still fire a tick at one instant. The loop sleeps until the earliest due
//! time, and wakes early on `StoreEvent::Changed` (a schedule created, changed, resumed here
//! or, through NOTIFY or SQLite's `data_version`, elsewhere), with a poll as the fallback.
//!
//! Late occurrences: one due more than [`MISFIRE_GRACE`] ago (no server ran, or all were
//! stalled) follows the schedule's `misfire`: `skip` records it missed, `run_once` fires the
//! latest late one and records the others missed (unless an on-time one fires anyway),
//! `catch_up` fires each, at most [`MAX_CATCH_UP`] (the latest; older ones are missed). At
//! most [`MAX_CATCH_UP`] missed occurrences are recorded one by one per firing; a longer
//! downtime records the latest of them and logs how many more there were.

use chrono::{DateTime, Utc};
use hinter_core::schedule::{
    Due, FireReport, Misfire, NewSchedule, Outcome, Schedule, ScheduleFiring, ScheduleSpec, Timing,
    MAX_CATCH_UP, MISFIRE_GRACE,
};
use hinter_core::store::{StoreResult, WriteOp, WriteResult};
use hinter_core::{Clock, Definitions, JobSpec, Store, StoreError, StoreEvent};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Due times looked at per schedule and firing, beyond the ones recorded: a 1-second schedule
/// after a day of downtime does not make the scheduler walk 86,400 times.
const MAX_WALK: usize = 1000;

/// Settings of [`Scheduler`].
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Schedules fired per unit of work (one transaction).
    pub batch: u32,
    /// Longest sleep without a wake-up: the fallback for a lost notification.
    pub poll_interval: Duration,
    /// Defaults of the jobs fired (queue, attempts, timeout by job name).
    pub definitions: Definitions,
    /// This process's id, recorded with the occurrences it fires.
    pub process_id: Option<String>,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            batch: 500,
            poll_interval: Duration::from_secs(5),
            definitions: Definitions::new(),
            process_id: None,
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FireSummary {
    pub fired: usize,
    pub skipped: usize,
    pub missed: usize,
    /// Schedules another process fired first (or that changed under us).
    pub lost: usize,
    /// Schedules whose firing failed (logged); they stay due.
    pub failed: usize,
}

impl FireSummary {
    fn add(&mut self, report: &FireReport) {
        if !report.advanced {
            self.lost += 1;
        }
        for occurrence in &report.recorded {
            match occurrence.outcome {
                Outcome::Fired => self.fired += 1,
                Outcome::Skipped => self.skipped += 1,
                Outcome::Missed => self.missed += 1,
            }
        }
    }
}

/// Fires due schedules.
pub struct Scheduler {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    options: SchedulerOptions,
}

/// Stops the scheduler.
pub struct SchedulerHandle {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl SchedulerHandle {
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

impl Scheduler {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, options: SchedulerOptions) -> Self {
        Self {
            store,
            clock,
            options,
        }
    }

    /// Now on the store's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.store.store_time(self.clock.now())
    }

    /// Starts the loop.
    pub fn start(self) -> SchedulerHandle {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(self.run(shutdown.clone()));
        SchedulerHandle { shutdown, task }
    }

    async fn run(self, shutdown: CancellationToken) {
        let mut events = self.store.subscribe();
        let mut backoff = Duration::from_millis(100);
        loop {
            let wait = match self.pass().await {
                Ok(wait) => {
                    backoff = Duration::from_millis(100);
                    wait
                }
                Err(e) => {
                    tracing::warn!(error = %e, "firing schedules failed; trying again");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    backoff
                }
            };
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    _ = shutdown.cancelled() => return,
                    event = events.recv() => match event {
                        Ok(StoreEvent::Changed) | Err(RecvError::Lagged(_)) => break,
                        Ok(_) => continue,
                        Err(RecvError::Closed) => {
                            // The store is closing; the poll keeps going until shutdown.
                            events = self.store.subscribe();
                        }
                    },
                }
            }
        }
    }

    /// Fires what is due, then answers how long to sleep until the next due time.
    async fn pass(&self) -> StoreResult<Duration> {
        let poll = self.options.poll_interval;
        loop {
            let summary = self.fire_due().await?;
            if summary.failed > 0 {
                // They stay due: not again at once.
                return Ok(poll.min(Duration::from_secs(1)));
            }
            if summary.fired + summary.skipped + summary.missed + summary.lost
                < self.options.batch as usize
            {
                break;
            }
        }
        Ok(match self.store.schedule_next_fire_at().await? {
            Some(next) => (next - self.now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(poll),
            None => poll,
        })
    }

    /// One pass over the due schedules (at most `batch` of them): builds their firings and
    /// writes them in one unit; when the unit fails (one schedule's job cannot be inserted),
    /// each firing again on its own, so one bad schedule does not stop the others.
    pub async fn fire_due(&self) -> StoreResult<FireSummary> {
        let now = self.now();
        let due = self.store.schedule_due(now, self.options.batch).await?;
        let mut summary = FireSummary::default();
        if due.is_empty() {
            return Ok(summary);
        }
        let firings: Vec<ScheduleFiring> = due
            .iter()
            .filter_map(|s| firing(s, now, &self.options.definitions))
            .map(|mut f| {
                f.fired_by = self.options.process_id.clone();
                f
            })
            .collect();
        let written = self.clock.now();
        let ops: Vec<WriteOp> = firings.iter().cloned().map(WriteOp::ScheduleFire).collect();
        match self.store.write_unit(ops, written).await {
            Ok(results) => {
                for result in &results {
                    if let WriteResult::ScheduleFired(report) = result {
                        summary.add(report);
                    }
                }
            }
            Err(e) if firings.len() > 1 => {
                tracing::debug!(error = %e, "a batch of firings failed; firing one by one");
                for f in firings {
                    let name = f.schedule.clone();
                    match self
                        .store
                        .write_unit(vec![WriteOp::ScheduleFire(f)], written)
                        .await
                    {
                        Ok(results) => {
                            for result in &results {
                                if let WriteResult::ScheduleFired(report) = result {
                                    summary.add(report);
                                }
                            }
                        }
                        Err(e) => {
                            summary.failed += 1;
                            tracing::warn!(schedule = %name, error = %e, "firing a schedule failed")
                        }
                    }
                }
            }
            Err(e) => return Err(e),
        }
        if summary.fired + summary.skipped + summary.missed > 0 {
            tracing::debug!(
                fired = summary.fired,
                skipped = summary.skipped,
                missed = summary.missed,
                "fired schedules"
            );
        }
        Ok(summary)
    }
}

/// The firing of `schedule` at `now` (store clock): every due time from its `next_fire_at` up
/// to `now`, each fired or missed by the rules in the module doc. `None` only when it is not
/// due.
pub fn firing(
    schedule: &Schedule,
    now: DateTime<Utc>,
    definitions: &Definitions,
) -> Option<ScheduleFiring> {
    let expected = schedule.next_fire_at?;
    if expected > now {
        return None;
    }
    let spec = &schedule.spec;
    let name = spec.name.clone();
    let timing = match spec.validate() {
        Ok(timing) => timing,
        Err(e) => {
            // Stored before a rule tightened: stop it, and say why in its history.
            return Some(ScheduleFiring {
                schedule: name,
                expected,
                next: None,
                overlap: spec.overlap,
                due: vec![Due::Missed {
                    fire_time: expected,
                    reason: format!("invalid schedule: {e}"),
                }],
                fired_by: None,
            });
        }
    };
    let mut times = vec![expected];
    let mut next = timing.next_after(expected);
    let mut beyond = 0usize;
    while let Some(t) = next {
        if t > now {
            break;
        }
        if times.len() >= MAX_WALK {
            beyond += 1;
            next = timing.next_after(now);
            break;
        }
        times.push(t);
        next = timing.next_after(t);
    }
    if let Timing::At(_) = timing {
        next = None;
    }
    let grace = chrono::Duration::from_std(MISFIRE_GRACE).unwrap_or_default();
    let late = times.iter().filter(|t| now - **t > grace).count();
    let on_time = times.len() - late;
    // How many of the late ones (the latest of them) fire.
    let late_fired = match spec.misfire {
        Misfire::Skip => 0,
        Misfire::RunOnce => usize::from(on_time == 0 && late > 0),
        Misfire::CatchUp => late.min(MAX_CATCH_UP as usize),
    };
    let mut due = Vec::with_capacity(times.len().min(2 * MAX_CATCH_UP as usize + 1));
    let missed = late - late_fired;
    let recorded_missed = missed.min(MAX_CATCH_UP as usize);
    if missed > recorded_missed || beyond > 0 {
        tracing::warn!(
            schedule = %name,
            missed = missed + beyond,
            recorded = recorded_missed,
            "a schedule missed more occurrences than are recorded one by one"
        );
    }
    let policy = match spec.misfire {
        Misfire::Skip => "skip",
        Misfire::RunOnce => "run_once",
        Misfire::CatchUp => "catch_up",
    };
    for (i, t) in times.iter().enumerate() {
        let is_late = i < late;
        if is_late && i < missed {
            if i >= missed - recorded_missed {
                due.push(Due::Missed {
                    fire_time: *t,
                    reason: format!(
                        "no server fired it within {}s of its time (misfire = {policy})",
                        MISFIRE_GRACE.as_secs()
                    ),
                });
            }
            continue;
        }
        match job_of(spec, definitions, now) {
            Ok(job) => due.push(Due::Fire { fire_time: *t, job }),
            Err(e) => due.push(Due::Missed {
                fire_time: *t,
                reason: format!("its job is invalid: {e}"),
            }),
        }
    }
    Some(ScheduleFiring {
        schedule: name,
        expected,
        next,
        overlap: spec.overlap,
        due,
        fired_by: None,
    })
}

fn job_of(
    spec: &ScheduleSpec,
    definitions: &Definitions,
    now: DateTime<Utc>,
) -> Result<hinter_core::NewJob, hinter_core::FieldError> {
    let mut job = JobSpec::new(spec.job.clone(), spec.payload.clone());
    job.queue = spec.queue.clone();
    job.priority = spec.priority;
    definitions.resolve(job, now)
}

/// What [`sync_declared`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub deleted: Vec<String>,
    /// Declared names held by a schedule of another source (left alone).
    pub refused: Vec<String>,
}

/// Makes the schedules of `source` (e.g. [`hinter_core::schedule::SOURCE_SETTINGS`], from
/// the script folders' `settings.job`) exactly `specs`, in one unit of work: new ones are
/// created, changed ones replaced (their next fire time recomputed), unchanged ones left as
/// they are (their next fire time and history kept), ones no longer declared deleted. A name
/// taken by a schedule of another source (the API) is left alone and reported. A schedule
/// paused through the API stays paused.
///
/// The script loader calls it after loading the folders, with the `schedule` of each
/// `settings.job` as a spec (name: the job's, job: the job's, cron/time_zone/overlap/misfire
/// from the settings).
pub async fn sync_declared(
    store: &dyn Store,
    clock: &dyn Clock,
    source: &str,
    specs: Vec<ScheduleSpec>,
) -> StoreResult<SyncReport> {
    let now = clock.now();
    let store_now = store.store_time(now);
    let existing = store.schedule_list().await?;
    let mut report = SyncReport::default();
    let mut ops = Vec::new();
    for declared in &specs {
        let mut spec = declared.clone();
        let old = existing.iter().find(|s| s.spec.name == spec.name);
        match old {
            Some(old) if old.source != source => {
                report.refused.push(spec.name.clone());
                continue;
            }
            Some(old) => {
                // A pause made through the API outlives the next load.
                spec.paused |= old.spec.paused;
                if old.spec == spec {
                    continue;
                }
                report.updated.push(spec.name.clone());
            }
            None => report.created.push(spec.name.clone()),
        }
        let new = NewSchedule::from_spec(spec.clone(), source, store_now, false)
            .map_err(|e| StoreError::Invalid(e.within(&format!("schedule {:?}", spec.name))))?;
        ops.push(WriteOp::ScheduleSave(new));
    }
    for old in existing.iter().filter(|s| s.source == source) {
        if !specs.iter().any(|s| s.name == old.spec.name) {
            report.deleted.push(old.spec.name.clone());
            ops.push(WriteOp::ScheduleDelete(old.spec.name.clone()));
        }
    }
    if !ops.is_empty() {
        store.write_unit(ops, now).await?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hinter_core::schedule::Overlap;
    use serde_json::json;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    fn schedule(cron: &str, misfire: Misfire, next: &str) -> Schedule {
        let spec: ScheduleSpec = serde_json::from_value(json!({
            "name": "s", "cron": cron, "job": "tick", "misfire": misfire
        }))
        .expect("spec");
        Schedule {
            spec,
            source: "api".into(),
            next_fire_at: Some(utc(next)),
            created_at: utc(next),
            updated_at: utc(next),
        }
    }

    fn kinds(f: &ScheduleFiring) -> Vec<(String, &'static str)> {
        f.due
            .iter()
            .map(|d| match d {
                Due::Fire { fire_time, .. } => (fire_time.format("%H:%M").to_string(), "fire"),
                Due::Missed { fire_time, .. } => (fire_time.format("%H:%M").to_string(), "missed"),
            })
            .collect()
    }

    #[test]
    fn misfire_policies_after_a_downtime() {
        let defs = Definitions::new();
        // Every minute; down from 10:00 to 10:03:30.
        let now = utc("2026-05-01T10:03:30Z");
        let cases = [
            (
                Misfire::Skip,
                vec![
                    ("10:00", "missed"),
                    ("10:01", "missed"),
                    ("10:02", "missed"),
                    ("10:03", "missed"),
                ],
            ),
            (
                Misfire::RunOnce,
                vec![
                    ("10:00", "missed"),
                    ("10:01", "missed"),
                    ("10:02", "missed"),
                    ("10:03", "fire"),
                ],
            ),
            (
                Misfire::CatchUp,
                vec![
                    ("10:00", "fire"),
                    ("10:01", "fire"),
                    ("10:02", "fire"),
                    ("10:03", "fire"),
                ],
            ),
        ];
        for (misfire, want) in cases {
            let s = schedule("* * * * *", misfire, "2026-05-01T10:00:00Z");
            let f = firing(&s, now, &defs).expect("due");
            let want: Vec<(String, &str)> =
                want.into_iter().map(|(t, k)| (t.to_string(), k)).collect();
            assert_eq!(kinds(&f), want, "{misfire:?}");
            assert_eq!(f.next, Some(utc("2026-05-01T10:04:00Z")));
            assert_eq!(f.expected, utc("2026-05-01T10:00:00Z"));
            assert_eq!(f.overlap, Overlap::Skip);
        }
        // On time (within the grace): fires whatever the policy.
        let s = schedule("* * * * *", Misfire::Skip, "2026-05-01T10:03:00Z");
        let f = firing(&s, utc("2026-05-01T10:03:02Z"), &defs).expect("due");
        assert_eq!(kinds(&f), vec![("10:03".to_string(), "fire")]);
        // Not due.
        assert!(firing(&s, utc("2026-05-01T10:02:59Z"), &defs).is_none());
    }

    #[test]
    fn catch_up_and_missed_records_are_bounded() {
        let defs = Definitions::new();
        let s = schedule("* * * * * *", Misfire::CatchUp, "2026-05-01T10:00:00Z");
        // An hour down: 3,600 ticks; the walk stops at MAX_WALK.
        let f = firing(&s, utc("2026-05-01T11:00:00Z"), &defs).expect("due");
        let fired = f
            .due
            .iter()
            .filter(|d| matches!(d, Due::Fire { .. }))
            .count();
        let missed = f
            .due
            .iter()
            .filter(|d| matches!(d, Due::Missed { .. }))
            .count();
        assert_eq!(fired, MAX_CATCH_UP as usize);
        assert_eq!(missed, MAX_CATCH_UP as usize);
        assert_eq!(f.next, Some(utc("2026-05-01T11:00:01Z")));
    }

    #[test]
    fn one_shot_fires_once_then_has_no_next() {
        let defs = Definitions::new();
        let spec: ScheduleSpec = serde_json::from_value(json!({
            "name": "once", "at": "2026-05-01T10:00:00Z", "job": "tick"
        }))
        .expect("spec");
        let s = Schedule {
            next_fire_at: spec.at,
            spec,
            source: "api".into(),
            created_at: utc("2026-05-01T09:00:00Z"),
            updated_at: utc("2026-05-01T09:00:00Z"),
        };
        let f = firing(&s, utc("2026-05-01T10:00:01Z"), &defs).expect("due");
        assert_eq!(kinds(&f), vec![("10:00".to_string(), "fire")]);
        assert_eq!(f.next, None);
    }
}
