//! Rule 20: the durable event log — what every operation logs, reading after an id with
//! filters, units of work, pruning, and the wake-up hint.

use crate::support::*;
use chrono::{DateTime, Utc};
use hinter_core::retry::FailOutcome;
use hinter_core::store::{Completion, Expiry, Failure, WriteOp};
use hinter_core::{
    EventFilter, EventKind, EventPage, JobEvent, JobState, RunOutcome, Store, StoreError,
    StoreEvent,
};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

/// A page that the store must answer.
async fn read(store: &dyn Store, after: i64, filter: &EventFilter, limit: u32) -> EventPage {
    let page = store
        .events_read(after, filter, limit)
        .await
        .expect("events_read");
    assert!(
        page.events.len() <= limit as usize,
        "events_read returned {} events, more than the limit {limit}",
        page.events.len()
    );
    let mut last = after;
    for event in &page.events {
        assert!(event.id > last, "ids increase: {} after {last}", event.id);
        last = event.id;
    }
    assert!(
        page.next_after >= last,
        "next_after {} < {last}",
        page.next_after
    );
    page
}

/// Every event after `after` matching `filter`, read in pages of `page` until the log ends.
async fn read_all(store: &dyn Store, after: i64, filter: &EventFilter, page: u32) -> Vec<JobEvent> {
    let mut out = Vec::new();
    let mut after = after;
    loop {
        let got = read(store, after, filter, page).await;
        let n = got.events.len();
        out.extend(got.events);
        if n < page as usize {
            return out;
        }
        after = got.next_after;
    }
}

/// Waits until at least `n` events after `after` are readable, and returns them all. A commit
/// is readable at once on SQLite; on PostgreSQL only once every transaction that started
/// before it has ended (other tests' included), which takes a moment.
async fn wait_logged(store: &dyn Store, after: i64, n: usize) -> Vec<JobEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let events = read_all(store, after, &everything(), 1000).await;
        if events.len() >= n || tokio::time::Instant::now() >= deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn everything() -> EventFilter {
    EventFilter::default()
}

/// (kind, job, attempt, data): what the tests compare.
type Entry = (EventKind, Uuid, u32, Value);

fn entries(events: &[JobEvent]) -> Vec<Entry> {
    events
        .iter()
        .map(|e| (e.kind, e.job_id, e.attempt, e.data.clone()))
        .collect()
}

fn entry(kind: EventKind, job: Uuid, attempt: u32, data: Value) -> Entry {
    (kind, job, attempt, data)
}

fn time_text(t: DateTime<Utc>) -> Value {
    serde_json::to_value(t).expect("a time serialises")
}

/// The events logged since `after`, checked to be stamped with `at` and to name the job's
/// queue and definition as stored.
async fn logged_since(
    store: &dyn Store,
    after: i64,
    at: DateTime<Utc>,
    n: usize,
) -> (Vec<Entry>, i64) {
    let events = wait_logged(store, after, n).await;
    for event in &events {
        assert_eq!(
            event.at, at,
            "event {event:?} is stamped with the operation's time"
        );
        let job = get(store, event.job_id).await;
        assert_eq!(
            (&event.job, &event.queue),
            (&job.job, &job.queue),
            "{event:?}"
        );
    }
    let last = events.last().map_or(after, |e| e.id);
    (entries(&events), last)
}

