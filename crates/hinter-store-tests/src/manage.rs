//! Rules 11, 12, 16, 17 and 18: cancel, retry, pausing queues, listing and pruning.

use crate::support::*;
use chrono::{DateTime, Utc};
use hinter_core::retry::{decide_failure, FailOutcome};
use hinter_core::store::{JobFilter, PruneRequest, QueueInfo, StoreResult};
use hinter_core::{Job, JobState, NewJob, Store};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Cancelling a `queued` or `scheduled` job finishes it at once.
pub async fn cancel_queued_and_scheduled(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let q = insert(store, job("queued"), now).await.id;
    let s = insert(store, job("scheduled").run_at(now + secs(60)), now)
        .await
        .id;
    for id in [q, s] {
        let job = cancel(store, id, now + secs(1)).await;
        assert_eq!(job.state, JobState::Cancelled);
        assert_eq!(job.finished_at, Some(now + secs(1)));
        assert_eq!(get(store, id).await, job);
    }
    assert!(lease(store, &["default"], 10, now + secs(120))
        .await
        .is_empty());
    assert_eq!(
        store
            .job_next_scheduled_at()
            .await
            .expect("next_scheduled_at"),
        None,
        "a cancelled job is no longer scheduled"
    );
}

/// Cancelling a `running` job sets `cancel_requested`; it stays running until its worker
/// reports the failure.
pub async fn cancel_running_requests_cancel(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let id = insert(store, job("a"), now).await.id;
    let leased = lease_job(store, "default", id, now).await;
    let job = cancel(store, id, now + secs(1)).await;
    assert_eq!(job.state, JobState::Running);
    assert!(job.cancel_requested);
    assert_eq!(job.finished_at, None);
    assert_eq!(get(store, id).await, job);
    let done = fail_ok(store, &leased, FailOutcome::Cancelled, now + secs(2)).await;
    assert_eq!(done.state, JobState::Cancelled);
    assert_eq!(done.finished_at, Some(now + secs(2)));
}

/// Cancelling a finished job is a conflict that changes nothing; an unknown job is not found.
pub async fn cancel_finished_conflict_and_unknown_not_found(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let ok = insert(store, job("ok"), now).await.id;
    let l = lease_job(store, "default", ok, now).await;
    complete_ok(store, &l, now).await;
    let dead = insert(store, job("dead"), now).await.id;
    let l = lease_job(store, "default", dead, now).await;
    fail_ok(store, &l, FailOutcome::Dead, now).await;
    let gone = insert(store, job("gone"), now).await.id;
    cancel(store, gone, now).await;
    for id in [ok, dead, gone] {
        let before = get(store, id).await;
        assert_conflict(
            store.job_cancel(id, now + secs(1)).await,
            &format!("cancel a {} job", before.state),
        );
        assert_eq!(get(store, id).await, before);
    }
    let unknown = Uuid::now_v7();
    assert_not_found(
        store.job_cancel(unknown, now).await,
        unknown,
        "cancel an unknown job",
    );
}

