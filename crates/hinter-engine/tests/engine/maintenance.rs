//! Maintenance: lease rescue (poison jobs included), promotion of due jobs so idle workers
//! wake on time, retention pruning; and the worker's side of leases (heartbeats, lost leases).

use crate::common::*;
use chrono::Utc;
use hinter_core::retry::FailOutcome;
use hinter_core::store::{Completion, Failure, LeaseRequest};
use hinter_core::{
    Backend, Clock, JobState, LeasedJob, ManualClock, NewJob, StoreError, SystemClock,
};
use hinter_engine::{
    HandlerContext, JobError, Maintenance, MaintenanceOptions, Registry, Retention, WorkerOptions,
};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Leases up to one job as a worker that will never report back.
async fn lease_as_vanished_worker(
    store: &Arc<dyn Backend>,
    now: chrono::DateTime<Utc>,
    lease_for: Duration,
) -> Vec<LeasedJob> {
    store
        .job_lease(LeaseRequest {
            jobs: Vec::new(),
            queues: vec!["default".into()],
            worker_id: "vanished-worker".into(),
            max: 1,
            lease_for,
            now,
        })
        .await
        .expect("lease")
}

fn ms(n: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(n)
}

fn fast_maintenance() -> MaintenanceOptions {
    MaintenanceOptions {
        rescue_interval: Duration::from_millis(100),
        promote_interval: Duration::from_millis(100),
        prune_interval: Duration::from_millis(100),
        retention: Retention::default(),
    }
}

async fn rescue_once_returns_a_job_with_an_expired_lease_to_the_queue(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let clock = ManualClock::new(Utc::now());
    let id = store
        .job_insert_many(vec![NewJob::new("export", json!({}))], clock.now())
        .await
        .expect("enqueue")[0]
        .job
        .id;
    let first = lease_as_vanished_worker(&store, clock.now(), Duration::from_secs(1)).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempt, 1);

    // The lease is still valid: nothing to rescue.
    clock.advance(ms(500));
    let rescued = Maintenance::rescue_once(store.as_ref(), &clock)
        .await
        .expect("rescue");
    assert_eq!(rescued, 0);
    assert_eq!(get(&store, id).await.state, JobState::Running);

    // Past the lease: the vanished worker's job is rescued.
    clock.advance(ms(1000));
    let rescued = Maintenance::rescue_once(store.as_ref(), &clock)
        .await
        .expect("rescue");
    assert_eq!(rescued, 1);
    let after_rescue = get(&store, id).await;
    assert_eq!(
        after_rescue.attempt, 1,
        "rescue does not count another attempt"
    );
    assert_eq!(after_rescue.errors.len(), 1);
    assert_eq!(after_rescue.errors[0].attempt, 1);
    assert!(
        after_rescue.errors[0].message.contains("lease expired"),
        "{:?}",
        after_rescue.errors
    );
    assert_eq!(after_rescue.lease_expires_at, None);
    assert!(
        after_rescue.run_at <= clock.now(),
        "a lost worker is not the job's fault: no backoff"
    );

    // The vanished worker's late answer is refused (fencing).
    let late = store
        .job_complete_many(
            vec![Completion {
                id,
                lease_token: first[0].lease_token,
                result: Some(json!("late")),
            }],
            clock.now(),
        )
        .await
        .expect("complete");
    assert_eq!(late, vec![Err(StoreError::StaleLease(id))]);

    // Leased again, at once: the second attempt.
    let second = lease_as_vanished_worker(&store, clock.now(), Duration::from_secs(1)).await;
    assert_eq!(
        second.len(),
        1,
        "the rescued job should be leasable at once"
    );
    assert_eq!(second[0].id, id);
    assert_eq!(second[0].attempt, 2);
    assert_ne!(second[0].lease_token, first[0].lease_token);
    let rescued = Maintenance::rescue_once(store.as_ref(), &clock)
        .await
        .expect("rescue");
    assert_eq!(rescued, 0, "the new lease is valid");

    // PRODUCT.md §2 and docs/state-machine.md: "An expired lease returns the job to
    // `queued`" (running ── lease expired ─► queued / dead).
    assert_eq!(
        after_rescue.state,
        JobState::Queued,
        "a rescued job should be back in the queue"
    );
}

