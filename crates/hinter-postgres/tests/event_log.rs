//! The event log on PostgreSQL: what each operation logs, ids that never let a reader skip an
//! event (transactions still in flight hold back everything after them), wake-ups across
//! stores, pruning. Needs `HINTER_TEST_DATABASE_URL` (see build.rs).
//!
//! Any transaction open on the server holds the log back, other tests' too, so every wait
//! for events polls until a deadline rather than expecting them on the first read.

mod common;

#[cfg(not(hinter_test_database))]
#[test]
fn event_log_tests_need_a_database() {
    common::no_database("event log tests");
}

#[cfg(hinter_test_database)]
mod with_database {
    use super::common::TestSchema;
    use chrono::{DateTime, Utc};
    use hinter_core::retry::FailOutcome;
    use hinter_core::store::{Completion, Expiry, Failure, LeaseRequest, Release, WriteOp};
    use hinter_core::{
        EventFilter, EventKind, JobEvent, LeasedJob, NewJob, Store, StoreError, StoreEvent,
    };
    use hinter_postgres::PostgresStore;
    use serde_json::{json, Value};
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::time::Instant;
    use tokio_postgres::{Client, NoTls};
    use uuid::Uuid;

    /// Longest any awaited condition may take.
    const DEADLINE: Duration = Duration::from_secs(20);
    const LEASE: Duration = Duration::from_secs(60);

    fn all() -> EventFilter {
        EventFilter::default()
    }

