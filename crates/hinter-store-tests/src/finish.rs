//! Rules 5 to 10: heartbeats, completions, failures, expired leases, poison jobs, releases.

use crate::support::*;
use hinter_core::retry::{decide_failure, FailOutcome};
use hinter_core::store::{Completion, Expiry, Heartbeat, Release};
use hinter_core::{limits, AttemptError, JobState, Store, StoreError};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// A heartbeat moves the lease expiry to `now + lease_for`.
pub async fn heartbeat_extends_lease(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let id = insert(store, job("a"), now).await.id;
    let leased = lease_job(store, "default", id, now).await;
    let ack = heartbeat(store, id, leased.lease_token, LEASE, now + secs(30))
        .await
        .expect("heartbeat");
    assert_eq!(ack.lease_expires_at, now + secs(90));
    assert!(!ack.cancel_requested);
    let job = get(store, id).await;
    assert_eq!(job.lease_expires_at, Some(now + secs(90)));
    assert_eq!(job.state, JobState::Running);
    assert!(
        expired(store, now + secs(61)).await.is_empty(),
        "the extended lease has not expired"
    );
    let listed = expired(store, now + secs(91)).await;
    assert_eq!(listed.len(), 1, "the extended lease expires in the end");
    complete_ok(store, &leased, now + secs(80)).await;
}

/// A heartbeat with a stale token is refused on its own and changes nothing.
pub async fn heartbeat_stale_token_refused(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let a = insert(store, job("a"), now).await.id;
    let b = insert(store, job("b"), now).await.id;
    let la = lease_job(store, "default", a, now).await;
    let lb = lease_job(store, "default", b, now).await;
    let before = get(store, b).await;
    let answers = store
        .job_heartbeat_many(
            vec![
                Heartbeat {
                    id: a,
                    lease_token: la.lease_token,
                    lease_for: LEASE,
                },
                Heartbeat {
                    id: b,
                    lease_token: lb.lease_token.wrapping_add(1),
                    lease_for: LEASE,
                },
            ],
            now + secs(10),
        )
        .await
        .expect("job_heartbeat_many");
    assert_eq!(answers.len(), 2, "one answer per heartbeat");
    let mut answers = answers.into_iter();
    let ok = answers.next().expect("first answer");
    assert_eq!(
        ok.expect("the good heartbeat is accepted").lease_expires_at,
        now + secs(70)
    );
    assert_stale(
        answers.next().expect("second answer"),
        b,
        "heartbeat with a wrong token",
    );
    assert_eq!(
        get(store, b).await,
        before,
        "a refused heartbeat changes nothing"
    );
    assert_eq!(get(store, a).await.lease_expires_at, Some(now + secs(70)));

    // The token of a released or finished job is stale too.
    release(store, a, la.lease_token, now + secs(11))
        .await
        .expect("release");
    assert_stale(
        heartbeat(store, a, la.lease_token, LEASE, now + secs(12)).await,
        a,
        "heartbeat after release",
    );
    complete_ok(store, &lb, now + secs(12)).await;
    let done = get(store, b).await;
    assert_stale(
        heartbeat(store, b, lb.lease_token, LEASE, now + secs(13)).await,
        b,
        "heartbeat after complete",
    );
    assert_eq!(get(store, b).await, done);
}

/// After a running job is cancelled, its heartbeat answer says so.
pub async fn heartbeat_reports_cancel_requested(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let id = insert(store, job("a"), now).await.id;
    let leased = lease_job(store, "default", id, now).await;
    let ack = heartbeat(store, id, leased.lease_token, LEASE, now + secs(1))
        .await
        .expect("heartbeat");
    assert!(!ack.cancel_requested);
    cancel(store, id, now + secs(2)).await;
    let ack = heartbeat(store, id, leased.lease_token, LEASE, now + secs(3))
        .await
        .expect("a cancel request does not make the lease stale");
    assert!(
        ack.cancel_requested,
        "the heartbeat tells the worker to stop"
    );
}

