//! Rules 3 and 4: leasing, and scheduled jobs.

use crate::support::*;
use hinter_core::retry::FailOutcome;
use hinter_core::{limits, JobState, Store};
use std::sync::Arc;
use std::time::Duration;

/// Higher priority is leased first; equal priority in enqueue order.
pub async fn lease_by_priority_then_fifo(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let ids = insert_all(
        store,
        vec![
            job("a").priority(0),
            job("b").priority(5),
            job("c").priority(0),
            job("d").priority(10),
            job("e").priority(-1),
            job("f").priority(5),
        ],
        now,
    )
    .await;
    let (a, b, c, d, e, f) = (ids[0], ids[1], ids[2], ids[3], ids[4], ids[5]);
    for id in [d, b, f, a, c, e] {
        lease_job(store, "default", id, now).await;
    }
    assert!(lease(store, &["default"], 10, now).await.is_empty());

    // Several at once: the best ones.
    let ids = insert_all(
        store,
        vec![
            job("g").priority(1),
            job("h").priority(3),
            job("i").priority(2),
            job("j").priority(0),
        ],
        now,
    )
    .await;
    let leased = lease(store, &["default"], 2, now).await;
    assert_eq!(id_set(&leased), set(&[ids[1], ids[2]]));
}

/// Only jobs of the requested queues are leased.
pub async fn lease_only_requested_queues(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let ids = insert_all(
        store,
        vec![job_in("a", "q1"), job_in("b", "q2"), job_in("c", "q3")],
        now,
    )
    .await;
    assert!(lease(store, &["nothing-here"], 10, now).await.is_empty());
    let leased = lease(store, &["q1", "q2"], 10, now).await;
    assert_eq!(id_set(&leased), set(&ids[..2]));
    for l in &leased {
        assert_eq!(l.queue, if l.id == ids[0] { "q1" } else { "q2" });
    }
    assert!(lease(store, &["q1", "q2"], 10, now).await.is_empty());
    lease_job(store, "q3", ids[2], now).await;
}

/// A lease never returns more than `max` jobs.
pub async fn lease_respects_max(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let ids = insert_all(store, (0..5).map(|i| job(&format!("j{i}"))).collect(), now).await;
    let mut seen = Vec::new();
    for expected in [2, 2, 1, 0] {
        let leased = lease(store, &["default"], 2, now).await;
        assert_eq!(leased.len(), expected);
        seen.extend(leased.iter().map(|l| l.id));
    }
    seen.sort();
    let mut all = ids.clone();
    all.sort();
    assert_eq!(seen, all, "every job leased once");
}

/// A lease counts the attempt (1 on the first lease), makes the job `running` with the worker,
/// start time and lease expiry, and hands out the job's fields.
pub async fn lease_sets_running_fields_and_counts_attempt(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let new = job_in("resize", "media")
        .priority(3)
        .max_attempts(4)
        .timeout(Duration::from_secs(30));
    let payload = new.payload.clone();
    let inserted = insert(store, new, now).await;
    let at = now + secs(1);
    let leased = lease_with(
        store,
        &["media"],
        "worker-a",
        5,
        Duration::from_secs(45),
        at,
    )
    .await;
    assert_eq!(leased.len(), 1);
    let l = &leased[0];
    assert_eq!(l.id, inserted.id);
    assert_eq!(l.job, "resize");
    assert_eq!(l.queue, "media");
    assert_eq!(l.payload, payload);
    assert_eq!(l.attempt, 1, "the first lease is attempt 1");
    assert_eq!(l.max_attempts, 4);
    assert_eq!(l.priority, 3);
    assert_eq!(l.created_at, now);
    assert_eq!(l.lease_expires_at, at + secs(45));
    assert_eq!(l.timeout, Some(Duration::from_secs(30)));

    let job = get(store, l.id).await;
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.attempt, 1);
    assert_eq!(job.worker_id.as_deref(), Some("worker-a"));
    assert_eq!(job.lease_expires_at, Some(at + secs(45)));
    assert_eq!(job.started_at, Some(at));
    assert_eq!(job.finished_at, None);
    assert!(!job.cancel_requested);
    assert!(
        lease(store, &["media"], 5, at).await.is_empty(),
        "a running job is not leased again"
    );
}

/// Every lease of a job gets a new token.
pub async fn lease_token_changes_between_leases(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let id = insert(store, job("a"), now).await.id;
    let first = lease_job(store, "default", id, now).await;
    release(store, id, first.lease_token, now + secs(1))
        .await
        .expect("release");
    let second = lease_job(store, "default", id, now + secs(2)).await;
    assert_ne!(second.lease_token, first.lease_token);
    let retry_at = now + secs(3);
    fail_ok(
        store,
        &second,
        FailOutcome::Retry { run_at: retry_at },
        retry_at,
    )
    .await;
    let third = lease_job(store, "default", id, retry_at).await;
    assert_eq!((first.attempt, second.attempt, third.attempt), (1, 1, 2));
    assert_ne!(third.lease_token, first.lease_token);
    assert_ne!(third.lease_token, second.lease_token);
}

/// A job is not leased before its `run_at`, and is leased after it.
pub async fn scheduled_not_leased_before_run_at(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let id = insert(store, job("later").run_at(now + secs(30)), now)
        .await
        .id;
    assert!(lease(store, &["default"], 10, now).await.is_empty());
    assert!(lease(store, &["default"], 10, now + secs(29))
        .await
        .is_empty());
    assert_eq!(get(store, id).await.state, JobState::Scheduled);
    let leased = lease_job(store, "default", id, now + secs(31)).await;
    assert_eq!(leased.attempt, 1);
    assert_eq!(get(store, id).await.state, JobState::Running);
}

