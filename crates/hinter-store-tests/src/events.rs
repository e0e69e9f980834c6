//! Rule 19: change events, and what each write stores and announces.

use crate::support::*;
use hinter_core::retry::FailOutcome;
use hinter_core::store::{Completion, PruneRequest, WriteOp, WriteResult};
use hinter_core::{JobState, Store, StoreError, StoreEvent};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::{error::RecvError, Receiver};
use uuid::Uuid;

/// How long an event may take to arrive.
const EVENT_WAIT: Duration = Duration::from_secs(5);

/// Waits for an event equal to `wanted`, skipping others.
async fn expect_event(events: &mut Receiver<StoreEvent>, wanted: StoreEvent) {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(event) if event == wanted => return,
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => panic!("the event channel closed waiting for {wanted:?}"),
            }
        }
    };
    if tokio::time::timeout(EVENT_WAIT, wait).await.is_err() {
        panic!("no {wanted:?} within {EVENT_WAIT:?}");
    }
}

/// An insert whose transaction leased every job it made ready for a parked worker
/// announces no `JobsAvailable` for their queue (no other worker is woken to lease nothing);
/// one that leaves a job it made ready queued announces its queue as usual.
pub async fn a_handed_over_insert_announces_only_what_waits(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let mut heard = Heard::new(store);
    let mut handoff = crate::handoff::parked(store, &["mail"], &[], 4);
    let id = insert(store, job_in("a", "mail"), now).await.id;
    assert_eq!(crate::handoff::handed(&mut handoff).await[0].id, id);
    heard
        .expect(store, vec![], "an insert handed over whole")
        .await;

    // The lease holds one: of two jobs inserted together, one waits.
    let mut handoff = crate::handoff::parked(store, &["mail"], &[], 1);
    let both = insert_many(store, vec![job_in("b", "mail"), job_in("c", "mail")], now).await;
    let handed = crate::handoff::handed(&mut handoff).await;
    assert_eq!(handed.len(), 1);
    assert_eq!(handed[0].id, both[0].job.id);
    heard
        .expect(
            store,
            vec![available("mail")],
            "an insert handed over in part",
        )
        .await;
}

/// Inserting a ready job announces `JobsAvailable` for its queue; finishing a job announces
/// `JobFinished` with its final state; cancelling a running job announces `CancelRequested`.
pub async fn subscribe_jobs_available_and_finished(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let mut events = store.subscribe();

    let a = insert(store, job_in("a", "mail"), now).await.id;
    expect_event(
        &mut events,
        StoreEvent::JobsAvailable {
            queue: "mail".into(),
        },
    )
    .await;
    let l = lease_job(store, "mail", a, now).await;
    complete_ok(store, &l, now + secs(1)).await;
    expect_event(
        &mut events,
        StoreEvent::JobFinished {
            id: a,
            state: JobState::Succeeded,
        },
    )
    .await;

    let b = insert(store, job_in("b", "mail"), now).await.id;
    let l = lease_job(store, "mail", b, now).await;
    fail_ok(store, &l, FailOutcome::Dead, now + secs(1)).await;
    expect_event(
        &mut events,
        StoreEvent::JobFinished {
            id: b,
            state: JobState::Dead,
        },
    )
    .await;

    let e = insert(store, job_in("e", "mail"), now).await.id;
    lease_job(store, "mail", e, now).await;
    cancel(store, e, now + secs(1)).await;
    expect_event(&mut events, StoreEvent::CancelRequested { id: e }).await;

    let c = insert(store, job_in("c", "mail"), now).await.id;
    cancel(store, c, now + secs(1)).await;
    expect_event(
        &mut events,
        StoreEvent::JobFinished {
            id: c,
            state: JobState::Cancelled,
        },
    )
    .await;

    // A second subscriber hears the same.
    let mut late = store.subscribe();
    insert(store, job_in("d", "other"), now).await;
    for events in [&mut events, &mut late] {
        expect_event(
            events,
            StoreEvent::JobsAvailable {
                queue: "other".into(),
            },
        )
        .await;
    }
}