/// A batch larger than any one statement of a backend's bulk insert, with jobs of other
/// queues, scheduled jobs and unique keys among its plain jobs (one a duplicate of an earlier
/// job of the same batch): every job is stored as answered, `seq` grows in request order,
/// each new job logs one `created` in that order and the duplicate none, and the queue counts
/// match.
pub async fn a_large_mixed_batch_is_stored_logged_and_counted_in_order(store: Arc<dyn Store>) {
    let store = &*store;
    let t0 = base_time();
    let start = store.events_last_id().await.expect("events_last_id");
    let mut batch = Vec::new();
    for i in 0..1_000 {
        let queue = if i % 3 == 0 { "bulk-b" } else { "bulk-a" };
        let mut new = job_in(&format!("j{i}"), queue);
        new.payload = json!({"i": i, "s": "é'\"?"});
        if i % 97 == 0 {
            new = new.unique(format!("k{i}"), None);
        }
        if i % 101 == 0 {
            new = new.run_at(t0 + secs(60));
        }
        batch.push(new);
    }
    // A duplicate of job 97 (same name and key) late in the batch.
    batch.insert(700, job_in("j97", "bulk-a").unique("k97", None));
    let wanted: Vec<Uuid> = batch.iter().map(|j| j.id).collect();
    let inserted = insert_many(store, batch, t0).await;
    assert_eq!(inserted.len(), wanted.len(), "one answer per job");
    let mut created = Vec::new();
    let mut last_seq = i64::MIN;
    let (mut queued, mut scheduled) = (std::collections::BTreeMap::new(), 0u64);
    for (i, (answer, id)) in inserted.iter().zip(&wanted).enumerate() {
        if i == 700 {
            assert!(answer.duplicate, "the repeated unique key is a duplicate");
            assert_eq!(
                answer.job.id, inserted[97].job.id,
                "it answers the first job"
            );
            continue;
        }
        assert!(!answer.duplicate, "job {i} is new");
        assert_eq!(&answer.job.id, id, "answers come in request order");
        assert!(
            answer.job.seq > last_seq,
            "seq grows in request order at job {i}"
        );
        last_seq = answer.job.seq;
        assert_eq!(
            get(store, *id).await,
            answer.job,
            "job {i} is stored as answered"
        );
        created.push(entry(EventKind::Created, *id, 0, Value::Null));
        if answer.job.state == JobState::Scheduled {
            scheduled += 1;
        } else {
            *queued.entry(answer.job.queue.clone()).or_insert(0u64) += 1;
        }
    }
    let (got, _) = logged_since(store, start, t0, created.len()).await;
    assert_eq!(got.len(), created.len(), "one created event per new job");
    assert_eq!(got, created, "created events in request order");
    let listed = store.queue_list().await.expect("queue_list");
    let mut counted = std::collections::BTreeMap::new();
    let mut scheduled_counted = 0;
    for info in listed {
        counted.insert(info.name.clone(), info.queued);
        scheduled_counted += info.scheduled;
    }
    for (queue, n) in &queued {
        assert_eq!(counted.get(queue), Some(n), "queued count of {queue}");
    }
    assert_eq!(scheduled_counted, scheduled, "scheduled count");
}