/// Completing makes a job `succeeded` with its result and finish time; each item of a batch
/// gets its own answer in order.
pub async fn complete_records_result(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let a = insert(store, job("a"), now).await.id;
    let b = insert(store, job("b"), now).await.id;
    let la = lease_job(store, "default", a, now).await;
    let lb = lease_job(store, "default", b, now).await;
    let at = now + secs(5);
    let answers = store
        .job_complete_many(
            vec![
                Completion {
                    id: a,
                    lease_token: la.lease_token,
                    result: Some(json!({"thumbs": 3, "names": ["x", "y"]})),
                },
                Completion {
                    id: b,
                    lease_token: lb.lease_token,
                    result: None,
                },
            ],
            at,
        )
        .await
        .expect("job_complete_many");
    assert_eq!(answers.len(), 2);
    let mut answers = answers.into_iter();
    let ja = answers.next().expect("a").expect("complete a");
    let jb = answers.next().expect("b").expect("complete b");
    assert_eq!((ja.id, jb.id), (a, b), "answers in request order");
    assert_eq!(ja.state, JobState::Succeeded);
    assert_eq!(ja.result, Some(json!({"thumbs": 3, "names": ["x", "y"]})));
    assert_eq!(ja.finished_at, Some(at));
    assert_eq!(ja.attempt, 1);
    assert_eq!(ja.started_at, Some(now));
    assert!(ja.errors.is_empty());
    assert_eq!(jb.state, JobState::Succeeded);
    assert_eq!(jb.result, None);
    assert_eq!(stored(store, a).await, ja);
    assert_eq!(stored(store, b).await, jb);
    assert!(lease(store, &["default"], 10, at).await.is_empty());
}

/// Complete, fail and release with a wrong token are refused with `StaleLease`, each item on
/// its own, and change nothing.
pub async fn stale_token_refused_and_nothing_changes(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let a = insert(store, job("a"), now).await.id;
    let b = insert(store, job("b"), now).await.id;
    let la = lease_job(store, "default", a, now).await;
    let lb = lease_job(store, "default", b, now).await;
    let before = get(store, a).await;
    let wrong = la.lease_token.wrapping_add(1);
    let at = now + secs(1);

    let answers = store
        .job_complete_many(
            vec![
                Completion {
                    id: a,
                    lease_token: wrong,
                    result: Some(json!("stolen")),
                },
                Completion {
                    id: b,
                    lease_token: lb.lease_token,
                    result: None,
                },
            ],
            at,
        )
        .await
        .expect("job_complete_many");
    assert_eq!(answers.len(), 2);
    let mut answers = answers.into_iter();
    assert_stale(answers.next().expect("a"), a, "complete with a wrong token");
    let jb = answers
        .next()
        .expect("b")
        .expect("the good completion in the same batch is applied");
    assert_eq!(jb.state, JobState::Succeeded);
    assert_eq!(
        get(store, a).await,
        before,
        "refused complete changes nothing"
    );

    let retry = FailOutcome::Retry { run_at: at };
    assert_stale(
        fail(store, a, wrong, "x", retry, at).await,
        a,
        "fail (retry) with a wrong token",
    );
    assert_stale(
        fail(store, a, wrong, "x", FailOutcome::Dead, at).await,
        a,
        "fail (dead) with a wrong token",
    );
    assert_stale(
        release(store, a, wrong, at).await,
        a,
        "release with a wrong token",
    );
    assert_eq!(
        get(store, a).await,
        before,
        "refused fail/release change nothing"
    );

    let done = complete(store, a, la.lease_token, None, at)
        .await
        .expect("the right token still works");
    assert_eq!(done.state, JobState::Succeeded);

    // An unknown job fails alone too, not the whole batch.
    let c = insert(store, job("c"), at).await.id;
    let lc = lease_job(store, "default", c, at).await;
    let unknown = Uuid::now_v7();
    let answers = store
        .job_complete_many(
            vec![
                Completion {
                    id: unknown,
                    lease_token: 1,
                    result: None,
                },
                Completion {
                    id: c,
                    lease_token: lc.lease_token,
                    result: None,
                },
            ],
            at,
        )
        .await
        .expect("a batch with an unknown job is answered item by item");
    assert_eq!(answers.len(), 2);
    match &answers[0] {
        Err(StoreError::NotFound(id) | StoreError::StaleLease(id)) => assert_eq!(*id, unknown),
        other => panic!("complete an unknown job: expected NotFound or StaleLease, got {other:?}"),
    }
    assert_eq!(
        answers[1].as_ref().expect("complete c").state,
        JobState::Succeeded
    );
}

