//! The fallback handler (jobs without a handler of their own) and what a handler told to stop
//! learns and may still do: its stop reason, and `cancel_grace` to clean up whatever the
//! reason (cancel, timeout, shutdown).

use crate::common::*;
use chrono::Utc;
use hinter_core::{JobDefinition, JobState, NewJob};
use hinter_engine::{HandlerContext, JobError, Registry, StopReason, WorkerOptions};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fallback that echoes what it ran; fails on request (`{"fail": "permanent"|"retry"}`).
fn echo_fallback(registry: &mut Registry) {
    registry.register_fallback(|ctx: HandlerContext, payload: Value| async move {
        match payload["fail"].as_str() {
            Some("permanent") => Err(JobError::permanent("bad input")),
            Some(_) => Err(JobError::retryable("try again")),
            None => Ok(json!({
                "by": "fallback",
                "job": ctx.job,
                "queue": ctx.queue,
                "attempt": ctx.attempt,
                "payload": payload,
            })),
        }
    });
}

/// About the registry alone: no store, so nothing to run per backend.
#[test]
fn a_fallback_adds_no_queue_and_no_definition() {
    let mut registry = Registry::new();
    assert!(registry.is_empty());
    assert!(!registry.has_fallback());
    echo_fallback(&mut registry);
    assert!(!registry.is_empty(), "a fallback alone is a handler");
    assert!(registry.has_fallback());
    assert!(
        registry.queues().is_empty(),
        "a fallback cannot tell where unnamed jobs go"
    );
    assert!(registry.definitions().get("anything").is_none());
    registry.register(
        JobDefinition {
            queue: Some("mail".into()),
            ..def("greet")
        },
        |_ctx: HandlerContext, _: Value| async { Ok::<_, JobError>(()) },
    );
    assert_eq!(registry.queues(), vec!["mail".to_string()]);
}

