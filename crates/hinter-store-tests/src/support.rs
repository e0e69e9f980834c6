//! Helpers shared by the tests: one-item wrappers around the batch operations, and assertions.

use chrono::{DateTime, SubsecRound, Utc};
use hinter_core::retry::FailOutcome;
use hinter_core::store::{
    Completion, Expired, Failure, Heartbeat, HeartbeatAck, JobFilter, LeaseRequest, Release,
    StoreResult,
};
use hinter_core::{Inserted, Job, JobState, LeasedJob, NewJob, Store, StoreError};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::Duration;
use uuid::Uuid;

/// The lease the helpers ask for.
pub(crate) const LEASE: Duration = Duration::from_secs(60);
/// The worker the helpers lease for.
pub(crate) const WORKER: &str = "worker-1";

/// The tests' starting time: the current time in whole milliseconds.
pub(crate) fn base_time() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

pub(crate) fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

/// A job with default options and a small payload.
pub(crate) fn job(name: &str) -> NewJob {
    NewJob::new(name, json!({"n": name}))
}

/// A job in `queue`.
pub(crate) fn job_in(name: &str, queue: &str) -> NewJob {
    job(name).queue(queue)
}

pub(crate) async fn insert_many(
    store: &dyn Store,
    jobs: Vec<NewJob>,
    now: DateTime<Utc>,
) -> Vec<Inserted> {
    let n = jobs.len();
    let inserted = store
        .job_insert_many(jobs, now)
        .await
        .expect("job_insert_many");
    assert_eq!(inserted.len(), n, "job_insert_many: one answer per job");
    inserted
}

/// Inserts one job and returns the answer (which may be a duplicate).
pub(crate) async fn insert_one(store: &dyn Store, new: NewJob, now: DateTime<Utc>) -> Inserted {
    insert_many(store, vec![new], now)
        .await
        .pop()
        .expect("one answer")
}

/// Inserts one job that must not be a duplicate; returns it as stored.
pub(crate) async fn insert(store: &dyn Store, new: NewJob, now: DateTime<Utc>) -> Job {
    let id = new.id;
    let inserted = insert_one(store, new, now).await;
    assert!(!inserted.duplicate, "job {id} was taken for a duplicate");
    assert_eq!(inserted.job.id, id, "the inserted job keeps its id");
    inserted.job
}

/// Inserts jobs that must not be duplicates; returns their ids in order.
pub(crate) async fn insert_all(
    store: &dyn Store,
    jobs: Vec<NewJob>,
    now: DateTime<Utc>,
) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for new in jobs {
        ids.push(insert(store, new, now).await.id);
    }
    ids
}

pub(crate) async fn get(store: &dyn Store, id: Uuid) -> Job {
    store
        .job_get(id)
        .await
        .expect("job_get")
        .unwrap_or_else(|| panic!("job {id} should exist"))
}

/// The job as stored but without its runs: what listings and the answers of operations
/// other than `job_get` hold.
pub(crate) async fn stored(store: &dyn Store, id: Uuid) -> Job {
    Job {
        runs: Vec::new(),
        progress: None,
        checkpoint: None,
        ..get(store, id).await
    }
}

pub(crate) async fn lease_with(
    store: &dyn Store,
    queues: &[&str],
    worker_id: &str,
    max: u32,
    lease_for: Duration,
    now: DateTime<Utc>,
) -> Vec<LeasedJob> {
    let leased = store
        .job_lease(LeaseRequest {
            jobs: Vec::new(),
            queues: queues.iter().map(|q| q.to_string()).collect(),
            worker_id: worker_id.to_string(),
            max,
            lease_for,
            now,
        })
        .await
        .expect("job_lease");
    assert!(
        leased.len() <= max as usize,
        "job_lease returned {} jobs, more than max {max}",
        leased.len()
    );
    leased
}

/// Leases up to `max` jobs from `queues` for [`WORKER`] and [`LEASE`].
pub(crate) async fn lease(
    store: &dyn Store,
    queues: &[&str],
    max: u32,
    now: DateTime<Utc>,
) -> Vec<LeasedJob> {
    lease_with(store, queues, WORKER, max, LEASE, now).await
}

/// Leases exactly one job from `queue` (asking for one) and returns it.
pub(crate) async fn lease_one(store: &dyn Store, queue: &str, now: DateTime<Utc>) -> LeasedJob {
    let mut leased = lease(store, &[queue], 1, now).await;
    assert_eq!(leased.len(), 1, "expected one job to lease from {queue}");
    leased.pop().expect("one job")
}

/// Leases the job `id`, which must be the next one in `queue`.
pub(crate) async fn lease_job(
    store: &dyn Store,
    queue: &str,
    id: Uuid,
    now: DateTime<Utc>,
) -> LeasedJob {
    let leased = lease_one(store, queue, now).await;
    assert_eq!(leased.id, id, "expected to lease job {id} from {queue}");
    leased
}

/// The ids of leased jobs, as a set.
pub(crate) fn id_set(leased: &[LeasedJob]) -> BTreeSet<Uuid> {
    leased.iter().map(|l| l.id).collect()
}