/// A lease and a completion batch larger than any one statement of a backend's: the lease
/// logs `started` in lease order and opens a run per job; the completions, in another order
/// than the jobs were leased, with results and without, a stale token and an unknown job among
/// the good items: each item is answered on its own, the good ones are stored with their
/// result and their run ended, their `succeeded` events come in the order of the items, and
/// the counts follow. A batch naming one job twice answers the second as stale.
pub async fn a_large_completion_batch_answers_each_item_and_logs_in_order(store: Arc<dyn Store>) {
    let store = &*store;
    let t0 = base_time();
    let batch: Vec<_> = (0..300).map(|i| job_in(&format!("c{i}"), "bulk")).collect();
    insert_many(store, batch, t0).await;
    let before_lease = store.events_last_id().await.expect("events_last_id");
    let mut leased = lease(store, &["bulk"], 300, t0).await;
    assert_eq!(leased.len(), 300, "every job leased");
    let started: Vec<Entry> = leased
        .iter()
        .map(|l| entry(EventKind::Started, l.id, 1, json!({"worker_id": WORKER})))
        .collect();
    let (got, _) = logged_since(store, before_lease, t0, 300).await;
    assert_eq!(got, started, "started events in lease order");
    for l in &leased {
        let job = get(store, l.id).await;
        let run = job.runs.last().expect("a run per lease");
        assert_eq!(
            (job.state, run.outcome, run.started_at),
            (JobState::Running, RunOutcome::Running, t0),
            "job {} and its run",
            l.id
        );
    }
    leased.reverse();
    let (stale, rest) = leased.split_at(1);
    let (twice, rest) = rest.split_at(1);
    let unknown = Uuid::now_v7();
    let at = t0 + secs(5);
    let result_of = |i: usize| i.is_multiple_of(2).then(|| json!({"i": i, "s": "é\"'"}));
    let mut items: Vec<Completion> = rest
        .iter()
        .enumerate()
        .map(|(i, l)| Completion {
            id: l.id,
            lease_token: l.lease_token,
            result: result_of(i),
        })
        .collect();
    items.insert(
        100,
        Completion {
            id: stale[0].id,
            lease_token: stale[0].lease_token.wrapping_add(1),
            result: None,
        },
    );
    items.insert(
        200,
        Completion {
            id: unknown,
            lease_token: 7,
            result: None,
        },
    );
    let start = store.events_last_id().await.expect("events_last_id");
    let answers = store
        .job_complete_many(items.clone(), at)
        .await
        .expect("job_complete_many");
    assert_eq!(answers.len(), items.len(), "one answer per item");
    let mut logged = Vec::new();
    for (k, (item, answer)) in items.iter().zip(&answers).enumerate() {
        if k == 100 {
            assert_stale(answer.clone(), item.id, "the wrong token");
            continue;
        }
        if k == 200 {
            match answer {
                Err(StoreError::NotFound(id) | StoreError::StaleLease(id)) => {
                    assert_eq!(*id, unknown)
                }
                other => panic!("an unknown job: expected NotFound, got {other:?}"),
            }
            continue;
        }
        let done = answer.as_ref().expect("a good completion is applied");
        assert_eq!(done.id, item.id, "answers in item order");
        assert_eq!(done.state, JobState::Succeeded);
        assert_eq!(done.result, item.result, "the item's result");
        assert_eq!(done.finished_at, Some(at));
        assert_eq!(&stored(store, item.id).await, done, "stored as answered");
        let with_runs = get(store, item.id).await;
        let run = with_runs.runs.last().expect("its run");
        assert_eq!(
            (run.outcome, run.finished_at),
            (RunOutcome::Succeeded, Some(at)),
            "its run ended"
        );
        logged.push(entry(EventKind::Succeeded, item.id, 1, Value::Null));
    }
    let (got, _) = logged_since(store, start, at, logged.len()).await;
    assert_eq!(
        got, logged,
        "succeeded events in item order, none for refused items"
    );
    let bulk = store
        .queue_list()
        .await
        .expect("queue_list")
        .into_iter()
        .find(|q| q.name == "bulk")
        .expect("the queue is listed");
    assert_eq!((bulk.succeeded, bulk.running), (298, 2), "counts follow");
    assert_eq!(get(store, stale[0].id).await.state, JobState::Running);

    let twice_items = vec![
        Completion {
            id: twice[0].id,
            lease_token: twice[0].lease_token,
            result: Some(json!(1)),
        },
        Completion {
            id: twice[0].id,
            lease_token: twice[0].lease_token,
            result: Some(json!(2)),
        },
    ];
    let answers = store
        .job_complete_many(twice_items, at)
        .await
        .expect("job_complete_many");
    let first = answers[0]
        .as_ref()
        .expect("the first completion is applied");
    assert_eq!(first.result, Some(json!(1)));
    assert_stale(answers[1].clone(), twice[0].id, "the same job again");
    assert_eq!(get(store, twice[0].id).await.result, Some(json!(1)));
}

