//! Many stores on one database, as many processes on many machines would be: each
//! `PostgresStore` has its own pool and its own event listener. Needs
//! `HINTER_TEST_DATABASE_URL` (see build.rs), except the unreachable-database test.

mod common;

use hinter_core::StoreError;
use hinter_postgres::{PostgresOptions, PostgresStore};
use std::time::Duration;

#[tokio::test]
async fn unreachable_database_is_a_clear_error() {
    let options = PostgresOptions {
        connect_timeout: Duration::from_secs(3),
        ..PostgresOptions::default()
    };
    let answer =
        PostgresStore::connect("postgres://hinter:s3cretpw@127.0.0.1:1/nowhere", options).await;
    match answer {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains("127.0.0.1:1"), "names the host: {message}");
            assert!(
                !message.contains("s3cretpw"),
                "hides the password: {message}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let bad = PostgresStore::connect(
        "postgres://h/db",
        PostgresOptions {
            schema: Some("Not Valid".into()),
            ..PostgresOptions::default()
        },
    )
    .await;
    assert!(matches!(bad, Err(StoreError::Unavailable(m)) if m.contains("schema name")));
}

#[cfg(not(hinter_test_database))]
#[test]
fn multi_store_tests_need_a_database() {
    common::no_database("multi-store tests");
}

#[cfg(hinter_test_database)]
mod with_database {
    use super::common::TestSchema;
    use chrono::Utc;
    use hinter_core::store::{Completion, JobFilter, LeaseRequest};
    use hinter_core::{JobState, LeasedJob, NewJob, Store, StoreError, StoreEvent};
    use hinter_postgres::PostgresStore;
    use serde_json::json;
    use std::collections::{BTreeSet, HashMap};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tokio::sync::broadcast;
    use uuid::Uuid;

    const LEASE: Duration = Duration::from_secs(60);

    async fn lease(store: &PostgresStore, worker: &str, max: u32) -> Vec<LeasedJob> {
        store
            .job_lease(LeaseRequest {
                jobs: Vec::new(),
                queues: vec!["a".into(), "b".into()],
                worker_id: worker.into(),
                max,
                lease_for: LEASE,
                now: Utc::now(),
            })
            .await
            .expect("job_lease")
    }

    async fn complete(store: &PostgresStore, leased: &LeasedJob) {
        let answers = store
            .job_complete_many(
                vec![Completion {
                    id: leased.id,
                    lease_token: leased.lease_token,
                    result: Some(json!({"by": "test"})),
                }],
                Utc::now(),
            )
            .await
            .expect("job_complete_many");
        assert_eq!(answers.len(), 1);
        answers
            .into_iter()
            .next()
            .expect("an answer")
            .expect("a worker completes its own lease");
    }

    /// What the workers saw: who runs now, and in which order ordered jobs started.
    #[derive(Default)]
    struct Seen {
        leased: BTreeSet<Uuid>,
        running_report: Option<Uuid>,
        running_key: HashMap<String, Uuid>,
        started: HashMap<String, Vec<Uuid>>,
    }

    fn key_of(job: &NewJob) -> Option<String> {
        job.ordering_key
            .as_ref()
            .map(|k| format!("{}/{k}", job.queue))
    }

