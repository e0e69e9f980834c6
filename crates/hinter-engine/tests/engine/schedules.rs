//! The scheduler on real stores: overlap with a job that outlasts its interval (a real worker
//! runs it), misfire policies after a downtime, one-shots, and several schedulers on one
//! store firing each tick once. Time is a `ManualClock` the tests move; the scheduler's passes
//! are run by the tests (`Scheduler::fire_due`), except where the loop's own wake-up is tested.

use crate::common::*;
use chrono::{DateTime, Utc};
use hinter_core::schedule::{NewSchedule, Occurrence, Outcome, ScheduleSpec, SOURCE_API};
use hinter_core::store::WriteOp;
use hinter_core::{Backend, Clock, JobState, ManualClock, SystemClock};
use hinter_engine::scheduler::FireSummary;
use hinter_engine::{HandlerContext, JobError, Registry, Scheduler, SchedulerOptions};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

/// A whole second, a little in the past, so cron times line up with the manual clock.
fn start_time() -> DateTime<Utc> {
    let now = Utc::now().timestamp() - 120;
    DateTime::from_timestamp(now, 0).expect("time")
}

async fn create(store: &Arc<dyn Backend>, spec: Value, now: DateTime<Utc>) {
    let spec: ScheduleSpec = serde_json::from_value(spec).expect("spec");
    let new = NewSchedule::from_spec(spec, SOURCE_API, now, true).expect("valid");
    store
        .write_unit(vec![WriteOp::ScheduleSave(new)], now)
        .await
        .expect("save");
}

fn scheduler(store: &Arc<dyn Backend>, clock: &ManualClock) -> Scheduler {
    Scheduler::new(
        store.clone(),
        Arc::new(clock.clone()),
        SchedulerOptions::default(),
    )
}

async fn history(store: &Arc<dyn Backend>, name: &str) -> Vec<Occurrence> {
    let mut h = store
        .occurrence_list(name, None, 1000)
        .await
        .expect("history");
    h.reverse();
    h
}

/// A worker whose `long` jobs run until cancelled (or for a minute): longer than the
/// schedule's interval.
fn long_job_worker(store: &Arc<dyn Backend>) -> hinter_engine::WorkerHandle {
    let mut registry = Registry::new();
    registry.register(def("long"), |ctx: HandlerContext, _: Value| async move {
        tokio::select! {
            _ = ctx.cancelled() => Err(JobError::permanent("stopped")),
            _ = tokio::time::sleep(Duration::from_secs(60)) => Ok(()),
        }
    });
    start_worker(store, registry, fast_options(4))
}

async fn tick(s: &Scheduler, clock: &ManualClock) -> FireSummary {
    clock.advance(secs(1));
    s.fire_due().await.expect("fire")
}

async fn overlap_skip_records_a_skip_while_the_job_runs(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let worker = long_job_worker(&store);
    let clock = ManualClock::new(start_time());
    create(
        &store,
        json!({"name": "s", "cron": "* * * * * *", "job": "long"}),
        clock.now(),
    )
    .await;
    let s = scheduler(&store, &clock);
    assert_eq!(s.fire_due().await.expect("fire").fired, 1);
    let first = history(&store, "s").await[0].job_id.expect("job");
    wait_for_state(&store, first, JobState::Running, SOON).await;
    for _ in 0..3 {
        let summary = tick(&s, &clock).await;
        assert_eq!((summary.fired, summary.skipped), (0, 1), "{summary:?}");
    }
    let h = history(&store, "s").await;
    assert_eq!(h.len(), 4);
    assert!(h[1..].iter().all(|o| o.outcome == Outcome::Skipped));
    assert!(h[1]
        .reason
        .as_deref()
        .unwrap_or("")
        .contains(&first.to_string()));
    // Once it is over, the next tick fires.
    store.job_cancel(first, Utc::now()).await.expect("cancel");
    wait_for_job(&store, first, "finished", SOON, |j| j.state.is_finished()).await;
    assert_eq!(tick(&s, &clock).await.fired, 1);
    worker.shutdown().await;
}

