//! Handing jobs to a parked in-process worker in the insert's own transaction
//! ([`hinter_core::handoff`], [`Store::park_lease`]).

use crate::support::*;
use hinter_core::handoff::Handoff;
use hinter_core::store::LeaseRequest;
use hinter_core::{JobState, LeasedJob, Store};
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

pub(crate) fn parked(store: &dyn Store, queues: &[&str], jobs: &[&str], max: u32) -> Handoff {
    store
        .park_lease(LeaseRequest {
            queues: queues.iter().map(|q| q.to_string()).collect(),
            jobs: jobs.iter().map(|j| j.to_string()).collect(),
            worker_id: WORKER.to_string(),
            max,
            lease_for: LEASE,
            now: base_time(),
        })
        .expect("this store hands jobs to parked workers")
}

/// The jobs handed over: they arrive with the insert's answer, so a short deadline.
pub(crate) async fn handed(handoff: &mut Handoff) -> Vec<LeasedJob> {
    tokio::time::timeout(Duration::from_secs(10), handoff.jobs())
        .await
        .expect("jobs handed over by the insert")
}

/// An insert of a job ready to run in a parked worker's queue leases it for that worker in
/// the insert's transaction: the job is running under the handed lease when the insert
/// answers, and its outcome is taken like any lease's. The request then is used up.
pub async fn handoff_leases_an_inserted_job_for_a_parked_worker(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let mut handoff = parked(store, &["default"], &[], 4);
    let id = insert(store, job("a"), now).await.id;
    assert_eq!(
        get(store, id).await.state,
        JobState::Running,
        "leased in the insert's own transaction"
    );
    let jobs = handed(&mut handoff).await;
    assert_eq!(jobs.len(), 1);
    let leased = &jobs[0];
    assert_eq!((leased.id, leased.attempt), (id, 1));
    assert_eq!(leased.lease_expires_at, now + chrono::Duration::seconds(60));
    let stored = get(store, id).await;
    assert_eq!(stored.worker_id.as_deref(), Some(WORKER));
    assert_eq!(
        complete_ok(store, leased, now).await.state,
        JobState::Succeeded
    );

    // Used up: the next job waits in the queue.
    let next = insert(store, job("b"), now).await.id;
    assert_eq!(get(store, next).await.state, JobState::Queued);
    lease_job(store, "default", next, now).await;
}

/// The handed lease is an ordinary lease: a job queued before goes first, the new one waits
/// its turn; a job scheduled for later takes no request.
pub async fn handoff_keeps_the_lease_order(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let older = insert(store, job("older"), now).await.id;
    let mut handoff = parked(store, &["default"], &[], 1);
    let later = insert(store, job("later").run_at(now + secs(60)), now)
        .await
        .id;
    assert_eq!(get(store, later).await.state, JobState::Scheduled);
    let newer = insert(store, job("newer"), now).await.id;
    let jobs = handed(&mut handoff).await;
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [older]);
    assert_eq!(get(store, newer).await.state, JobState::Queued);
    lease_job(store, "default", newer, now).await;
}

/// A request serves only its queues and job names: an insert elsewhere leaves it parked; one
/// whose lease found nothing for it wakes its worker empty-handed (to lease and park again); a
/// withdrawn one is never served, and its queue keeps the job.
pub async fn handoff_serves_its_queues_and_names_only(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let mut handoff = parked(store, &["q1"], &["mine"], 2);
    let elsewhere = insert(store, job_in("mine", "q2"), now).await.id;
    assert_eq!(get(store, elsewhere).await.state, JobState::Queued);
    let other_name = insert(store, job_in("theirs", "q1"), now).await.id;
    assert_eq!(get(store, other_name).await.state, JobState::Queued);
    assert!(handed(&mut handoff).await.is_empty());

    let mut handoff = parked(store, &["q1"], &["mine"], 2);
    let mine = insert(store, job_in("mine", "q1"), now).await.id;
    let jobs = handed(&mut handoff).await;
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [mine]);

    let handoff = parked(store, &["q2"], &[], 2);
    assert!(handoff.withdraw().await.is_empty());
    let kept = insert(store, job_in("mine", "q2"), now).await.id;
    assert_eq!(get(store, kept).await.state, JobState::Queued);
    let leased = lease(store, &["q2"], 10, now).await;
    assert_eq!(id_set(&leased), set(&[elsewhere, kept]));
}