/// Every operation logs exactly the events of the contract (`hinter_core::event`), in order,
/// stamped with its time; reads and heartbeats log nothing.
pub async fn log_records_every_change_in_order(store: Arc<dyn Store>) {
    let store = &*store;
    let t0 = base_time();
    let start = store.events_last_id().await.expect("events_last_id");
    assert_eq!(start, 0, "a new store's log is empty");

    // Insert: `created` per job in request order; a duplicate logs nothing.
    let a = job_in("a", "log").unique("k", None);
    let b = job_in("b", "log").run_at(t0 + secs(3600));
    let (a_id, b_id) = (a.id, b.id);
    insert_many(store, vec![a, b], t0).await;
    let dup = insert_one(store, job_in("a", "log").unique("k", None), t0).await;
    assert!(dup.duplicate);
    let (got, last) = logged_since(store, start, t0, 2).await;
    assert_eq!(
        got,
        vec![
            entry(EventKind::Created, a_id, 0, Value::Null),
            entry(EventKind::Created, b_id, 0, Value::Null),
        ]
    );

    // Lease, heartbeat, complete.
    let t1 = t0 + secs(1);
    let leased = lease_job(store, "log", a_id, t1).await;
    heartbeat(store, a_id, leased.lease_token, LEASE, t1)
        .await
        .expect("heartbeat");
    let (got, last) = logged_since(store, last, t1, 1).await;
    assert_eq!(
        got,
        vec![entry(
            EventKind::Started,
            a_id,
            1,
            json!({"worker_id": WORKER})
        )]
    );
    let t2 = t0 + secs(2);
    complete_ok(store, &leased, t2).await;
    let (got, last) = logged_since(store, last, t2, 1).await;
    assert_eq!(got, vec![entry(EventKind::Succeeded, a_id, 1, Value::Null)]);

    // Fail with a retry, then for good, then retry by hand.
    let t3 = t0 + secs(3);
    let c_id = insert(store, job_in("c", "log"), t3).await.id;
    let leased = lease_job(store, "log", c_id, t3).await;
    let retry_at = t0 + secs(60);
    store
        .job_fail_many(
            vec![Failure {
                id: c_id,
                lease_token: leased.lease_token,
                error: "exit 3".into(),
                outcome: FailOutcome::Retry { run_at: retry_at },
                exit_code: Some(3),
                rescued: None,
            }],
            t3,
        )
        .await
        .expect("job_fail_many")
        .pop()
        .expect("one answer")
        .expect("failed");
    let (got, last) = logged_since(store, last, t3, 4).await;
    assert_eq!(
        got,
        vec![
            entry(EventKind::Created, c_id, 0, Value::Null),
            entry(EventKind::Started, c_id, 1, json!({"worker_id": WORKER})),
            entry(
                EventKind::Failed,
                c_id,
                1,
                json!({"error": "exit 3", "exit_code": 3})
            ),
            entry(
                EventKind::RetryScheduled,
                c_id,
                1,
                json!({ "run_at": time_text(retry_at) })
            ),
        ]
    );
    let t4 = retry_at;
    let leased = lease_job(store, "log", c_id, t4).await;
    fail_ok(store, &leased, FailOutcome::Dead, t4).await;
    let (got, last) = logged_since(store, last, t4, 3).await;
    assert_eq!(
        got,
        vec![
            entry(EventKind::Started, c_id, 2, json!({"worker_id": WORKER})),
            entry(
                EventKind::Failed,
                c_id,
                2,
                json!({"error": "boom", "exit_code": null})
            ),
            entry(EventKind::Dead, c_id, 2, Value::Null),
        ]
    );
    let t5 = t4 + secs(1);
    store.job_retry(c_id, t5).await.expect("job_retry");
    let (got, last) = logged_since(store, last, t5, 1).await;
    assert_eq!(got, vec![entry(EventKind::Retried, c_id, 2, Value::Null)]);

    // Cancel: a scheduled job ends at once; a running one is asked (once), then its failure
    // ends it cancelled.
    let t6 = t5 + secs(1);
    cancel(store, b_id, t6).await;
    let leased = lease_job(store, "log", c_id, t6).await;
    cancel(store, c_id, t6).await;
    cancel(store, c_id, t6).await;
    fail_ok(
        store,
        &leased,
        FailOutcome::Retry {
            run_at: t6 + secs(5),
        },
        t6,
    )
    .await;
    let (got, last) = logged_since(store, last, t6, 5).await;
    assert_eq!(
        got,
        vec![
            entry(EventKind::Cancelled, b_id, 0, Value::Null),
            entry(EventKind::Started, c_id, 3, json!({"worker_id": WORKER})),
            entry(EventKind::CancelRequested, c_id, 3, Value::Null),
            entry(
                EventKind::Failed,
                c_id,
                3,
                json!({"error": "boom", "exit_code": null})
            ),
            entry(EventKind::Cancelled, c_id, 3, Value::Null),
        ]
    );

    // Release (the attempt is not counted), then a rescue that is due at once.
    let t7 = t6 + secs(1);
    let d_id = insert(store, job_in("d", "log"), t7).await.id;
    let leased = lease_job(store, "log", d_id, t7).await;
    release(store, d_id, leased.lease_token, t7)
        .await
        .expect("release");
    let leased = lease_job(store, "log", d_id, t7).await;
    let t8 = t7 + secs(120);
    store
        .job_fail_many(
            vec![Failure {
                id: d_id,
                lease_token: leased.lease_token,
                error: "lease expired".into(),
                outcome: FailOutcome::Retry { run_at: t8 },
                exit_code: None,
                rescued: Some(Expiry::LeaseExpired),
            }],
            t8,
        )
        .await
        .expect("job_fail_many")
        .pop()
        .expect("one answer")
        .expect("rescued");
    let events = wait_logged(store, last, 7).await;
    assert_eq!(
        entries(&events),
        vec![
            entry(EventKind::Created, d_id, 0, Value::Null),
            entry(EventKind::Started, d_id, 1, json!({"worker_id": WORKER})),
            entry(EventKind::Released, d_id, 0, Value::Null),
            entry(EventKind::Started, d_id, 1, json!({"worker_id": WORKER})),
            entry(
                EventKind::Rescued,
                d_id,
                1,
                json!({"reason": "lease_expired"})
            ),
            entry(
                EventKind::Failed,
                d_id,
                1,
                json!({"error": "lease expired", "exit_code": null})
            ),
            entry(
                EventKind::RetryScheduled,
                d_id,
                1,
                json!({ "run_at": time_text(t8) })
            ),
        ]
    );
    let times: Vec<DateTime<Utc>> = events.iter().map(|e| e.at).collect();
    assert_eq!(times, vec![t7, t7, t7, t7, t8, t8, t8]);
    let last = events.last().expect("events").id;

    // Pause, promotion and pruning of jobs log nothing.
    store.queue_set_paused("log", true).await.expect("pause");
    store.queue_set_paused("log", false).await.expect("resume");
    store
        .job_promote_scheduled(t8 + secs(3600))
        .await
        .expect("promote");
    // The next entry is a marker's: those operations logged nothing in between.
    let marker = insert(store, job_in("marker", "log"), t8).await.id;
    let (got, last) = logged_since(store, last, t8, 1).await;
    assert_eq!(got, vec![entry(EventKind::Created, marker, 0, Value::Null)]);
    assert_eq!(store.events_last_id().await.expect("events_last_id"), last);
}