/// Hears what a store announces, one write at a time. Events are hints that may arrive
/// asynchronously (PostgreSQL delivers them through LISTEN), so "nothing was announced" is
/// checked against a marker: a later write that announces something of its own. A store
/// delivers its events in commit order, so everything an earlier write announced has arrived
/// once the marker has.
struct Heard {
    events: Receiver<StoreEvent>,
    markers: u32,
}

impl Heard {
    /// Subscribes; call before the writes to hear.
    fn new(store: &dyn Store) -> Self {
        Heard {
            events: store.subscribe(),
            markers: 0,
        }
    }

    /// What was announced since the last call, without repeats, in a stable order. The marker
    /// resumes a queue no test uses, which announces `JobsAvailable` for it.
    async fn since(&mut self, store: &dyn Store) -> Vec<StoreEvent> {
        self.markers += 1;
        let marker = format!("marker-{}", self.markers);
        store
            .queue_set_paused(&marker, false)
            .await
            .expect("queue_set_paused (the marker)");
        let wanted = StoreEvent::JobsAvailable { queue: marker };
        let mut heard: Vec<StoreEvent> = Vec::new();
        let wait = async {
            loop {
                match self.events.recv().await {
                    Ok(event) if event == wanted => return,
                    // A hint about the event log, sent after the commit and rate-limited
                    // (PostgreSQL), so it may arrive after the marker: the log's own tests
                    // check it, not this change-by-change account.
                    Ok(StoreEvent::Logged) => {}
                    Ok(event) => {
                        if !heard.contains(&event) {
                            heard.push(event);
                        }
                    }
                    Err(RecvError::Lagged(n)) => panic!("{n} events were lost to lag"),
                    Err(RecvError::Closed) => panic!("the event channel closed"),
                }
            }
        };
        if tokio::time::timeout(EVENT_WAIT, wait).await.is_err() {
            panic!("the marker event {wanted:?} did not arrive within {EVENT_WAIT:?}");
        }
        sorted(heard)
    }

    /// Asserts that exactly `expected` was announced since the last call.
    async fn expect(&mut self, store: &dyn Store, expected: Vec<StoreEvent>, what: &str) {
        assert_eq!(
            self.since(store).await,
            sorted(expected),
            "events of {what}"
        );
    }
}

fn sorted(mut events: Vec<StoreEvent>) -> Vec<StoreEvent> {
    events.sort_by_key(|e| format!("{e:?}"));
    events.dedup();
    events
}

fn available(queue: &str) -> StoreEvent {
    StoreEvent::JobsAvailable {
        queue: queue.to_string(),
    }
}

fn finished(id: Uuid, state: JobState) -> StoreEvent {
    StoreEvent::JobFinished { id, state }
}

/// A failed attempt: a retry that is already due goes straight back to `queued` and announces
/// its queue; a retry in the future is `scheduled`, announces nothing until it is promoted;
/// a dead job is finished and announced as such.
pub async fn fail_outcomes_state_and_events(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let mut heard = Heard::new(store);
    let jobs = vec![
        job_in("due", "q"),
        job_in("later", "q"),
        job_in("dead", "q"),
    ];
    let ids = insert_all(store, jobs, now).await;
    let (due, later, dead) = (ids[0], ids[1], ids[2]);
    heard
        .expect(store, vec![available("q")], "inserting ready jobs")
        .await;
    let leased = lease(store, &["q"], 3, now).await;
    assert_eq!(id_set(&leased), set(&ids));
    heard.expect(store, vec![], "leasing").await;
    let leased_as = |id: Uuid| leased.iter().find(|l| l.id == id).expect("leased").clone();

    let at = now + secs(1);
    let job = fail_ok(
        store,
        &leased_as(due),
        FailOutcome::Retry { run_at: at },
        at,
    )
    .await;
    assert_eq!(job.state, JobState::Queued, "a retry due now is queued");
    assert_eq!(job.run_at, at);
    assert_eq!(job.finished_at, None);
    assert_eq!(job.lease_expires_at, None);
    assert_eq!(
        stored(store, due).await,
        job,
        "the answer is what is stored"
    );
    heard
        .expect(store, vec![available("q")], "a failure retried now")
        .await;

    let retry_at = now + secs(60);
    let job = fail_ok(
        store,
        &leased_as(later),
        FailOutcome::Retry { run_at: retry_at },
        at,
    )
    .await;
    assert_eq!(
        job.state,
        JobState::Scheduled,
        "a retry in the future waits"
    );
    assert_eq!(job.run_at, retry_at);
    assert_eq!(job.finished_at, None);
    assert_eq!(
        stored(store, later).await,
        job,
        "the answer is what is stored"
    );
    heard.expect(store, vec![], "a failure retried later").await;

    let job = fail_ok(store, &leased_as(dead), FailOutcome::Dead, at).await;
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.finished_at, Some(at));
    assert_eq!(
        stored(store, dead).await,
        job,
        "the answer is what is stored"
    );
    heard
        .expect(
            store,
            vec![finished(dead, JobState::Dead)],
            "a failure for good",
        )
        .await;

    // The queued retry is leased at once; the scheduled one only once due.
    let again = lease(store, &["q"], 3, at).await;
    assert_eq!(id_set(&again), set(&[due]));
    heard
        .expect(store, vec![], "leasing before the retry is due")
        .await;
    assert_eq!(
        store
            .job_promote_scheduled(retry_at)
            .await
            .expect("promote"),
        1
    );
    assert_eq!(get(store, later).await.state, JobState::Queued);
    heard
        .expect(store, vec![available("q")], "promoting the due retry")
        .await;
}