async fn overlap_allow_fires_every_tick_while_the_job_runs(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let worker = long_job_worker(&store);
    let clock = ManualClock::new(start_time());
    create(
        &store,
        json!({"name": "s", "cron": "* * * * * *", "job": "long", "overlap": "allow"}),
        clock.now(),
    )
    .await;
    let s = scheduler(&store, &clock);
    s.fire_due().await.expect("fire");
    let first = history(&store, "s").await[0].job_id.expect("job");
    wait_for_state(&store, first, JobState::Running, SOON).await;
    for _ in 0..2 {
        assert_eq!(tick(&s, &clock).await.fired, 1);
    }
    let ids: Vec<Uuid> = history(&store, "s")
        .await
        .iter()
        .filter_map(|o| o.job_id)
        .collect();
    assert_eq!(ids.len(), 3);
    for id in &ids {
        wait_for_state(&store, *id, JobState::Running, SOON).await;
    }
    worker.shutdown().await;
}

async fn overlap_replace_cancels_the_running_job(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let worker = long_job_worker(&store);
    let clock = ManualClock::new(start_time());
    create(
        &store,
        json!({"name": "s", "cron": "* * * * * *", "job": "long", "overlap": "replace"}),
        clock.now(),
    )
    .await;
    let s = scheduler(&store, &clock);
    s.fire_due().await.expect("fire");
    let first = history(&store, "s").await[0].job_id.expect("job");
    wait_for_state(&store, first, JobState::Running, SOON).await;
    assert_eq!(tick(&s, &clock).await.fired, 1);
    let second = history(&store, "s").await[1].job_id.expect("job");
    // The first is stopped by its cancel request; the second runs.
    wait_for_state(&store, first, JobState::Cancelled, SOON).await;
    wait_for_state(&store, second, JobState::Running, SOON).await;
    worker.shutdown().await;
}