/// Retrying a `dead` or `cancelled` job puts it back to `queued` with its error history, a
/// cleared cancel flag and at least one more attempt.
pub async fn retry_dead_and_cancelled(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let mut rng = StdRng::seed_from_u64(7);

    // Dead after using up its only attempt.
    let dead = insert(store, job_in("dead", "d").max_attempts(1), now)
        .await
        .id;
    let l = lease_job(store, "d", dead, now).await;
    fail(store, dead, l.lease_token, "first", FailOutcome::Dead, now)
        .await
        .expect("fail");
    let job = store
        .job_retry(dead, now + secs(5))
        .await
        .expect("retry dead");
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.errors.len(), 1, "the error history is kept");
    assert_eq!(job.finished_at, None, "a queued job is not finished");
    assert_eq!(get(store, dead).await, job);
    let l = lease_job(store, "d", dead, now + secs(6)).await;
    assert!(
        l.attempt <= l.max_attempts,
        "a retried job gets another attempt: attempt {} of {}",
        l.attempt,
        l.max_attempts
    );
    let outcome = decide_failure(l.attempt, l.max_attempts, true, false, now, &mut rng);
    let job = fail(store, dead, l.lease_token, "second", outcome, now + secs(7))
        .await
        .expect("fail again");
    assert_eq!(job.errors.len(), 2);
    assert_eq!(job.errors[0].message, "first");
    assert_eq!(job.errors[1].message, "second");

    // Cancelled while queued.
    let c = insert(store, job_in("cancelled", "c"), now).await.id;
    cancel(store, c, now).await;
    let job = store
        .job_retry(c, now + secs(1))
        .await
        .expect("retry cancelled");
    assert_eq!(job.state, JobState::Queued);
    lease_job(store, "c", c, now + secs(1)).await;

    // Cancelled while running: the retried job must not be cancelled again at once.
    let r = insert(store, job_in("stopped", "r"), now).await.id;
    let l = lease_job(store, "r", r, now).await;
    cancel(store, r, now).await;
    fail_ok(store, &l, FailOutcome::Cancelled, now + secs(1)).await;
    let job = store.job_retry(r, now + secs(2)).await.expect("retry");
    assert_eq!(job.state, JobState::Queued);
    assert!(!job.cancel_requested, "retry clears the cancel request");
    let l = lease_job(store, "r", r, now + secs(3)).await;
    let ack = heartbeat(store, r, l.lease_token, LEASE, now + secs(4))
        .await
        .expect("heartbeat");
    assert!(!ack.cancel_requested);
}

/// Retrying a job that is not `dead` or `cancelled` is a conflict that changes nothing; an
/// unknown job is not found.
pub async fn retry_other_states_conflict(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let queued = insert(store, job_in("queued", "q"), now).await.id;
    let scheduled = insert(store, job_in("scheduled", "q").run_at(now + secs(60)), now)
        .await
        .id;
    let running = insert(store, job_in("running", "r"), now).await.id;
    lease_job(store, "r", running, now).await;
    let succeeded = insert(store, job_in("succeeded", "s"), now).await.id;
    let l = lease_job(store, "s", succeeded, now).await;
    complete_ok(store, &l, now).await;
    for id in [queued, scheduled, running, succeeded] {
        let before = get(store, id).await;
        assert_conflict(
            store.job_retry(id, now + secs(1)).await,
            &format!("retry a {} job", before.state),
        );
        assert_eq!(get(store, id).await, before);
    }
    let unknown = Uuid::now_v7();
    assert_not_found(
        store.job_retry(unknown, now).await,
        unknown,
        "retry an unknown job",
    );
}

/// A paused queue hands out no leases (other queues do); its running jobs go on; resuming
/// restores leasing.
pub async fn pause_stops_leases(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let r = insert(store, job_in("r", "q1"), now).await.id;
    let running = lease_job(store, "q1", r, now).await;
    let a = insert(store, job_in("a", "q1"), now).await.id;
    let s = insert(store, job_in("s", "q1").run_at(now + secs(5)), now)
        .await
        .id;
    let b = insert(store, job_in("b", "q2"), now).await.id;
    store.queue_set_paused("q1", true).await.expect("pause");
    store
        .queue_set_paused("q1", true)
        .await
        .expect("pausing twice is fine");

    let leased = lease(store, &["q1", "q2"], 10, now + secs(10)).await;
    assert_eq!(id_set(&leased), set(&[b]), "only the unpaused queue");
    assert!(lease(store, &["q1"], 10, now + secs(10)).await.is_empty());

    heartbeat(store, r, running.lease_token, LEASE, now + secs(10))
        .await
        .expect("a running job in a paused queue can heartbeat");
    complete_ok(store, &running, now + secs(11)).await;

    store.queue_set_paused("q1", false).await.expect("resume");
    let leased = lease(store, &["q1"], 10, now + secs(12)).await;
    assert_eq!(id_set(&leased), set(&[a, s]), "leasing again after resume");
}

