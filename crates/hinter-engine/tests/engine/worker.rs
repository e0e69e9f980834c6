//! The in-process worker: typed handlers, failures, panics, timeouts, cancellation,
//! concurrency, graceful shutdown, singleton and ordered jobs.

use crate::common::*;
use chrono::Utc;
use hinter_core::store::{
    Completion, Failure, Heartbeat, HeartbeatAck, LeaseRequest, Release, StoreResult,
};
use hinter_core::{JobDefinition, JobReport, JobSpec, JobState, LeasedJob, NewJob};
use hinter_engine::{HandlerContext, JobError, Registry, WorkerOptions};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use uuid::Uuid;

#[derive(Debug, Deserialize)]
struct Greeting {
    name: String,
    times: usize,
}

#[derive(Debug, Serialize)]
struct Greeted {
    text: String,
    attempt: u32,
}

/// What a handler saw in its context.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    id: Uuid,
    job: String,
    queue: String,
    attempt: u32,
    max_attempts: u32,
}

impl Seen {
    fn of(ctx: &HandlerContext) -> Self {
        Self {
            id: ctx.id,
            job: ctx.job.clone(),
            queue: ctx.queue.clone(),
            attempt: ctx.attempt,
            max_attempts: ctx.max_attempts,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn typed_handler_gets_payload_and_context_and_its_value_becomes_the_result(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let mut registry = Registry::new();
    {
        let seen = seen.clone();
        registry.register(
            JobDefinition {
                queue: Some("mail".into()),
                ..def("greet")
            },
            move |ctx: HandlerContext, g: Greeting| {
                let seen = seen.clone();
                async move {
                    lock(&seen).push(Seen::of(&ctx));
                    let text = vec![g.name.as_str(); g.times].join(" ");
                    Ok::<_, JobError>(Greeted {
                        text,
                        attempt: ctx.attempt,
                    })
                }
            },
        );
    }
    registry.register(def("noop"), |_ctx: HandlerContext, _: Value| async {
        Ok::<_, JobError>(())
    });
    // The worker's queues come from the definitions: "mail" for greet, "default" for noop.
    assert_eq!(
        registry.queues(),
        vec!["default".to_string(), "mail".into()]
    );

    let greet = enqueue(
        &store,
        NewJob::new("greet", json!({"name": "ada", "times": 3}))
            .queue("mail")
            .max_attempts(4),
    )
    .await;
    let noop = enqueue(&store, NewJob::new("noop", json!(null))).await;
    let worker = start_worker(&store, registry, fast_options(2));

    let job = wait_for_state(&store, greet, JobState::Succeeded, SOON).await;
    assert_eq!(
        job.result,
        Some(json!({"text": "ada ada ada", "attempt": 1})),
        "the handler's return value is the job's result"
    );
    assert_eq!(job.attempt, 1);
    assert!(job.errors.is_empty(), "{:?}", job.errors);
    assert!(job.finished_at.is_some());
    assert_eq!(
        *lock(&seen),
        vec![Seen {
            id: greet,
            job: "greet".into(),
            queue: "mail".into(),
            attempt: 1,
            max_attempts: 4,
        }]
    );

    let job = wait_for_state(&store, noop, JobState::Succeeded, SOON).await;
    assert_eq!(job.result, None, "a handler returning () stores no result");

    within("shutdown", SOON, worker.shutdown()).await;
}

async fn retryable_error_is_retried_after_backoff_then_dead_when_attempts_are_used_up(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let calls: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let mut registry = Registry::new();
    {
        let calls = calls.clone();
        registry.register(def("flaky"), move |ctx: HandlerContext, _: Value| {
            let calls = calls.clone();
            async move {
                lock(&calls).push((ctx.attempt, Instant::now()));
                Err::<(), _>(JobError::retryable(format!(
                    "flaky on attempt {}",
                    ctx.attempt
                )))
            }
        });
    }
    let id = enqueue(&store, NewJob::new("flaky", json!({})).max_attempts(2)).await;
    let worker = start_worker(&store, registry, fast_options(2));

    // First failure: back to scheduled with the error recorded, retry in ~1 s (±20%).
    let job = wait_for_job(&store, id, "failed once", SOON, |j| !j.errors.is_empty()).await;
    assert_eq!(
        job.state,
        JobState::Scheduled,
        "a retryable failure is retried"
    );
    assert_eq!(job.attempt, 1);
    assert_eq!(job.errors.len(), 1);
    assert_eq!(job.errors[0].attempt, 1);
    assert_eq!(job.errors[0].message, "flaky on attempt 1");
    let backoff = (job.run_at - job.errors[0].at).num_milliseconds();
    assert!(
        (700..=1300).contains(&backoff),
        "first retry should be ~1s after the failure, is {backoff}ms"
    );

    // Second failure uses up max_attempts 2: dead, with both errors.
    let job = wait_for_state(&store, id, JobState::Dead, Duration::from_secs(10)).await;
    assert_eq!(job.attempt, 2);
    let errors: Vec<(u32, &str)> = job
        .errors
        .iter()
        .map(|e| (e.attempt, e.message.as_str()))
        .collect();
    assert_eq!(
        errors,
        vec![(1, "flaky on attempt 1"), (2, "flaky on attempt 2")]
    );
    assert!(job.finished_at.is_some());
    let calls = lock(&calls).clone();
    assert_eq!(
        calls.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![1, 2],
        "one handler call per attempt"
    );
    let gap = calls[1].1 - calls[0].1;
    assert!(
        gap >= Duration::from_millis(700),
        "the retry ran after {gap:?}, before its backoff"
    );

    within("shutdown", SOON, worker.shutdown()).await;
}

async fn permanent_error_makes_the_job_dead_after_one_attempt(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let gauge = Gauge::default();
    let mut registry = Registry::new();
    {
        let gauge = gauge.clone();
        registry.register(def("strict"), move |_ctx: HandlerContext, _: Value| {
            let _g = gauge.enter();
            async { Err::<(), _>(JobError::permanent("invalid address")) }
        });
    }
    // Plenty of attempts left: only the permanence makes it dead.
    let id = enqueue(&store, NewJob::new("strict", json!({})).max_attempts(10)).await;
    let worker = start_worker(&store, registry, fast_options(2));

    let job = wait_for_state(&store, id, JobState::Dead, SOON).await;
    assert_eq!(job.attempt, 1);
    assert_eq!(job.errors.len(), 1);
    assert_eq!(job.errors[0].message, "invalid address");
    assert_eq!(gauge.total(), 1);

    within("shutdown", SOON, worker.shutdown()).await;
}

/// A result nested deeper than clients can read back fails the attempt for good instead of
/// being stored.
async fn a_result_too_deep_to_read_back_fails_for_good(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let mut registry = Registry::new();
    registry.register(def("deep"), move |_ctx: HandlerContext, _: Value| async {
        let mut value = json!(1);
        for _ in 0..(hinter_core::limits::MAX_JSON_DEPTH + 1) {
            value = json!([value]);
        }
        Ok::<_, JobError>(value)
    });
    let id = enqueue(&store, NewJob::new("deep", json!({})).max_attempts(10)).await;
    let worker = start_worker(&store, registry, fast_options(2));

    let job = wait_for_state(&store, id, JobState::Dead, SOON).await;
    assert_eq!(job.attempt, 1);
    assert_eq!(job.result, None);
    assert!(
        job.errors[0].message.contains("result: nests 65 levels"),
        "{:?}",
        job.errors
    );
    within("shutdown", SOON, worker.shutdown()).await;
}

async fn payload_that_does_not_fit_the_handler_type_is_dead_at_once(kind: Kind) {
    #[derive(Debug, Deserialize)]
    struct Charge {
        #[allow(dead_code)]
        amount_cents: u64,
    }
    let (_data, store) = open_store(kind).await;
    let called = Flag::default();
    let mut registry = Registry::new();
    {
        let called = called.clone();
        registry.register(def("charge"), move |_ctx: HandlerContext, _: Charge| {
            called.set();
            async { Ok::<_, JobError>(()) }
        });
    }
    let id = enqueue(
        &store,
        NewJob::new("charge", json!({"amount_cents": "twelve"})).max_attempts(5),
    )
    .await;
    let worker = start_worker(&store, registry, fast_options(2));

    let job = wait_for_state(&store, id, JobState::Dead, SOON).await;
    assert_eq!(job.attempt, 1, "a payload that does not fit is not retried");
    assert_eq!(job.errors.len(), 1);
    let message = &job.errors[0].message;
    assert!(
        message.contains("\"charge\"") && message.contains("payload"),
        "the error should name the job and the payload: {message}"
    );
    assert!(!called.is_set(), "the handler must not run");

    within("shutdown", SOON, worker.shutdown()).await;
}

async fn panicking_handler_fails_the_attempt_and_the_worker_keeps_working(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let mut registry = Registry::new();
    registry.register(
        def("fragile"),
        |_ctx: HandlerContext, p: Value| async move {
            if p["panic"] == json!(true) {
                panic!("boom in the handler");
            }
            Ok::<_, JobError>(json!("fine"))
        },
    );
    // One slot: the next job only runs if the panic released it.
    let worker = start_worker(&store, registry, fast_options(1));

    let bad = enqueue(
        &store,
        NewJob::new("fragile", json!({"panic": true})).max_attempts(1),
    )
    .await;
    let job = wait_for_state(&store, bad, JobState::Dead, SOON).await;
    assert_eq!(job.errors.len(), 1);
    let message = &job.errors[0].message;
    assert!(
        message.contains("panicked") && message.contains("boom in the handler"),
        "{message}"
    );

    let good = enqueue(&store, NewJob::new("fragile", json!({"panic": false}))).await;
    let job = wait_for_state(&store, good, JobState::Succeeded, SOON).await;
    assert_eq!(job.result, Some(json!("fine")));
    wait_until("no job is left running", SOON, || worker.running() == 0).await;

    within("shutdown", SOON, worker.shutdown()).await;
}

/// A handler is any `Fn(ctx, payload) -> impl Future`; the panic may come from the
/// synchronous part that builds the future, not only from inside it.
async fn handler_panicking_while_building_its_future_fails_the_attempt(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let mut registry = Registry::new();
    registry.register(def("eager"), |_ctx: HandlerContext, p: Value| {
        if p["panic"] == json!(true) {
            panic!("boom before the first await");
        }
        std::future::ready(Ok::<_, JobError>(json!("fine")))
    });
    let worker = start_worker(&store, registry, fast_options(1));

    let bad = enqueue(
        &store,
        NewJob::new("eager", json!({"panic": true})).max_attempts(1),
    )
    .await;
    let job = wait_for_job(&store, bad, "finished", SOON, |j| j.state.is_finished()).await;
    assert_eq!(job.state, JobState::Dead);
    assert!(
        job.errors[0].message.contains("panicked"),
        "{:?}",
        job.errors
    );

    let good = enqueue(&store, NewJob::new("eager", json!({"panic": false}))).await;
    wait_for_state(&store, good, JobState::Succeeded, SOON).await;
    wait_until("no job is left running", SOON, || worker.running() == 0).await;

    within("shutdown", SOON, worker.shutdown()).await;
}

async fn job_timeout_fails_the_attempt_and_stops_the_handler(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let stopped = Flag::default();
    let finished = Flag::default();
    let mut registry = Registry::new();
    let sleeper = {
        let (stopped, finished) = (stopped.clone(), finished.clone());
        move |_ctx: HandlerContext, _: Value| {
            let (stopped, finished) = (stopped.clone(), finished.clone());
            async move {
                let _guard = stopped.set_on_drop();
                // Ignores its context: only the engine can stop it.
                tokio::time::sleep(Duration::from_secs(10)).await;
                finished.set();
                Ok::<_, JobError>(())
            }
        }
    };
    registry.register(def("sleepy"), sleeper.clone());
    registry.register(
        JobDefinition {
            timeout: Some(Duration::from_millis(200)),
            max_attempts: Some(1),
            ..def("sleepy-by-definition")
        },
        sleeper,
    );
    let worker = start_worker(&store, registry.clone(), fast_options(2));
    let started = Instant::now();

    // The timeout set on the job itself.
    let by_job = enqueue(
        &store,
        NewJob::new("sleepy", json!({}))
            .timeout(Duration::from_millis(200))
            .max_attempts(1),
    )
    .await;
    // The timeout inherited from the definition through the enqueue path.
    let resolved = registry
        .definitions()
        .resolve(JobSpec::new("sleepy-by-definition", json!({})), Utc::now())
        .expect("valid spec");
    assert_eq!(resolved.timeout, Some(Duration::from_millis(200)));
    let by_definition = enqueue(&store, resolved).await;

    for id in [by_job, by_definition] {
        let job = wait_for_state(&store, id, JobState::Dead, SOON).await;
        assert_eq!(job.errors.len(), 1);
        assert_eq!(job.errors[0].message, "timed out after 200ms");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the timeout did not cut the 10s handler short: {:?}",
        started.elapsed()
    );
    wait_until("the timed-out handlers are dropped", SOON, || {
        stopped.is_set()
    })
    .await;
    assert!(!finished.is_set(), "a timed-out handler must not run on");
    wait_until("no job is left running", SOON, || worker.running() == 0).await;

    within("shutdown", SOON, worker.shutdown()).await;
}

async fn cancelling_a_running_job_tells_its_handler_at_once_and_ends_it_cancelled(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let started = Arc::new(Notify::new());
    let told: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut registry = Registry::new();
    {
        let (started, told) = (started.clone(), told.clone());
        registry.register(def("long"), move |ctx: HandlerContext, _: Value| {
            let (started, told) = (started.clone(), told.clone());
            async move {
                started.notify_one();
                tokio::select! {
                    _ = ctx.cancelled() => {
                        *lock(&told) = Some(Instant::now());
                        Err(JobError::retryable("stopped on request"))
                    }
                    _ = tokio::time::sleep(Duration::from_secs(30)) => Ok(()),
                }
            }
        });
    }
    // A long lease: the next heartbeat (lease_for / 3 = 10 s) is far away, so a quick stop
    // can only come from the CancelRequested store event.
    let options = WorkerOptions {
        lease_for: Duration::from_secs(30),
        ..fast_options(2)
    };
    let worker = start_worker(&store, registry, options);
    let id = enqueue(&store, NewJob::new("long", json!({}))).await;
    within("the handler to start", SOON, started.notified()).await;

    let asked = Instant::now();
    let job = store.job_cancel(id, Utc::now()).await.expect("cancel");
    assert_eq!(job.state, JobState::Running);
    assert!(job.cancel_requested);

    let job = wait_for_state(&store, id, JobState::Cancelled, SOON).await;
    let told_after = lock(&told).expect("the handler saw the cancellation") - asked;
    assert!(
        told_after < Duration::from_secs(2),
        "the handler was told after {told_after:?}: not via the store event"
    );
    assert_eq!(job.attempt, 1);
    assert_eq!(job.errors.len(), 1);
    assert_eq!(job.errors[0].message, "stopped on request");
    assert!(job.finished_at.is_some());

    within("shutdown", SOON, worker.shutdown()).await;
}

async fn cancelled_handler_that_ignores_its_context_is_aborted_after_the_grace(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let stopped = Flag::default();
    let finished = Flag::default();
    let started = Arc::new(Notify::new());
    let mut registry = Registry::new();
    {
        let (stopped, finished, started) = (stopped.clone(), finished.clone(), started.clone());
        registry.register(def("stubborn"), move |_ctx: HandlerContext, _: Value| {
            let (stopped, finished, started) = (stopped.clone(), finished.clone(), started.clone());
            async move {
                let _guard = stopped.set_on_drop();
                started.notify_one();
                tokio::time::sleep(Duration::from_secs(30)).await;
                finished.set();
                Ok::<_, JobError>(())
            }
        });
    }
    let options = WorkerOptions {
        lease_for: Duration::from_secs(30),
        cancel_grace: Duration::from_millis(200),
        ..fast_options(2)
    };
    let worker = start_worker(&store, registry, options);
    let id = enqueue(&store, NewJob::new("stubborn", json!({}))).await;
    within("the handler to start", SOON, started.notified()).await;

    store.job_cancel(id, Utc::now()).await.expect("cancel");
    let job = wait_for_state(&store, id, JobState::Cancelled, SOON).await;
    assert_eq!(job.attempt, 1);
    assert!(stopped.is_set(), "the handler should have been aborted");
    assert!(!finished.is_set());

    within("shutdown", SOON, worker.shutdown()).await;
}

async fn concurrency_limits_how_many_jobs_run_at_once(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let gauge = Gauge::default();
    let mut registry = Registry::new();
    {
        let gauge = gauge.clone();
        registry.register(def("slow"), move |_ctx: HandlerContext, n: u32| {
            let gauge = gauge.clone();
            async move {
                let _g = gauge.enter();
                tokio::time::sleep(Duration::from_millis(150)).await;
                Ok::<_, JobError>(n * 2)
            }
        });
    }
    let ids = enqueue_many(
        &store,
        (0..10).map(|n| NewJob::new("slow", json!(n))).collect(),
    )
    .await;
    let worker = start_worker(&store, registry, fast_options(3));

    for (n, id) in ids.iter().enumerate() {
        let job = wait_for_state(&store, *id, JobState::Succeeded, Duration::from_secs(10)).await;
        assert_eq!(job.result, Some(json!(n * 2)));
    }
    assert_eq!(gauge.total(), 10);
    assert!(
        gauge.peak() <= 3,
        "{} jobs ran at once with concurrency 3",
        gauge.peak()
    );
    assert_eq!(gauge.peak(), 3, "the worker should fill its 3 slots");

    within("shutdown", SOON, worker.shutdown()).await;
}

async fn graceful_shutdown_finishes_quick_jobs_and_returns_stopped_ones_to_the_queue(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let slow_runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let slow_started = Arc::new(Notify::new());
    let slow_stopped = Flag::default();
    let slow_finished = Flag::default();
    let quick_started = Arc::new(Notify::new());
    let quick_release = Arc::new(Notify::new());
    let mut registry = Registry::new();
    {
        let (runs, started, stopped, finished) = (
            slow_runs.clone(),
            slow_started.clone(),
            slow_stopped.clone(),
            slow_finished.clone(),
        );
        registry.register(def("slow"), move |_ctx: HandlerContext, _: Value| {
            let (runs, started, stopped, finished) = (
                runs.clone(),
                started.clone(),
                stopped.clone(),
                finished.clone(),
            );
            async move {
                let run = runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                if run == 1 {
                    // Ignores its context; outlives stopping_wait_time.
                    let _guard = stopped.set_on_drop();
                    started.notify_one();
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    finished.set();
                }
                Ok::<_, JobError>(json!({ "run": run }))
            }
        });
    }
    {
        let (started, release) = (quick_started.clone(), quick_release.clone());
        registry.register(def("quick"), move |_ctx: HandlerContext, _: Value| {
            let (started, release) = (started.clone(), release.clone());
            async move {
                started.notify_one();
                release.notified().await;
                Ok::<_, JobError>("done")
            }
        });
    }
    let options = WorkerOptions {
        stopping_wait_time: Duration::from_millis(200),
        ..fast_options(2)
    };
    let worker = start_worker(&store, registry.clone(), options);
    let slow = enqueue(&store, NewJob::new("slow", json!({}))).await;
    let quick = enqueue(&store, NewJob::new("quick", json!({}))).await;
    within("the slow handler to start", SOON, slow_started.notified()).await;
    within("the quick handler to start", SOON, quick_started.notified()).await;

    // Shutdown begins (first poll), then the quick job is let go: it finishes inside
    // stopping_wait_time; the slow one does not.
    let began = Instant::now();
    within("shutdown", SOON, async {
        tokio::join!(worker.shutdown(), async { quick_release.notify_one() })
    })
    .await;
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(190),
        "shutdown returned after {took:?}, before stopping_wait_time"
    );

    // shutdown returns once every outcome is stored: no polling needed.
    let job = get(&store, quick).await;
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.result, Some(json!("done")));

    let job = get(&store, slow).await;
    assert_eq!(
        job.state,
        JobState::Queued,
        "a stopped job goes back to the queue"
    );
    assert_eq!(
        job.attempt, 0,
        "an attempt cut short by shutdown is not counted"
    );
    assert!(job.errors.is_empty(), "{:?}", job.errors);
    assert_eq!(job.worker_id, None);
    assert_eq!(job.lease_expires_at, None);
    assert!(
        slow_stopped.is_set(),
        "the slow handler should have been stopped"
    );
    assert!(!slow_finished.is_set());

    // Nothing lost: the next worker runs it.
    let worker = start_worker(&store, registry, fast_options(2));
    let job = wait_for_state(&store, slow, JobState::Succeeded, SOON).await;
    assert_eq!(job.attempt, 1);
    assert_eq!(job.result, Some(json!({"run": 2})));
    within("shutdown", SOON, worker.shutdown()).await;
}

/// Shutdown can begin while a lease is being committed. The jobs it took are in the store as
/// `running` under this worker: they must go back to the queue (attempt not counted), not be
/// left leased to nobody until the lease expires and a rescue counts the attempt as failed.
async fn shutdown_during_a_lease_commit_takes_no_new_job_and_loses_none(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let held = Arc::new(HeldLease::new(store.clone()));
    let ran = Flag::default();
    let mut registry = Registry::new();
    {
        let ran = ran.clone();
        registry.register(def("task"), move |_ctx: HandlerContext, _: Value| {
            ran.set();
            async { Ok::<_, JobError>(()) }
        });
    }
    held.hold_next_lease();
    let worker = hinter_engine::Worker::start(
        held.clone(),
        Arc::new(hinter_core::SystemClock),
        registry,
        fast_options(2),
    )
    .expect("start the worker");
    let id = enqueue(&store, NewJob::new("task", json!({}))).await;
    within("the lease to commit", SOON, held.committed()).await;
    assert_eq!(get(&store, id).await.state, JobState::Running);

    // Shutdown begins while the worker waits for the lease's answer. The answer is let go
    // as soon as the worker gave up on it, or after a moment if it keeps waiting for it.
    within("shutdown", SOON, async {
        tokio::join!(worker.shutdown(), async {
            let gave_up = async {
                while !held.abandoned() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            };
            let _ = tokio::time::timeout(Duration::from_millis(300), gave_up).await;
            held.open();
        })
    })
    .await;

    assert!(!ran.is_set(), "no new job starts once shutdown began");
    let job = get(&store, id).await;
    assert_eq!(
        (job.state, job.attempt, job.worker_id.as_deref()),
        (JobState::Queued, 0, None),
        "the job leased during shutdown should be back in the queue, attempt not counted \
         (the worker {} the lease's answer)",
        if held.abandoned() {
            "dropped"
        } else {
            "received"
        }
    );
}

async fn singleton_definition_never_runs_two_jobs_at_once(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let gauge = Gauge::default();
    let mut registry = Registry::new();
    {
        let gauge = gauge.clone();
        registry.register(
            JobDefinition {
                singleton: true,
                ..def("report")
            },
            move |_ctx: HandlerContext, _: Value| {
                let gauge = gauge.clone();
                async move {
                    let _g = gauge.enter();
                    tokio::time::sleep(Duration::from_millis(80)).await;
                    Ok::<_, JobError>(())
                }
            },
        );
    }
    let now = Utc::now();
    let jobs: Vec<NewJob> = (0..4)
        .map(|n| {
            registry
                .definitions()
                .resolve(JobSpec::new("report", json!(n)), now)
                .expect("valid spec")
        })
        .collect();
    assert!(
        jobs.iter().all(|j| j.singleton),
        "resolve applies the definition"
    );
    let ids = enqueue_many(&store, jobs).await;
    let worker = start_worker(&store, registry, fast_options(4));

    for id in ids {
        wait_for_state(&store, id, JobState::Succeeded, Duration::from_secs(10)).await;
    }
    assert_eq!(gauge.total(), 4);
    assert_eq!(gauge.peak(), 1, "two singleton jobs ran at once");

    within("shutdown", SOON, worker.shutdown()).await;
}

async fn jobs_sharing_an_ordering_key_run_one_at_a_time_in_enqueue_order(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let gauge = Gauge::default();
    let order: Arc<Mutex<Vec<i64>>> = Arc::default();
    let mut registry = Registry::new();
    {
        let (gauge, order) = (gauge.clone(), order.clone());
        registry.register(def("step"), move |_ctx: HandlerContext, n: i64| {
            let (gauge, order) = (gauge.clone(), order.clone());
            async move {
                let _g = gauge.enter();
                lock(&order).push(n);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok::<_, JobError>(n)
            }
        });
    }
    let other_gauge = Gauge::default();
    {
        let gauge = other_gauge.clone();
        registry.register(def("other"), move |_ctx: HandlerContext, _: Value| {
            let gauge = gauge.clone();
            async move {
                let _g = gauge.enter();
                Ok::<_, JobError>(())
            }
        });
    }
    // Higher priorities on later jobs: the key's order still wins.
    let mut jobs: Vec<NewJob> = (0..5i32)
        .map(|n| {
            NewJob::new("step", json!(n))
                .ordering_key("account-7")
                .priority(n)
        })
        .collect();
    jobs.push(NewJob::new("other", json!({})));
    let ids = enqueue_many(&store, jobs).await;
    let worker = start_worker(&store, registry, fast_options(4));

    for id in &ids {
        wait_for_state(&store, *id, JobState::Succeeded, Duration::from_secs(10)).await;
    }
    assert_eq!(
        *lock(&order),
        vec![0, 1, 2, 3, 4],
        "ran out of enqueue order"
    );
    assert_eq!(
        gauge.peak(),
        1,
        "two jobs with the same ordering key ran at once"
    );
    assert_eq!(other_gauge.total(), 1);

    within("shutdown", SOON, worker.shutdown()).await;
}

async fn a_worker_names_no_more_queues_than_a_lease_may(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let bound = hinter_core::limits::MAX_LEASE_QUEUES;
    let options = |n: usize| WorkerOptions {
        queues: (0..n).map(|i| format!("q{i}")).collect(),
        ..fast_options(1)
    };
    let refused = hinter_engine::Worker::start(
        store.clone(),
        Arc::new(hinter_core::SystemClock),
        Registry::new(),
        options(bound + 1),
    );
    let error = refused
        .err()
        .expect("more queues than a lease may name are refused");
    assert_eq!(error.field, "queues");

    // At the bound it runs, and leases from the last of them.
    let mut registry = Registry::new();
    registry.register_fallback(|_ctx: HandlerContext, _: Value| async { Ok::<_, JobError>(()) });
    let worker = hinter_engine::Worker::start(
        store.clone(),
        Arc::new(hinter_core::SystemClock),
        registry,
        options(bound),
    )
    .expect("start the worker");
    let id = enqueue(
        &store,
        NewJob::new("task", json!({})).queue(format!("q{}", bound - 1)),
    )
    .await;
    wait_for_state(&store, id, JobState::Succeeded, SOON).await;
    worker.shutdown().await;
}

async fn a_worker_leaves_jobs_it_has_no_handler_for_in_a_shared_queue(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let mut registry = Registry::new();
    registry.register(def("mine"), |_ctx: HandlerContext, _: Value| async {
        Ok::<_, JobError>(json!("done"))
    });
    // Enqueued first and with a higher priority: a worker that leased by queue alone would
    // take it first.
    let theirs = enqueue(&store, NewJob::new("theirs", json!({})).priority(5)).await;
    let mine = enqueue(&store, NewJob::new("mine", json!({}))).await;
    let worker = start_worker(&store, registry, fast_options(2));
    wait_for_state(&store, mine, JobState::Succeeded, SOON).await;
    within("worker shutdown", SOON, worker.shutdown()).await;
    let left = get(&store, theirs).await;
    assert_eq!(left.state, JobState::Queued, "{left:?}");
    assert_eq!(left.attempt, 0, "never leased: {left:?}");
}

/// A job enqueued while the worker idles is leased for it in the insert's own transaction
/// (`hinter_core::handoff`): one commit, and its attempt starts at its creation time. The
/// worker parks once a lease of its finds nothing, so jobs are enqueued one after another
/// until one is handed over.
async fn a_job_enqueued_to_an_idle_worker_is_leased_in_its_insert(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let mut registry = Registry::new();
    registry.register(def("quick"), |_ctx: HandlerContext, _: Value| async {
        Ok::<_, JobError>(json!("done"))
    });
    let worker = start_worker(&store, registry, fast_options(4));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tries = 0;
    loop {
        tries += 1;
        let id = enqueue(&store, NewJob::new("quick", json!({}))).await;
        let job = wait_for_state(&store, id, JobState::Succeeded, Duration::from_secs(10)).await;
        assert_eq!(job.attempt, 1);
        if job.started_at == Some(job.created_at) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "none of {tries} jobs was leased in its insert's transaction"
        );
    }
    within(
        "worker shutdown",
        Duration::from_secs(10),
        worker.shutdown(),
    )
    .await;
}