/// `job_promote_scheduled` moves due jobs to `queued` and counts them;
/// `job_next_scheduled_at` is the earliest `run_at` of a scheduled job, retries included.
pub async fn promote_scheduled_and_next_scheduled_at(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let next = || async {
        store
            .job_next_scheduled_at()
            .await
            .expect("next_scheduled_at")
    };
    let promote = |at| async move { store.job_promote_scheduled(at).await.expect("promote") };
    assert_eq!(next().await, None, "empty store");
    assert_eq!(promote(now).await, 0);

    let a = insert(store, job("a").run_at(now + secs(10)), now).await.id;
    let b = insert(store, job("b").run_at(now + secs(20)), now).await.id;
    let c = insert(store, job_in("c", "other"), now).await.id;
    assert_eq!(next().await, Some(now + secs(10)));
    assert_eq!(promote(now + secs(5)).await, 0);
    assert_eq!(promote(now + secs(15)).await, 1);
    assert_eq!(get(store, a).await.state, JobState::Queued);
    assert_eq!(get(store, b).await.state, JobState::Scheduled);
    assert_eq!(next().await, Some(now + secs(20)));
    assert_eq!(promote(now + secs(15)).await, 0, "nothing more is due");

    // A retry waits in `scheduled` too.
    let leased = lease_job(store, "other", c, now + secs(15)).await;
    fail_ok(
        store,
        &leased,
        FailOutcome::Retry {
            run_at: now + secs(17),
        },
        now + secs(16),
    )
    .await;
    assert_eq!(get(store, c).await.state, JobState::Scheduled);
    assert_eq!(next().await, Some(now + secs(17)));
    assert_eq!(promote(now + secs(25)).await, 2);
    assert_eq!(get(store, b).await.state, JobState::Queued);
    assert_eq!(get(store, c).await.state, JobState::Queued);
    assert_eq!(next().await, None);
}

/// A lease may name as many queues as the API allows ([`limits::MAX_LEASE_QUEUES`]), each
/// more than once: it takes the jobs of the named, unpaused queues, best first, and nothing
/// else.
pub async fn lease_over_many_queues(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let names: Vec<String> = (0..limits::MAX_LEASE_QUEUES)
        .map(|i| format!("q{i}"))
        .collect();
    let ids = insert_all(
        store,
        vec![
            job_in("a", "q0"),
            job_in("b", "q500").priority(5),
            job_in("c", "q999"),
            job_in("d", "q7"),
            job_in("e", "elsewhere").priority(10),
            job_in("f", "q999"),
        ],
        now,
    )
    .await;
    store.queue_set_paused("q7", true).await.expect("pause");
    // Every name twice, the second time in reverse order.
    let mut queues: Vec<&str> = names.iter().map(String::as_str).collect();
    queues.extend(names.iter().rev().map(String::as_str));
    let leased = lease(store, &queues, 10, now).await;
    let got: Vec<_> = leased.iter().map(|l| l.id).collect();
    assert_eq!(
        got,
        vec![ids[1], ids[0], ids[2], ids[5]],
        "the jobs of the named unpaused queues, by priority then enqueue order, each once"
    );
    assert!(lease(store, &queues, 10, now).await.is_empty());
    assert_eq!(get(store, ids[3]).await.state, JobState::Queued, "paused");
    assert_eq!(
        get(store, ids[4]).await.state,
        JobState::Queued,
        "not named"
    );

    // Fewer wanted than there are: the best of all the queues, whichever queue comes first.
    let ids = insert_all(
        store,
        vec![
            job_in("g", "q3").priority(1),
            job_in("h", "q3").priority(1),
            job_in("i", "q998").priority(2),
            job_in("j", "q2"),
            job_in("k", "q1"),
        ],
        now,
    )
    .await;
    for expected in [[ids[2], ids[0]], [ids[1], ids[3]]] {
        let got: Vec<_> = lease(store, &queues, 2, now)
            .await
            .iter()
            .map(|l| l.id)
            .collect();
        assert_eq!(got, expected);
    }
    let last = lease(store, &queues, 2, now).await;
    assert_eq!(id_set(&last), set(&[ids[4]]));
}

/// A lease limited to some job names takes only jobs of those names, in the usual order, and
/// leaves the others queued for leasers that can run them.
pub async fn lease_only_requested_job_names(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let a = insert(store, job_in("resize", "shared"), now).await.id;
    let b = insert(store, job_in("report", "shared").priority(10), now)
        .await
        .id;
    let c = insert(store, job_in("resize", "shared"), now).await.id;
    let limited = |jobs: &[&str]| hinter_core::store::LeaseRequest {
        queues: vec!["shared".into()],
        jobs: jobs.iter().map(|j| j.to_string()).collect(),
        worker_id: WORKER.into(),
        max: 10,
        lease_for: LEASE,
        now,
    };
    let none = store
        .job_lease(limited(&["unknown"]))
        .await
        .expect("job_lease");
    assert!(none.is_empty(), "{none:?}");
    let resized = store
        .job_lease(limited(&["resize", "other"]))
        .await
        .expect("job_lease");
    assert_eq!(resized.iter().map(|l| l.id).collect::<Vec<_>>(), vec![a, c]);
    assert_eq!(get(store, b).await.state, JobState::Queued);
    let rest = store.job_lease(limited(&[])).await.expect("job_lease");
    assert_eq!(rest.iter().map(|l| l.id).collect::<Vec<_>>(), vec![b]);
}