/// `queue_list` shows every queue with jobs or a pause flag, with counts per state and the
/// `run_at` of its longest-waiting queued job.
pub async fn queue_list_counts_and_paused(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let q = "mixed";
    let ok = insert(store, job_in("ok", q), now).await.id;
    let l = lease_job(store, q, ok, now).await;
    complete_ok(store, &l, now).await;
    let dead = insert(store, job_in("dead", q), now).await.id;
    let l = lease_job(store, q, dead, now).await;
    fail_ok(store, &l, FailOutcome::Dead, now).await;
    let running = insert(store, job_in("running", q), now).await.id;
    lease_job(store, q, running, now).await;
    let cancelled = insert(store, job_in("cancelled", q), now).await.id;
    cancel(store, cancelled, now).await;
    // The longest-waiting queued job; the later and the running ones do not count.
    insert(store, job_in("queued-1", q), now - secs(30)).await;
    insert(store, job_in("queued-2", q), now).await;
    insert(store, job_in("later", q).run_at(now + secs(60)), now).await;
    insert(store, job_in("other", "other"), now).await;
    store.queue_set_paused("idle", true).await.expect("pause");

    let info = |name: &str, paused, counts: [u64; 6]| QueueInfo {
        name: name.into(),
        paused,
        scheduled: counts[0],
        queued: counts[1],
        running: counts[2],
        succeeded: counts[3],
        dead: counts[4],
        cancelled: counts[5],
        oldest_queued_at: None,
    };
    let listed = queues(store).await;
    let expected = BTreeMap::from([
        ("idle".to_string(), info("idle", true, [0; 6])),
        (
            "mixed".to_string(),
            QueueInfo {
                oldest_queued_at: Some(now - secs(30)),
                ..info(q, false, [1, 2, 1, 1, 1, 1])
            },
        ),
        (
            "other".to_string(),
            QueueInfo {
                oldest_queued_at: Some(now),
                ..info("other", false, [0, 1, 0, 0, 0, 0])
            },
        ),
    ]);
    assert_eq!(listed, expected);

    store.queue_set_paused(q, true).await.expect("pause");
    let listed = queues(store).await;
    assert!(listed[q].paused);
    store.queue_set_paused(q, false).await.expect("resume");
    let listed = queues(store).await;
    assert!(!listed[q].paused);
    assert_eq!(listed[q], expected[q]);
    // A queue without jobs is listed while paused, and no longer once resumed.
    store.queue_set_paused("idle", false).await.expect("resume");
    let listed = queues(store).await;
    assert!(!listed.contains_key("idle"), "{listed:?}");
}

async fn queues(store: &dyn Store) -> BTreeMap<String, QueueInfo> {
    let listed = store.queue_list().await.expect("queue_list");
    let n = listed.len();
    let map: BTreeMap<String, QueueInfo> =
        listed.into_iter().map(|i| (i.name.clone(), i)).collect();
    assert_eq!(map.len(), n, "each queue is listed once");
    map
}

fn filter(state: Option<JobState>, queue: Option<&str>, job: Option<&str>) -> JobFilter {
    JobFilter {
        state,
        queue: queue.map(str::to_string),
        job: job.map(str::to_string),
        after_seq: None,
        limit: 100,
        ..JobFilter::default()
    }
    .complete()
}