async fn job_that_keeps_losing_its_worker_ends_dead_as_poison(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let clock = ManualClock::new(Utc::now());
    let id = store
        .job_insert_many(
            vec![NewJob::new("poison", json!({})).max_attempts(2)],
            clock.now(),
        )
        .await
        .expect("enqueue")[0]
        .job
        .id;

    for attempt in 1..=2u32 {
        let leased = lease_as_vanished_worker(&store, clock.now(), Duration::from_secs(1)).await;
        assert_eq!(leased.len(), 1, "attempt {attempt} should be leasable");
        assert_eq!(leased[0].attempt, attempt);
        clock.advance(ms(1500));
        let rescued = Maintenance::rescue_once(store.as_ref(), &clock)
            .await
            .expect("rescue");
        assert_eq!(rescued, 1);
    }
    let job = get(&store, id).await;
    assert_eq!(job.state, JobState::Dead, "attempts are used up");
    assert_eq!(job.attempt, 2);
    assert_eq!(job.errors.len(), 2);
    assert!(job
        .errors
        .iter()
        .all(|e| e.message.contains("lease expired")));
    assert!(job.finished_at.is_some());
    assert!(
        lease_as_vanished_worker(&store, clock.now(), Duration::from_secs(1))
            .await
            .is_empty(),
        "a dead job is not leased again"
    );
}

async fn rescue_once_fails_a_job_past_its_timeout_with_backoff(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let clock = ManualClock::new(Utc::now());
    let id = store
        .job_insert_many(
            vec![NewJob::new("bounded", json!({})).timeout(Duration::from_secs(5))],
            clock.now(),
        )
        .await
        .expect("enqueue")[0]
        .job
        .id;
    // The lease outlives the timeout (a worker heartbeating a job that overran).
    let leased = lease_as_vanished_worker(&store, clock.now(), Duration::from_secs(60)).await;
    assert_eq!(leased.len(), 1);
    clock.advance(ms(4000));
    assert_eq!(
        Maintenance::rescue_once(store.as_ref(), &clock)
            .await
            .expect("rescue"),
        0
    );
    clock.advance(ms(1500));
    assert_eq!(
        Maintenance::rescue_once(store.as_ref(), &clock)
            .await
            .expect("rescue"),
        1
    );
    let job = get(&store, id).await;
    assert_eq!(
        job.state,
        JobState::Scheduled,
        "a timed-out attempt is retried"
    );
    assert_eq!(job.attempt, 1);
    assert_eq!(job.errors.len(), 1);
    assert_eq!(job.errors[0].message, "timed out after 5s");
    let backoff = (job.run_at - clock.now()).num_milliseconds();
    assert!(
        (700..=1300).contains(&backoff),
        "retry after the first backoff (~1s), is {backoff}ms"
    );
}

async fn maintenance_rescues_a_vanished_workers_job_and_a_worker_runs_it_again(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let id = enqueue(&store, NewJob::new("export", json!({})).max_attempts(3)).await;
    let leased = lease_as_vanished_worker(&store, Utc::now(), Duration::from_millis(300)).await;
    assert_eq!(leased.len(), 1);

    let mut registry = Registry::new();
    registry.register(def("export"), |ctx: HandlerContext, _: Value| async move {
        Ok::<_, JobError>(json!({ "attempt": ctx.attempt }))
    });
    let maintenance = Maintenance::start(
        store.clone(),
        Arc::new(SystemClock),
        fast_maintenance(),
        hinter_engine::Leader::always(),
    );
    let worker = start_worker(&store, registry, fast_options(2));

    let job = wait_for_state(&store, id, JobState::Succeeded, SOON).await;
    assert_eq!(job.attempt, 2);
    assert_eq!(job.result, Some(json!({"attempt": 2})));
    assert_eq!(job.errors.len(), 1);
    assert!(job.errors[0].message.contains("lease expired"));

    within("worker shutdown", SOON, worker.shutdown()).await;
    within("maintenance shutdown", SOON, maintenance.shutdown()).await;
}