/// A store's jobs, counting the leases a worker asks for.
struct CountedLeases {
    source: hinter_engine::StoreSource,
    leases: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl hinter_engine::JobSource for CountedLeases {
    async fn lease(&self, request: LeaseRequest) -> StoreResult<Vec<LeasedJob>> {
        self.leases
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.source.lease(request).await
    }
    async fn heartbeat_many(
        &self,
        heartbeats: Vec<Heartbeat>,
        now: chrono::DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<HeartbeatAck>>> {
        self.source.heartbeat_many(heartbeats, now).await
    }
    async fn complete_many(
        &self,
        completions: Vec<Completion>,
        now: chrono::DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<()>>> {
        self.source.complete_many(completions, now).await
    }
    async fn fail_many(
        &self,
        failures: Vec<Failure>,
        now: chrono::DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<()>>> {
        self.source.fail_many(failures, now).await
    }
    async fn release_many(
        &self,
        releases: Vec<Release>,
        now: chrono::DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<()>>> {
        self.source.release_many(releases, now).await
    }
    async fn report(&self, report: JobReport, now: chrono::DateTime<Utc>) -> StoreResult<()> {
        self.source.report(report, now).await
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<hinter_core::StoreEvent> {
        self.source.subscribe()
    }
    fn park(&self, request: LeaseRequest) -> Option<hinter_core::handoff::Handoff> {
        self.source.park(request)
    }
}

/// A worker handed fewer jobs than it asked for parks again at once: the insert's lease
/// found no more for it, so a lease of its own would find nothing. Jobs enqueued one after
/// another to an idle worker then cost one transaction each to start, not two.
async fn a_worker_handed_its_jobs_parks_again_without_leasing(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let mut registry = Registry::new();
    registry.register(def("quick"), |_ctx: HandlerContext, _: Value| async {
        Ok::<_, JobError>(json!("done"))
    });
    let source = Arc::new(CountedLeases {
        source: hinter_engine::StoreSource(store.clone()),
        leases: Default::default(),
    });
    let worker = hinter_engine::Worker::start_on(
        source.clone(),
        Arc::new(hinter_core::SystemClock),
        registry,
        WorkerOptions {
            // No poll tick within the test: only wake-ups and handoffs start leases.
            poll_interval: Duration::from_secs(60),
            ..fast_options(4)
        },
    )
    .expect("start the worker");
    let leases = || source.leases.load(std::sync::atomic::Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    // Leases asked for from a handed-over job's enqueue until just after it ran. (A job
    // enqueued before the worker parked is leased by the worker itself: not counted.)
    let (mut handed, mut asked) = (0, 0);
    while handed < 10 {
        assert!(
            Instant::now() < deadline,
            "{handed} jobs were handed over within 20 s"
        );
        let before = leases();
        let id = enqueue(&store, NewJob::new("quick", json!({}))).await;
        let job = wait_for_state(&store, id, JobState::Succeeded, Duration::from_secs(10)).await;
        // A lease that follows a handoff would be asked for by now.
        tokio::time::sleep(Duration::from_millis(20)).await;
        if job.started_at == Some(job.created_at) {
            handed += 1;
            asked += leases() - before;
        }
    }
    assert!(
        asked <= 2,
        "{asked} leases asked for around {handed} handoffs"
    );
    within(
        "worker shutdown",
        Duration::from_secs(10),
        worker.shutdown(),
    )
    .await;
}

on_both_backends!(
    a_worker_handed_its_jobs_parks_again_without_leasing,
    a_job_enqueued_to_an_idle_worker_is_leased_in_its_insert,
    a_worker_leaves_jobs_it_has_no_handler_for_in_a_shared_queue,
    typed_handler_gets_payload_and_context_and_its_value_becomes_the_result,
    retryable_error_is_retried_after_backoff_then_dead_when_attempts_are_used_up,
    permanent_error_makes_the_job_dead_after_one_attempt,
    a_result_too_deep_to_read_back_fails_for_good,
    payload_that_does_not_fit_the_handler_type_is_dead_at_once,
    panicking_handler_fails_the_attempt_and_the_worker_keeps_working,
    handler_panicking_while_building_its_future_fails_the_attempt,
    job_timeout_fails_the_attempt_and_stops_the_handler,
    cancelling_a_running_job_tells_its_handler_at_once_and_ends_it_cancelled,
    cancelled_handler_that_ignores_its_context_is_aborted_after_the_grace,
    concurrency_limits_how_many_jobs_run_at_once,
    graceful_shutdown_finishes_quick_jobs_and_returns_stopped_ones_to_the_queue,
    shutdown_during_a_lease_commit_takes_no_new_job_and_loses_none,
    singleton_definition_never_runs_two_jobs_at_once,
    jobs_sharing_an_ordering_key_run_one_at_a_time_in_enqueue_order,
    a_worker_names_no_more_queues_than_a_lease_may,
);
