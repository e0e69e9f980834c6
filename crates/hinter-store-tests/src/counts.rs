//! The job counts of `queue_list` (issue 12): the backends keep them as jobs change instead
//! of counting the jobs table, so every way a job is inserted, changes state or is deleted
//! must move them, and nothing else may.

use crate::support::*;
use chrono::{DateTime, Utc};
use hinter_core::retry::FailOutcome;
use hinter_core::store::{
    Completion, Expiry, Failure, PruneRequest, QueuePurge, WriteOp, WriteResult,
};
use hinter_core::{JobState, Store};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Counts per state of one queue, in the order of `QueueInfo`: scheduled, queued, running,
/// succeeded, dead, cancelled.
type Counts = [u64; 6];

const S: usize = 0;
const Q: usize = 1;
const R: usize = 2;
const OK: usize = 3;
const DEAD: usize = 4;
const C: usize = 5;

/// What `queue_list` says now, per queue (queues listed with no jobs are left out).
async fn counted(store: &dyn Store) -> BTreeMap<String, Counts> {
    store
        .queue_list()
        .await
        .expect("queue_list")
        .into_iter()
        .map(|i| {
            (
                i.name,
                [
                    i.scheduled,
                    i.queued,
                    i.running,
                    i.succeeded,
                    i.dead,
                    i.cancelled,
                ],
            )
        })
        .filter(|(_, counts)| counts.iter().any(|n| *n > 0))
        .collect()
}

/// The counts the jobs themselves give, from listing every job (the truth to compare with).
async fn truth(store: &dyn Store) -> BTreeMap<String, Counts> {
    let mut all = BTreeMap::new();
    for state in [
        JobState::Scheduled,
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Dead,
        JobState::Cancelled,
    ] {
        let jobs = list(
            store,
            hinter_core::store::JobFilter {
                state: Some(state),
                limit: 1000,
                ..Default::default()
            }
            .complete(),
        )
        .await;
        for job in jobs {
            let counts: &mut Counts = all.entry(job.queue.clone()).or_default();
            counts[index(state)] += 1;
        }
    }
    all
}

fn index(state: JobState) -> usize {
    match state {
        JobState::Scheduled => S,
        JobState::Queued => Q,
        JobState::Running => R,
        JobState::Succeeded => OK,
        JobState::Dead => DEAD,
        JobState::Cancelled => C,
    }
}

/// Expected counts, moved by each step and checked against `queue_list` and the jobs.
struct Expect(BTreeMap<String, Counts>);

impl Expect {
    fn new() -> Self {
        Expect(BTreeMap::new())
    }

    /// A job of `queue` left `from` (`None`: inserted) and entered `to` (`None`: deleted).
    fn moved(&mut self, queue: &str, from: Option<usize>, to: Option<usize>) {
        let counts = self.0.entry(queue.to_string()).or_default();
        if let Some(from) = from {
            counts[from] -= 1;
        }
        if let Some(to) = to {
            counts[to] += 1;
        }
        self.0.retain(|_, c| c.iter().any(|n| *n > 0));
    }

    async fn check(&self, store: &dyn Store, step: &str) {
        let listed = counted(store).await;
        assert_eq!(
            listed, self.0,
            "queue_list after {step} (left: listed, right: expected)"
        );
        assert_eq!(
            truth(store).await,
            self.0,
            "the jobs themselves after {step} (the test's own bookkeeping)"
        );
    }
}

async fn rescue(store: &dyn Store, id: uuid::Uuid, lease_token: i64, at: DateTime<Utc>) {
    let answers = store
        .job_fail_many(
            vec![Failure {
                id,
                lease_token,
                error: "lease expired".into(),
                outcome: FailOutcome::Retry { run_at: at },
                exit_code: None,
                rescued: Some(Expiry::LeaseExpired),
            }],
            at,
        )
        .await
        .expect("job_fail_many");
    assert!(answers[0].is_ok(), "rescue: {answers:?}");
}