async fn promotion_wakes_an_idle_worker_when_a_delayed_job_is_due(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let started_at: Arc<Mutex<Option<chrono::DateTime<Utc>>>> = Arc::default();
    let mut registry = Registry::new();
    {
        let started_at = started_at.clone();
        registry.register(def("reminder"), move |_ctx: HandlerContext, _: Value| {
            let started_at = started_at.clone();
            async move {
                *started_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Utc::now());
                Ok::<_, JobError>(())
            }
        });
    }
    let maintenance = Maintenance::start(
        store.clone(),
        Arc::new(SystemClock),
        fast_maintenance(),
        hinter_engine::Leader::always(),
    );
    // No fallback polling to speak of: only a store event can wake this worker in time.
    let options = WorkerOptions {
        poll_interval: Duration::from_secs(60),
        ..fast_options(2)
    };
    let worker = start_worker(&store, registry, options);

    let run_at = Utc::now() + ms(300);
    let id = enqueue(&store, NewJob::new("reminder", json!({})).run_at(run_at)).await;
    assert_eq!(get(&store, id).await.state, JobState::Scheduled);

    wait_for_state(&store, id, JobState::Succeeded, SOON).await;
    let started = started_at
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .expect("the handler ran");
    assert!(
        started >= run_at,
        "started at {started}, before its run_at {run_at}"
    );
    let late = (started - run_at).num_milliseconds();
    assert!(late < 1500, "started {late}ms after its run_at");

    within("worker shutdown", SOON, worker.shutdown()).await;
    within("maintenance shutdown", SOON, maintenance.shutdown()).await;
}

async fn pruning_deletes_finished_jobs_past_their_retention_only(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let mut registry = Registry::new();
    registry.register(def("done"), |_ctx: HandlerContext, _: Value| async {
        Ok::<_, JobError>(())
    });
    registry.register(def("doomed"), |_ctx: HandlerContext, _: Value| async {
        Err::<(), _>(JobError::permanent("no"))
    });
    let worker = start_worker(&store, registry, fast_options(2));
    let done = enqueue(&store, NewJob::new("done", json!({}))).await;
    let doomed = enqueue(&store, NewJob::new("doomed", json!({}))).await;
    let cancelled = enqueue(
        &store,
        NewJob::new("done", json!({})).run_at(Utc::now() + chrono::Duration::hours(1)),
    )
    .await;
    store
        .job_cancel(cancelled, Utc::now())
        .await
        .expect("cancel");
    let waiting = enqueue(
        &store,
        NewJob::new("done", json!({})).run_at(Utc::now() + chrono::Duration::hours(1)),
    )
    .await;
    wait_for_state(&store, done, JobState::Succeeded, SOON).await;
    wait_for_state(&store, doomed, JobState::Dead, SOON).await;
    within("worker shutdown", SOON, worker.shutdown()).await;

    let maintenance = Maintenance::start(
        store.clone(),
        Arc::new(SystemClock),
        MaintenanceOptions {
            retention: Retention {
                succeeded: Duration::from_millis(1),
                dead: Duration::from_secs(3600),
                cancelled: Duration::from_secs(3600),
                events: Duration::from_secs(3600),
            },
            ..fast_maintenance()
        },
        hinter_engine::Leader::always(),
    );
    let pruned = async {
        while store.job_get(done).await.expect("read").is_some() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    within("pruning the succeeded job", SOON, pruned).await;
    within("maintenance shutdown", SOON, maintenance.shutdown()).await;

    assert_eq!(
        get(&store, doomed).await.state,
        JobState::Dead,
        "dead: kept 1h"
    );
    assert_eq!(get(&store, cancelled).await.state, JobState::Cancelled);
    assert_eq!(get(&store, waiting).await.state, JobState::Scheduled);
}

async fn heartbeats_keep_a_long_jobs_lease_while_the_rescuer_runs(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let mut registry = Registry::new();
    registry.register(def("long"), |ctx: HandlerContext, _: Value| async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        Ok::<_, JobError>(json!({ "attempt": ctx.attempt }))
    });
    let maintenance = Maintenance::start(
        store.clone(),
        Arc::new(SystemClock),
        fast_maintenance(),
        hinter_engine::Leader::always(),
    );
    // The job runs almost 3 leases long; heartbeats (every lease_for / 3) must renew it.
    let options = WorkerOptions {
        lease_for: Duration::from_millis(900),
        ..fast_options(2)
    };
    let worker = start_worker(&store, registry, options);
    let id = enqueue(&store, NewJob::new("long", json!({}))).await;

    let job = wait_for_job(&store, id, "finished", Duration::from_secs(10), |j| {
        j.state.is_finished()
    })
    .await;
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.attempt, 1);
    assert!(job.errors.is_empty(), "{:?}", job.errors);
    assert_eq!(job.result, Some(json!({"attempt": 1})));

    within("worker shutdown", SOON, worker.shutdown()).await;
    within("maintenance shutdown", SOON, maintenance.shutdown()).await;
}