/// The handed lease keeps the rules every lease keeps: a paused queue hands out nothing (its
/// worker is woken empty-handed), and a singleton name runs one job at a time, whether its
/// running job was leased before or the insert brings two of it.
pub async fn handoff_keeps_paused_queues_and_singletons(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    store.queue_set_paused("held", true).await.expect("pause");
    let mut handoff = parked(store, &["held"], &[], 4);
    let held = insert(store, job_in("plain", "held"), now).await.id;
    assert!(handed(&mut handoff).await.is_empty());
    assert_eq!(get(store, held).await.state, JobState::Queued);

    let running = lease_job(
        store,
        "solo",
        insert(store, job_in("only", "solo").singleton(true), now)
            .await
            .id,
        now,
    )
    .await;
    let mut handoff = parked(store, &["solo"], &[], 4);
    let second = insert(store, job_in("only", "solo").singleton(true), now)
        .await
        .id;
    assert!(handed(&mut handoff).await.is_empty());
    assert_eq!(get(store, second).await.state, JobState::Queued);
    complete_ok(store, &running, now).await;

    // Two of a new name in one insert, and the queued one of the first: one job of each
    // name is handed over.
    let mut handoff = parked(store, &["solo"], &[], 4);
    let pair: Vec<_> = insert_many(
        store,
        vec![
            job_in("pair", "solo").singleton(true),
            job_in("pair", "solo").singleton(true),
        ],
        now,
    )
    .await
    .iter()
    .map(|i| i.job.id)
    .collect();
    let jobs = handed(&mut handoff).await;
    assert_eq!(id_set(&jobs), set(&[second, pair[0]]));
    assert_eq!(get(store, pair[1]).await.state, JobState::Queued);
}

/// An insert abandoned by its caller once it has taken a request (the caller's future
/// dropped after its first poll) still commits and hands its jobs over: nothing leased is
/// left to wait for its lease to expire.
pub async fn handoff_survives_an_abandoned_insert(store: Arc<dyn Store>) {
    let now = base_time();
    let mut handoff = parked(&*store, &["default"], &[], 1);
    let new = job("abandoned");
    let id = new.id;
    {
        // Polled exactly once, then dropped. (`timeout(Duration::ZERO, ..)` is no such
        // thing: its timer rounds up to the next millisecond, so the insert may be polled
        // again and finish before the time is up — CI saw it.)
        let mut insert = std::pin::pin!(store.job_insert_many(vec![new], now));
        let first = std::future::poll_fn(|cx| Poll::Ready(insert.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "the insert finished in its first poll");
    }
    let jobs = handed(&mut handoff).await;
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [id]);
    assert_eq!(get(&*store, id).await.state, JobState::Running);
}

/// A worker gone (its [`Handoff`] dropped) after an insert took its request: the job leased
/// for it goes back to the queue, to be leased again; nothing waits for the lease to expire.
pub async fn handoff_releases_the_jobs_of_a_worker_gone(store: Arc<dyn Store>) {
    let now = base_time();
    let handoff = parked(&*store, &["default"], &[], 1);
    let new = job("orphan");
    let id = new.id;
    let mut insert = std::pin::pin!(store.job_insert_many(vec![new], now));
    // The first poll takes the request.
    let first = std::future::poll_fn(|cx| Poll::Ready(insert.as_mut().poll(cx))).await;
    assert!(first.is_pending(), "the insert finished in its first poll");
    drop(handoff);
    insert.await.expect("the insert");
    // The release may be a write of its own after the insert's answer.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(&*store, id).await.state != JobState::Queued {
        assert!(
            std::time::Instant::now() < deadline,
            "the job leased for a worker gone was not released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    lease_job(&*store, "default", id, now).await;
}

/// A lease or a parked request asking for more than [`hinter_core::limits::MAX_LEASE_JOBS`]
/// (through the Rust API, which does not check it) gets at most that many; one that can lease
/// nothing (`max` 0, no queues) is not parked.
pub async fn lease_and_park_hold_max_to_the_lease_limit(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let limit = hinter_core::limits::MAX_LEASE_JOBS;
    let ids = insert_all(
        store,
        (0..=limit).map(|i| job(&format!("j{i}"))).collect(),
        now,
    )
    .await;
    let leased = lease(store, &["default"], u32::MAX, now).await;
    assert_eq!(leased.len(), limit as usize);
    assert_eq!(id_set(&leased), set(&ids[..limit as usize]));

    let request = |queues: &[&str], max| LeaseRequest {
        queues: queues.iter().map(|q| q.to_string()).collect(),
        jobs: Vec::new(),
        worker_id: WORKER.to_string(),
        max,
        lease_for: LEASE,
        now,
    };
    assert!(store.park_lease(request(&["default"], 0)).is_none());
    assert!(store.park_lease(request(&[], 5)).is_none());
    let mut handoff = store
        .park_lease(request(&["default"], u32::MAX))
        .expect("parked");
    let newest = insert(store, job("newest"), now).await.id;
    let jobs = handed(&mut handoff).await;
    assert_eq!(
        jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        [ids[limit as usize], newest]
    );
}