/// A job completes once: a second complete (or a fail) with the same token is refused.
pub async fn complete_twice_refused(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let id = insert(store, job("a"), now).await.id;
    let leased = lease_job(store, "default", id, now).await;
    let first = complete(store, id, leased.lease_token, Some(json!(1)), now + secs(1))
        .await
        .expect("first complete");
    assert_stale(
        complete(store, id, leased.lease_token, Some(json!(2)), now + secs(2)).await,
        id,
        "second complete",
    );
    assert_stale(
        fail(
            store,
            id,
            leased.lease_token,
            "late",
            FailOutcome::Dead,
            now + secs(2),
        )
        .await,
        id,
        "fail after complete",
    );
    assert_stale(
        release(store, id, leased.lease_token, now + secs(2)).await,
        id,
        "release after complete",
    );
    let job = stored(store, id).await;
    assert_eq!(job, first, "the first completion stands");
    assert_eq!(job.result, Some(json!(1)));
}

/// A failure with `Retry` makes the job `scheduled` at the given time and records the error
/// with its attempt; the next lease is the next attempt.
pub async fn fail_retry_schedules_and_records_error(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let id = insert(store, job("a").max_attempts(5), now).await.id;
    let first = lease_job(store, "default", id, now).await;
    let failed = fail(
        store,
        id,
        first.lease_token,
        "boom 1",
        FailOutcome::Retry {
            run_at: now + secs(12),
        },
        now + secs(2),
    )
    .await
    .expect("fail");
    assert_eq!(failed.state, JobState::Scheduled);
    assert_eq!(failed.run_at, now + secs(12));
    assert_eq!(failed.attempt, 1);
    assert_eq!(failed.finished_at, None);
    assert_eq!(
        failed.errors,
        vec![AttemptError {
            attempt: 1,
            at: now + secs(2),
            message: "boom 1".into(),
        }]
    );
    assert_eq!(stored(store, id).await, failed);
    assert!(
        lease(store, &["default"], 10, now + secs(5))
            .await
            .is_empty(),
        "not before the retry time"
    );

    let second = lease_job(store, "default", id, now + secs(13)).await;
    assert_eq!(second.attempt, 2);
    assert_stale(
        complete(store, id, first.lease_token, None, now + secs(14)).await,
        id,
        "complete with the first attempt's token",
    );
    let failed = fail(
        store,
        id,
        second.lease_token,
        "boom 2",
        FailOutcome::Retry {
            run_at: now + secs(30),
        },
        now + secs(14),
    )
    .await
    .expect("fail again");
    assert_eq!(failed.state, JobState::Scheduled);
    assert_eq!(failed.attempt, 2);
    assert_eq!(
        failed.errors,
        vec![
            AttemptError {
                attempt: 1,
                at: now + secs(2),
                message: "boom 1".into(),
            },
            AttemptError {
                attempt: 2,
                at: now + secs(14),
                message: "boom 2".into(),
            },
        ],
        "errors are kept in order"
    );
}