/// `job_list` filters by state, queue (one, or a set of them: a token's) and job name, in
/// enqueue order, up to `limit`.
pub async fn list_filters(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let a1 = insert(store, job_in("alpha", "q1"), now).await.id;
    let a2 = insert(store, job_in("beta", "q1").priority(9), now)
        .await
        .id;
    let a3 = insert(store, job_in("alpha", "q2"), now).await.id;
    let a4 = insert(store, job_in("beta", "q2").run_at(now + secs(60)), now)
        .await
        .id;
    let a5 = insert(store, job_in("alpha", "q1"), now).await.id;
    lease_job(store, "q1", a2, now).await;

    let cases: Vec<(JobFilter, Vec<Uuid>)> = vec![
        (filter(None, None, None), vec![a1, a2, a3, a4, a5]),
        (filter(Some(JobState::Queued), None, None), vec![a1, a3, a5]),
        (filter(Some(JobState::Running), None, None), vec![a2]),
        (filter(Some(JobState::Scheduled), None, None), vec![a4]),
        (filter(Some(JobState::Succeeded), None, None), vec![]),
        (filter(None, Some("q1"), None), vec![a1, a2, a5]),
        (filter(None, Some("nope"), None), vec![]),
        (filter(None, None, Some("alpha")), vec![a1, a3, a5]),
        (filter(None, Some("q2"), Some("beta")), vec![a4]),
        (
            JobFilter {
                queues: Some(vec!["nope".into(), "q2".into()]),
                ..filter(None, None, None)
            },
            vec![a3, a4],
        ),
        (
            JobFilter {
                queues: Some(vec!["q2".into(), "q1".into()]),
                ..filter(Some(JobState::Queued), None, None)
            },
            vec![a1, a3, a5],
        ),
        (
            JobFilter {
                queues: Some(vec![]),
                ..filter(None, None, None)
            },
            vec![],
        ),
        (
            JobFilter {
                queues: Some(vec!["q2".into()]),
                ..filter(None, Some("q1"), None)
            },
            vec![],
        ),
        (
            filter(Some(JobState::Queued), Some("q1"), Some("alpha")),
            vec![a1, a5],
        ),
        // An active state and a name, no queue: every queue's jobs of both.
        (
            filter(Some(JobState::Queued), None, Some("alpha")),
            vec![a1, a3, a5],
        ),
        (
            filter(Some(JobState::Running), None, Some("beta")),
            vec![a2],
        ),
        (
            JobFilter {
                queues: Some(vec!["q2".into()]),
                ..filter(Some(JobState::Queued), None, Some("alpha"))
            },
            vec![a3],
        ),
        (
            JobFilter {
                limit: 2,
                ..filter(None, None, None)
            },
            vec![a1, a2],
        ),
        (
            JobFilter {
                limit: 1,
                ..filter(None, None, Some("alpha"))
            },
            vec![a1],
        ),
    ];
    for (filter, expected) in cases {
        let jobs = list(store, filter.clone()).await;
        assert_eq!(ids(&jobs), expected, "job_list with {filter:?}");
        for j in &jobs {
            assert_eq!(*j, stored(store, j.id).await, "listed jobs are complete");
        }
    }
}

/// Paging with `after_seq` (the last job's `seq`) visits every job exactly once, in enqueue
/// order, with or without filters.
pub async fn list_pages_with_cursor(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let mut all = Vec::new();
    let mut in_q1 = Vec::new();
    for i in 0..25 {
        let queue = if i % 3 == 0 { "q1" } else { "q2" };
        // Priorities must not change the order of a listing.
        let id = insert(store, job_in("page", queue).priority(i % 4), now)
            .await
            .id;
        all.push(id);
        if queue == "q1" {
            in_q1.push(id);
        }
    }
    let page = |queue: Option<&'static str>, state, after_seq: Option<i64>| JobFilter {
        queue: queue.map(str::to_string),
        state,
        after_seq,
        limit: 7,
        ..JobFilter::default()
    };
    // A state without a queue too: the queues' lists merged, page by page.
    for (queue, state, expected) in [
        (None, None, &all),
        (Some("q1"), None, &in_q1),
        (None, Some(JobState::Queued), &all),
        (Some("q1"), Some(JobState::Queued), &in_q1),
    ] {
        let mut seen = Vec::new();
        let mut cursor = None;
        for _ in 0..10 {
            let jobs = list(store, page(queue, state, cursor)).await;
            for pair in jobs.windows(2) {
                assert!(pair[0].seq < pair[1].seq, "seq grows within a page");
            }
            seen.extend(ids(&jobs));
            match jobs.last() {
                Some(last) => cursor = Some(last.seq),
                None => break,
            }
        }
        assert_eq!(
            &seen, expected,
            "paging through queue {queue:?}, state {state:?}"
        );
    }
}

