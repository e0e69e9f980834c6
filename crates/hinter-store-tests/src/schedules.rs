//! Schedules and their occurrences (`WriteOp::Schedule*`): stored specs, the due query, and
//! firings that record each (schedule, fire time) once, in the transaction of its job, with
//! `overlap` decided from the job of the previous occurrence.

use crate::support::*;
use chrono::{DateTime, Utc};
use hinter_core::schedule::{
    Due, FireReport, NewSchedule, Outcome, Overlap, Schedule, ScheduleFiring, ScheduleSpec,
};
use hinter_core::store::{JobFilter, WriteOp, WriteResult};
use hinter_core::{JobState, NewJob, Store, StoreError};
use serde_json::json;
use std::sync::Arc;

fn spec(name: &str) -> ScheduleSpec {
    serde_json::from_value(json!({"name": name, "cron": "* * * * *", "job": "tick"})).expect("spec")
}

async fn save(
    store: &dyn Store,
    spec: ScheduleSpec,
    next: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Schedule {
    let new = NewSchedule {
        spec,
        source: "api".into(),
        next_fire_at: Some(next),
        create_only: true,
    };
    match store
        .write_unit(vec![WriteOp::ScheduleSave(new)], now)
        .await
    {
        Ok(mut r) => match r.pop() {
            Some(WriteResult::ScheduleSaved(s)) => *s,
            other => panic!("ScheduleSave answered {other:?}"),
        },
        Err(e) => panic!("ScheduleSave: {e:?}"),
    }
}

fn firing(
    name: &str,
    expected: DateTime<Utc>,
    next: DateTime<Utc>,
    overlap: Overlap,
) -> ScheduleFiring {
    ScheduleFiring {
        schedule: name.into(),
        expected,
        next: Some(next),
        overlap,
        due: vec![Due::Fire {
            fire_time: expected,
            job: NewJob::new("tick", json!({"at": expected})),
        }],
        fired_by: Some("process-1".into()),
    }
}

async fn fire(store: &dyn Store, f: ScheduleFiring, now: DateTime<Utc>) -> FireReport {
    match store.write_unit(vec![WriteOp::ScheduleFire(f)], now).await {
        Ok(mut r) => match r.pop() {
            Some(WriteResult::ScheduleFired(report)) => report,
            other => panic!("ScheduleFire answered {other:?}"),
        },
        Err(e) => panic!("ScheduleFire: {e:?}"),
    }
}

async fn all_jobs(store: &dyn Store) -> Vec<hinter_core::Job> {
    list(
        store,
        JobFilter {
            limit: 1000,
            ..JobFilter::default()
        }
        .complete(),
    )
    .await
}

/// Create, read, list, replace, pause, resume, delete; a taken name is a conflict, an unknown
/// one is unknown, a bad spec is refused naming its field.
pub async fn schedules_create_read_replace_pause_delete(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let saved = save(store, spec("b-nightly"), now + secs(60), now).await;
    assert_eq!(saved.spec.name, "b-nightly");
    assert_eq!(saved.next_fire_at, Some(now + secs(60)));
    assert_eq!(saved.source, "api");
    save(store, spec("a-hourly"), now + secs(30), now).await;
    let names: Vec<String> = store
        .schedule_list()
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.spec.name)
        .collect();
    assert_eq!(names, ["a-hourly", "b-nightly"]);

    let dup = NewSchedule {
        spec: spec("b-nightly"),
        source: "api".into(),
        next_fire_at: None,
        create_only: true,
    };
    match store
        .write_unit(vec![WriteOp::ScheduleSave(dup.clone())], now)
        .await
    {
        Err(StoreError::Conflict(m)) => assert!(m.contains("b-nightly"), "{m}"),
        other => panic!("a taken name: {other:?}"),
    }
    // Replacing keeps created_at and takes the new spec.
    let mut changed = dup;
    changed.create_only = false;
    changed.spec.job = "report".into();
    changed.next_fire_at = Some(now + secs(120));
    store
        .write_unit(vec![WriteOp::ScheduleSave(changed)], now + secs(1))
        .await
        .expect("replace");
    let got = store
        .schedule_get("b-nightly")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got.spec.job, "report");
    assert_eq!(got.next_fire_at, Some(now + secs(120)));
    assert_eq!(got.created_at, saved.created_at);
    assert_eq!(got.updated_at, now + secs(1));

    let mut bad = spec("bad");
    bad.cron = Some("61 * * * *".into());
    let bad = NewSchedule {
        spec: bad,
        source: "api".into(),
        next_fire_at: None,
        create_only: true,
    };
    match store
        .write_unit(vec![WriteOp::ScheduleSave(bad)], now)
        .await
    {
        Err(StoreError::Invalid(e)) => assert_eq!(e.field, "cron"),
        other => panic!("a bad cron: {other:?}"),
    }

    let pause = WriteOp::SchedulePause {
        name: "b-nightly".into(),
        paused: true,
        next_fire_at: None,
    };
    store.write_unit(vec![pause], now).await.expect("pause");
    let got = store
        .schedule_get("b-nightly")
        .await
        .expect("get")
        .expect("exists");
    assert!(got.spec.paused);
    assert_eq!(got.next_fire_at, Some(now + secs(120)));
    let resume = WriteOp::SchedulePause {
        name: "b-nightly".into(),
        paused: false,
        next_fire_at: Some(Some(now + secs(300))),
    };
    store.write_unit(vec![resume], now).await.expect("resume");
    let got = store
        .schedule_get("b-nightly")
        .await
        .expect("get")
        .expect("exists");
    assert!(!got.spec.paused);
    assert_eq!(got.next_fire_at, Some(now + secs(300)));

    store
        .write_unit(vec![WriteOp::ScheduleDelete("b-nightly".into())], now)
        .await
        .expect("delete");
    assert!(store
        .schedule_get("b-nightly")
        .await
        .expect("get")
        .is_none());
    for op in [
        WriteOp::ScheduleDelete("b-nightly".into()),
        WriteOp::SchedulePause {
            name: "nope".into(),
            paused: true,
            next_fire_at: None,
        },
    ] {
        match store.write_unit(vec![op], now).await {
            Err(StoreError::Unknown(m)) => assert!(m.contains("no schedule named"), "{m}"),
            other => panic!("an unknown schedule: {other:?}"),
        }
    }
}