/// Readers page through the log after any id, with filters; `next_after` moves past what a
/// filter skipped; negative ids read from the start; a limit of 0 reads nothing and stays.
pub async fn log_reads_after_an_id_with_filters_and_limits(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let mut jobs = Vec::new();
    for i in 0..30 {
        let queue = if i % 3 == 0 { "log-a" } else { "log-b" };
        let name = if i % 2 == 0 { "even" } else { "odd" };
        jobs.push(job_in(name, queue));
    }
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    insert_many(store, jobs, now).await;
    wait_logged(store, 0, 30).await;
    let all = read_all(store, 0, &everything(), 7).await;
    assert_eq!(all.iter().map(|e| e.job_id).collect::<Vec<_>>(), ids);
    let last = all.last().expect("events").id;
    assert_eq!(store.events_last_id().await.expect("events_last_id"), last);
    assert_eq!(read_all(store, -5, &everything(), 100).await, all);

    // Resuming from any id returns exactly what follows it.
    for (i, event) in all.iter().enumerate() {
        assert_eq!(
            read_all(store, event.id, &everything(), 4).await,
            all[i + 1..]
        );
    }
    let end = read(store, last, &everything(), 10).await;
    assert_eq!((end.events.len(), end.next_after), (0, last));
    let zero = read(store, 0, &everything(), 0).await;
    assert_eq!(
        (zero.events.len(), zero.next_after),
        (0, 0),
        "limit 0 stays put"
    );

    let by_queue = EventFilter {
        queue: Some("log-a".into()),
        ..EventFilter::default()
    };
    let by_job = EventFilter {
        job: Some("odd".into()),
        ..EventFilter::default()
    };
    let by_id = EventFilter {
        job_id: Some(ids[4]),
        ..EventFilter::default()
    };
    let both = EventFilter {
        queue: Some("log-a".into()),
        job: Some("odd".into()),
        job_id: None,
        queues: None,
    };
    // Several queues (a token's): each of them, and a queue named by both filters.
    let by_queues = EventFilter {
        queues: Some(vec!["log-none".into(), "log-b".into()]),
        ..EventFilter::default()
    };
    let queue_in_queues = EventFilter {
        queue: Some("log-a".into()),
        queues: Some(vec!["log-a".into(), "log-b".into()]),
        ..EventFilter::default()
    };
    for filter in [by_queue, by_job, by_id, both, by_queues, queue_in_queues] {
        let want: Vec<JobEvent> = all.iter().filter(|e| filter.matches(e)).cloned().collect();
        assert!(!want.is_empty());
        assert_eq!(read_all(store, 0, &filter, 3).await, want, "{filter:?}");
    }
    // A filter that matches nothing still moves the reader to the end of the log.
    let none = EventFilter {
        queue: Some("nobody".into()),
        ..EventFilter::default()
    };
    let page = read(store, 0, &none, 10).await;
    assert_eq!((page.events.len(), page.next_after), (0, last));
    // A full page resumes at its last event, not past events it did not return.
    let page = read(store, 0, &everything(), 5).await;
    assert_eq!(page.next_after, all[4].id);
}