/// `job_page` pages through a listing: every job once, in enqueue order, `next` at the end
/// `None`; its cursors survive their text form; filters and the byte budget hold across
/// pages; a cursor from another listing position resumes after it.
pub async fn list_pages_by_job_page(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let mut all = Vec::new();
    let mut in_q1 = Vec::new();
    for i in 0..23 {
        let queue = if i % 3 == 0 { "p1" } else { "p2" };
        let payload = serde_json::json!("x".repeat(1_000));
        let id = insert(store, NewJob::new("paged", payload).queue(queue), now)
            .await
            .id;
        all.push(id);
        if queue == "p1" {
            in_q1.push(id);
        }
    }
    let filter = |queue: Option<&str>, limit: u32, max_bytes: Option<u64>| JobFilter {
        queue: queue.map(str::to_string),
        job: Some("paged".into()),
        limit,
        with_payload: true,
        max_bytes,
        ..JobFilter::default()
    };
    let cases: Vec<(JobFilter, &Vec<Uuid>, Vec<usize>)> = vec![
        (filter(None, 10, None), &all, vec![10, 10, 3]),
        (filter(None, 23, None), &all, vec![23]),
        (filter(None, 1, None), &all, vec![1; 23]),
        (filter(Some("p1"), 3, None), &in_q1, vec![3, 3, 2]),
        (
            JobFilter {
                queues: Some(vec!["p1".into(), "elsewhere".into()]),
                ..filter(None, 3, None)
            },
            &in_q1,
            vec![3, 3, 2],
        ),
        // About 1,004 bytes a job: the budget ends pages after the fifth job.
        (filter(None, 100, Some(4_500)), &all, vec![5, 5, 5, 5, 3]),
    ];
    for (filter, expected, sizes) in cases {
        let mut seen = Vec::new();
        let mut seen_sizes = Vec::new();
        let mut cursor: Option<hinter_core::ListCursor> = None;
        loop {
            let page = store
                .job_page(filter.clone(), cursor.clone())
                .await
                .expect("job_page");
            assert!(page.jobs.len() <= filter.limit as usize);
            seen_sizes.push(page.jobs.len());
            seen.extend(ids(&page.jobs));
            match page.next {
                Some(next) => {
                    let text = next.to_string();
                    let parsed: hinter_core::ListCursor = text.parse().expect("cursor parses");
                    assert_eq!(parsed, next, "cursor {text:?} round-trips");
                    cursor = Some(parsed);
                }
                None => break,
            }
            assert!(seen_sizes.len() <= 30, "paging ends");
        }
        assert_eq!(&seen, expected, "every job once, in order, with {filter:?}");
        assert_eq!(seen_sizes, sizes, "page sizes with {filter:?}");
    }
    // Resuming after a given job, and a limit of 0.
    let after = get(store, all[19]).await.seq;
    let page = store
        .job_page(
            filter(None, 10, None),
            Some(hinter_core::ListCursor::after(after)),
        )
        .await
        .expect("job_page");
    assert_eq!(ids(&page.jobs), all[20..].to_vec());
    assert_eq!(page.next, None);
    let empty = store
        .job_page(filter(None, 0, None), None)
        .await
        .expect("job_page");
    assert!(empty.jobs.is_empty() && empty.next.is_none());
}

/// A listing reads `payload` and `result` only when asked for (they come back `null` and
/// `None` otherwise); every other field, the error history included, is always there.
pub async fn list_reads_bodies_only_when_asked(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let big = serde_json::json!({"blob": "x".repeat(100_000)});
    let done = insert(store, NewJob::new("big", big.clone()).queue("lb"), now)
        .await
        .id;
    let failed = insert(store, NewJob::new("big", big.clone()).queue("lb"), now)
        .await
        .id;
    let leased = lease_job(store, "lb", done, now).await;
    let result = serde_json::json!({"out": "y".repeat(50_000)});
    complete(store, done, leased.lease_token, Some(result.clone()), now)
        .await
        .expect("complete");
    let leased = lease_job(store, "lb", failed, now).await;
    fail_ok(store, &leased, FailOutcome::Dead, now).await;

    let base = JobFilter {
        queue: Some("lb".into()),
        limit: 10,
        ..JobFilter::default()
    };
    let summaries = list(store, base.clone()).await;
    assert_eq!(ids(&summaries), vec![done, failed]);
    for job in &summaries {
        let full = get(store, job.id).await;
        assert_eq!(job.payload, serde_json::Value::Null, "payload not read");
        assert_eq!(job.result, None, "result not read");
        let expected = Job {
            payload: serde_json::Value::Null,
            result: None,
            runs: Vec::new(),
            progress: None,
            checkpoint: None,
            ..full
        };
        assert_eq!(*job, expected, "every other field is read, runs are not");
    }
    assert_eq!(summaries[1].errors.len(), 1, "errors are always read");

    let with_payload = list(
        store,
        JobFilter {
            with_payload: true,
            ..base.clone()
        },
    )
    .await;
    assert!(with_payload
        .iter()
        .all(|j| j.payload == big && j.result.is_none()));
    let with_result = list(
        store,
        JobFilter {
            with_result: true,
            ..base.clone()
        },
    )
    .await;
    assert_eq!(with_result[0].result, Some(result));
    assert_eq!(with_result[0].payload, serde_json::Value::Null);
    let complete = list(store, base.complete()).await;
    for job in &complete {
        assert_eq!(*job, stored(store, job.id).await, "a complete listing");
    }
}