/// The rescuer fails an expired lease with a retry due now: the job is queued again at
/// once and its queue is announced, so idle workers pick it up without polling.
pub async fn rescued_lease_is_queued_and_announced(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let mut heard = Heard::new(store);
    let id = insert(store, job_in("a", "q"), now).await.id;
    lease_job(store, "q", id, now).await;
    heard.since(store).await;

    // Past the lease of `LEASE` (60 s).
    let at = now + secs(61);
    let listed = expired(store, at).await;
    assert_eq!(listed.len(), 1, "the expired lease is listed");
    let rescued = fail(
        store,
        id,
        listed[0].lease_token,
        "lease expired",
        FailOutcome::Retry { run_at: at },
        at,
    )
    .await
    .expect("rescue");
    assert_eq!(
        rescued.state,
        JobState::Queued,
        "a rescued job is queued again"
    );
    assert_eq!(rescued.run_at, at);
    assert_eq!(rescued.attempt, 1, "the attempt counts");
    assert_eq!(rescued.finished_at, None);
    assert_eq!(
        stored(store, id).await,
        rescued,
        "the answer is what is stored"
    );
    heard.expect(store, vec![available("q")], "a rescue").await;
    assert_eq!(lease_job(store, "q", id, at).await.attempt, 2);
}

/// Every other write: what it stores and what it announces. Ready inserts, releases,
/// retries, promotions and resuming a queue announce the queue; finishing announces the job
/// with its final state; cancelling a running job announces the request; heartbeats,
/// scheduled inserts, pausing and pruning announce nothing.
pub async fn writes_state_and_events(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let mut heard = Heard::new(store);

    insert(store, job_in("s", "q").run_at(now + secs(30)), now).await;
    heard
        .expect(store, vec![], "inserting a scheduled job")
        .await;
    let a = insert(store, job_in("a", "q"), now).await.id;
    heard
        .expect(store, vec![available("q")], "inserting a ready job")
        .await;

    let l = lease_job(store, "q", a, now).await;
    heard.since(store).await;
    let ack = heartbeat(store, a, l.lease_token, LEASE, now + secs(1))
        .await
        .expect("heartbeat");
    assert_eq!(
        get(store, a).await.lease_expires_at,
        Some(ack.lease_expires_at)
    );
    heard.expect(store, vec![], "a heartbeat").await;

    release(store, a, l.lease_token, now + secs(1))
        .await
        .expect("release");
    let job = get(store, a).await;
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.attempt, 0, "a released attempt is not counted");
    assert_eq!(job.lease_expires_at, None);
    heard.expect(store, vec![available("q")], "a release").await;

    let l = lease_job(store, "q", a, now + secs(2)).await;
    heard.since(store).await;
    let job = complete(store, a, l.lease_token, Some(json!(1)), now + secs(3))
        .await
        .expect("complete");
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.finished_at, Some(now + secs(3)));
    assert_eq!(stored(store, a).await, job, "the answer is what is stored");
    heard
        .expect(
            store,
            vec![finished(a, JobState::Succeeded)],
            "a completion",
        )
        .await;

    let b = insert(store, job_in("b", "q"), now).await.id;
    heard.since(store).await;
    let job = cancel(store, b, now + secs(4)).await;
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.finished_at, Some(now + secs(4)));
    heard
        .expect(
            store,
            vec![finished(b, JobState::Cancelled)],
            "cancelling a queued job",
        )
        .await;

    let job = store.job_retry(b, now + secs(5)).await.expect("job_retry");
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.run_at, now + secs(5));
    assert_eq!(job.finished_at, None);
    assert_eq!(get(store, b).await, job, "the answer is what is stored");
    heard
        .expect(store, vec![available("q")], "retrying a job")
        .await;

    let l = lease_job(store, "q", b, now + secs(6)).await;
    heard.since(store).await;
    let job = cancel(store, b, now + secs(7)).await;
    assert_eq!(job.state, JobState::Running);
    assert!(job.cancel_requested);
    heard
        .expect(
            store,
            vec![StoreEvent::CancelRequested { id: b }],
            "cancelling a running job",
        )
        .await;
    let job = fail_ok(
        store,
        &l,
        FailOutcome::Retry {
            run_at: now + secs(7),
        },
        now + secs(7),
    )
    .await;
    assert_eq!(
        job.state,
        JobState::Cancelled,
        "the cancel request wins over a retry"
    );
    assert_eq!(job.finished_at, Some(now + secs(7)));
    heard
        .expect(
            store,
            vec![finished(b, JobState::Cancelled)],
            "failing a job asked to cancel",
        )
        .await;

    assert_eq!(
        store
            .job_promote_scheduled(now + secs(30))
            .await
            .expect("promote"),
        1
    );
    heard
        .expect(store, vec![available("q")], "a promotion")
        .await;
    assert_eq!(
        store
            .job_promote_scheduled(now + secs(31))
            .await
            .expect("promote"),
        0
    );
    heard.expect(store, vec![], "a promotion of nothing").await;

    store.queue_set_paused("q", true).await.expect("pause");
    heard.expect(store, vec![], "pausing a queue").await;
    store.queue_set_paused("q", false).await.expect("resume");
    heard
        .expect(store, vec![available("q")], "resuming a queue")
        .await;

    let pruned = store
        .job_prune(PruneRequest {
            succeeded_before: now + secs(60),
            dead_before: now + secs(60),
            cancelled_before: now + secs(60),
            limit: 100,
        })
        .await
        .expect("job_prune");
    assert_eq!(pruned, 2, "the succeeded and the cancelled job");
    heard.expect(store, vec![], "pruning").await;
}

