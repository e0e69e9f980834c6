//! Rules 14 and 15: ordering keys and singleton jobs.

use crate::support::*;
use hinter_core::retry::FailOutcome;
use hinter_core::{NewJob, Store};
use std::collections::BTreeSet;
use std::sync::Arc;

fn ordered(name: &str, queue: &str, key: &str) -> NewJob {
    job_in(name, queue).ordering_key(key)
}

/// Jobs sharing an ordering key start one at a time in enqueue order, whatever their
/// priorities; the next starts only when the previous one finished.
pub async fn ordering_key_one_at_a_time_in_order(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let ids = insert_all(
        store,
        vec![
            ordered("a1", "q", "K"),
            ordered("a2", "q", "K").priority(10),
            ordered("a3", "q", "K"),
            ordered("b1", "q", "L"),
            job_in("n1", "q"),
        ],
        now,
    )
    .await;
    let (a1, a2, a3, b1, n1) = (ids[0], ids[1], ids[2], ids[3], ids[4]);
    let first = lease(store, &["q"], 10, now).await;
    assert_eq!(
        id_set(&first),
        set(&[a1, b1, n1]),
        "only the head of each key is leased"
    );
    assert!(lease(store, &["q"], 10, now).await.is_empty());

    let la1 = first.iter().find(|l| l.id == a1).expect("a1");
    complete_ok(store, la1, now + secs(1)).await;
    let next = lease(store, &["q"], 10, now + secs(2)).await;
    assert_eq!(id_set(&next), set(&[a2]));
    assert!(lease(store, &["q"], 10, now + secs(2)).await.is_empty());
    complete_ok(store, &next[0], now + secs(3)).await;
    let next = lease(store, &["q"], 10, now + secs(4)).await;
    assert_eq!(id_set(&next), set(&[a3]));
}

/// The head of a key holds the others back while it waits: for a retry, for its `run_at`, or
/// after a release; once it is finished (any way), the next one starts.
pub async fn ordering_key_head_waits(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();

    // Waiting for a retry.
    let ids = insert_all(
        store,
        vec![ordered("k1", "retry", "K"), ordered("k2", "retry", "K")],
        now,
    )
    .await;
    let l = lease(store, &["retry"], 10, now).await;
    assert_eq!(id_set(&l), set(&[ids[0]]));
    fail_ok(
        store,
        &l[0],
        FailOutcome::Retry {
            run_at: now + secs(30),
        },
        now + secs(1),
    )
    .await;
    assert!(
        lease(store, &["retry"], 10, now + secs(2)).await.is_empty(),
        "the second job waits while the first waits for its retry"
    );
    let l = lease(store, &["retry"], 10, now + secs(31)).await;
    assert_eq!(id_set(&l), set(&[ids[0]]));
    assert_eq!(l[0].attempt, 2);
    complete_ok(store, &l[0], now + secs(32)).await;
    let l = lease(store, &["retry"], 10, now + secs(33)).await;
    assert_eq!(id_set(&l), set(&[ids[1]]));

    // Waiting for its run_at.
    let ids = insert_all(
        store,
        vec![
            ordered("s1", "delayed", "M").run_at(now + secs(60)),
            ordered("s2", "delayed", "M"),
        ],
        now,
    )
    .await;
    assert!(
        lease(store, &["delayed"], 10, now).await.is_empty(),
        "the second job waits for the first, which is scheduled"
    );
    let l = lease(store, &["delayed"], 10, now + secs(61)).await;
    assert_eq!(id_set(&l), set(&[ids[0]]));
    complete_ok(store, &l[0], now + secs(62)).await;
    let l = lease(store, &["delayed"], 10, now + secs(63)).await;
    assert_eq!(id_set(&l), set(&[ids[1]]));

    // Released: the head keeps its place.
    let ids = insert_all(
        store,
        vec![
            ordered("r1", "released", "R"),
            ordered("r2", "released", "R"),
        ],
        now,
    )
    .await;
    let l = lease(store, &["released"], 10, now).await;
    assert_eq!(id_set(&l), set(&[ids[0]]));
    release(store, ids[0], l[0].lease_token, now + secs(1))
        .await
        .expect("release");
    let l = lease(store, &["released"], 10, now + secs(2)).await;
    assert_eq!(
        id_set(&l),
        set(&[ids[0]]),
        "the released head goes first again"
    );

    // Finished by cancel or as dead: the next one starts.
    let ids = insert_all(
        store,
        vec![
            ordered("c1", "finished", "N"),
            ordered("c2", "finished", "N"),
            ordered("c3", "finished", "N"),
        ],
        now,
    )
    .await;
    cancel(store, ids[0], now).await;
    let l = lease(store, &["finished"], 10, now).await;
    assert_eq!(
        id_set(&l),
        set(&[ids[1]]),
        "a cancelled head lets the next start"
    );
    fail_ok(store, &l[0], FailOutcome::Dead, now + secs(1)).await;
    let l = lease(store, &["finished"], 10, now + secs(2)).await;
    assert_eq!(
        id_set(&l),
        set(&[ids[2]]),
        "a dead head lets the next start"
    );
}