/// Due: not paused, `next_fire_at` at or before now, earliest first; the earliest
/// `next_fire_at` of the schedules not paused.
pub async fn schedules_due_earliest_first_without_paused(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    save(store, spec("late"), now - secs(1), now).await;
    save(store, spec("early"), now - secs(10), now).await;
    save(store, spec("future"), now + secs(10), now).await;
    let mut paused = spec("paused");
    paused.paused = true;
    save(store, paused, now - secs(20), now).await;
    let due: Vec<String> = store
        .schedule_due(now, 10)
        .await
        .expect("due")
        .into_iter()
        .map(|s| s.spec.name)
        .collect();
    assert_eq!(due, ["early", "late"]);
    assert_eq!(store.schedule_due(now, 1).await.expect("due").len(), 1);
    assert_eq!(
        store.schedule_next_fire_at().await.expect("next"),
        Some(now - secs(10))
    );
}

/// A firing records the occurrence with its job; when the job cannot be inserted, nothing of
/// the firing stays (no occurrence, `next_fire_at` unchanged).
pub async fn schedules_occurrence_and_job_are_atomic(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let t = now - secs(1);
    save(store, spec("s"), t, now).await;
    let mut broken = firing("s", t, t + secs(60), Overlap::Allow);
    broken.due = vec![Due::Fire {
        fire_time: t,
        job: NewJob::new("bad\0name", json!(null)),
    }];
    let err = store
        .write_unit(vec![WriteOp::ScheduleFire(broken)], now)
        .await
        .expect_err("a job that cannot be inserted");
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert!(store
        .occurrence_list("s", None, 10)
        .await
        .expect("history")
        .is_empty());
    assert_eq!(
        store
            .schedule_get("s")
            .await
            .expect("get")
            .expect("exists")
            .next_fire_at,
        Some(t)
    );
    assert!(all_jobs(store).await.is_empty());

    let report = fire(store, firing("s", t, t + secs(60), Overlap::Allow), now).await;
    assert!(report.advanced);
    assert_eq!(report.recorded.len(), 1);
    let occurrence = &report.recorded[0];
    assert_eq!(occurrence.outcome, Outcome::Fired);
    assert_eq!(occurrence.fired_by.as_deref(), Some("process-1"));
    let stored = store.occurrence_list("s", None, 1).await.expect("history");
    assert_eq!(stored[0], *occurrence);
    let jobs = all_jobs(store).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(occurrence.job_id, Some(jobs[0].id));
    assert_eq!(jobs[0].payload, json!({"at": t}));
    assert_eq!(
        store
            .schedule_get("s")
            .await
            .expect("get")
            .expect("exists")
            .next_fire_at,
        Some(t + secs(60))
    );
}