/// A job with an ordering key or a singleton that stops running announces its queue, also
/// when it waits for a retry: the jobs it held back may start now. Here an older job of the
/// key, retried by hand, waits for the running newer one, which fails with a retry later.
pub async fn held_back_jobs_are_announced_when_a_job_stops_running(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let mut heard = Heard::new(store);
    let older = insert(store, job_in("older", "q").ordering_key("k"), now)
        .await
        .id;
    let newer = insert(store, job_in("newer", "q").ordering_key("k"), now)
        .await
        .id;
    let l = lease_job(store, "q", older, now).await;
    fail_ok(store, &l, FailOutcome::Dead, now).await;
    let l = lease_job(store, "q", newer, now).await;
    store.job_retry(older, now).await.expect("job_retry");
    assert!(
        lease(store, &["q"], 1, now).await.is_empty(),
        "the older job waits while the newer one runs"
    );
    heard.since(store).await;
    let at = now + secs(1);
    let job = fail_ok(
        store,
        &l,
        FailOutcome::Retry {
            run_at: at + secs(60),
        },
        at,
    )
    .await;
    assert_eq!(job.state, JobState::Scheduled);
    heard
        .expect(
            store,
            vec![available("q")],
            "an ordered job waiting for its retry",
        )
        .await;
    let l = lease_job(store, "q", older, at).await;
    heard.since(store).await;
    complete_ok(store, &l, at).await;
    heard
        .expect(
            store,
            vec![finished(older, JobState::Succeeded), available("q")],
            "completing an ordered job",
        )
        .await;

    let single = |name: &str| job_in(name, "s").singleton(true);
    let first = insert(store, single("one"), now).await.id;
    let second = insert(store, single("one"), now).await.id;
    let l = lease_job(store, "s", first, at).await;
    assert!(
        lease(store, &["s"], 1, at).await.is_empty(),
        "one runs at a time"
    );
    heard.since(store).await;
    fail_ok(
        store,
        &l,
        FailOutcome::Retry {
            run_at: at + secs(60),
        },
        at,
    )
    .await;
    heard
        .expect(
            store,
            vec![available("s")],
            "a singleton waiting for its retry",
        )
        .await;
    let l = lease_job(store, "s", second, at).await;
    heard.since(store).await;
    fail_ok(store, &l, FailOutcome::Dead, at).await;
    heard
        .expect(
            store,
            vec![finished(second, JobState::Dead), available("s")],
            "a singleton failing for good",
        )
        .await;
}