async fn the_fallback_runs_every_job_without_a_handler_of_its_own(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let mut registry = Registry::new();
    registry.register(
        def("greet"),
        |ctx: HandlerContext, name: String| async move {
            Ok::<_, JobError>(
                json!({"by": "greet", "text": format!("hello {name}"), "attempt": ctx.attempt}),
            )
        },
    );
    echo_fallback(&mut registry);
    let options = WorkerOptions {
        queues: vec!["default".into(), "other".into()],
        ..fast_options(4)
    };
    let worker = start_worker(&store, registry, options);

    let greet = enqueue(&store, NewJob::new("greet", json!("ann"))).await;
    let resize = enqueue(&store, NewJob::new("resize", json!({"w": 10}))).await;
    let elsewhere = enqueue(&store, NewJob::new("index", json!([1, 2])).queue("other")).await;
    let permanent = enqueue(
        &store,
        NewJob::new("parse", json!({"fail": "permanent"})).max_attempts(5),
    )
    .await;
    let retried = enqueue(
        &store,
        NewJob::new("flaky", json!({"fail": "retry"})).max_attempts(5),
    )
    .await;

    let job = wait_for_state(&store, greet, JobState::Succeeded, SOON).await;
    assert_eq!(
        job.result,
        Some(json!({"by": "greet", "text": "hello ann", "attempt": 1})),
        "a handler registered by name wins over the fallback"
    );
    let job = wait_for_state(&store, resize, JobState::Succeeded, SOON).await;
    assert_eq!(
        job.result,
        Some(json!({
            "by": "fallback", "job": "resize", "queue": "default", "attempt": 1,
            "payload": {"w": 10},
        }))
    );
    let job = wait_for_state(&store, elsewhere, JobState::Succeeded, SOON).await;
    assert_eq!(
        job.result.as_ref().map(|r| &r["queue"]),
        Some(&json!("other"))
    );

    let job = wait_for_state(&store, permanent, JobState::Dead, SOON).await;
    assert_eq!(job.attempt, 1, "a permanent error is not retried");
    assert_eq!(job.errors.len(), 1);
    assert_eq!(job.errors[0].message, "bad input");

    let job = wait_for_job(&store, retried, "failed once", SOON, |j| {
        !j.errors.is_empty()
    })
    .await;
    assert_eq!(
        job.state,
        JobState::Scheduled,
        "a retryable error backs off"
    );
    assert_eq!(job.errors[0].message, "try again");

    within("shutdown", SOON, worker.shutdown()).await;
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Strict {
    #[allow(dead_code)]
    n: u32,
}

async fn a_typed_fallback_fails_a_payload_that_does_not_fit_for_good(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let mut registry = Registry::new();
    registry
        .register_fallback(|_ctx: HandlerContext, _: Strict| async { Ok::<_, JobError>("fits") });
    let options = WorkerOptions {
        queues: vec!["default".into()],
        ..fast_options(2)
    };
    let worker = start_worker(&store, registry, options);
    let fits = enqueue(&store, NewJob::new("a", json!({"n": 1}))).await;
    let misfit = enqueue(&store, NewJob::new("b", json!({"m": 1})).max_attempts(5)).await;
    let job = wait_for_state(&store, fits, JobState::Succeeded, SOON).await;
    assert_eq!(job.result, Some(json!("fits")));
    let job = wait_for_state(&store, misfit, JobState::Dead, SOON).await;
    assert_eq!(job.attempt, 1);
    assert!(
        job.errors[0]
            .message
            .contains("payload does not fit job \"b\""),
        "{:?}",
        job.errors
    );
    within("shutdown", SOON, worker.shutdown()).await;
}

/// What a cooperative handler saw and did when told to stop.
#[derive(Clone, Default)]
struct StopProbe {
    reason: Arc<Mutex<Option<Option<StopReason>>>>,
    cleaned_up: Flag,
    started: Arc<Notify>,
}

impl StopProbe {
    fn reason(&self) -> Option<Option<StopReason>> {
        *lock(&self.reason)
    }
}

/// A fallback that runs until told to stop, then spends `cleanup` cleaning up (as a
/// command given SIGTERM would) and returns what `finish` says.
fn stoppable(
    registry: &mut Registry,
    probe: &StopProbe,
    cleanup: Duration,
    finish: fn(StopReason) -> Result<Value, JobError>,
) {
    let probe = probe.clone();
    registry.register_fallback(move |ctx: HandlerContext, _: Value| {
        let probe = probe.clone();
        async move {
            probe.started.notify_one();
            assert_eq!(ctx.stop_reason(), None, "not told to stop yet");
            ctx.cancelled().await;
            let reason = ctx.stop_reason();
            *lock(&probe.reason) = Some(reason);
            tokio::time::sleep(cleanup).await;
            probe.cleaned_up.set();
            finish(reason.expect("a stop reason is set before cancellation is signalled"))
        }
    });
}

fn fail_with_reason(reason: StopReason) -> Result<Value, JobError> {
    Err(JobError::retryable(format!("stopped: {reason}")))
}

fn succeed_anyway(_: StopReason) -> Result<Value, JobError> {
    Ok(json!("finished while stopping"))
}

fn options_with_grace(grace: Duration) -> WorkerOptions {
    WorkerOptions {
        queues: vec!["default".into()],
        // A long lease: only the store event can tell of a cancel quickly.
        lease_for: Duration::from_secs(30),
        cancel_grace: grace,
        ..fast_options(2)
    }
}

async fn a_cancelled_handler_learns_why_and_may_clean_up_within_the_grace(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let probe = StopProbe::default();
    let mut registry = Registry::new();
    stoppable(
        &mut registry,
        &probe,
        Duration::from_millis(300),
        fail_with_reason,
    );
    let worker = start_worker(&store, registry, options_with_grace(Duration::from_secs(3)));
    let id = enqueue(&store, NewJob::new("long", json!({}))).await;
    within("the handler to start", SOON, probe.started.notified()).await;

    store.job_cancel(id, Utc::now()).await.expect("cancel");
    let job = wait_for_state(&store, id, JobState::Cancelled, SOON).await;
    assert_eq!(probe.reason(), Some(Some(StopReason::Cancelled)));
    assert!(probe.cleaned_up.is_set(), "the cleanup ran to its end");
    assert_eq!(job.errors.len(), 1);
    assert_eq!(job.errors[0].message, "stopped: cancelled");
    within("shutdown", SOON, worker.shutdown()).await;
}

async fn a_timed_out_handler_learns_why_and_may_clean_up_within_the_grace(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let probe = StopProbe::default();
    let mut registry = Registry::new();
    stoppable(
        &mut registry,
        &probe,
        Duration::from_millis(300),
        succeed_anyway,
    );
    let worker = start_worker(&store, registry, options_with_grace(Duration::from_secs(3)));
    let started = Instant::now();
    let id = enqueue(
        &store,
        NewJob::new("long", json!({}))
            .timeout(Duration::from_millis(200))
            .max_attempts(1),
    )
    .await;

    let job = wait_for_state(&store, id, JobState::Dead, SOON).await;
    assert_eq!(probe.reason(), Some(Some(StopReason::TimedOut)));
    assert!(
        probe.cleaned_up.is_set(),
        "the attempt is failed only after the handler returned (or the grace ended)"
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(job.errors.len(), 1);
    assert_eq!(
        job.errors[0].message, "timed out after 200ms",
        "a timeout fails the attempt whatever the handler returns"
    );
    within("shutdown", SOON, worker.shutdown()).await;
}

async fn a_handler_stopped_by_shutdown_cleans_up_and_its_job_goes_back_uncounted(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let probe = StopProbe::default();
    let mut registry = Registry::new();
    stoppable(
        &mut registry,
        &probe,
        Duration::from_millis(300),
        fail_with_reason,
    );
    let options = WorkerOptions {
        stopping_wait_time: Duration::from_millis(100),
        ..options_with_grace(Duration::from_secs(3))
    };
    let worker = start_worker(&store, registry, options);
    let id = enqueue(&store, NewJob::new("long", json!({}))).await;
    within("the handler to start", SOON, probe.started.notified()).await;

    let began = Instant::now();
    within("shutdown", SOON, worker.shutdown()).await;
    let took = began.elapsed();
    assert_eq!(probe.reason(), Some(Some(StopReason::Shutdown)));
    assert!(probe.cleaned_up.is_set(), "shutdown waited for the cleanup");
    assert!(
        took < Duration::from_secs(2),
        "shutdown waited for the whole grace ({took:?}) though the handler returned"
    );
    let job = get(&store, id).await;
    assert_eq!(job.state, JobState::Queued, "back to the queue");
    assert_eq!(job.attempt, 0, "the stopped attempt is not counted");
    assert!(job.errors.is_empty(), "{:?}", job.errors);
}

async fn a_success_returned_during_the_shutdown_grace_is_stored(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let probe = StopProbe::default();
    let mut registry = Registry::new();
    stoppable(
        &mut registry,
        &probe,
        Duration::from_millis(50),
        succeed_anyway,
    );
    let options = WorkerOptions {
        stopping_wait_time: Duration::from_millis(100),
        ..options_with_grace(Duration::from_secs(3))
    };
    let worker = start_worker(&store, registry, options);
    let id = enqueue(&store, NewJob::new("long", json!({}))).await;
    within("the handler to start", SOON, probe.started.notified()).await;
    within("shutdown", SOON, worker.shutdown()).await;
    let job = get(&store, id).await;
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.result, Some(json!("finished while stopping")));
}

async fn a_second_signal_cuts_the_stopping_wait_short(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let probe = StopProbe::default();
    let mut registry = Registry::new();
    stoppable(&mut registry, &probe, Duration::ZERO, fail_with_reason);
    let options = WorkerOptions {
        stopping_wait_time: Duration::from_secs(30),
        ..options_with_grace(Duration::from_secs(3))
    };
    let worker = start_worker(&store, registry, options);
    let id = enqueue(&store, NewJob::new("long", json!({}))).await;
    within("the handler to start", SOON, probe.started.notified()).await;
    let hurry = Arc::new(Notify::new());
    let began = Instant::now();
    within("shutdown", SOON, async {
        let waiting = {
            let hurry = hurry.clone();
            async move { hurry.notified().await }
        };
        // The permit is kept until the wait polls it.
        hurry.notify_one();
        worker.shutdown_early_on(waiting).await
    })
    .await;
    assert!(began.elapsed() < Duration::from_secs(5));
    assert_eq!(probe.reason(), Some(Some(StopReason::Shutdown)));
    let job = get(&store, id).await;
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.attempt, 0);
}

on_both_backends!(
    the_fallback_runs_every_job_without_a_handler_of_its_own,
    a_typed_fallback_fails_a_payload_that_does_not_fit_for_good,
    a_cancelled_handler_learns_why_and_may_clean_up_within_the_grace,
    a_timed_out_handler_learns_why_and_may_clean_up_within_the_grace,
    a_handler_stopped_by_shutdown_cleans_up_and_its_job_goes_back_uncounted,
    a_success_returned_during_the_shutdown_grace_is_stored,
    a_second_signal_cuts_the_stopping_wait_short,
);