/// A unit of work logs the events of its writes in their order, or, when it fails, none.
pub async fn log_unit_of_work_logs_with_its_writes(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let first = insert(store, job_in("step-1", "log-uow"), now).await;
    let leased = lease_job(store, "log-uow", first.id, now).await;
    // After this test's own entries (created, started), once they are readable.
    let before = wait_logged(store, 0, 2).await.last().expect("entries").id;
    let child = job_in("child", "log-uow");
    let failed = store
        .write_unit(
            vec![
                WriteOp::Insert(vec![child.clone()]),
                WriteOp::Complete(vec![Completion {
                    id: leased.id,
                    lease_token: leased.lease_token + 1,
                    result: None,
                }]),
            ],
            now,
        )
        .await;
    assert_eq!(failed, Err(StoreError::StaleLease(first.id)));
    assert_eq!(read(store, before, &everything(), 10).await.events, vec![]);

    store
        .write_unit(
            vec![
                WriteOp::Complete(vec![Completion {
                    id: leased.id,
                    lease_token: leased.lease_token,
                    result: None,
                }]),
                WriteOp::Insert(vec![child.clone()]),
            ],
            now,
        )
        .await
        .expect("write_unit");
    let (got, _) = logged_since(store, before, now, 2).await;
    assert_eq!(
        got,
        vec![
            entry(EventKind::Succeeded, first.id, 1, Value::Null),
            entry(EventKind::Created, child.id, 0, Value::Null),
        ]
    );
}

/// Pruning deletes the oldest events before the cut-off, at most `limit`, but never the
/// newest; a reader resuming from a pruned id gets what is left; ids are never reused.
pub async fn log_prune_oldest_first_and_ids_not_reused(store: Arc<dyn Store>) {
    let store = &*store;
    let t0 = base_time();
    let t1 = t0 + secs(60);
    let old: Vec<_> = (0..5).map(|_| job_in("old", "log-prune")).collect();
    insert_many(store, old, t0).await;
    let new: Vec<_> = (0..3).map(|_| job_in("new", "log-prune")).collect();
    insert_many(store, new, t1).await;
    let all = wait_logged(store, 0, 8).await;
    assert_eq!(all.len(), 8);

    assert_eq!(store.events_prune(t1, 2).await.expect("events_prune"), 2);
    assert_eq!(read_all(store, 0, &everything(), 100).await, all[2..]);
    // Resuming from a pruned id returns everything still kept after it.
    assert_eq!(
        read_all(store, all[0].id, &everything(), 100).await,
        all[2..]
    );
    assert_eq!(store.events_prune(t1, 100).await.expect("events_prune"), 3);
    assert_eq!(read_all(store, 0, &everything(), 100).await, all[5..]);
    assert_eq!(store.events_prune(t1, 100).await.expect("events_prune"), 0);

    // Everything is old now; the newest entry is kept all the same.
    let last = all.last().expect("events").id;
    assert_eq!(
        store
            .events_prune(t1 + secs(1), 100)
            .await
            .expect("events_prune"),
        2
    );
    assert_eq!(read_all(store, 0, &everything(), 10).await, all[7..]);
    let later = insert(store, job_in("later", "log-prune"), t1).await;
    let after = wait_logged(store, last, 1).await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].job_id, later.id);
    assert!(
        after[0].id > last,
        "id {} reused (last was {last})",
        after[0].id
    );
}