/// A second firing of one (schedule, time) writes nothing: the schedule moved on (the guard
/// on `next_fire_at`), or the occurrence exists (its primary key), also when tried at once.
pub async fn schedules_second_firing_of_a_time_inserts_nothing(shared: Arc<dyn Store>) {
    let store = &*shared;
    let now = base_time();
    let t = now - secs(1);
    save(store, spec("s"), t, now).await;
    assert!(
        fire(store, firing("s", t, t + secs(60), Overlap::Allow), now)
            .await
            .advanced
    );
    let again = fire(store, firing("s", t, t + secs(60), Overlap::Allow), now).await;
    assert!(!again.advanced && again.recorded.is_empty(), "{again:?}");
    // Put back at the fired time (a replaced schedule): the occurrence stops it.
    store
        .write_unit(
            vec![WriteOp::SchedulePause {
                name: "s".into(),
                paused: false,
                next_fire_at: Some(Some(t)),
            }],
            now,
        )
        .await
        .expect("reset");
    let reset = fire(store, firing("s", t, t + secs(60), Overlap::Allow), now).await;
    assert!(reset.advanced && reset.recorded.is_empty(), "{reset:?}");
    assert_eq!(all_jobs(store).await.len(), 1);

    // Many firings of one tick at once: one writes.
    let u = t + secs(60);
    let tries: Vec<_> = (0..8)
        .map(|_| {
            let store = shared.clone();
            let f = firing("s", u, u + secs(60), Overlap::Allow);
            tokio::spawn(async move { fire(&*store, f, now).await })
        })
        .collect();
    let mut reports = Vec::new();
    for task in tries {
        reports.push(task.await.expect("a firing task"));
    }
    assert_eq!(
        reports.iter().filter(|r| r.advanced).count(),
        1,
        "{reports:?}"
    );
    assert_eq!(all_jobs(store).await.len(), 2);
    assert_eq!(
        store
            .occurrence_list("s", None, 10)
            .await
            .expect("history")
            .len(),
        2
    );
}

/// The history lists every outcome, latest first, and pages with `before`.
pub async fn schedules_history_latest_first(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let t = now - secs(180);
    save(store, spec("s"), t, now).await;
    let f = ScheduleFiring {
        schedule: "s".into(),
        expected: t,
        next: Some(now + secs(60)),
        overlap: Overlap::Allow,
        due: vec![
            Due::Missed {
                fire_time: t,
                reason: "no server ran".into(),
            },
            Due::Missed {
                fire_time: t + secs(60),
                reason: "no server ran".into(),
            },
            Due::Fire {
                fire_time: t + secs(120),
                job: NewJob::new("tick", json!(1)),
            },
        ],
        fired_by: None,
    };
    let report = fire(store, f, now).await;
    assert_eq!(report.recorded.len(), 3);
    let history = store.occurrence_list("s", None, 10).await.expect("history");
    let outcomes: Vec<(DateTime<Utc>, Outcome)> = history
        .iter()
        .map(|o| (o.fire_time, o.outcome.clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (t + secs(120), Outcome::Fired),
            (t + secs(60), Outcome::Missed),
            (t, Outcome::Missed)
        ]
    );
    assert_eq!(history[1].reason.as_deref(), Some("no server ran"));
    let page = store
        .occurrence_list("s", Some(t + secs(60)), 10)
        .await
        .expect("page");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].fire_time, t);
    assert_eq!(
        store
            .occurrence_list("s", None, 1)
            .await
            .expect("one")
            .len(),
        1
    );
}

/// overlap: while the previous occurrence's job is unfinished, `skip` records a skip naming
/// it, `allow` fires, `replace` cancels it and fires; once it finished, `skip` fires.
pub async fn schedules_overlap_reads_the_previous_job(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let t0 = now - secs(10);
    save(store, spec("s"), t0, now).await;
    let first = fire(store, firing("s", t0, t0 + secs(1), Overlap::Skip), now).await;
    let first_job = first.recorded[0].job_id.expect("a job");

    let skipped = fire(
        store,
        firing("s", t0 + secs(1), t0 + secs(2), Overlap::Skip),
        now,
    )
    .await;
    assert_eq!(skipped.recorded[0].outcome, Outcome::Skipped);
    let reason = skipped.recorded[0].reason.clone().unwrap_or_default();
    assert!(reason.contains(&first_job.to_string()), "{reason}");
    assert_eq!(all_jobs(store).await.len(), 1);

    let allowed = fire(
        store,
        firing("s", t0 + secs(2), t0 + secs(3), Overlap::Allow),
        now,
    )
    .await;
    assert_eq!(allowed.recorded[0].outcome, Outcome::Fired);
    let second_job = allowed.recorded[0].job_id.expect("a job");

    let replaced = fire(
        store,
        firing("s", t0 + secs(3), t0 + secs(4), Overlap::Replace),
        now,
    )
    .await;
    assert_eq!(replaced.recorded[0].outcome, Outcome::Fired);
    assert_eq!(replaced.replaced, Some(second_job));
    assert_eq!(get(store, second_job).await.state, JobState::Cancelled);
    let third_job = replaced.recorded[0].job_id.expect("a job");

    // Finish every unfinished job: skip fires again.
    for leased in lease(store, &["default"], 10, now).await {
        complete_ok(store, &leased, now).await;
    }
    assert!(get(store, third_job).await.state.is_finished());
    let fired = fire(
        store,
        firing("s", t0 + secs(4), t0 + secs(5), Overlap::Skip),
        now,
    )
    .await;
    assert_eq!(fired.recorded[0].outcome, Outcome::Fired);
}