/// Other keys, jobs without a key, and the same key in another queue are not held up; a big
/// `max` returns only the head of each key.
pub async fn ordering_key_other_keys_not_held_up(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let mut batch = Vec::new();
    for round in 0..3 {
        for key in ["K1", "K2", "K3"] {
            batch.push(ordered(&format!("{key}-{round}"), "q", key));
        }
    }
    batch.push(job_in("free-1", "q"));
    batch.push(job_in("free-2", "q"));
    batch.push(ordered("other-0", "other", "K1"));
    batch.push(ordered("other-1", "other", "K1"));
    let ids: Vec<_> = batch.iter().map(|j| j.id).collect();
    insert_many(store, batch, now).await;

    let first = lease(store, &["q", "other"], 100, now).await;
    let expected: BTreeSet<_> = [0, 1, 2, 9, 10, 11].iter().map(|&i| ids[i]).collect();
    assert_eq!(id_set(&first), expected);
    assert!(lease(store, &["q", "other"], 100, now).await.is_empty());
    for l in &first {
        complete_ok(store, l, now + secs(1)).await;
    }
    let second = lease(store, &["q", "other"], 100, now + secs(2)).await;
    let expected: BTreeSet<_> = [3, 4, 5, 12].iter().map(|&i| ids[i]).collect();
    assert_eq!(id_set(&second), expected);
}

/// Singleton jobs of one name never run two at a time, across queues and within one lease;
/// other names are not held up.
pub async fn singleton_one_running_at_a_time(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let ids = insert_all(
        store,
        vec![
            job_in("report", "q").singleton(true),
            job_in("report", "q").singleton(true),
            job_in("report", "q2").singleton(true),
            job_in("mail", "q"),
            job_in("mail", "q"),
            job_in("cleanup", "q").singleton(true),
        ],
        now,
    )
    .await;
    let (r1, r2, r3, m1, m2, c1) = (ids[0], ids[1], ids[2], ids[3], ids[4], ids[5]);
    let first = lease(store, &["q", "q2"], 10, now).await;
    assert_eq!(id_set(&first), set(&[r1, m1, m2, c1]));
    assert!(
        lease(store, &["q2"], 10, now).await.is_empty(),
        "a report runs already, in another queue"
    );
    assert!(lease(store, &["q"], 10, now).await.is_empty());

    let lr1 = first.iter().find(|l| l.id == r1).expect("r1");
    complete_ok(store, lr1, now + secs(1)).await;
    let next = lease(store, &["q", "q2"], 10, now + secs(2)).await;
    assert_eq!(next.len(), 1, "one report at a time: {next:?}");
    assert!(next[0].id == r2 || next[0].id == r3);
    assert!(lease(store, &["q", "q2"], 10, now + secs(2))
        .await
        .is_empty());

    // A retry waits in `scheduled`, not running: another report may start.
    fail_ok(
        store,
        &next[0],
        FailOutcome::Retry {
            run_at: now + secs(60),
        },
        now + secs(3),
    )
    .await;
    let last = lease(store, &["q", "q2"], 10, now + secs(4)).await;
    assert_eq!(last.len(), 1);
    assert!(last[0].id == r2 || last[0].id == r3);
    assert_ne!(last[0].id, next[0].id);
}