    /// Four stores (four pools: four "processes") with three workers each lease and complete
    /// 400 jobs at once: no job is leased twice, a singleton name never runs twice at once,
    /// and jobs of an ordering key run one at a time in enqueue order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn separate_stores_lease_exclusively_and_keep_the_guards() {
        let schema = TestSchema::new();
        let mut stores = Vec::new();
        for _ in 0..4 {
            stores.push(schema.store().await);
        }
        let mut batch = Vec::new();
        for i in 0..400 {
            let queue = if i % 2 == 0 { "a" } else { "b" };
            let new = match i % 5 {
                0 => NewJob::new("report", json!(i)).queue(queue).singleton(true),
                1 => NewJob::new("ordered", json!(i))
                    .queue(queue)
                    .ordering_key(if i % 3 == 0 { "K1" } else { "K2" }),
                2 => NewJob::new("urgent", json!(i)).queue(queue).priority(5),
                _ => NewJob::new("free", json!(i)).queue(queue),
            };
            batch.push(new);
        }
        let mut expected: HashMap<String, Vec<Uuid>> = HashMap::new();
        for new in &batch {
            if let Some(key) = key_of(new) {
                expected.entry(key).or_default().push(new.id);
            }
        }
        let keys: HashMap<Uuid, String> = batch
            .iter()
            .filter_map(|n| key_of(n).map(|k| (n.id, k)))
            .collect();
        let all: BTreeSet<Uuid> = batch.iter().map(|n| n.id).collect();
        // Inserted from two stores, in two halves, one after the other.
        let second = batch.split_off(200);
        stores[0]
            .job_insert_many(batch, Utc::now())
            .await
            .expect("insert");
        stores[1]
            .job_insert_many(second, Utc::now())
            .await
            .expect("insert");