/// A failure with `Dead` makes the job `dead`, with `Cancelled` `cancelled`; both are finished
/// and record the error.
pub async fn fail_dead_and_cancelled(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let a = insert(store, job("a"), now).await.id;
    let b = insert(store, job("b"), now).await.id;
    let la = lease_job(store, "default", a, now).await;
    let lb = lease_job(store, "default", b, now).await;

    let dead = fail(
        store,
        a,
        la.lease_token,
        "fatal",
        FailOutcome::Dead,
        now + secs(1),
    )
    .await
    .expect("fail dead");
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.finished_at, Some(now + secs(1)));
    assert_eq!(
        dead.errors,
        vec![AttemptError {
            attempt: 1,
            at: now + secs(1),
            message: "fatal".into(),
        }]
    );
    assert_eq!(stored(store, a).await, dead);

    let cancelled = fail(
        store,
        b,
        lb.lease_token,
        "stopped",
        FailOutcome::Cancelled,
        now + secs(2),
    )
    .await
    .expect("fail cancelled");
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(cancelled.finished_at, Some(now + secs(2)));
    assert_eq!(cancelled.errors.len(), 1);
    assert_eq!(stored(store, b).await, cancelled);

    assert!(lease(store, &["default"], 10, now + secs(3600))
        .await
        .is_empty());
    assert!(expired(store, now + secs(3600)).await.is_empty());
}

/// A cancel request wins over a failure that asks for a retry: the job ends `cancelled`.
pub async fn fail_retry_while_cancel_requested_ends_cancelled(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let id = insert(store, job("a"), now).await.id;
    let leased = lease_job(store, "default", id, now).await;
    let requested = cancel(store, id, now + secs(1)).await;
    assert!(requested.cancel_requested);
    let job = fail(
        store,
        id,
        leased.lease_token,
        "interrupted",
        FailOutcome::Retry {
            run_at: now + secs(10),
        },
        now + secs(2),
    )
    .await
    .expect("fail");
    assert_eq!(job.state, JobState::Cancelled, "cancel wins over retry");
    assert_eq!(job.finished_at, Some(now + secs(2)));
    assert_eq!(get(store, id).await.state, JobState::Cancelled);
    assert!(lease(store, &["default"], 10, now + secs(20))
        .await
        .is_empty());
}

/// `job_expired_list` lists running jobs whose lease expired (at `lease_expires_at <= now`),
/// with their token, attempts and cancel flag, the longest overdue first and up to `limit`.
pub async fn expired_lease_listed(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let a = insert(store, job("a").max_attempts(4), now).await.id;
    let b = insert(store, job("b"), now).await.id;
    let _queued = insert(store, job_in("c", "idle"), now).await.id;
    let la = lease_job(store, "default", a, now).await;
    let lb = lease_with(
        store,
        &["default"],
        WORKER,
        1,
        Duration::from_secs(120),
        now,
    )
    .await;
    assert_eq!(id_set(&lb), set(&[b]));
    cancel(store, b, now + secs(1)).await;

    assert!(expired(store, now + secs(59)).await.is_empty());
    let listed = expired(store, now + secs(60)).await;
    assert_eq!(listed.len(), 1, "expired at lease_expires_at: {listed:?}");
    let e = &listed[0];
    assert_eq!(e.id, a);
    assert_eq!(e.lease_token, la.lease_token);
    assert_eq!((e.attempt, e.max_attempts), (1, 4));
    assert!(!e.cancel_requested);
    assert_eq!(e.timeout, None);
    assert_eq!(e.reason, Expiry::LeaseExpired);

    let listed = expired(store, now + secs(121)).await;
    assert_eq!(listed.len(), 2);
    let eb = listed.iter().find(|e| e.id == b).expect("b is listed");
    assert!(eb.cancel_requested);
    assert_eq!(eb.reason, Expiry::LeaseExpired);

    let first = store
        .job_expired_list(now + secs(121), 1)
        .await
        .expect("job_expired_list");
    assert_eq!(first.len(), 1, "limit is respected");
    assert_eq!(first[0].id, a, "the longest overdue first");
}