/// Every transition moves exactly its job between the counts of its queue: inserts (single,
/// batch, scheduled, a duplicate that inserts nothing), promotion, lease, complete, each
/// failure outcome (retry later, retry now, dead, cancelled), release, cancel of a queued,
/// scheduled and running job, retry from dead and from cancelled, rescue of an expired lease,
/// a reply inserted with an outcome (on another queue), and a heartbeat (nothing).
pub async fn queue_counts_follow_every_transition(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let (q, replies) = ("counted", "counted-replies");
    let mut expect = Expect::new();
    expect.check(store, "nothing").await;

    let a = insert(store, job_in("a", q), now).await.id;
    expect.moved(q, None, Some(Q));
    expect.check(store, "an insert").await;

    let batch = insert_many(
        store,
        vec![
            job_in("b", q),
            job_in("c", q),
            job_in("later", q).run_at(now + secs(30)),
            job_in("dup", q).unique("k", None),
        ],
        now,
    )
    .await;
    let (b, c, later) = (batch[0].job.id, batch[1].job.id, batch[2].job.id);
    for to in [Q, Q, S, Q] {
        expect.moved(q, None, Some(to));
    }
    expect.check(store, "a batch insert").await;
    let dup = insert_one(store, job_in("dup", q).unique("k", None), now).await;
    assert!(dup.duplicate);
    expect.check(store, "a duplicate insert").await;

    // Lease a, b: running.
    let la = lease_job(store, q, a, now).await;
    let lb = lease_job(store, q, b, now).await;
    expect.moved(q, Some(Q), Some(R));
    expect.moved(q, Some(Q), Some(R));
    expect.check(store, "two leases").await;
    heartbeat(store, a, la.lease_token, LEASE, now)
        .await
        .expect("heartbeat");
    expect.check(store, "a heartbeat").await;

    complete_ok(store, &la, now).await;
    expect.moved(q, Some(R), Some(OK));
    expect.check(store, "a completion").await;

    fail_ok(
        store,
        &lb,
        FailOutcome::Retry {
            run_at: now + secs(60),
        },
        now,
    )
    .await;
    expect.moved(q, Some(R), Some(S));
    expect.check(store, "a failure retried later").await;

    // Promotion of `later` (due at +30 s; b waits until +60 s).
    store
        .job_promote_scheduled(now + secs(31))
        .await
        .expect("promote");
    expect.moved(q, Some(S), Some(Q));
    expect.check(store, "a promotion").await;

    // c, then `later`, then dup are queued, in that order.
    let lc = lease_job(store, q, c, now + secs(31)).await;
    expect.moved(q, Some(Q), Some(R));
    fail_ok(
        store,
        &lc,
        FailOutcome::Retry {
            run_at: now + secs(31),
        },
        now + secs(31),
    )
    .await;
    expect.moved(q, Some(R), Some(Q));
    expect.check(store, "a failure retried at once").await;

    let lc = lease_job(store, q, c, now + secs(31)).await;
    expect.moved(q, Some(Q), Some(R));
    fail_ok(store, &lc, FailOutcome::Dead, now + secs(31)).await;
    expect.moved(q, Some(R), Some(DEAD));
    expect.check(store, "a failure to dead").await;

    let ll = lease_job(store, q, later, now + secs(31)).await;
    expect.moved(q, Some(Q), Some(R));
    release(store, ll.id, ll.lease_token, now + secs(31))
        .await
        .expect("release");
    expect.moved(q, Some(R), Some(Q));
    expect.check(store, "a release").await;

    // A cancel request leaves a running job running; its failure then cancels it.
    let ll = lease_job(store, q, later, now + secs(31)).await;
    expect.moved(q, Some(Q), Some(R));
    cancel(store, ll.id, now + secs(31)).await;
    expect.check(store, "a cancel request").await;
    fail_ok(store, &ll, FailOutcome::Cancelled, now + secs(31)).await;
    expect.moved(q, Some(R), Some(C));
    expect.check(store, "a cancelled failure").await;

    // dup is queued, b scheduled: cancel both.
    cancel(store, dup.job.id, now + secs(32)).await;
    expect.moved(q, Some(Q), Some(C));
    cancel(store, b, now + secs(32)).await;
    expect.moved(q, Some(S), Some(C));
    expect
        .check(store, "cancels of a queued and a scheduled job")
        .await;

    // Retry from dead and from cancelled.
    store.job_retry(c, now + secs(33)).await.expect("retry");
    expect.moved(q, Some(DEAD), Some(Q));
    store.job_retry(later, now + secs(33)).await.expect("retry");
    expect.moved(q, Some(C), Some(Q));
    expect.check(store, "retries").await;

    // Rescue of an expired lease: back to queued.
    let lr = lease_job(store, q, c, now + secs(33)).await;
    expect.moved(q, Some(Q), Some(R));
    let at = now + secs(33) + secs(61);
    assert_eq!(expired(store, at).await.len(), 1);
    rescue(store, lr.id, lr.lease_token, at).await;
    expect.moved(q, Some(R), Some(Q));
    expect.check(store, "a rescue").await;

    // A reply inserted with the outcome, on its own queue.
    let asks = insert(
        store,
        job_in("asks", q).reply_to(replies, Some("c-1".into())),
        at,
    )
    .await
    .id;
    expect.moved(q, None, Some(Q));
    let leased = lease(store, &[q], 10, at).await;
    for _ in &leased {
        expect.moved(q, Some(Q), Some(R));
    }
    let asking = leased
        .iter()
        .find(|l| l.id == asks)
        .expect("the asking job is leased");
    complete_ok(store, asking, at).await;
    expect.moved(q, Some(R), Some(OK));
    expect.moved(replies, None, Some(Q));
    expect.check(store, "a completion with a reply").await;
}

