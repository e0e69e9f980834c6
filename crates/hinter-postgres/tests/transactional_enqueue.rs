//! Transactional enqueue: jobs written inside the application's own transaction exist, and
//! wake workers, if and only if that transaction commits. Needs `HINTER_TEST_DATABASE_URL`
//! (see build.rs).

mod common;

#[cfg(not(hinter_test_database))]
#[test]
fn transactional_enqueue_tests_need_a_database() {
    common::no_database("transactional enqueue tests");
}

#[cfg(hinter_test_database)]
mod with_database {
    use super::common::TestSchema;
    use chrono::Utc;
    use hinter_core::store::{Completion, LeaseRequest};
    use hinter_core::{Inserted, JobState, NewJob, Store, StoreError, StoreEvent};
    use hinter_postgres::{enqueue_in, PostgresStore};
    use serde_json::json;
    use std::time::Duration;
    use tokio::sync::broadcast;
    use tokio::time::Instant;
    use tokio_postgres::{Client, NoTls};

    /// Longest any awaited condition may take.
    const DEADLINE: Duration = Duration::from_secs(20);

    /// The application's own connection.
    async fn app_client(url: &str) -> Client {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .expect("connect the application");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    /// An application table in the test schema (dropped with it).
    async fn create_orders(client: &Client, schema: &str) {
        client
            .batch_execute(&format!(
                "CREATE TABLE \"{schema}\".orders (id BIGINT PRIMARY KEY, item TEXT NOT NULL)"
            ))
            .await
            .expect("create the orders table");
    }

    async fn orders(client: &Client, schema: &str) -> Vec<i64> {
        client
            .query(
                &format!("SELECT id FROM \"{schema}\".orders ORDER BY id"),
                &[],
            )
            .await
            .expect("read orders")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Publishes a marker event from `store` and collects every event `rx` receives until the
    /// marker arrives. Notifications reach a listener in commit order, so anything committed
    /// before the marker (say, by a transaction that has not committed yet) shows up here.
    async fn events_until_marker(
        store: &PostgresStore,
        rx: &mut broadcast::Receiver<StoreEvent>,
    ) -> Vec<StoreEvent> {
        let marker = format!("marker-{:08x}", rand::random::<u32>());
        store
            .queue_set_paused(&marker, false)
            .await
            .expect("publish the marker");
        let deadline = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        loop {
            let event = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .expect("the marker event arrives")
                .expect("events flow");
            if event
                == (StoreEvent::JobsAvailable {
                    queue: marker.clone(),
                })
            {
                return seen;
            }
            seen.push(event);
        }
    }

    fn wakes(events: &[StoreEvent], queue: &str) -> bool {
        events
            .iter()
            .any(|e| matches!(e, StoreEvent::JobsAvailable { queue: q } if q == queue))
    }

    fn only(mut inserted: Vec<Inserted>) -> Inserted {
        assert_eq!(inserted.len(), 1);
        inserted.remove(0)
    }

    #[tokio::test]
    async fn rollback_leaves_no_job_and_no_wake_up() {
        let schema = TestSchema::new();
        let store = schema.store().await;
        let mut rx = store.subscribe();
        let mut app = app_client(&schema.url).await;

        let job = NewJob::new("email", json!({"to": "a@example.com"})).queue("mail");
        let id = job.id;
        let tx = app.transaction().await.expect("begin");
        let inserted = only(
            enqueue_in(&tx, Some(&schema.name), vec![job], Utc::now())
                .await
                .expect("enqueue in the transaction"),
        );
        assert!(!inserted.duplicate);
        assert_eq!(inserted.job.id, id);
        assert_eq!(inserted.job.state, JobState::Queued);
        // The transaction sees its own job; nobody else does yet.
        let own: i64 = tx
            .query_one(
                &format!(
                    "SELECT count(*) FROM \"{}\".jobs WHERE id = $1",
                    schema.name
                ),
                &[&id],
            )
            .await
            .expect("count")
            .get(0);
        assert_eq!(own, 1);
        assert_eq!(store.job_get(id).await.expect("job_get"), None);
        tx.rollback().await.expect("rollback");

        assert_eq!(store.job_get(id).await.expect("job_get"), None);
        let events = events_until_marker(&store, &mut rx).await;
        assert!(
            !wakes(&events, "mail"),
            "a rolled-back enqueue woke workers: {events:?}"
        );
        let leased = store
            .job_lease(LeaseRequest {
                jobs: Vec::new(),
                queues: vec!["mail".into()],
                worker_id: "w".into(),
                max: 10,
                lease_for: Duration::from_secs(30),
                now: Utc::now(),
            })
            .await
            .expect("job_lease");
        assert!(leased.is_empty(), "leased a rolled-back job: {leased:?}");

        // Dropping a transaction without committing is a rollback too.
        let job = NewJob::new("email", json!(2)).queue("mail");
        let id = job.id;
        {
            let tx = app.transaction().await.expect("begin");
            store
                .enqueue_in(&tx, vec![job], Utc::now())
                .await
                .expect("enqueue");
        }
        assert_eq!(store.job_get(id).await.expect("job_get"), None);
        let events = events_until_marker(&store, &mut rx).await;
        assert!(!wakes(&events, "mail"), "{events:?}");
    }

    #[tokio::test]
    async fn commit_makes_the_job_visible_wakes_workers_and_it_runs() {
        let schema = TestSchema::new();
        // Another "process" on the same database: its own pool and listener.
        let worker_store = schema.store().await;
        let mut rx = worker_store.subscribe();
        let mut app = app_client(&schema.url).await;

        let job = NewJob::new("receipt", json!({"order": 7}))
            .queue("billing")
            .max_attempts(5);
        let id = job.id;
        let tx = app.transaction().await.expect("begin");
        enqueue_in(&tx, Some(&schema.name), vec![job], Utc::now())
            .await
            .expect("enqueue");
        // Not committed: invisible, and no wake-up.
        assert_eq!(worker_store.job_get(id).await.expect("job_get"), None);
        let events = events_until_marker(&worker_store, &mut rx).await;
        assert!(
            !wakes(&events, "billing"),
            "woken before commit: {events:?}"
        );

        tx.commit().await.expect("commit");
        let deadline = Instant::now() + DEADLINE;
        loop {
            let event = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .expect("a JobsAvailable event after the commit")
                .expect("events flow");
            if event
                == (StoreEvent::JobsAvailable {
                    queue: "billing".into(),
                })
            {
                break;
            }
        }
        let job = worker_store
            .job_get(id)
            .await
            .expect("job_get")
            .expect("the committed job");
        assert_eq!(job.state, JobState::Queued);
        assert_eq!(job.max_attempts, 5);

        let leased = worker_store
            .job_lease(LeaseRequest {
                jobs: Vec::new(),
                queues: vec!["billing".into()],
                worker_id: "w1".into(),
                max: 10,
                lease_for: Duration::from_secs(30),
                now: Utc::now(),
            })
            .await
            .expect("job_lease");
        assert_eq!(leased.len(), 1);
        assert_eq!(leased[0].id, id);
        let done = worker_store
            .job_complete_many(
                vec![Completion {
                    id,
                    lease_token: leased[0].lease_token,
                    result: Some(json!("sent")),
                }],
                Utc::now(),
            )
            .await
            .expect("complete");
        assert_eq!(
            done[0].as_ref().expect("completed").state,
            JobState::Succeeded
        );
    }

    #[tokio::test]
    async fn scheduled_jobs_and_batches_commit_as_one() {
        let schema = TestSchema::new();
        let store = schema.store().await;
        let mut app = app_client(&schema.url).await;
        let later = Utc::now() + chrono::Duration::hours(1);
        let jobs = vec![
            NewJob::new("a", json!(1)).ordering_key("k"),
            NewJob::new("a", json!(2)).ordering_key("k"),
            NewJob::new("b", json!(3)).run_at(later),
        ];
        let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
        let tx = app.transaction().await.expect("begin");
        let inserted = store
            .enqueue_in(&tx, jobs, Utc::now())
            .await
            .expect("enqueue");
        tx.commit().await.expect("commit");
        assert_eq!(
            inserted.iter().map(|i| i.job.id).collect::<Vec<_>>(),
            ids,
            "answers in request order"
        );
        assert!(inserted[0].job.seq < inserted[1].job.seq);
        assert_eq!(inserted[2].job.state, JobState::Scheduled);
        for (i, id) in ids.iter().enumerate() {
            let stored = store.job_get(*id).await.expect("job_get").expect("stored");
            assert_eq!(stored, inserted[i].job, "the answer is the stored job");
        }
    }

    #[tokio::test]
    async fn a_duplicate_unique_key_returns_the_existing_job() {
        let schema = TestSchema::new();
        let store = schema.store().await;
        let mut app = app_client(&schema.url).await;

        // A committed job with the key.
        let first = NewJob::new("sync", json!(1)).unique("account-1", None);
        let first_id = first.id;
        store
            .job_insert_many(vec![first], Utc::now())
            .await
            .expect("insert");
        let tx = app.transaction().await.expect("begin");
        let dup = only(
            enqueue_in(
                &tx,
                Some(&schema.name),
                vec![NewJob::new("sync", json!(2)).unique("account-1", None)],
                Utc::now(),
            )
            .await
            .expect("enqueue"),
        );
        assert!(dup.duplicate);
        assert_eq!(dup.job.id, first_id);

        // A job written earlier in the same, uncommitted transaction.
        let own = NewJob::new("sync", json!(3)).unique("account-2", None);
        let own_id = own.id;
        let answer = only(
            enqueue_in(&tx, Some(&schema.name), vec![own], Utc::now())
                .await
                .expect("enqueue"),
        );
        assert!(!answer.duplicate);
        let again = only(
            enqueue_in(
                &tx,
                Some(&schema.name),
                vec![NewJob::new("sync", json!(4)).unique("account-2", None)],
                Utc::now(),
            )
            .await
            .expect("enqueue"),
        );
        assert!(again.duplicate);
        assert_eq!(again.job.id, own_id);
        tx.commit().await.expect("commit");

        let all = store
            .job_list(hinter_core::store::JobFilter {
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("job_list");
        let ids: Vec<_> = all.iter().map(|j| j.id).collect();
        assert_eq!(ids, vec![first_id, own_id]);
    }

    /// The application's transaction holds the key's advisory lock until it ends, so an
    /// enqueue of the same key elsewhere (the HTTP API, another process) waits for its
    /// outcome and then answers with the application's job.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_concurrent_enqueue_of_the_key_waits_for_the_commit() {
        let schema = TestSchema::new();
        let app_name = format!("hinter_txtest_{:08x}", rand::random::<u32>());
        let sep = if schema.url.contains('?') { '&' } else { '?' };
        let tagged_url = format!("{}{sep}application_name={app_name}", schema.url);
        let other = PostgresStore::connect(&tagged_url, schema.options())
            .await
            .expect("connect");
        let mut app = app_client(&schema.url).await;
        let observer = app_client(&schema.url).await;

        let tx = app.transaction().await.expect("begin");
        let mine = NewJob::new("sync", json!("app")).unique("account-9", None);
        let mine_id = mine.id;
        enqueue_in(&tx, Some(&schema.name), vec![mine], Utc::now())
            .await
            .expect("enqueue");

        let racer = tokio::spawn({
            let other = other.clone();
            async move {
                other
                    .job_insert_many(
                        vec![NewJob::new("sync", json!("api")).unique("account-9", None)],
                        Utc::now(),
                    )
                    .await
            }
        });
        // Wait until the other insert is blocked on the advisory lock.
        let deadline = Instant::now() + DEADLINE;
        loop {
            let waiting: i64 = observer
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE application_name = $1 AND wait_event_type = 'Lock'
                       AND wait_event = 'advisory'",
                    &[&app_name],
                )
                .await
                .expect("pg_stat_activity")
                .get(0);
            if waiting > 0 {
                break;
            }
            assert!(!racer.is_finished(), "the concurrent insert did not wait");
            assert!(
                Instant::now() < deadline,
                "the concurrent insert never blocked"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tx.commit().await.expect("commit");
        let answer = only(
            racer
                .await
                .expect("the racer")
                .expect("the concurrent insert"),
        );
        assert!(answer.duplicate, "the key was enqueued twice");
        assert_eq!(answer.job.id, mine_id);
    }

    #[tokio::test]
    async fn the_application_write_and_the_job_commit_together() {
        let schema = TestSchema::new();
        let store = schema.store().await;
        let mut app = app_client(&schema.url).await;
        create_orders(&app, &schema.name).await;
        let s = &schema.name;

        // Commit: the order and its job.
        let job = NewJob::new("ship", json!({"order": 1}));
        let shipped = job.id;
        let tx = app.transaction().await.expect("begin");
        // The application's own search_path, for its unqualified names.
        tx.batch_execute(&format!("SET LOCAL search_path TO \"{s}\", public"))
            .await
            .expect("set search_path");
        let before: String = tx
            .query_one("SHOW search_path", &[])
            .await
            .expect("show")
            .get(0);
        tx.execute("INSERT INTO orders VALUES (1, 'book')", &[])
            .await
            .expect("insert order 1");
        store
            .enqueue_in(&tx, vec![job], Utc::now())
            .await
            .expect("enqueue");
        let after: String = tx
            .query_one("SHOW search_path", &[])
            .await
            .expect("show")
            .get(0);
        assert_eq!(after, before, "enqueue_in restores the search_path");
        tx.execute("INSERT INTO orders VALUES (2, 'pen')", &[])
            .await
            .expect("the application's unqualified names still resolve");
        tx.commit().await.expect("commit");
        assert_eq!(orders(&app, s).await, vec![1, 2]);
        assert!(store.job_get(shipped).await.expect("job_get").is_some());

        // Rollback: neither.
        let job = NewJob::new("ship", json!({"order": 3}));
        let dropped = job.id;
        let tx = app.transaction().await.expect("begin");
        tx.execute(
            &format!("INSERT INTO \"{s}\".orders VALUES (3, 'ink')"),
            &[],
        )
        .await
        .expect("insert order 3");
        store
            .enqueue_in(&tx, vec![job], Utc::now())
            .await
            .expect("enqueue");
        tx.rollback().await.expect("rollback");
        assert_eq!(orders(&app, s).await, vec![1, 2]);
        assert_eq!(store.job_get(dropped).await.expect("job_get"), None);

        // The application's write fails after the enqueue: the transaction cannot commit,
        // and the job goes with it.
        let job = NewJob::new("ship", json!({"order": 1}));
        let failed = job.id;
        let tx = app.transaction().await.expect("begin");
        store
            .enqueue_in(&tx, vec![job], Utc::now())
            .await
            .expect("enqueue");
        let duplicate_order = tx
            .execute(
                &format!("INSERT INTO \"{s}\".orders VALUES (1, 'again')"),
                &[],
            )
            .await;
        assert!(duplicate_order.is_err(), "order 1 exists");
        // PostgreSQL answers COMMIT of a failed transaction with a ROLLBACK.
        let _ = tx.commit().await;
        assert_eq!(store.job_get(failed).await.expect("job_get"), None);
        assert_eq!(orders(&app, s).await, vec![1, 2]);
    }

    #[tokio::test]
    async fn a_missing_schema_is_a_clear_error_and_the_transaction_goes_on() {
        let schema = TestSchema::new();
        let store = schema.store().await;
        let mut app = app_client(&schema.url).await;
        create_orders(&app, &schema.name).await;
        let tx = app.transaction().await.expect("begin");
        let missing = format!("{}_nothere", schema.name);
        let err = enqueue_in(
            &tx,
            Some(&missing),
            vec![NewJob::new("x", json!(null))],
            Utc::now(),
        )
        .await
        .expect_err("no hinter tables there");
        match &err {
            StoreError::Unavailable(m) => {
                assert!(m.contains(&missing) && m.contains("hinter migrate"), "{m}")
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        let err = enqueue_in(
            &tx,
            Some("Bad Name"),
            vec![NewJob::new("x", json!(null))],
            Utc::now(),
        )
        .await
        .expect_err("an invalid schema name");
        assert!(matches!(err, StoreError::Unavailable(m) if m.contains("schema name")));
        // The transaction is still usable.
        tx.execute(
            &format!("INSERT INTO \"{}\".orders VALUES (5, 'ok')", schema.name),
            &[],
        )
        .await
        .expect("the transaction goes on");
        tx.commit().await.expect("commit");
        assert_eq!(orders(&app, &schema.name).await, vec![5]);
        // Nothing to enqueue: no statement at all.
        let tx = app.transaction().await.expect("begin");
        assert!(store
            .enqueue_in(&tx, Vec::new(), Utc::now())
            .await
            .expect("empty")
            .is_empty());
    }

    /// Applications that pool with deadpool pass their transaction as it is (it derefs to a
    /// `tokio_postgres::Transaction`).
    #[tokio::test]
    async fn a_deadpool_transaction_works_too() {
        let schema = TestSchema::new();
        let store = schema.store().await;
        let config: tokio_postgres::Config = schema.url.parse().expect("url");
        let manager = deadpool_postgres::Manager::new(config, NoTls);
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(2)
            .build()
            .expect("pool");
        let mut client = pool.get().await.expect("a pooled connection");
        let tx = client.transaction().await.expect("begin");
        let job = NewJob::new("pooled", json!(1));
        let id = job.id;
        store
            .enqueue_in(&tx, vec![job], Utc::now())
            .await
            .expect("enqueue");
        tx.commit().await.expect("commit");
        assert!(store.job_get(id).await.expect("job_get").is_some());
    }
}
