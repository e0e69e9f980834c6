//! Attempt records: one run per attempt, written with the state change it belongs to.

use crate::support::*;
use hinter_core::retry::FailOutcome;
use hinter_core::store::{Failure, JobFilter, PruneRequest};
use hinter_core::{limits, JobState, Run, RunOutcome, Store};
use std::sync::Arc;
use std::time::Duration;

fn ms(n: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(n)
}

/// A job leased, failed, leased again by another worker and completed has two runs, oldest
/// first, with their workers, times, outcomes, errors, exit codes and durations; a run is
/// `running` with no end while its attempt runs. Listings do not read runs; `job_runs` does.
pub async fn runs_record_each_attempt(store: Arc<dyn Store>) {
    let store = &*store;
    let t0 = base_time();
    let id = insert(store, job("a"), t0).await.id;
    assert!(get(store, id).await.runs.is_empty(), "no attempt yet");
    let first = lease_with(store, &["default"], "worker-1", 1, LEASE, t0).await;
    assert_eq!(first.len(), 1);
    let running = Run {
        attempt: 1,
        worker_id: "worker-1".into(),
        started_at: t0,
        finished_at: None,
        outcome: RunOutcome::Running,
        error: None,
        exit_code: None,
        duration_ms: None,
    };
    assert_eq!(get(store, id).await.runs, vec![running.clone()]);

    let answers = store
        .job_fail_many(
            vec![Failure {
                id,
                lease_token: first[0].lease_token,
                error: "exited with code 3".into(),
                outcome: FailOutcome::Retry {
                    run_at: t0 + secs(5),
                },
                exit_code: Some(3),
                rescued: None,
            }],
            t0 + ms(2_250),
        )
        .await
        .expect("job_fail_many");
    assert_eq!(answers.len(), 1);
    answers[0].as_ref().expect("the failure is accepted");
    let failed = Run {
        finished_at: Some(t0 + ms(2_250)),
        outcome: RunOutcome::Failed,
        error: Some("exited with code 3".into()),
        exit_code: Some(3),
        duration_ms: Some(2_250),
        ..running
    };
    assert_eq!(get(store, id).await.runs, vec![failed.clone()]);

    let second = lease_with(store, &["default"], "worker-2", 1, LEASE, t0 + secs(5)).await;
    assert_eq!(second.len(), 1);
    complete_ok(store, &second[0], t0 + ms(7_500)).await;
    let succeeded = Run {
        attempt: 2,
        worker_id: "worker-2".into(),
        started_at: t0 + secs(5),
        finished_at: Some(t0 + ms(7_500)),
        outcome: RunOutcome::Succeeded,
        error: None,
        exit_code: None,
        duration_ms: Some(2_500),
    };
    let stored = get(store, id).await;
    assert_eq!(stored.runs, vec![failed, succeeded]);
    assert_eq!(stored.attempt, 2);

    let other = insert(store, job("b"), t0).await.id;
    let runs = store
        .job_runs(vec![id, other, uuid::Uuid::now_v7()])
        .await
        .expect("job_runs");
    assert_eq!(runs.len(), 2, "every job that exists, unknown ids left out");
    assert_eq!(runs[&id], stored.runs);
    assert!(runs[&other].is_empty());

    let listed = list(
        store,
        JobFilter {
            limit: 10,
            ..JobFilter::default()
        }
        .complete(),
    )
    .await;
    assert!(
        listed.iter().all(|j| j.runs.is_empty()),
        "listings do not read runs"
    );
}

/// A failure's error is kept bounded in its run as in the job's history; a failure of a job
/// whose cancel was requested ends its run `cancelled`.
pub async fn runs_record_bounded_errors_and_cancellation(store: Arc<dyn Store>) {
    let store = &*store;
    let t0 = base_time();
    let id = insert(store, job("a"), t0).await.id;
    let leased = lease_one(store, "default", t0).await;
    let long = "x".repeat(limits::MAX_ERROR_BYTES * 2);
    let dead = fail(
        store,
        id,
        leased.lease_token,
        &long,
        FailOutcome::Dead,
        t0 + secs(1),
    )
    .await
    .expect("fail");
    let run = &get(store, id).await.runs[0];
    assert_eq!(run.outcome, RunOutcome::Failed);
    assert_eq!(run.error.as_deref(), Some(dead.errors[0].message.as_str()));
    assert!(run.error.as_ref().is_some_and(|e| e.len() < long.len()));

    let id = insert(store, job("b"), t0).await.id;
    let leased = lease_one(store, "default", t0).await;
    cancel(store, id, t0 + secs(1)).await;
    let retry = FailOutcome::Retry {
        run_at: t0 + secs(2),
    };
    let cancelled = fail(
        store,
        id,
        leased.lease_token,
        "cancelled",
        retry,
        t0 + secs(2),
    )
    .await
    .expect("fail");
    assert_eq!(cancelled.state, JobState::Cancelled);
    let runs = get(store, id).await.runs;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].outcome, RunOutcome::Cancelled);
    assert_eq!(runs[0].finished_at, Some(t0 + secs(2)));
    assert_eq!(
        cancel_or_retry_runs(store, id, t0 + secs(3)).await,
        runs,
        "answers of retry carry the runs too"
    );
}