/// Deleting jobs moves the counts down: a job delete, a queue purge, retention pruning; and
/// a unit of work that fails part-way leaves them as they were.
pub async fn queue_counts_follow_deletes_and_rollbacks(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let (q, p) = ("purged", "pruned");
    let mut expect = Expect::new();
    // Finish 3 jobs in each queue: succeeded, dead, cancelled.
    let mut finished = BTreeMap::new();
    for queue in [q, p] {
        let ok = insert(store, job_in("ok", queue), now).await.id;
        let l = lease_job(store, queue, ok, now).await;
        complete_ok(store, &l, now).await;
        let dead = insert(store, job_in("dead", queue), now).await.id;
        let l = lease_job(store, queue, dead, now).await;
        fail_ok(store, &l, FailOutcome::Dead, now).await;
        let cancelled = insert(store, job_in("cancelled", queue), now).await.id;
        cancel(store, cancelled, now).await;
        insert(store, job_in("waiting", queue), now).await;
        for to in [OK, DEAD, C, Q] {
            expect.moved(queue, None, Some(to));
        }
        finished.insert(queue, (ok, dead, cancelled));
    }
    expect.check(store, "the set-up").await;

    let (ok, _, _) = finished[q];
    let answer = store
        .write_unit(vec![WriteOp::JobDelete(ok)], now)
        .await
        .expect("delete");
    assert!(matches!(answer[..], [WriteResult::JobDeleted(_)]));
    expect.moved(q, Some(OK), None);
    expect.check(store, "a job delete").await;

    let answer = store
        .write_unit(
            vec![WriteOp::QueuePurge(QueuePurge {
                queue: q.into(),
                states: vec![JobState::Succeeded, JobState::Dead, JobState::Cancelled],
                limit: 100,
            })],
            now,
        )
        .await
        .expect("purge");
    assert!(
        matches!(answer[..], [WriteResult::QueuePurged(2)]),
        "{answer:?}"
    );
    expect.moved(q, Some(DEAD), None);
    expect.moved(q, Some(C), None);
    expect.check(store, "a queue purge").await;

    let later = now + secs(1);
    let pruned = store
        .job_prune(PruneRequest {
            succeeded_before: later,
            dead_before: later,
            cancelled_before: now,
            limit: 100,
        })
        .await
        .expect("prune");
    assert_eq!(pruned, 2, "the succeeded and the dead job of {p}");
    expect.moved(p, Some(OK), None);
    expect.moved(p, Some(DEAD), None);
    expect.check(store, "retention pruning").await;

    // A unit that inserts, leases nothing and then fails (a stale completion) changes no
    // count; neither do the inserts of a failed batch.
    let failed = store
        .write_unit(
            vec![
                WriteOp::Insert(vec![job_in("rolled-back", q), job_in("rolled-back", p)]),
                WriteOp::Complete(vec![Completion {
                    id: uuid::Uuid::now_v7(),
                    lease_token: 1,
                    result: None,
                }]),
            ],
            now,
        )
        .await;
    assert!(failed.is_err(), "{failed:?}");
    expect.check(store, "a failed unit of work").await;
    let taken = job_in("taken", q);
    let twice = taken.clone();
    insert(store, taken, now).await;
    expect.moved(q, None, Some(Q));
    let refused = store
        .job_insert_many(vec![job_in("first", q), twice], now)
        .await;
    assert!(refused.is_err(), "a batch with a taken id: {refused:?}");
    expect.check(store, "a refused batch").await;
}