/// A handler for the lost-lease tests: the first attempt runs "forever" (and reports
/// whether it was stopped), later attempts return at once.
fn first_attempt_hangs(
    registry: &mut Registry,
    started: &Arc<Notify>,
    stopped: &Flag,
    finished: &Flag,
) {
    let (started, stopped, finished) = (started.clone(), stopped.clone(), finished.clone());
    registry.register(def("long"), move |ctx: HandlerContext, _: Value| {
        let (started, stopped, finished) = (started.clone(), stopped.clone(), finished.clone());
        async move {
            if ctx.attempt > 1 {
                return Ok::<_, JobError>(json!("second"));
            }
            let _guard = stopped.set_on_drop();
            started.notify_one();
            tokio::time::sleep(Duration::from_secs(30)).await;
            finished.set();
            Ok(json!("late"))
        }
    });
}

async fn worker_that_lost_its_lease_stops_the_handler_and_reports_nothing(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let (started, stopped, finished) = (Arc::new(Notify::new()), Flag::default(), Flag::default());
    let mut registry = Registry::new();
    first_attempt_hangs(&mut registry, &started, &stopped, &finished);
    let options = WorkerOptions {
        lease_for: Duration::from_millis(600),
        ..fast_options(2)
    };
    let worker = start_worker(&store, registry, options);
    let id = enqueue(&store, NewJob::new("long", json!({})).max_attempts(3)).await;
    within("the handler to start", SOON, started.notified()).await;
    // Keep the rescued job away from this worker: only the heartbeat can tell it.
    store
        .queue_set_paused("default", true)
        .await
        .expect("pause");

    // A rescuer whose clock says the lease ran out long ago takes the job away.
    let far_future = ManualClock::new(Utc::now() + chrono::Duration::hours(1));
    let rescued = Maintenance::rescue_once(store.as_ref(), &far_future)
        .await
        .expect("rescue");
    assert_eq!(rescued, 1);

    // The next heartbeat (every 200ms) is refused: the worker stops the handler.
    wait_until("the handler is stopped", SOON, || stopped.is_set()).await;
    assert!(!finished.is_set());
    wait_until("the worker forgets the job", SOON, || worker.running() == 0).await;
    let job = get(&store, id).await;
    assert_ne!(job.state, JobState::Running);
    assert_eq!(job.attempt, 1);
    assert_eq!(job.result, None);
    assert_eq!(job.errors.len(), 1);
    assert!(job.errors[0].message.contains("lease expired"));

    within("worker shutdown", SOON, worker.shutdown()).await;
}