pub(crate) fn set(ids: &[Uuid]) -> BTreeSet<Uuid> {
    ids.iter().copied().collect()
}

fn single<T: Debug>(mut answers: Vec<StoreResult<T>>, what: &str) -> StoreResult<T> {
    assert_eq!(answers.len(), 1, "{what}: one answer per item");
    answers.pop().expect("one answer")
}

pub(crate) async fn heartbeat(
    store: &dyn Store,
    id: Uuid,
    lease_token: i64,
    lease_for: Duration,
    now: DateTime<Utc>,
) -> StoreResult<HeartbeatAck> {
    let answers = store
        .job_heartbeat_many(
            vec![Heartbeat {
                id,
                lease_token,
                lease_for,
            }],
            now,
        )
        .await
        .expect("job_heartbeat_many");
    single(answers, "job_heartbeat_many")
}

pub(crate) async fn complete(
    store: &dyn Store,
    id: Uuid,
    lease_token: i64,
    result: Option<Value>,
    now: DateTime<Utc>,
) -> StoreResult<Job> {
    let answers = store
        .job_complete_many(
            vec![Completion {
                id,
                lease_token,
                result,
            }],
            now,
        )
        .await
        .expect("job_complete_many");
    single(answers, "job_complete_many")
}

/// Completes a leased job, which must succeed.
pub(crate) async fn complete_ok(store: &dyn Store, leased: &LeasedJob, now: DateTime<Utc>) -> Job {
    let job = complete(store, leased.id, leased.lease_token, None, now)
        .await
        .unwrap_or_else(|e| panic!("completing job {} failed: {e:?}", leased.id));
    assert_eq!(job.state, JobState::Succeeded);
    job
}

pub(crate) async fn fail(
    store: &dyn Store,
    id: Uuid,
    lease_token: i64,
    error: &str,
    outcome: FailOutcome,
    now: DateTime<Utc>,
) -> StoreResult<Job> {
    let answers = store
        .job_fail_many(
            vec![Failure {
                id,
                lease_token,
                error: error.to_string(),
                outcome,
                exit_code: None,
                rescued: None,
            }],
            now,
        )
        .await
        .expect("job_fail_many");
    single(answers, "job_fail_many")
}

/// Fails a leased job with `outcome`, which must be accepted.
pub(crate) async fn fail_ok(
    store: &dyn Store,
    leased: &LeasedJob,
    outcome: FailOutcome,
    now: DateTime<Utc>,
) -> Job {
    fail(store, leased.id, leased.lease_token, "boom", outcome, now)
        .await
        .unwrap_or_else(|e| panic!("failing job {} failed: {e:?}", leased.id))
}

pub(crate) async fn release(
    store: &dyn Store,
    id: Uuid,
    lease_token: i64,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let answers = store
        .job_release_many(vec![Release { id, lease_token }], now)
        .await
        .expect("job_release_many");
    single(answers, "job_release_many")
}

pub(crate) async fn cancel(store: &dyn Store, id: Uuid, now: DateTime<Utc>) -> Job {
    store
        .job_cancel(id, now)
        .await
        .unwrap_or_else(|e| panic!("cancelling job {id} failed: {e:?}"))
}

pub(crate) async fn expired(store: &dyn Store, now: DateTime<Utc>) -> Vec<Expired> {
    store
        .job_expired_list(now, 1000)
        .await
        .expect("job_expired_list")
}

pub(crate) async fn list(store: &dyn Store, filter: JobFilter) -> Vec<Job> {
    let limit = filter.limit;
    let jobs = store.job_list(filter).await.expect("job_list");
    assert!(
        jobs.len() <= limit as usize,
        "job_list returned {} jobs, more than the limit {limit}",
        jobs.len()
    );
    jobs
}

pub(crate) fn ids(jobs: &[Job]) -> Vec<Uuid> {
    jobs.iter().map(|j| j.id).collect()
}

/// Asserts that an operation was refused with [`StoreError::StaleLease`] naming `id`.
pub(crate) fn assert_stale<T: Debug>(answer: StoreResult<T>, id: Uuid, what: &str) {
    match answer {
        Err(StoreError::StaleLease(got)) => assert_eq!(got, id, "{what}: StaleLease names the job"),
        other => panic!("{what}: expected Err(StaleLease({id})), got {other:?}"),
    }
}

/// Asserts that an operation was refused with [`StoreError::Conflict`].
pub(crate) fn assert_conflict<T: Debug>(answer: StoreResult<T>, what: &str) {
    match answer {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("{what}: expected Err(Conflict(_)), got {other:?}"),
    }
}

/// Asserts that an operation was refused with [`StoreError::NotFound`] naming `id`.
pub(crate) fn assert_not_found<T: Debug>(answer: StoreResult<T>, id: Uuid, what: &str) {
    match answer {
        Err(StoreError::NotFound(got)) => assert_eq!(got, id, "{what}: NotFound names the job"),
        other => panic!("{what}: expected Err(NotFound({id})), got {other:?}"),
    }
}