/// Down for 3.5 minutes with an every-minute schedule: skip records four misses, run_once
/// fires the latest and records the others missed, catch_up fires all four.
async fn misfire_policies_after_a_downtime(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let start = start_time();
    let start = start - secs(start.timestamp() % 60);
    let clock = ManualClock::new(start);
    for (name, misfire) in [("skip", "skip"), ("once", "run_once"), ("all", "catch_up")] {
        create(
            &store,
            json!({"name": name, "cron": "* * * * *", "job": "tick", "misfire": misfire,
                   "overlap": "allow"}),
            start + chrono::Duration::milliseconds(1),
        )
        .await;
    }
    // The server was down from the first tick (start + 60 s) to 3.5 minutes after it.
    clock.advance(secs(60 * 4 + 30));
    let summary = scheduler(&store, &clock).fire_due().await.expect("fire");
    assert_eq!(summary.fired, 1 + 4, "{summary:?}");
    assert_eq!(summary.missed, 4 + 3, "{summary:?}");
    let outcomes = |h: Vec<Occurrence>| h.into_iter().map(|o| o.outcome).collect::<Vec<_>>();
    use Outcome::{Fired, Missed};
    assert_eq!(
        outcomes(history(&store, "skip").await),
        [Missed, Missed, Missed, Missed]
    );
    assert_eq!(
        outcomes(history(&store, "once").await),
        [Missed, Missed, Missed, Fired]
    );
    assert_eq!(
        outcomes(history(&store, "all").await),
        [Fired, Fired, Fired, Fired]
    );
    // Every one moves on to the next minute after now.
    for name in ["skip", "once", "all"] {
        let s = store
            .schedule_get(name)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(s.next_fire_at, Some(start + secs(300)), "{name}");
    }
    let jobs = store
        .job_list(hinter_core::store::JobFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("jobs");
    assert_eq!(jobs.len(), 5);
}

/// Three schedulers (three store instances, as three servers) on one database, passes run
/// concurrently on every tick: each tick is fired once.
async fn several_schedulers_fire_each_tick_once(kind: Kind) {
    let data = Data::fresh(kind);
    let stores = [data.open().await, data.open().await, data.open().await];
    let clock = ManualClock::new(start_time());
    create(
        &stores[0],
        json!({"name": "s", "cron": "* * * * * *", "job": "tick", "overlap": "allow"}),
        clock.now(),
    )
    .await;
    let schedulers: Vec<Arc<Scheduler>> = stores
        .iter()
        .map(|st| Arc::new(scheduler(st, &clock)))
        .collect();
    for _ in 0..10 {
        let passes: Vec<_> = schedulers
            .iter()
            .map(|s| {
                let s = s.clone();
                tokio::spawn(async move { s.fire_due().await.expect("fire") })
            })
            .collect();
        let mut fired = 0;
        for p in passes {
            fired += p.await.expect("pass").fired;
        }
        assert_eq!(fired, 1);
        clock.advance(secs(1));
    }
    let h = history(&stores[1], "s").await;
    assert_eq!(h.len(), 10);
    assert!(h.iter().all(|o| o.outcome == Outcome::Fired));
}

/// The loop on the wall clock: an every-second schedule fires on time, and a schedule
/// created while the loop sleeps wakes it.
async fn the_loop_fires_on_time_and_wakes_on_new_schedules(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let handle = Scheduler::new(
        store.clone(),
        Arc::new(SystemClock),
        SchedulerOptions {
            poll_interval: Duration::from_secs(60),
            ..SchedulerOptions::default()
        },
    )
    .start();
    // Created after the loop went to sleep with nothing to do.
    tokio::time::sleep(Duration::from_millis(100)).await;
    create(
        &store,
        json!({"name": "s", "cron": "* * * * * *", "job": "tick"}),
        SystemClock.now(),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let h = loop {
        let h = history(&store, "s").await;
        if h.len() >= 3 {
            break h;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "3 ticks within 10 s: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for o in &h[..3] {
        let late = o.recorded_at - o.fire_time;
        assert!(late >= chrono::Duration::zero(), "{o:?}");
        // Generous for a loaded CI machine; the bench measures the real figure.
        assert!(
            late < chrono::Duration::milliseconds(500),
            "fired {late} late: {o:?}"
        );
    }
    handle.shutdown().await;
}

on_both_backends!(
    overlap_skip_records_a_skip_while_the_job_runs,
    overlap_allow_fires_every_tick_while_the_job_runs,
    overlap_replace_cancels_the_running_job,
    misfire_policies_after_a_downtime,
    several_schedulers_fire_each_tick_once,
    the_loop_fires_on_time_and_wakes_on_new_schedules,
    sync_declared_replaces_one_sources_schedules,
);

/// The script loader's entry point: declared schedules of one source are created, kept,
/// replaced and deleted as a set; API schedules are left alone; an API pause outlives a load.
async fn sync_declared_replaces_one_sources_schedules(kind: Kind) {
    use hinter_core::schedule::SOURCE_SETTINGS;
    use hinter_engine::scheduler::sync_declared;
    let (_data, store) = open_store(kind).await;
    let clock = ManualClock::new(start_time());
    create(
        &store,
        json!({"name": "api-one", "cron": "@daily", "job": "x"}),
        clock.now(),
    )
    .await;
    let spec = |name: &str, cron: &str| -> ScheduleSpec {
        serde_json::from_value(json!({"name": name, "cron": cron, "job": name})).expect("spec")
    };
    let report = sync_declared(
        store.as_ref(),
        &clock,
        SOURCE_SETTINGS,
        vec![
            spec("a", "@hourly"),
            spec("b", "@daily"),
            spec("api-one", "@hourly"),
        ],
    )
    .await
    .expect("sync");
    assert_eq!(report.created, ["a", "b"]);
    assert_eq!(report.refused, ["api-one"]);
    let a = store.schedule_get("a").await.expect("get").expect("a");
    assert_eq!(a.source, SOURCE_SETTINGS);
    // Pause `a` through the API and change `b`: `a` is kept as it is, `b` replaced.
    store
        .write_unit(
            vec![WriteOp::SchedulePause {
                name: "a".into(),
                paused: true,
                next_fire_at: None,
            }],
            clock.now(),
        )
        .await
        .expect("pause");
    clock.advance(secs(10));
    let report = sync_declared(
        store.as_ref(),
        &clock,
        SOURCE_SETTINGS,
        vec![spec("a", "@hourly"), spec("b", "*/5 * * * *")],
    )
    .await
    .expect("sync");
    assert!(
        report.created.is_empty() && report.deleted.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.updated, ["b"]);
    let a_again = store.schedule_get("a").await.expect("get").expect("a");
    assert!(a_again.spec.paused, "the API pause outlives the load");
    assert_eq!(
        a_again.next_fire_at, a.next_fire_at,
        "unchanged: next fire time kept"
    );
    assert_eq!(
        store
            .schedule_get("b")
            .await
            .expect("get")
            .expect("b")
            .spec
            .cron
            .as_deref(),
        Some("*/5 * * * *")
    );
    let report = sync_declared(
        store.as_ref(),
        &clock,
        SOURCE_SETTINGS,
        vec![spec("b", "*/5 * * * *")],
    )
    .await
    .expect("sync");
    assert_eq!(report.deleted, ["a"]);
    let names: Vec<String> = store
        .schedule_list()
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.spec.name)
        .collect();
    assert_eq!(names, ["api-one", "b"]);
}