/// The usual way a lease is lost: the worker stalls past its lease, the rescuer returns the
/// job, and the same worker (often the only one) leases it again before its next heartbeat.
/// The stale first attempt must be stopped; the new attempt must be tracked and reported.
async fn job_rescued_and_leased_again_by_the_same_worker_stops_the_stale_attempt(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let (started, stopped, finished) = (Arc::new(Notify::new()), Flag::default(), Flag::default());
    let mut registry = Registry::new();
    first_attempt_hangs(&mut registry, &started, &stopped, &finished);
    // Heartbeats every second; the fetcher polls every 50ms, so it leases the rescued job
    // again well before the next heartbeat would notice the loss.
    let options = WorkerOptions {
        lease_for: Duration::from_secs(3),
        ..fast_options(2)
    };
    let worker = start_worker(&store, registry, options);
    let id = enqueue(&store, NewJob::new("long", json!({})).max_attempts(3)).await;
    within("the handler to start", SOON, started.notified()).await;

    // What Maintenance::rescue_once does once the lease has expired by its clock: fail the
    // attempt under its lease token, back to the queue at once.
    let expired = store
        .job_expired_list(Utc::now() + chrono::Duration::hours(1), 10)
        .await
        .expect("expired list");
    assert_eq!(expired.len(), 1);
    let rescued = store
        .job_fail_many(
            vec![Failure {
                id,
                lease_token: expired[0].lease_token,
                error: "lease expired: the worker stopped heartbeating".into(),
                outcome: FailOutcome::Retry { run_at: Utc::now() },
                exit_code: None,
                rescued: Some(hinter_core::store::Expiry::LeaseExpired),
            }],
            Utc::now(),
        )
        .await
        .expect("rescue");
    assert!(rescued[0].is_ok(), "{rescued:?}");

    // Attempt 2 runs on this worker and succeeds; attempt 1 is stopped.
    let job = wait_for_state(&store, id, JobState::Succeeded, SOON).await;
    assert_eq!(job.attempt, 2);
    assert_eq!(job.result, Some(json!("second")));
    wait_until("the stale first attempt is stopped", SOON, || {
        stopped.is_set()
    })
    .await;
    assert!(!finished.is_set());
    wait_until("the worker has nothing running", SOON, || {
        worker.running() == 0
    })
    .await;

    within("worker shutdown", SOON, worker.shutdown()).await;
}

/// A job's `timeout` limits its run. Jobs a worker holds (leased ahead, waiting for a free
/// slot) have not started running: the rescuer must not time them out.
async fn timeout_counts_from_the_start_of_the_run_even_with_a_running_rescuer(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let gauge = Gauge::default();
    let mut registry = Registry::new();
    {
        let gauge = gauge.clone();
        registry.register(def("step"), move |_ctx: HandlerContext, _: Value| {
            let gauge = gauge.clone();
            async move {
                let _g = gauge.enter();
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, JobError>(())
            }
        });
    }
    let maintenance = Maintenance::start(
        store.clone(),
        Arc::new(SystemClock),
        fast_maintenance(),
        hinter_engine::Leader::always(),
    );
    // Each run takes 300ms of its 500ms timeout; one at a time, the three take 900ms.
    let ids = enqueue_many(
        &store,
        (0..3)
            .map(|n| NewJob::new("step", json!(n)).timeout(Duration::from_millis(500)))
            .collect(),
    )
    .await;
    let worker = start_worker(&store, registry, fast_options(1));

    for id in ids {
        let job = wait_for_job(&store, id, "finished", SOON, |j| j.state.is_finished()).await;
        assert_eq!(
            (job.state, job.attempt),
            (JobState::Succeeded, 1),
            "errors: {:?}",
            job.errors
        );
        assert!(job.errors.is_empty(), "{:?}", job.errors);
    }
    assert_eq!(gauge.total(), 3);
    assert_eq!(gauge.peak(), 1);

    within("worker shutdown", SOON, worker.shutdown()).await;
    within("maintenance shutdown", SOON, maintenance.shutdown()).await;
}