/// A unit of work commits all its writes together: a completion and the jobs it sets off
/// (say, a reply) are there, with their events, after one commit.
pub async fn unit_of_work_commits_all_writes_together(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let first = insert(store, job_in("step-1", "uow"), now).await;
    let leased = lease_job(store, "uow", first.id, now).await;
    let mut heard = Heard::new(store);
    let next = job_in("step-2", "uow-next");
    let reply = job_in("reply", "uow-replies");
    let results = store
        .write_unit(
            vec![
                WriteOp::Complete(vec![Completion {
                    id: leased.id,
                    lease_token: leased.lease_token,
                    result: Some(json!({"ok": true})),
                }]),
                WriteOp::Insert(vec![next.clone(), reply.clone()]),
            ],
            now,
        )
        .await
        .expect("write_unit");
    match results.as_slice() {
        [WriteResult::Completed(done), WriteResult::Inserted(inserted)] => {
            assert_eq!(done[0].state, JobState::Succeeded);
            assert_eq!(inserted.len(), 2);
        }
        other => panic!("unexpected results {other:?}"),
    }
    assert_eq!(get(store, first.id).await.state, JobState::Succeeded);
    assert_eq!(get(store, next.id).await.state, JobState::Queued);
    assert_eq!(get(store, reply.id).await.state, JobState::Queued);
    heard
        .expect(
            store,
            vec![
                finished(first.id, JobState::Succeeded),
                available("uow-next"),
                available("uow-replies"),
            ],
            "a unit of work",
        )
        .await;
}

/// A unit of work that fails part-way leaves nothing behind and announces nothing: the
/// writes before the failing one are undone, the failing item's job is as it was.
pub async fn unit_of_work_that_fails_leaves_nothing(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let held = insert(store, job_in("held", "uow"), now).await;
    let leased = lease_job(store, "uow", held.id, now).await;
    let mut heard = Heard::new(store);
    let child = job_in("child", "uow-children");
    let stale = store
        .write_unit(
            vec![
                WriteOp::Insert(vec![child.clone()]),
                WriteOp::Release(vec![]),
                WriteOp::Complete(vec![Completion {
                    id: leased.id,
                    lease_token: leased.lease_token + 1,
                    result: None,
                }]),
            ],
            now,
        )
        .await;
    assert_eq!(stale, Err(StoreError::StaleLease(held.id)));
    let unknown = Uuid::now_v7();
    let missing = store
        .write_unit(
            vec![
                WriteOp::Complete(vec![Completion {
                    id: leased.id,
                    lease_token: leased.lease_token,
                    result: None,
                }]),
                WriteOp::Insert(vec![child.clone()]),
                WriteOp::Cancel(unknown),
            ],
            now,
        )
        .await;
    assert_eq!(missing, Err(StoreError::NotFound(unknown)));
    assert_eq!(store.job_get(child.id).await.expect("job_get"), None);
    let still = get(store, held.id).await;
    assert_eq!(still.state, JobState::Running, "{still:?}");
    heard.expect(store, vec![], "failed units of work").await;
    // The lease it held is intact: the job completes as usual.
    complete_ok(store, &leased, now).await;
}