        let seen = Arc::new(Mutex::new(Seen::default()));
        let keys = Arc::new(keys);
        let mut workers = tokio::task::JoinSet::new();
        for (s, store) in stores.iter().enumerate() {
            for w in 0..3 {
                let store = store.clone();
                let seen = seen.clone();
                let keys = keys.clone();
                workers.spawn(async move {
                    let worker = format!("store-{s}-worker-{w}");
                    let mut idle = 0;
                    while idle < 50 {
                        let leased = lease(&store, &worker, 1 + (w as u32 % 3)).await;
                        if leased.is_empty() {
                            idle += 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        }
                        idle = 0;
                        {
                            let mut seen = seen.lock().expect("lock");
                            for l in &leased {
                                assert!(seen.leased.insert(l.id), "job {} leased twice", l.id);
                                assert_eq!(l.attempt, 1);
                                if l.job == "report" {
                                    assert_eq!(
                                        seen.running_report, None,
                                        "two singleton reports running at once"
                                    );
                                    seen.running_report = Some(l.id);
                                }
                                if let Some(key) = keys.get(&l.id) {
                                    let before = seen.running_key.insert(key.clone(), l.id);
                                    assert_eq!(before, None, "two jobs of key {key} running");
                                    seen.started.entry(key.clone()).or_default().push(l.id);
                                }
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        for l in &leased {
                            {
                                let mut seen = seen.lock().expect("lock");
                                if l.job == "report" {
                                    seen.running_report = None;
                                }
                                if let Some(key) = keys.get(&l.id) {
                                    seen.running_key.remove(key);
                                }
                            }
                            complete(&store, l).await;
                        }
                    }
                });
            }
        }
        while let Some(done) = workers.join_next().await {
            done.expect("worker task");
        }
        {
            let seen = seen.lock().expect("lock");
            assert_eq!(seen.leased, all, "every job leased exactly once");
            assert_eq!(
                seen.started, expected,
                "ordered jobs start in enqueue order"
            );
        }
        let done = stores[2]
            .job_list(JobFilter {
                state: Some(JobState::Succeeded),
                limit: 1000,
                ..JobFilter::default()
            })
            .await
            .expect("job_list");
        assert_eq!(done.len(), 400);
        assert!(done.iter().all(|j| j.attempt == 1));
        drop(stores);
    }

    async fn expect_event(events: &mut broadcast::Receiver<StoreEvent>, wanted: &StoreEvent) {
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(event) if &event == wanted => return,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => panic!("event channel closed"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .unwrap_or_else(|_| panic!("no {wanted:?} within 5 s"));
    }

    /// A store opens `min_connections` of its pool at connect, in the background, and none
    /// ahead when told none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_opens_its_minimum_connections_ahead() {
        let schema = TestSchema::new();
        let connect = |min_connections| {
            let options = hinter_postgres::PostgresOptions {
                min_connections,
                ..schema.options()
            };
            PostgresStore::connect(&schema.url, options)
        };
        // The connections a store with `min_connections` holds open once they are up.
        let opened = async |min_connections| {
            let store = connect(min_connections).await.expect("connect");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let want = min_connections.min(schema.options().max_connections);
            while store.pooled_connections() < want && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            store.pooled_connections()
        };
        // At least those: connect's own reads (the database's clock) may take one more
        // while they are being opened.
        let five = opened(5).await;
        assert!((5..=6).contains(&five), "{five} connections opened for 5");
        // More than the pool may hold: the pool's size.
        assert_eq!(opened(usize::MAX).await, schema.options().max_connections);
        let on_demand = connect(0).await.expect("connect");
        // What connecting itself used (measuring the database's clock): one.
        assert!(on_demand.pooled_connections() <= 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(on_demand.pooled_connections() <= 1);
    }

    /// A store hands its own events to its subscribers as its write returns (a worker in
    /// the enqueuing process wakes without a round trip through the database), and once
    /// only: its listener skips the notification of the same write. Another store hears it
    /// through the database.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn own_events_arrive_at_once_and_once() {
        let schema = TestSchema::new();
        let writer = schema.store().await;
        let other = schema.store().await;
        let mut mine = writer.subscribe();
        let mut theirs = other.subscribe();
        writer
            .job_insert_many(
                vec![NewJob::new("mail", json!({})).queue("own")],
                Utc::now(),
            )
            .await
            .expect("insert");
        let available = StoreEvent::JobsAvailable {
            queue: "own".into(),
        };
        assert_eq!(
            mine.try_recv().ok(),
            Some(available.clone()),
            "heard at once"
        );
        expect_event(&mut theirs, &available).await;
        // A marker from the other store: the writer's listener gets notifications in commit
        // order, so a copy of the first would arrive before the marker does.
        other
            .job_insert_many(
                vec![NewJob::new("mail", json!({})).queue("marker")],
                Utc::now(),
            )
            .await
            .expect("insert the marker");
        let marker = StoreEvent::JobsAvailable {
            queue: "marker".into(),
        };
        let mut heard = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match mine.recv().await {
                    Ok(event) if event == marker => return,
                    Ok(event) => heard.push(event),
                    Err(e) => panic!("subscriber: {e}"),
                }
            }
        })
        .await
        .expect("the marker arrives");
        assert!(
            !heard.contains(&available),
            "the writer heard its own event twice: {heard:?}"
        );
    }

    /// An event published by one store reaches the subscribers of another (and its own).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_reach_other_stores() {
        let schema = TestSchema::new();
        let listener = schema.store().await;
        let writer = schema.store().await;
        let mut theirs = listener.subscribe();
        let mut mine = writer.subscribe();

        let job = NewJob::new("mail", json!({})).queue("x");
        let id = job.id;
        writer
            .job_insert_many(vec![job], Utc::now())
            .await
            .expect("insert");
        let available = StoreEvent::JobsAvailable { queue: "x".into() };
        expect_event(&mut theirs, &available).await;
        expect_event(&mut mine, &available).await;

        let leased = writer
            .job_lease(LeaseRequest {
                jobs: Vec::new(),
                queues: vec!["x".into()],
                worker_id: "w".into(),
                max: 1,
                lease_for: LEASE,
                now: Utc::now(),
            })
            .await
            .expect("lease");
        assert_eq!(leased.len(), 1);
        writer
            .job_cancel(id, Utc::now())
            .await
            .expect("cancel running");
        expect_event(&mut theirs, &StoreEvent::CancelRequested { id }).await;
        complete(&writer, &leased[0]).await;
        expect_event(
            &mut theirs,
            &StoreEvent::JobFinished {
                id,
                state: JobState::Succeeded,
            },
        )
        .await;

        // A rolled-back change announces nothing: a failed batch (a taken id) sends no event.
        let again = NewJob::new("mail", json!({})).queue("never");
        let mut clash = NewJob::new("mail", json!({})).queue("never");
        clash.id = id;
        assert!(writer
            .job_insert_many(vec![again, clash], Utc::now())
            .await
            .is_err());
        writer
            .queue_set_paused("after", false)
            .await
            .expect("resume");
        let after = StoreEvent::JobsAvailable {
            queue: "after".into(),
        };
        let wait = async {
            loop {
                match theirs.recv().await {
                    Ok(event) if event == after => return,
                    Ok(StoreEvent::JobsAvailable { queue }) if queue == "never" => {
                        panic!("an event of a rolled-back insert arrived")
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => panic!("event channel closed"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("the event after the rollback");
    }

    /// Enqueues of one unique key from many stores at once insert one job; the others are
    /// answered as its duplicates.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_unique_inserts_insert_once() {
        let schema = TestSchema::new();
        let mut stores = Vec::new();
        for _ in 0..4 {
            stores.push(schema.store().await);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for store in &stores {
            for _ in 0..5 {
                let store = store.clone();
                tasks.spawn(async move {
                    let job = NewJob::new("mail", json!({})).unique("user-1", None);
                    let mut answer = store
                        .job_insert_many(vec![job], Utc::now())
                        .await
                        .expect("insert");
                    answer.pop().expect("one answer")
                });
            }
        }
        let mut answers = Vec::new();
        while let Some(answer) = tasks.join_next().await {
            answers.push(answer.expect("insert task"));
        }
        assert_eq!(answers.iter().filter(|a| !a.duplicate).count(), 1);
        let ids: BTreeSet<Uuid> = answers.iter().map(|a| a.job.id).collect();
        assert_eq!(ids.len(), 1, "every answer names the one job");
        let stored = stores[0]
            .job_list(JobFilter {
                limit: 100,
                ..JobFilter::default()
            })
            .await
            .expect("job_list");
        assert_eq!(stored.len(), 1);
    }

    /// A batch naming more unique and ordering keys than a transaction may lock one by one
    /// still inserts, recognises its duplicates, and excludes concurrent inserts of its keys.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn huge_batch_of_keyed_jobs() {
        let schema = TestSchema::new();
        let store = schema.store().await;
        let other = schema.store().await;
        let batch: Vec<NewJob> = (0..10_000)
            .map(|i| {
                NewJob::new("sync", json!(i))
                    .unique(format!("k{}", i % 9_000), None)
                    .ordering_key(format!("o{}", i % 100))
            })
            .collect();
        let racing = tokio::spawn(async move {
            let job = NewJob::new("sync", json!("racer")).unique("k5", None);
            other
                .job_insert_many(vec![job], Utc::now())
                .await
                .expect("insert one")
        });
        let answers = store
            .job_insert_many(batch, Utc::now())
            .await
            .expect("insert a huge batch");
        let racer = racing.await.expect("task").pop().expect("an answer");
        let fresh = answers.iter().filter(|a| !a.duplicate).count();
        let stored = fresh + usize::from(!racer.duplicate);
        assert_eq!(stored, 9_000, "one job per unique key");
        assert!(answers[9_000].duplicate);
        assert_eq!(answers[9_000].job.id, answers[0].job.id);
    }

    /// Candidates in different stores ask for one leadership at once: exactly one leads, and
    /// after it releases, exactly one other takes over with a higher term.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_leader_across_stores() {
        use hinter_core::Cluster;
        let schema = TestSchema::new();
        let mut stores = Vec::new();
        for _ in 0..4 {
            stores.push(schema.store().await);
        }
        let contend = |stores: &[PostgresStore], round: usize| {
            let mut tasks = tokio::task::JoinSet::new();
            for (s, store) in stores.iter().enumerate() {
                for t in 0..3 {
                    let store = store.clone();
                    tasks.spawn(async move {
                        let holder = format!("r{round}-s{s}-t{t}");
                        store
                            .leader_acquire("maintenance", &holder, LEASE, Utc::now())
                            .await
                            .expect("leader_acquire")
                    });
                }
            }
            tasks
        };
        let mut winners = Vec::new();
        let mut tasks = contend(&stores, 0);
        while let Some(won) = tasks.join_next().await {
            winners.extend(won.expect("task"));
        }
        assert_eq!(winners.len(), 1, "one leader: {winners:?}");
        let first = winners.pop().expect("a leader");
        stores[3]
            .leader_release("maintenance", &first.holder)
            .await
            .expect("release");
        let mut tasks = contend(&stores, 1);
        while let Some(won) = tasks.join_next().await {
            winners.extend(won.expect("task"));
        }
        assert_eq!(winners.len(), 1, "one successor: {winners:?}");
        assert!(winners[0].term > first.term);
    }

    /// A schema that recorded a later version before an earlier one (features merged in
    /// another order than numbered) gets the earlier one at the next start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missing_version_below_the_latest_is_applied() {
        let schema = TestSchema::new();
        PostgresStore::migrate(&schema.url, &schema.options())
            .await
            .expect("migrate");
        let (client, connection) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        let name = &schema.name;
        // As if version 5 had not been there when the later ones were applied.
        client
            .batch_execute(&format!(
                "ALTER TABLE \"{name}\".processes DROP COLUMN machine;
                 DELETE FROM \"{name}\".schema_migrations WHERE version = 5"
            ))
            .await
            .expect("undo migration 5");
        PostgresStore::migrate(&schema.url, &schema.options())
            .await
            .expect("migrate again");
        let rows = client
            .query(
                &format!("SELECT version FROM \"{name}\".schema_migrations ORDER BY version"),
                &[],
            )
            .await
            .expect("versions");
        let versions: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(versions, hinter_postgres::schema_versions());
        client
            .query(&format!("SELECT machine FROM \"{name}\".processes"), &[])
            .await
            .expect("the column is back");
    }

    /// Stores starting together migrate the schema once; a schema newer than this build is
    /// refused with a clear message.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn migrations_run_once_and_refuse_a_newer_schema() {
        let schema = TestSchema::new();
        let mut starting = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let (url, options) = (schema.url.clone(), schema.options());
            starting.spawn(async move { PostgresStore::connect(&url, options).await });
        }
        while let Some(started) = starting.join_next().await {
            started.expect("task").expect("connect while others start");
        }
        let (client, connection) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        let table = format!("\"{}\".schema_migrations", schema.name);
        let versions = client
            .query(&format!("SELECT version FROM {table}"), &[])
            .await
            .expect("read versions");
        let mut versions: Vec<i64> = versions.iter().map(|r| r.get(0)).collect();
        versions.sort();
        let all = hinter_postgres::schema_versions();
        assert_eq!(versions, all, "each migration applied once");
        let version = PostgresStore::migrate(&schema.url, &schema.options())
            .await
            .expect("migrate");
        assert_eq!(version, hinter_postgres::SCHEMA_VERSION);

        client
            .execute(&format!("INSERT INTO {table} (version) VALUES (999)"), &[])
            .await
            .expect("pretend a newer hinter migrated");
        match PostgresStore::connect(&schema.url, schema.options()).await {
            Err(StoreError::Unavailable(message)) => {
                assert!(message.contains("newer"), "{message}");
                assert!(message.contains("999"), "{message}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// When the database drops every connection (as in a restart), the store reconnects: a
    /// failed call or two at most, then operations and events work again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn store_recovers_when_its_connections_are_killed() {
        let schema = TestSchema::new();
        let app = format!("hinter_kill_{}", &schema.name["hinter_test_".len()..]);
        let sep = if schema.url.contains('?') { '&' } else { '?' };
        let url = format!("{}{sep}application_name={app}", schema.url);
        let store = PostgresStore::connect(&url, schema.options())
            .await
            .expect("connect");
        let mut events = store.subscribe();
        store.ping().await.expect("ping");

        let (admin, connection) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        let killed = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .await
            .expect("terminate");
        assert!(
            killed.len() >= 2,
            "the pool and the listener were connected"
        );

        let mut failures = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the store did not recover"
            );
            let job = NewJob::new("after-restart", json!({})).queue("r");
            match store.job_insert_many(vec![job], Utc::now()).await {
                Ok(_) => {}
                Err(StoreError::Unavailable(_)) => {
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(other) => panic!("unexpected error {other:?}"),
            }
            let wait = async {
                loop {
                    match events.recv().await {
                        Ok(StoreEvent::JobsAvailable { queue }) if queue == "r" => return,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => panic!("channel closed"),
                    }
                }
            };
            if tokio::time::timeout(Duration::from_millis(300), wait)
                .await
                .is_ok()
            {
                break;
            }
        }
        assert!(
            failures <= 8,
            "{failures} failed calls after the connections died"
        );
        store.ping().await.expect("ping after recovery");
    }

    /// A clock 30 s ahead of the real one, as on a machine whose time has drifted.
    struct Ahead;
    impl hinter_core::Clock for Ahead {
        fn now(&self) -> chrono::DateTime<Utc> {
            Utc::now() + chrono::Duration::seconds(30)
        }
    }

    /// Two processes whose clocks differ by 30 s agree on when a lease and a leadership end:
    /// every time they hand in is put on the database's clock. Without that the fast one
    /// rescues a job the other still runs and takes the leadership while it is held.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clocks_that_disagree_agree_on_leases_and_leadership() {
        use hinter_core::{Clock, Cluster};
        let schema = TestSchema::new();
        let honest = schema.store().await;
        let fast_clock = Ahead;
        let fast = PostgresStore::connect(
            &schema.url,
            hinter_postgres::PostgresOptions {
                clock: Arc::new(Ahead),
                ..schema.options()
            },
        )
        .await
        .expect("connect the fast store");
        let short = Duration::from_secs(20);

        let id = honest
            .job_insert_many(vec![NewJob::new("held", json!(1))], Utc::now())
            .await
            .expect("insert")[0]
            .job
            .id;
        let leased = honest
            .job_lease(LeaseRequest {
                jobs: Vec::new(),
                queues: vec!["default".into()],
                worker_id: "honest".into(),
                max: 1,
                lease_for: short,
                now: Utc::now(),
            })
            .await
            .expect("lease");
        assert_eq!(leased.len(), 1);
        let expired = fast
            .job_expired_list(fast_clock.now(), 10)
            .await
            .expect("expired list");
        assert!(
            expired.is_empty(),
            "the fast machine must not see a running lease as expired: {expired:?}"
        );
        let again = fast
            .job_lease(LeaseRequest {
                jobs: Vec::new(),
                queues: vec!["default".into()],
                worker_id: "fast".into(),
                max: 1,
                lease_for: short,
                now: fast_clock.now(),
            })
            .await
            .expect("lease");
        assert!(again.is_empty(), "the job is held: {again:?}");
        // Once the lease has really ended, the fast machine sees it too.
        let later = fast
            .job_expired_list(fast_clock.now() + chrono::Duration::seconds(25), 10)
            .await
            .expect("expired list");
        assert_eq!(later.iter().map(|e| e.id).collect::<Vec<_>>(), vec![id]);

        let held = honest
            .leader_acquire("maintenance", "honest", short, Utc::now())
            .await
            .expect("acquire");
        assert!(held.is_some(), "the honest process leads");
        let taken = fast
            .leader_acquire("maintenance", "fast", short, fast_clock.now())
            .await
            .expect("acquire");
        assert!(
            taken.is_none(),
            "the fast machine must not take a held leadership: {taken:?}"
        );
    }
}