/// `job_expired_list` lists the longest overdue jobs first (earliest expiry), whatever their
/// enqueue order, so a `limit` keeps the most urgent ones.
pub async fn expired_list_longest_overdue_first(store: Arc<dyn Store>) {
    let store = &*store;
    let t = base_time();
    let x = insert(store, job_in("x", "late-x"), t).await.id;
    let y = insert(store, job_in("y", "late-y"), t).await.id;
    lease_with(store, &["late-y"], WORKER, 1, Duration::from_secs(10), t).await;
    lease_with(store, &["late-x"], WORKER, 1, Duration::from_secs(20), t).await;
    let listed = expired(store, t + secs(25)).await;
    let order: Vec<_> = listed.iter().map(|e| e.id).collect();
    assert_eq!(order, vec![y, x], "y (enqueued second) expired first");
    let first = store
        .job_expired_list(t + secs(25), 1)
        .await
        .expect("job_expired_list");
    assert_eq!(first.len(), 1);
    assert_eq!(
        first[0].id, y,
        "the longest overdue first, not the oldest job"
    );
}

/// Jobs whose leases expired at the same moment are listed in enqueue order.
pub async fn expired_list_ties_in_enqueue_order(store: Arc<dyn Store>) {
    let store = &*store;
    let t = base_time();
    let jobs = (0..6).map(|i| job_in(&format!("j{i}"), "tied")).collect();
    let ids = insert_all(store, jobs, t).await;
    let leased = lease(store, &["tied"], 6, t).await;
    assert_eq!(id_set(&leased), set(&ids));
    let listed = expired(store, t + secs(61)).await;
    let order: Vec<Uuid> = listed.iter().map(|e| e.id).collect();
    assert_eq!(
        order, ids,
        "equal expiry: the job enqueued first is listed first"
    );
}

/// A job with a `timeout` is listed as `TimedOut` once `started_at + timeout` has passed, even
/// while heartbeats keep its lease alive; the deadline restarts with each attempt.
pub async fn timed_out_job_listed(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let id = insert(store, job("slow").timeout(Duration::from_secs(10)), now)
        .await
        .id;
    let long = Duration::from_secs(300);
    let leased = lease_with(store, &["default"], WORKER, 1, long, now).await;
    assert_eq!(id_set(&leased), set(&[id]));
    let leased = &leased[0];
    heartbeat(store, id, leased.lease_token, long, now + secs(5))
        .await
        .expect("heartbeat");
    assert!(expired(store, now + secs(9)).await.is_empty());
    let listed = expired(store, now + secs(11)).await;
    assert_eq!(listed.len(), 1, "timed out: {listed:?}");
    let e = &listed[0];
    assert_eq!(e.id, id);
    assert_eq!(e.reason, Expiry::TimedOut);
    assert_eq!(e.timeout, Some(Duration::from_secs(10)));
    assert_eq!(e.lease_token, leased.lease_token);
    assert_eq!(e.attempt, 1);

    // Rescue, and run it again: the new attempt has its own deadline.
    let at = now + secs(20);
    fail(
        store,
        id,
        e.lease_token,
        "timed out",
        FailOutcome::Retry { run_at: at },
        at,
    )
    .await
    .expect("rescue");
    let again = lease_with(store, &["default"], WORKER, 1, long, at).await;
    assert_eq!(id_set(&again), set(&[id]));
    assert_eq!(again[0].attempt, 2);
    assert!(
        expired(store, at + secs(5)).await.is_empty(),
        "the second attempt's deadline is counted from its own start"
    );
    let listed = expired(store, at + secs(11)).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].reason, Expiry::TimedOut);
    assert_eq!(listed[0].lease_token, again[0].lease_token);
}