async fn cancel_or_retry_runs(
    store: &dyn Store,
    id: uuid::Uuid,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<Run> {
    store.job_retry(id, now).await.expect("job_retry").runs
}

/// A released attempt is recorded `released`; the next lease takes the same attempt number
/// and starts a new run.
pub async fn runs_record_released_attempt(store: Arc<dyn Store>) {
    let store = &*store;
    let t0 = base_time();
    let id = insert(store, job("a"), t0).await.id;
    let leased = lease_one(store, "default", t0).await;
    release(store, id, leased.lease_token, t0 + secs(3))
        .await
        .expect("release");
    let runs = get(store, id).await.runs;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].outcome, RunOutcome::Released);
    assert_eq!(runs[0].finished_at, Some(t0 + secs(3)));
    assert_eq!(runs[0].duration_ms, Some(3_000));
    assert_eq!(runs[0].error, None);

    let again = lease_one(store, "default", t0 + secs(4)).await;
    assert_eq!(again.attempt, 1, "the released attempt was not counted");
    let runs = get(store, id).await.runs;
    assert_eq!(runs.len(), 2);
    assert_eq!(
        (runs[1].attempt, runs[1].outcome, runs[1].started_at),
        (1, RunOutcome::Running, t0 + secs(4))
    );
}

/// An expired lease rescued through `job_fail_many` ends its run `failed` with the rescue
/// error; the old holder's token then changes no run, nor does any stale token.
pub async fn runs_record_rescue_and_ignore_stale_tokens(store: Arc<dyn Store>) {
    let store = &*store;
    let t0 = base_time();
    let id = insert(store, job("a"), t0).await.id;
    let lost = lease_with(
        store,
        &["default"],
        "worker-1",
        1,
        Duration::from_secs(10),
        t0,
    )
    .await;
    let token = lost[0].lease_token;
    // Stale tokens while it runs: nothing changes.
    let wrong = token.wrapping_add(1);
    assert_stale(
        complete(store, id, wrong, None, t0 + secs(1)).await,
        id,
        "complete",
    );
    assert_stale(
        fail(store, id, wrong, "x", FailOutcome::Dead, t0 + secs(1)).await,
        id,
        "fail",
    );
    assert_stale(release(store, id, wrong, t0 + secs(1)).await, id, "release");
    let runs = get(store, id).await.runs;
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].outcome, runs[0].finished_at),
        (RunOutcome::Running, None)
    );

    let listed = expired(store, t0 + secs(11)).await;
    assert_eq!(listed.len(), 1);
    let answers = store
        .job_fail_many(
            vec![Failure {
                id,
                lease_token: listed[0].lease_token,
                error: "lease expired: the worker stopped heartbeating".into(),
                outcome: FailOutcome::Retry {
                    run_at: t0 + secs(11),
                },
                exit_code: None,
                rescued: Some(hinter_core::store::Expiry::LeaseExpired),
            }],
            t0 + secs(11),
        )
        .await
        .expect("job_fail_many");
    answers[0].as_ref().expect("the rescue is accepted");
    let next = lease_with(store, &["default"], "worker-2", 1, LEASE, t0 + secs(12)).await;
    assert_eq!(next.len(), 1);
    // The lost worker reports late: refused, and no run changes.
    assert_stale(
        complete(store, id, token, None, t0 + secs(13)).await,
        id,
        "late complete",
    );
    assert_stale(
        release(store, id, token, t0 + secs(13)).await,
        id,
        "late release",
    );
    let runs = get(store, id).await.runs;
    assert_eq!(runs.len(), 2);
    assert_eq!(
        (
            runs[0].outcome,
            runs[0].worker_id.as_str(),
            runs[0].finished_at
        ),
        (RunOutcome::Failed, "worker-1", Some(t0 + secs(11)))
    );
    assert_eq!(
        runs[0].error.as_deref(),
        Some("lease expired: the worker stopped heartbeating")
    );
    assert_eq!(runs[0].duration_ms, Some(11_000));
    assert_eq!(
        (runs[1].outcome, runs[1].worker_id.as_str(), runs[1].attempt),
        (RunOutcome::Running, "worker-2", 2)
    );
}

/// Pruning a finished job deletes its runs with it; other jobs keep theirs.
pub async fn runs_pruned_with_their_job(store: Arc<dyn Store>) {
    let store = &*store;
    let old = base_time() - chrono::Duration::days(40);
    let gone = insert(store, job("gone"), old).await.id;
    let leased = lease_one(store, "default", old).await;
    complete_ok(store, &leased, old + secs(1)).await;
    let kept = insert(store, job("kept"), old).await.id;
    lease_one(store, "default", old).await;
    let deleted = store
        .job_prune(PruneRequest {
            succeeded_before: old + secs(2),
            dead_before: old + secs(2),
            cancelled_before: old + secs(2),
            limit: 100,
        })
        .await
        .expect("job_prune");
    assert_eq!(deleted, 1);
    let runs = store.job_runs(vec![gone, kept]).await.expect("job_runs");
    assert!(!runs.contains_key(&gone), "the pruned job is gone");
    assert_eq!(runs[&kept].len(), 1, "the running job keeps its run");
}