/// With `max_bytes`, a listing ends after the job that brings the bytes read to the budget
/// (always at least one job); paging on from its last job visits every job exactly once.
pub async fn list_byte_budget_ends_pages_early(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let mut all = Vec::new();
    for i in 0..10 {
        // 10,002 bytes of JSON each, and "[]" of errors.
        let payload = serde_json::json!(format!("{i}").repeat(10_000));
        all.push(
            insert(store, NewJob::new("b", payload).queue("budget"), now)
                .await
                .id,
        );
    }
    let page = |after_seq: Option<i64>, max_bytes: u64, with_payload: bool| JobFilter {
        queue: Some("budget".into()),
        after_seq,
        limit: 100,
        with_payload,
        max_bytes: Some(max_bytes),
        ..JobFilter::default()
    };
    // 25,000 bytes: the third job reaches the budget, so pages hold three jobs.
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor = None;
    for _ in 0..20 {
        let jobs = list(store, page(cursor, 25_000, true)).await;
        let Some(last) = jobs.last() else { break };
        cursor = Some(last.seq);
        sizes.push(jobs.len());
        assert!(jobs
            .iter()
            .all(|j| j.payload.as_str().is_some_and(|p| p.len() == 10_000)));
        seen.extend(ids(&jobs));
    }
    assert_eq!(sizes, vec![3, 3, 3, 1], "pages under a 25,000-byte budget");
    assert_eq!(seen, all, "every job once, in order");
    // A budget smaller than one job still returns one.
    assert_eq!(ids(&list(store, page(None, 1, true)).await), vec![all[0]]);
    // Without payloads, only the (empty) error histories count.
    assert_eq!(ids(&list(store, page(None, 25_000, false)).await), all);
}

/// Finishes a job in its own queue at `finished_at`, with `state`.
async fn finished_job(store: &dyn Store, name: &str, state: JobState, at: DateTime<Utc>) -> Uuid {
    let queue = format!("q-{name}");
    let id = insert(store, job_in(name, &queue), at - secs(60)).await.id;
    if state == JobState::Cancelled {
        cancel(store, id, at).await;
        return id;
    }
    let l = lease_job(store, &queue, id, at - secs(1)).await;
    match state {
        JobState::Succeeded => {
            complete_ok(store, &l, at).await;
        }
        JobState::Dead => {
            fail_ok(store, &l, FailOutcome::Dead, at).await;
        }
        other => panic!("not a finished state: {other}"),
    }
    id
}

