//! Paging through jobs on PostgreSQL while inserts commit out of sequence order: a job whose
//! transaction commits after later jobs were listed comes on a following page, once. Needs
//! `HINTER_TEST_DATABASE_URL` (see build.rs).

mod common;

#[cfg(not(hinter_test_database))]
#[test]
fn job_listing_tests_need_a_database() {
    common::no_database("job listing tests");
}

#[cfg(hinter_test_database)]
mod with_database {
    use super::common::TestSchema;
    use chrono::Utc;
    use hinter_core::store::JobFilter;
    use hinter_core::{JobPage, ListCursor, NewJob, Store};
    use hinter_postgres::PostgresStore;
    use serde_json::json;
    use std::collections::HashSet;
    use tokio_postgres::{Client, NoTls};
    use uuid::Uuid;

    async fn app_client(url: &str) -> Client {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .expect("connect the application");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    async fn insert(store: &PostgresStore, name: &str) -> Uuid {
        store
            .job_insert_many(vec![NewJob::new(name, json!(name)).queue("l")], Utc::now())
            .await
            .expect("insert")[0]
            .job
            .id
    }

    /// One page of at most `limit` jobs after `cursor`, its cursor through its text form.
    async fn page(store: &PostgresStore, limit: u32, cursor: Option<&ListCursor>) -> JobPage {
        let cursor = cursor.map(|c| c.to_string().parse().expect("cursor parses"));
        let filter = JobFilter {
            queue: Some("l".into()),
            limit,
            max_bytes: Some(1 << 20),
            ..JobFilter::default()
        };
        store.job_page(filter, cursor).await.expect("job_page")
    }

    fn names(page: &JobPage) -> Vec<String> {
        page.jobs.iter().map(|j| j.job.clone()).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_committed_after_later_ones_were_listed_comes_on_the_next_page() {
        let schema = TestSchema::new();
        let store = schema.store().await;
        insert(&store, "x").await;
        let mut app = app_client(&schema.url).await;
        let tx = app.transaction().await.expect("begin");
        store
            .enqueue_in(&tx, vec![NewJob::new("a", json!(0)).queue("l")], Utc::now())
            .await
            .expect("enqueue in the open transaction");
        insert(&store, "b").await;
        insert(&store, "c").await;

        let first = page(&store, 2, None).await;
        assert_eq!(names(&first), ["x", "b"], "a is not visible yet");
        let cursor = first.next.expect("more to come");
        tx.commit().await.expect("commit");

        let second = page(&store, 2, Some(&cursor)).await;
        assert_eq!(
            names(&second),
            ["a", "c"],
            "the late job first, then the rest"
        );
        assert_eq!(second.next, None, "the end");
    }

    /// Late jobs spread over pages and committing in another order than they were numbered,
    /// while pages of one job each go on: every job once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn late_jobs_over_several_pages_committing_out_of_order_are_each_listed_once() {
        let schema = TestSchema::new();
        let store = schema.store().await;
        let mut apps = Vec::new();
        for _ in 0..3 {
            apps.push(app_client(&schema.url).await);
        }
        let [app_a, app_b, app_c] = &mut apps[..] else {
            unreachable!("three clients")
        };
        let tx_a = app_a.transaction().await.expect("begin a");
        let tx_b = app_b.transaction().await.expect("begin b");
        let tx_c = app_c.transaction().await.expect("begin c");
        let now = Utc::now();
        let job = |name: &str| NewJob::new(name, json!(name)).queue("l");
        store
            .enqueue_in(&tx_a, vec![job("a")], now)
            .await
            .expect("a");
        store
            .enqueue_in(&tx_b, vec![job("b1"), job("b2")], now)
            .await
            .expect("b");
        store
            .enqueue_in(&tx_c, vec![job("c")], now)
            .await
            .expect("c");
        for name in ["d", "e", "f"] {
            insert(&store, name).await;
        }

        let mut seen = Vec::new();
        let first = page(&store, 1, None).await;
        seen.extend(names(&first));
        assert_eq!(seen, ["d"]);
        let mut cursor = first.next.expect("more");

        tx_b.commit().await.expect("commit b");
        tx_c.commit().await.expect("commit c");
        let next = page(&store, 1, Some(&cursor)).await;
        assert_eq!(names(&next), ["b1"], "the lowest late job first");
        seen.extend(names(&next));
        cursor = next.next.expect("more");

        // a has the lowest number of all and commits only now, after b1 was listed.
        tx_a.commit().await.expect("commit a");
        let mut pages = 0;
        loop {
            let next = page(&store, 1, Some(&cursor)).await;
            seen.extend(names(&next));
            pages += 1;
            assert!(pages < 20, "paging ends");
            match next.next {
                Some(c) => cursor = c,
                None => break,
            }
        }
        assert_eq!(seen, ["d", "b1", "a", "b2", "c", "e", "f"]);
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "each once");

        // A fresh listing has them in enqueue order.
        let all = page(&store, 100, None).await;
        assert_eq!(names(&all), ["a", "b1", "b2", "c", "d", "e", "f"]);
    }

    /// A rolled-back insert leaves nothing for a later page to find, and a cursor naming
    /// transactions that never wrote a job costs nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rolled_back_insert_is_never_listed() {
        let schema = TestSchema::new();
        let store = schema.store().await;
        let mut app = app_client(&schema.url).await;
        let tx = app.transaction().await.expect("begin");
        store
            .enqueue_in(
                &tx,
                vec![NewJob::new("gone", json!(0)).queue("l")],
                Utc::now(),
            )
            .await
            .expect("enqueue in the open transaction");
        for name in ["p", "q"] {
            insert(&store, name).await;
        }
        let first = page(&store, 1, None).await;
        assert_eq!(names(&first), ["p"]);
        tx.rollback().await.expect("rollback");
        let second = page(&store, 1, first.next.as_ref()).await;
        assert_eq!(names(&second), ["q"]);
        assert_eq!(second.next, None);
    }
}