/// Once an expired job is rescued (failed with `Retry`), its old token is stale, and the next
/// lease is attempt 2 with a new token.
pub async fn rescued_job_old_token_stale(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let id = insert(store, job("a"), now).await.id;
    let old = lease_job(store, "default", id, now).await;
    let at = now + secs(61);
    let listed = expired(store, at).await;
    assert_eq!(listed.len(), 1);
    let e = &listed[0];
    let rescued = fail(
        store,
        id,
        e.lease_token,
        "lease expired",
        FailOutcome::Retry { run_at: at },
        at,
    )
    .await
    .expect("rescue");
    assert_eq!(rescued.errors.len(), 1);
    assert_eq!(rescued.errors[0].attempt, 1);
    assert!(
        expired(store, at).await.is_empty(),
        "rescued jobs are not listed again"
    );

    let new = lease_job(store, "default", id, at).await;
    assert_eq!(new.attempt, 2);
    assert_ne!(new.lease_token, old.lease_token);
    let before = get(store, id).await;
    assert_stale(
        complete(store, id, old.lease_token, Some(json!("old")), at + secs(1)).await,
        id,
        "complete by the old worker",
    );
    assert_stale(
        heartbeat(store, id, old.lease_token, LEASE, at + secs(1)).await,
        id,
        "heartbeat by the old worker",
    );
    assert_stale(
        fail(
            store,
            id,
            old.lease_token,
            "old",
            FailOutcome::Dead,
            at + secs(1),
        )
        .await,
        id,
        "fail by the old worker",
    );
    assert_eq!(
        get(store, id).await,
        before,
        "the old worker changed nothing"
    );
    assert!(expired(store, at + secs(1)).await.is_empty());
    let done = complete(store, id, new.lease_token, None, at + secs(2))
        .await
        .expect("the new worker completes");
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.attempt, 2);
}

/// A job whose worker dies every time (its lease always expires) is dead after
/// `max_attempts` leases, because attempts are counted when a job is leased.
pub async fn poison_job_ends_dead(store: Arc<dyn Store>) {
    let store = &*store;
    let mut rng = StdRng::seed_from_u64(42);
    let mut now = base_time();
    let id = insert(store, job("poison").max_attempts(3), now).await.id;
    let mut leases = 0;
    for _ in 0..10 {
        let leased = lease(store, &["default"], 1, now).await;
        let Some(leased) = leased.first() else { break };
        leases += 1;
        assert_eq!(leased.attempt, leases);
        now += secs(61);
        let listed = expired(store, now).await;
        assert_eq!(listed.len(), 1);
        let e = &listed[0];
        assert_eq!(e.attempt, leases, "attempt counted at lease");
        let outcome = decide_failure(
            e.attempt,
            e.max_attempts,
            true,
            e.cancel_requested,
            now,
            &mut rng,
        );
        fail(store, id, e.lease_token, "worker died", outcome, now)
            .await
            .expect("rescue");
        if let FailOutcome::Retry { run_at } = outcome {
            now = run_at.max(now);
        }
    }
    assert_eq!(leases, 3, "leased max_attempts times, then never again");
    let job = get(store, id).await;
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.attempt, 3);
    let attempts: Vec<u32> = job.errors.iter().map(|e| e.attempt).collect();
    assert_eq!(attempts, vec![1, 2, 3]);
}

/// A released job goes back to `queued`, its attempt not counted and its token stale.
pub async fn release_returns_job_uncounted(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let id = insert(store, job("a").max_attempts(5), now).await.id;
    let first = lease_job(store, "default", id, now).await;
    assert_eq!(first.attempt, 1);
    release(store, id, first.lease_token, now + secs(1))
        .await
        .expect("release");
    let job = get(store, id).await;
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.attempt, 0, "the released attempt is not counted");
    assert!(job.errors.is_empty());
    assert_eq!(job.finished_at, None);
    assert!(expired(store, now + secs(3600)).await.is_empty());
    assert_stale(
        complete(store, id, first.lease_token, None, now + secs(2)).await,
        id,
        "complete after release",
    );
    assert_stale(
        release(store, id, first.lease_token, now + secs(2)).await,
        id,
        "release twice",
    );
    assert_eq!(
        get(store, id).await,
        job,
        "refused operations changed nothing"
    );

    let second = lease_job(store, "default", id, now + secs(3)).await;
    assert_eq!(second.attempt, 1);
    assert_ne!(second.lease_token, first.lease_token);
    let retry_at = now + secs(4);
    fail_ok(
        store,
        &second,
        FailOutcome::Retry { run_at: retry_at },
        retry_at,
    )
    .await;
    let third = lease_job(store, "default", id, retry_at).await;
    assert_eq!(third.attempt, 2);

    // A batch: the good release is applied, the stale one refused.
    let other = insert(store, job_in("b", "other"), retry_at).await.id;
    let lo = lease_job(store, "other", other, retry_at).await;
    let answers = store
        .job_release_many(
            vec![
                Release {
                    id,
                    lease_token: third.lease_token,
                },
                Release {
                    id: other,
                    lease_token: lo.lease_token.wrapping_add(1),
                },
            ],
            retry_at + secs(1),
        )
        .await
        .expect("job_release_many");
    assert_eq!(answers.len(), 2);
    let mut answers = answers.into_iter();
    answers
        .next()
        .expect("first")
        .expect("release with the current token");
    assert_stale(
        answers.next().expect("second"),
        other,
        "release with a wrong token",
    );
    let job = get(store, id).await;
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.attempt, 1, "back to the attempts before the release");
    assert_eq!(job.errors.len(), 1);
    assert_eq!(get(store, other).await.state, JobState::Running);
}