/// Pruning deletes finished jobs that finished before the cut-off of their state, keeps newer
/// and unfinished ones, and returns how many it deleted.
pub async fn prune_finished_by_cutoff(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let old = now - chrono::Duration::days(40);
    let recent = now - chrono::Duration::days(1);
    let s_old = finished_job(store, "s-old", JobState::Succeeded, old).await;
    let s_new = finished_job(store, "s-new", JobState::Succeeded, recent).await;
    let d_old = finished_job(store, "d-old", JobState::Dead, old).await;
    let d_new = finished_job(store, "d-new", JobState::Dead, recent).await;
    let c_old = finished_job(store, "c-old", JobState::Cancelled, old).await;
    let c_new = finished_job(store, "c-new", JobState::Cancelled, recent).await;
    // Unfinished jobs, however old, are never pruned.
    let queued = insert(store, job_in("queued", "u"), old).await.id;
    let scheduled = insert(store, job_in("scheduled", "u").run_at(now + secs(60)), old)
        .await
        .id;
    let running = insert(store, job_in("running", "r"), old).await.id;
    lease_with(
        store,
        &["r"],
        WORKER,
        1,
        Duration::from_secs(86_400 * 100),
        old,
    )
    .await;

    let week_ago = now - chrono::Duration::days(7);
    let deleted = store
        .job_prune(PruneRequest {
            succeeded_before: week_ago,
            dead_before: old - secs(3600),
            cancelled_before: week_ago,
            limit: 1000,
        })
        .await
        .expect("job_prune");
    assert_eq!(deleted, 2, "the old succeeded and the old cancelled job");
    for id in [s_old, c_old] {
        assert_eq!(
            store.job_get(id).await.expect("job_get"),
            None,
            "{id} pruned"
        );
    }
    for id in [s_new, d_old, d_new, c_new, queued, scheduled, running] {
        get(store, id).await;
    }

    let deleted = store
        .job_prune(PruneRequest {
            succeeded_before: now,
            dead_before: week_ago,
            cancelled_before: old,
            limit: 1000,
        })
        .await
        .expect("job_prune");
    assert_eq!(deleted, 2, "the old dead and the recent succeeded job");
    for id in [s_new, d_old] {
        assert_eq!(
            store.job_get(id).await.expect("job_get"),
            None,
            "{id} pruned"
        );
    }
    for id in [d_new, c_new, queued, scheduled, running] {
        get(store, id).await;
    }
    let left = list(store, filter(None, None, None)).await;
    assert_eq!(left.len(), 5);
}

/// Pruning deletes at most `limit` jobs per call, counting all finished states together.
pub async fn prune_respects_limit(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let old = now - chrono::Duration::days(40);
    for (i, state) in [
        JobState::Succeeded,
        JobState::Dead,
        JobState::Cancelled,
        JobState::Succeeded,
        JobState::Dead,
    ]
    .into_iter()
    .enumerate()
    {
        finished_job(store, &format!("old-{i}"), state, old).await;
    }
    let request = PruneRequest {
        succeeded_before: now,
        dead_before: now,
        cancelled_before: now,
        limit: 2,
    };
    let mut counts = Vec::new();
    for _ in 0..4 {
        counts.push(store.job_prune(request.clone()).await.expect("job_prune"));
    }
    assert_eq!(
        counts,
        vec![2, 2, 1, 0],
        "deleted per call with limit 2 (the limit counts all states together)"
    );
    assert!(list(store, filter(None, None, None)).await.is_empty());
}

/// A pruning call cut short by its limit deletes the jobs that finished first, whatever
/// order they were enqueued in.
pub async fn prune_oldest_finished_first(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    // Enqueued first, finished last, and the other way round.
    let later = finished_job(store, "later", JobState::Succeeded, now - secs(100)).await;
    let earlier = finished_job(store, "earlier", JobState::Succeeded, now - secs(300)).await;
    let request = PruneRequest {
        succeeded_before: now,
        dead_before: now,
        cancelled_before: now,
        limit: 1,
    };
    assert_eq!(
        store.job_prune(request.clone()).await.expect("job_prune"),
        1
    );
    assert_eq!(
        store.job_get(earlier).await.expect("job_get"),
        None,
        "the job that finished first is pruned first"
    );
    assert!(
        store.job_get(later).await.expect("job_get").is_some(),
        "the job that finished later is kept while the limit is reached"
    );
}

fn unit_delete(id: Uuid) -> Vec<hinter_core::store::WriteOp> {
    vec![hinter_core::store::WriteOp::JobDelete(id)]
}

fn purge_of(queue: &str, states: &[JobState], limit: u32) -> Vec<hinter_core::store::WriteOp> {
    vec![hinter_core::store::WriteOp::QueuePurge(
        hinter_core::store::QueuePurge {
            queue: queue.into(),
            states: states.to_vec(),
            limit,
        },
    )]
}