    /// Now, at the precision the store keeps.
    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).expect("a time")
    }

    fn serde_time(t: DateTime<Utc>) -> Value {
        serde_json::to_value(t).expect("a time encodes")
    }

    async fn app_client(url: &str) -> Client {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .expect("connect the application");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    /// Everything after `after` that is readable now, page by page (small pages, so paging
    /// is exercised too).
    async fn read_all(store: &dyn Store, mut after: i64, filter: &EventFilter) -> Vec<JobEvent> {
        let mut out = Vec::new();
        loop {
            let page = store
                .events_read(after, filter, 7)
                .await
                .expect("events_read");
            assert!(page.next_after >= after, "next_after went back");
            let full = page.events.len() == 7;
            out.extend(page.events);
            after = page.next_after;
            if !full {
                return out;
            }
        }
    }

    /// Reads after `after` until `count` events have come (other transactions on the server
    /// may hold them back a moment).
    async fn wait_for(
        store: &dyn Store,
        after: i64,
        filter: &EventFilter,
        count: usize,
    ) -> Vec<JobEvent> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let events = read_all(store, after, filter).await;
            assert!(
                events.len() <= count,
                "more events than expected: {events:#?}"
            );
            if events.len() == count {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {count} events within {DEADLINE:?}: {events:#?}",
                events.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kinds(events: &[JobEvent]) -> Vec<(Uuid, EventKind)> {
        events.iter().map(|e| (e.job_id, e.kind)).collect()
    }

    fn assert_increasing(events: &[JobEvent]) {
        for pair in events.windows(2) {
            assert!(pair[0].id < pair[1].id, "ids not increasing: {pair:#?}");
        }
    }

    async fn lease(
        store: &PostgresStore,
        queue: &str,
        max: u32,
        at: DateTime<Utc>,
    ) -> Vec<LeasedJob> {
        store
            .job_lease(LeaseRequest {
                jobs: Vec::new(),
                queues: vec![queue.into()],
                worker_id: "w-1".into(),
                max,
                lease_for: LEASE,
                now: at,
            })
            .await
            .expect("job_lease")
    }

    async fn insert(store: &PostgresStore, jobs: Vec<NewJob>) {
        store.job_insert_many(jobs, now()).await.expect("insert");
    }

    /// Every operation logs the contract's rows (hinter_core::event), in its transaction.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_operation_logs_its_events() {
        let schema = TestSchema::new();
        let store = schema.store().await;
        assert_eq!(store.events_last_id().await.expect("last id"), 0);
        let empty = store.events_read(0, &all(), 10).await.expect("read");
        assert!(empty.events.is_empty());
        assert_eq!(empty.next_after, 0);

        // Insert: `created` per new job in request order; a duplicate logs nothing.
        let t0 = now();
        let a = NewJob::new("mail", json!(1)).queue("q").unique("k", None);
        let b = NewJob::new("mail", json!(2)).queue("q").max_attempts(1);
        let dup = NewJob::new("mail", json!(3)).queue("q").unique("k", None);
        let (ida, idb) = (a.id, b.id);
        store
            .job_insert_many(vec![a, b, dup], t0)
            .await
            .expect("insert");
        let created = wait_for(&store, 0, &all(), 2).await;
        assert_eq!(
            kinds(&created),
            vec![(ida, EventKind::Created), (idb, EventKind::Created)]
        );
        assert_eq!(created[0].id, 1, "the first id is 1");
        assert_eq!(created[0].at, t0);
        assert_eq!((created[0].attempt, &created[0].data), (0, &Value::Null));
        assert_eq!(
            (created[0].job.as_str(), created[0].queue.as_str()),
            ("mail", "q")
        );
        assert_eq!(
            store.events_last_id().await.expect("last id"),
            created[1].id
        );
        let mark = created[1].id;

        // Lease: `started` with the worker, attempt 1.
        let t1 = now();
        let leased = lease(&store, "q", 2, t1).await;
        assert_eq!(leased.len(), 2);
        let started = wait_for(&store, mark, &all(), 2).await;
        assert!(started.iter().all(|e| e.kind == EventKind::Started
            && e.at == t1
            && e.attempt == 1
            && e.data == json!({"worker_id": "w-1"})));
        assert_eq!(
            started.iter().map(|e| e.job_id).collect::<Vec<_>>(),
            leased.iter().map(|l| l.id).collect::<Vec<_>>(),
            "logged in the order leased"
        );
        let mark = started[1].id;
        let of = |id: Uuid| leased.iter().find(|l| l.id == id).expect("leased").clone();
        let (la, lb) = (of(ida), of(idb));

        // Fail with a rescue and a retry (a), then fail for good (b): rescued, failed, outcome.
        let t2 = now();
        let run_at = t2 + chrono::Duration::seconds(30);
        let answers = store
            .job_fail_many(
                vec![
                    Failure {
                        id: lb.id,
                        lease_token: lb.lease_token,
                        error: "boom".into(),
                        outcome: FailOutcome::Dead,
                        exit_code: Some(3),
                        rescued: None,
                    },
                    Failure {
                        id: la.id,
                        lease_token: la.lease_token,
                        error: "lost".into(),
                        outcome: FailOutcome::Retry { run_at },
                        exit_code: None,
                        rescued: Some(Expiry::LeaseExpired),
                    },
                ],
                t2,
            )
            .await
            .expect("fail");
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        let failed = wait_for(&store, mark, &all(), 5).await;
        assert_eq!(
            kinds(&failed),
            vec![
                (idb, EventKind::Failed),
                (idb, EventKind::Dead),
                (ida, EventKind::Rescued),
                (ida, EventKind::Failed),
                (ida, EventKind::RetryScheduled),
            ]
        );
        assert_increasing(&failed);
        assert_eq!(failed[0].data, json!({"error": "boom", "exit_code": 3}));
        assert_eq!(
            serde_json::to_string(&failed[0].data).expect("json"),
            r#"{"error":"boom","exit_code":3}"#,
            "keys in the contract's order"
        );
        assert_eq!(failed[1].data, Value::Null);
        assert_eq!(failed[2].data, json!({"reason": "lease_expired"}));
        assert_eq!(failed[3].data, json!({"error": "lost", "exit_code": null}));
        assert_eq!(failed[4].data, json!({"run_at": serde_time(run_at)}));
        assert!(failed.iter().all(|e| e.at == t2 && e.attempt == 1));
        let mark = failed[4].id;

        // Retry by hand (b is dead), lease it, release it, cancel the running job twice
        // (only the first request is new), complete it.
        let t3 = now();
        store.job_retry(idb, t3).await.expect("retry");
        let again = lease(&store, "q", 1, t3).await;
        assert_eq!(again.len(), 1);
        let released = store
            .job_release_many(
                vec![Release {
                    id: idb,
                    lease_token: again[0].lease_token,
                }],
                t3,
            )
            .await
            .expect("release");
        assert!(released[0].is_ok());
        let again = lease(&store, "q", 1, t3).await;
        store.job_cancel(idb, t3).await.expect("cancel running");
        store
            .job_cancel(idb, t3)
            .await
            .expect("cancel running again");
        let done = store
            .job_complete_many(
                vec![Completion {
                    id: idb,
                    lease_token: again[0].lease_token,
                    result: None,
                }],
                t3,
            )
            .await
            .expect("complete");
        assert!(done[0].is_ok());
        // a is scheduled: cancelling it ends it.
        store.job_cancel(ida, t3).await.expect("cancel scheduled");
        let rest = wait_for(&store, mark, &all(), 7).await;
        assert_eq!(
            kinds(&rest),
            vec![
                (idb, EventKind::Retried),
                (idb, EventKind::Started),
                (idb, EventKind::Released),
                (idb, EventKind::Started),
                (idb, EventKind::CancelRequested),
                (idb, EventKind::Succeeded),
                (ida, EventKind::Cancelled),
            ]
        );
        let attempts: Vec<u32> = rest.iter().map(|e| e.attempt).collect();
        assert_eq!(attempts, vec![1, 2, 1, 2, 2, 2, 1]);

        // Filters, exactly; a NUL in one matches nothing but still moves on.
        let everything = read_all(&store, 0, &all()).await;
        assert_eq!(everything.len(), 2 + 2 + 5 + 7);
        assert_increasing(&everything);
        let last = everything.last().expect("events").id;
        let only_a = read_all(
            &store,
            0,
            &EventFilter {
                job_id: Some(ida),
                ..EventFilter::default()
            },
        )
        .await;
        assert_eq!(only_a.len(), 6);
        assert!(only_a.iter().all(|e| e.job_id == ida));
        for filter in [
            EventFilter {
                queue: Some("Q".into()),
                ..EventFilter::default()
            },
            EventFilter {
                job: Some("mail\0".into()),
                ..EventFilter::default()
            },
            EventFilter {
                queue: Some("q".into()),
                job: Some("other".into()),
                job_id: None,
                queues: None,
            },
        ] {
            let page = store.events_read(0, &filter, 100).await.expect("read");
            assert!(page.events.is_empty(), "{filter:?}: {page:?}");
            assert_eq!(page.next_after, last, "{filter:?} moves to the end");
        }
        let both = read_all(
            &store,
            0,
            &EventFilter {
                queue: Some("q".into()),
                job: Some("mail".into()),
                job_id: Some(idb),
                queues: None,
            },
        )
        .await;
        assert_eq!(both.len(), 10);

        // Extremes: limit 0 stays; a negative id reads from the start; past the end, nothing.
        let page = store.events_read(3, &all(), 0).await.expect("read");
        assert_eq!((page.events.len(), page.next_after), (0, 3));
        let page = store.events_read(-5, &all(), 2).await.expect("read");
        assert_eq!(page.events, everything[..2].to_vec());
        assert_eq!(
            page.next_after, everything[1].id,
            "a full page stops at its last"
        );
        let page = store.events_read(i64::MAX, &all(), 10).await.expect("read");
        assert_eq!((page.events.len(), page.next_after), (0, i64::MAX));
        let page = store
            .events_read(i64::MIN, &all(), u32::MAX)
            .await
            .expect("read");
        assert_eq!(page.events, everything);
        assert_eq!(page.next_after, last);
    }

    /// A transaction that logged an event and is still open holds back everything logged
    /// after its xid; when it commits, it all comes, and a reader that polled throughout got
    /// every event once, ids increasing. `low_xid_first`: the open transaction writes its
    /// event before the others (lower xid, lower sequence value); otherwise it takes its xid
    /// first but writes its event after the others committed theirs (lower xid, higher
    /// sequence value).
    async fn open_transaction_holds_back_the_log(low_xid_first: bool, commit: bool) {
        let schema = TestSchema::new();
        let store = Arc::new(schema.store().await);
        let others: Vec<PostgresStore> = vec![schema.store().await, schema.store().await];

        // Settled before anything else happens.
        insert(&store, vec![NewJob::new("before", json!(0)).queue("p")]).await;
        let before = wait_for(store.as_ref(), 0, &all(), 1).await;

        // The poller: resumes from its last id, collects everything it is given.
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let store = store.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut after = 0;
                let mut seen: Vec<JobEvent> = Vec::new();
                loop {
                    let done = stop.load(Ordering::SeqCst);
                    let page = store.events_read(after, &all(), 5).await.expect("poll");
                    assert!(page.next_after >= after);
                    for event in &page.events {
                        assert!(event.id > after, "an id at or below the cursor");
                    }
                    after = page.next_after;
                    let full = page.events.len() == 5;
                    seen.extend(page.events);
                    if done && !full {
                        return seen;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        };

        let mut app = app_client(&schema.url).await;
        let tx = app.transaction().await.expect("begin");
        let held = NewJob::new("held", json!(0)).queue("p");
        let held_id = held.id;
        if low_xid_first {
            store
                .enqueue_in(&tx, vec![held.clone()], now())
                .await
                .expect("enqueue in the open transaction");
        } else {
            tx.query_one("SELECT pg_current_xact_id()::text", &[])
                .await
                .expect("take an xid");
        }

        // Many events from other "processes", concurrently, all with higher xids.
        let mut writers = Vec::new();
        for (n, other) in others.iter().enumerate() {
            let other = other.clone();
            writers.push(tokio::spawn(async move {
                for round in 0..10 {
                    let jobs = (0..3)
                        .map(|k| NewJob::new("after", json!([n, round, k])).queue("p"))
                        .collect();
                    other.job_insert_many(jobs, now()).await.expect("insert");
                }
            }));
        }
        for writer in writers {
            writer.await.expect("writer");
        }
        if !low_xid_first {
            store
                .enqueue_in(&tx, vec![held.clone()], now())
                .await
                .expect("enqueue after the others");
        }
        // Committed, but not settled: nothing past the open transaction is readable.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let page = store.events_read(0, &all(), 1000).await.expect("read");
        assert_eq!(
            page.events, before,
            "events past an open transaction were returned"
        );
        assert_eq!(page.next_after, before[0].id);
        assert_eq!(store.events_last_id().await.expect("last"), before[0].id);

        if commit {
            tx.commit().await.expect("commit");
        } else {
            tx.rollback().await.expect("rollback");
        }
        let expected = 1 + 60 + usize::from(commit);
        let events = wait_for(store.as_ref(), 0, &all(), expected).await;
        assert_increasing(&events);
        let held_events: Vec<&JobEvent> = events.iter().filter(|e| e.job_id == held_id).collect();
        if commit {
            // The lower xid comes first in the log, whenever its row was written.
            assert_eq!(held_events.len(), 1);
            assert_eq!(events[1].job_id, held_id, "{events:#?}");
        } else {
            assert!(held_events.is_empty(), "a rolled-back event appeared");
        }
        stop.store(true, Ordering::SeqCst);
        let seen = poller.await.expect("poller");
        assert_eq!(seen, events, "the poller got every event once, in order");
        let unique: HashSet<i64> = seen.iter().map(|e| e.id).collect();
        assert_eq!(unique.len(), seen.len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_transaction_with_the_lowest_xid_holds_back_the_log() {
        open_transaction_holds_back_the_log(true, true).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transaction_logging_after_others_with_a_lower_xid_comes_first() {
        open_transaction_holds_back_the_log(false, true).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rolled_back_transaction_logs_nothing_and_the_rest_flows() {
        open_transaction_holds_back_the_log(true, false).await;
    }

    /// An event written through one store (process) is returned by another after a `Logged`
    /// hint reaches it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn other_stores_hear_of_new_events_and_read_them() {
        let schema = TestSchema::new();
        let reader = schema.store().await;
        let writer = schema.store().await;
        let start = reader.events_last_id().await.expect("last id");
        let mut hints = reader.subscribe();
        let job = NewJob::new("ping", json!({})).queue("hints");
        let id = job.id;
        writer
            .job_insert_many(vec![job], now())
            .await
            .expect("insert");
        let deadline = Instant::now() + DEADLINE;
        loop {
            let hint = tokio::time::timeout_at(deadline, hints.recv())
                .await
                .expect("a Logged hint within the deadline")
                .expect("hints flow");
            if hint == StoreEvent::Logged {
                break;
            }
        }
        // A hint says "look again". Another transaction on the server may still hold the
        // event back a moment, and its end is announced by nobody: the reader polls.
        let events = wait_for(&reader, start, &all(), 1).await;
        assert_eq!((events[0].job_id, events[0].kind), (id, EventKind::Created));
    }

    /// Pruning deletes the old among the oldest `limit` entries, never the newest entry; a
    /// reader resuming from a pruned id gets every event still kept; ids are never reused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prune_oldest_first_within_the_limit_and_ids_are_never_reused() {
        let schema = TestSchema::new();
        let store = schema.store().await;
        let t0 = now();
        let old = t0 - chrono::Duration::hours(2);
        // Three transactions of old events (2 each), then one of new ones.
        for n in 0..3 {
            store
                .job_insert_many(
                    vec![
                        NewJob::new("old", json!([n, 0])).queue("r"),
                        NewJob::new("old", json!([n, 1])).queue("r"),
                    ],
                    old,
                )
                .await
                .expect("insert old");
        }
        store
            .job_insert_many(vec![NewJob::new("new", json!(0)).queue("r")], t0)
            .await
            .expect("insert new");
        let events = wait_for(&store, 0, &all(), 7).await;
        let cut = t0 - chrono::Duration::hours(1);

        assert_eq!(store.events_prune(cut, 0).await.expect("prune 0"), 0);
        assert_eq!(store.events_prune(cut, 3).await.expect("prune"), 3);
        let kept = read_all(&store, 0, &all()).await;
        assert_eq!(kept, events[3..].to_vec(), "the oldest three went first");
        // Resuming from a pruned id, and from the start, returns everything kept after it.
        assert_eq!(
            read_all(&store, events[1].id, &all()).await,
            events[3..].to_vec()
        );
        assert_eq!(
            read_all(&store, events[2].id, &all()).await,
            events[3..].to_vec()
        );
        assert_eq!(
            read_all(&store, events[3].id, &all()).await,
            events[4..].to_vec()
        );

        assert_eq!(store.events_prune(cut, 100).await.expect("prune"), 3);
        assert_eq!(read_all(&store, 0, &all()).await, events[6..].to_vec());
        assert_eq!(
            read_all(&store, events[0].id, &all()).await,
            events[6..].to_vec()
        );
        // Everything is old with a cut-off in the future: the newest entry stays all the same.
        let later = t0 + chrono::Duration::hours(1);
        assert_eq!(store.events_prune(later, 100).await.expect("prune"), 0);
        assert_eq!(read_all(&store, 0, &all()).await, events[6..].to_vec());
        let last = events[6].id;
        assert_eq!(store.events_last_id().await.expect("last id"), last);
        let page = store.events_read(0, &all(), 10).await.expect("read");
        assert_eq!(page.next_after, last, "the end of the log survives pruning");

        store
            .job_insert_many(vec![NewJob::new("newer", json!(0)).queue("r")], now())
            .await
            .expect("insert");
        let newer = wait_for(&store, last, &all(), 1).await;
        assert!(
            newer[0].id > last,
            "an id was reused: {newer:?} after {last}"
        );
        assert_eq!(read_all(&store, 0, &all()).await[1..], newer[..]);
        // Now the former newest goes; the places of pruned transactions go with it.
        assert_eq!(store.events_prune(later, 100).await.expect("prune"), 1);
        assert_eq!(read_all(&store, 0, &all()).await, newer);
        assert_eq!(read_all(&store, events[6].id, &all()).await, newer);
    }

    /// A unit of work logs its operations' rows in their order, or (failing part-way) nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unit_of_work_logs_all_or_nothing() {
        let schema = TestSchema::new();
        let store = schema.store().await;
        let first = NewJob::new("u", json!(1)).queue("u");
        let first_id = first.id;
        insert(&store, vec![first]).await;
        let leased = lease(&store, "u", 1, now()).await;
        let mark = wait_for(&store, 0, &all(), 2).await[1].id;

        // The completion is fine, the second insert reuses an id: the whole unit is undone.
        let mut clash = NewJob::new("u", json!(2)).queue("u");
        clash.id = first_id;
        let fresh = NewJob::new("u", json!(3)).queue("u");
        let answer = store
            .write_unit(
                vec![
                    WriteOp::Complete(vec![Completion {
                        id: first_id,
                        lease_token: leased[0].lease_token,
                        result: None,
                    }]),
                    WriteOp::Insert(vec![fresh.clone()]),
                    WriteOp::Insert(vec![clash]),
                ],
                now(),
            )
            .await;
        assert!(matches!(answer, Err(StoreError::Conflict(_))), "{answer:?}");
        // A later change is readable, and nothing of the unit came before it.
        let marker = NewJob::new("marker", json!(0)).queue("u");
        let marker_id = marker.id;
        insert(&store, vec![marker]).await;
        let after = wait_for(&store, mark, &all(), 1).await;
        assert_eq!(kinds(&after), vec![(marker_id, EventKind::Created)]);

        let mark = after[0].id;
        store
            .write_unit(
                vec![
                    WriteOp::Complete(vec![Completion {
                        id: first_id,
                        lease_token: leased[0].lease_token,
                        result: None,
                    }]),
                    WriteOp::Insert(vec![fresh.clone()]),
                    WriteOp::Cancel(fresh.id),
                ],
                now(),
            )
            .await
            .expect("the unit commits");
        let unit = wait_for(&store, mark, &all(), 3).await;
        assert_eq!(
            kinds(&unit),
            vec![
                (first_id, EventKind::Succeeded),
                (fresh.id, EventKind::Created),
                (fresh.id, EventKind::Cancelled),
            ]
        );
    }
}