/// An error message over [`limits::MAX_ERROR_BYTES`] is stored cut on a character boundary,
/// ending with a marker that says it was cut and how long it was.
pub async fn fail_error_message_is_bounded(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let id = insert(store, job("a"), now).await.id;
    let leased = lease_job(store, "default", id, now).await;
    // 1 MiB of two-byte characters after one one-byte character: the cut must not split one.
    let huge = format!("x{}", "é".repeat(512 * 1024));
    let failed = fail(
        store,
        id,
        leased.lease_token,
        &huge,
        FailOutcome::Dead,
        now + secs(1),
    )
    .await
    .expect("fail");
    let marker = format!("… [truncated from {} bytes]", huge.len());
    let message = &failed.errors[0].message;
    assert!(
        message.len() <= limits::MAX_ERROR_BYTES,
        "{} bytes kept",
        message.len()
    );
    assert!(
        message.ends_with(&marker),
        "{}",
        &message[message.len() - 60..]
    );
    let kept = &message[..message.len() - marker.len()];
    assert!(huge.starts_with(kept), "the start of the message is kept");
    assert!(
        kept.len() + marker.len() > limits::MAX_ERROR_BYTES - 2,
        "as much as fits is kept: {} bytes",
        kept.len()
    );
    assert_eq!(failed.errors_omitted, 0);
    assert_eq!(stored(store, id).await, failed);
}

/// After many failures the history holds the first [`limits::ERRORS_KEPT_FIRST`] and the
/// last [`limits::ERRORS_KEPT_LAST`] errors, and `errors_omitted` counts the ones dropped
/// in between.
pub async fn fail_history_keeps_first_and_last(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let id = insert(store, job("a").max_attempts(100), now).await.id;
    let entry = |n: u32| AttemptError {
        attempt: n,
        at: now + secs(i64::from(n)),
        message: format!("error {n}"),
    };
    let keep = (limits::ERRORS_KEPT_FIRST + limits::ERRORS_KEPT_LAST) as u32;
    let first = limits::ERRORS_KEPT_FIRST as u32;
    let last = limits::ERRORS_KEPT_LAST as u32;
    let failures = keep + 6;
    for n in 1..=failures {
        let at = now + secs(i64::from(n));
        let leased = lease_job(store, "default", id, at).await;
        let outcome = if n == failures {
            FailOutcome::Dead
        } else {
            FailOutcome::Retry { run_at: at }
        };
        let failed = fail(
            store,
            id,
            leased.lease_token,
            &format!("error {n}"),
            outcome,
            at,
        )
        .await
        .expect("fail");
        let expected: Vec<AttemptError> = if n <= keep {
            (1..=n).map(entry).collect()
        } else {
            (1..=first).chain(n + 1 - last..=n).map(entry).collect()
        };
        assert_eq!(failed.errors, expected, "after {n} failures");
        assert_eq!(
            failed.errors_omitted,
            u64::from(n.saturating_sub(keep)),
            "after {n} failures"
        );
    }
    let dead = get(store, id).await;
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.attempt, failures);
    assert_eq!(dead.errors.len(), keep as usize);
    assert_eq!(dead.errors_omitted, 6);
    assert_eq!(dead.errors[first as usize].attempt, first + 7);
}