/// `WriteOp::JobDelete` deletes a finished job with its runs and answers it as it was; a job
/// that can still run is a conflict and stays; an unknown one is not found.
pub async fn delete_finished_job_only(store: Arc<dyn Store>) {
    use hinter_core::store::WriteResult;
    let store = &*store;
    let now = base_time();
    let queued = insert(store, job_in("q", "del"), now).await.id;
    let running = insert(store, job_in("r", "del"), now).await.id;
    lease_job(store, "del", queued, now).await;
    // `queued` is running now; `running` is still queued: both refused.
    for id in [queued, running] {
        assert_conflict(
            store.write_unit(unit_delete(id), now).await,
            "delete unfinished",
        );
        assert!(store.job_get(id).await.expect("get").is_some());
    }
    let done = insert(store, job_in("d", "del2"), now).await.id;
    let leased = lease_job(store, "del2", done, now).await;
    complete_ok(store, &leased, now).await;
    let answer = store
        .write_unit(unit_delete(done), now)
        .await
        .expect("delete");
    match &answer[..] {
        [WriteResult::JobDeleted(job)] => {
            assert_eq!(job.id, done);
            assert_eq!(job.state, JobState::Succeeded);
            assert_eq!(job.runs.len(), 1, "answered with its runs");
        }
        other => panic!("unexpected answer {other:?}"),
    }
    assert!(store.job_get(done).await.expect("get").is_none());
    assert!(store
        .job_runs(vec![done])
        .await
        .expect("runs")
        .get(&done)
        .is_none_or(|r| r.is_empty()));
    assert_not_found(
        store.write_unit(unit_delete(done), now).await,
        done,
        "delete again",
    );
}

/// `WriteOp::QueuePurge` deletes a queue's finished jobs of the given states, longest
/// finished first and at most `limit`; other states and other queues stay; a state that can
/// still run is refused.
pub async fn purge_queue_finished_jobs(store: Arc<dyn Store>) {
    use hinter_core::store::WriteResult;
    let store = &*store;
    let now = base_time();
    let finish = |name: &'static str, queue: &'static str, outcome: Option<FailOutcome>, at| async move {
        let id = insert(store, job_in(name, queue), at).await.id;
        let leased = lease_job(store, queue, id, at).await;
        match outcome {
            None => {
                complete_ok(store, &leased, at).await;
            }
            Some(outcome) => {
                fail_ok(store, &leased, outcome, at).await;
            }
        }
        id
    };
    let s1 = finish("s1", "pq", None, now).await;
    let s2 = finish("s2", "pq", None, now + secs(1)).await;
    let s3 = finish("s3", "pq", None, now + secs(2)).await;
    let d1 = finish("d1", "pq", Some(FailOutcome::Dead), now + secs(3)).await;
    let d2 = finish("d2", "pq", Some(FailOutcome::Dead), now + secs(4)).await;
    let c1 = insert(store, job_in("c1", "pq"), now).await.id;
    cancel(store, c1, now + secs(5)).await;
    let waiting = insert(store, job_in("w", "pq"), now).await.id;
    let elsewhere = finish("e", "other", None, now).await;
    let later = now + secs(10);

    let purged = |answer: StoreResult<Vec<WriteResult>>| match answer.expect("purge").as_slice() {
        [WriteResult::QueuePurged(n)] => *n,
        other => panic!("unexpected answer {other:?}"),
    };
    assert_eq!(
        purged(
            store
                .write_unit(purge_of("pq", &[JobState::Dead], 100), later)
                .await
        ),
        2
    );
    assert_eq!(
        purged(
            store
                .write_unit(
                    purge_of("pq", &[JobState::Succeeded, JobState::Cancelled], 2),
                    later
                )
                .await
        ),
        2,
        "at most the limit"
    );
    let left: BTreeSet<Uuid> = list(
        store,
        JobFilter {
            queue: Some("pq".into()),
            limit: 100,
            ..JobFilter::default()
        },
    )
    .await
    .iter()
    .map(|j| j.id)
    .collect();
    assert_eq!(
        left,
        set(&[s3, c1, waiting]),
        "the longest finished went first; the waiting job stays"
    );
    assert_conflict(
        store
            .write_unit(purge_of("pq", &[JobState::Queued], 100), later)
            .await,
        "purging queued jobs",
    );
    assert!(store.job_get(waiting).await.expect("get").is_some());
    assert!(store.job_get(elsewhere).await.expect("get").is_some());
    let _ = (s1, s2, d1, d2);
}