async fn pruning_deletes_event_log_entries_past_their_retention(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let ids = enqueue_many(
        &store,
        (0..3)
            .map(|i| NewJob::new("kept", json!({ "i": i })))
            .collect(),
    )
    .await;
    let everything = hinter_core::EventFilter::default();
    let read = |after: i64| {
        let store = store.clone();
        let filter = everything.clone();
        async move {
            store
                .events_read(after, &filter, 100)
                .await
                .expect("events_read")
                .events
        }
    };
    // PostgreSQL places entries once earlier transactions (other tests') have ended.
    let mut logged = read(0).await;
    while logged.len() < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        logged = read(0).await;
    }
    let maintenance = Maintenance::start(
        store.clone(),
        Arc::new(SystemClock),
        MaintenanceOptions {
            retention: Retention {
                events: Duration::from_millis(1),
                ..Retention::default()
            },
            ..fast_maintenance()
        },
        hinter_engine::Leader::always(),
    );
    let pruned = async {
        while read(0).await.len() > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    within("pruning the event log", SOON, pruned).await;
    within("maintenance shutdown", SOON, maintenance.shutdown()).await;
    // The newest entry is kept; the jobs themselves are untouched.
    assert_eq!(read(0).await, logged[2..]);
    for id in ids {
        assert_eq!(get(&store, id).await.state, JobState::Queued);
    }
}

/// Expired idempotency keys are pruned by maintenance; live ones stay.
async fn pruning_deletes_expired_idempotency_keys(kind: Kind) {
    use hinter_core::store::{Idempotent, IdempotentInsert, WriteOp, WriteResult};
    let (_data, store) = open_store(kind).await;
    let now = Utc::now();
    let use_key = |key: &str, expires_at| {
        WriteOp::InsertOnce(IdempotentInsert {
            scope: "s".into(),
            key: key.into(),
            fingerprint: "f".into(),
            expires_at,
            jobs: vec![NewJob::new("kept", json!(null))],
        })
    };
    store
        .write_unit(
            vec![
                use_key("expired", now - ms(1)),
                use_key("live", now + chrono::Duration::hours(1)),
            ],
            now - ms(2),
        )
        .await
        .expect("write_unit");
    let observed = Arc::new(HeldLease::new(store.clone()));
    let maintenance = Maintenance::start(
        observed.clone(),
        Arc::new(SystemClock),
        fast_maintenance(),
        hinter_engine::Leader::always(),
    );
    let pruned = async {
        while observed.keys_pruned() < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    within("pruning the expired key", SOON, pruned).await;
    within("maintenance shutdown", SOON, maintenance.shutdown()).await;
    assert_eq!(observed.keys_pruned(), 1, "only the expired key");
    let again = store
        .write_unit(vec![use_key("live", now + chrono::Duration::hours(2))], now)
        .await
        .expect("write_unit");
    assert!(
        matches!(
            &again[..],
            [WriteResult::InsertedOnce(Idempotent::Replayed(_))]
        ),
        "the live key is kept: {again:?}"
    );
}

on_both_backends!(
    pruning_deletes_expired_idempotency_keys,
    rescue_once_returns_a_job_with_an_expired_lease_to_the_queue,
    job_that_keeps_losing_its_worker_ends_dead_as_poison,
    rescue_once_fails_a_job_past_its_timeout_with_backoff,
    maintenance_rescues_a_vanished_workers_job_and_a_worker_runs_it_again,
    promotion_wakes_an_idle_worker_when_a_delayed_job_is_due,
    pruning_deletes_finished_jobs_past_their_retention_only,
    pruning_deletes_event_log_entries_past_their_retention,
    heartbeats_keep_a_long_jobs_lease_while_the_rescuer_runs,
    worker_that_lost_its_lease_stops_the_handler_and_reports_nothing,
    job_rescued_and_leased_again_by_the_same_worker_stops_the_stale_attempt,
    timeout_counts_from_the_start_of_the_run_even_with_a_running_rescuer,
);