/// A write that logs events sends the `Logged` hint after its commit; a write that logs none
/// (a heartbeat) need not.
pub async fn log_hint_follows_the_commit(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let mut hints = store.subscribe();
    let id = insert(store, job_in("hinted", "log-hint"), now).await.id;
    let wait = async {
        loop {
            match hints.recv().await {
                Ok(StoreEvent::Logged) => return,
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => panic!("the event channel closed"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("a Logged hint within 5 s of the insert");
    // The hinted event is readable at once.
    let events = wait_logged(store, 0, 1).await;
    let seen: HashSet<Uuid> = events.iter().map(|e| e.job_id).collect();
    assert!(seen.contains(&id));
}

/// A report that sets a job's progress logs `progress` (`{"percent", "message"}`) in the
/// same write, stamped with the report's time, after the attempt's `started`; a report of
/// only log lines or only a checkpoint logs nothing, and a stale token logs nothing.
pub async fn log_progress_reports_are_logged(store: Arc<dyn Store>) {
    use hinter_core::{JobReport, LogStream, NewLogLine, Progress};
    let store = &*store;
    let t0 = base_time();
    let start = store.events_last_id().await.expect("events_last_id");
    let id = insert(store, job_in("progress", "log-progress"), t0)
        .await
        .id;
    let leased = lease_job(store, "log-progress", id, t0 + secs(1)).await;
    let report = |lease_token: i64| JobReport {
        id,
        lease_token,
        logs: Vec::new(),
        progress: None,
        checkpoint: None,
    };
    let progress = |percent: f64, message: Option<&str>, at| Progress {
        percent,
        message: message.map(str::to_string),
        at,
    };
    let t2 = t0 + secs(2);
    store
        .job_report(
            JobReport {
                logs: vec![NewLogLine::new(t2, LogStream::Stdout, "only a line")],
                ..report(leased.lease_token)
            },
            t2,
        )
        .await
        .expect("a report of log lines");
    let t3 = t0 + secs(3);
    store
        .job_report(
            JobReport {
                checkpoint: Some(json!({"page": 3})),
                ..report(leased.lease_token)
            },
            t3,
        )
        .await
        .expect("a report of a checkpoint");
    let t4 = t0 + secs(4);
    store
        .job_report(
            JobReport {
                logs: vec![NewLogLine::new(t4, LogStream::Stdout, "half way")],
                progress: Some(progress(42.5, Some("half"), t4)),
                ..report(leased.lease_token)
            },
            t4,
        )
        .await
        .expect("a report of progress");
    let t5 = t0 + secs(5);
    assert_stale(
        store
            .job_report(
                JobReport {
                    progress: Some(progress(99.0, Some("stale"), t5)),
                    ..report(leased.lease_token + 1)
                },
                t5,
            )
            .await,
        id,
        "a progress report with a wrong token",
    );
    let t6 = t0 + secs(6);
    store
        .job_report(
            JobReport {
                progress: Some(progress(100.0, None, t6)),
                ..report(leased.lease_token)
            },
            t6,
        )
        .await
        .expect("a report of progress without a message");
    let t7 = t0 + secs(7);
    complete_ok(store, &leased, t7).await;
    assert_stale(
        store
            .job_report(
                JobReport {
                    progress: Some(progress(100.0, Some("late"), t7)),
                    ..report(leased.lease_token)
                },
                t7,
            )
            .await,
        id,
        "a progress report after the job finished",
    );
    // A later entry: once it is readable, anything the stale reports wrote would be too.
    let marker = insert(store, job_in("marker", "log-progress"), t7).await.id;
    let events = wait_logged(store, start, 6).await;
    assert_eq!(
        entries(&events),
        vec![
            entry(EventKind::Created, id, 0, Value::Null),
            entry(EventKind::Started, id, 1, json!({"worker_id": WORKER})),
            entry(
                EventKind::Progress,
                id,
                1,
                json!({"percent": 42.5, "message": "half"})
            ),
            entry(
                EventKind::Progress,
                id,
                1,
                json!({"percent": 100.0, "message": null})
            ),
            entry(EventKind::Succeeded, id, 1, Value::Null),
            entry(EventKind::Created, marker, 0, Value::Null),
        ]
    );
    let progress_at: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::Progress)
        .map(|e| e.at)
        .collect();
    assert_eq!(progress_at, vec![t4, t6], "stamped with the reports' times");
    assert_eq!(
        (events[2].job.as_str(), events[2].queue.as_str()),
        ("progress", "log-progress")
    );
    // The job filter sees them too.
    let filter = EventFilter {
        job_id: Some(id),
        ..EventFilter::default()
    };
    let kinds: Vec<_> = read_all(store, start, &filter, 2)
        .await
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::Created,
            EventKind::Started,
            EventKind::Progress,
            EventKind::Progress,
            EventKind::Succeeded
        ]
    );
}