/// A singleton that died and was retried holds its name while it runs again: the check
/// for a running job of the name reads the index of unfinished jobs, so a retry must make
/// the job unfinished again (both stores answer the check from `finished_at IS NULL`).
pub async fn singleton_retried_from_dead_holds_its_name(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let ids = insert_all(store, vec![job_in("report", "q").singleton(true)], now).await;
    let first = lease_one(store, "q", now).await;
    fail_ok(store, &first, FailOutcome::Dead, now + secs(1)).await;
    let retried = store
        .job_retry(ids[0], now + secs(2))
        .await
        .expect("retry the dead report");
    assert_eq!(retried.finished_at, None, "{retried:?}");
    let again = lease_one(store, "q", now + secs(3)).await;
    assert_eq!(again.id, ids[0]);
    insert_all(
        store,
        vec![job_in("report", "q").singleton(true)],
        now + secs(4),
    )
    .await;
    assert!(
        lease(store, &["q"], 10, now + secs(5)).await.is_empty(),
        "the retried report runs: a second one must wait"
    );
    complete_ok(store, &again, now + secs(6)).await;
    assert_eq!(lease(store, &["q"], 10, now + secs(7)).await.len(), 1);
}

/// A lease passes over jobs it may not start (a second singleton of a running name, the next
/// job of a busy ordering key) and fills `max` with the next eligible ones.
pub async fn lease_skips_blocked_jobs_to_fill_max(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let ids = insert_all(
        store,
        vec![
            job_in("report", "q").singleton(true).priority(5),
            job_in("report", "q").singleton(true).priority(5),
            job_in("report", "q").singleton(true).priority(5),
            ordered("o1", "q", "K").priority(5),
            ordered("o2", "q", "K").priority(5),
            job_in("mail", "q"),
            job_in("mail", "q"),
        ],
        now,
    )
    .await;
    let leased = lease(store, &["q"], 4, now).await;
    assert_eq!(
        id_set(&leased),
        set(&[ids[0], ids[3], ids[5], ids[6]]),
        "one report, the head of K, and the two mails"
    );
}

/// An older job of a key brought back by hand (retry from dead) while a newer one of the
/// key runs waits for it: jobs of one key never run at the same time.
pub async fn ordering_key_retried_head_waits_for_running(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let ids = insert_all(
        store,
        vec![ordered("o1", "q", "K"), ordered("o2", "q", "K")],
        now,
    )
    .await;
    let first = lease(store, &["q"], 10, now).await;
    assert_eq!(id_set(&first), set(&[ids[0]]));
    fail_ok(store, &first[0], FailOutcome::Dead, now + secs(1)).await;
    let second = lease(store, &["q"], 10, now + secs(2)).await;
    assert_eq!(
        id_set(&second),
        set(&[ids[1]]),
        "the dead head no longer holds o2"
    );
    store
        .job_retry(ids[0], now + secs(3))
        .await
        .expect("retry the dead head");
    assert!(
        lease(store, &["q"], 10, now + secs(4)).await.is_empty(),
        "o1 must not run while o2 of the same key runs"
    );
    complete_ok(store, &second[0], now + secs(5)).await;
    let again = lease(store, &["q"], 10, now + secs(6)).await;
    assert_eq!(id_set(&again), set(&[ids[0]]));
}
