//! The durable event log across processes: two servers on one store write concurrently,
//! a `hinter events --follow` reader is killed (SIGKILL) midway and restarted from the last
//! id it printed, and between them the two readers print every event exactly once, in order.

use crate::support::pg::TestDb;
use crate::support::{hinter_command, wait_for, wait_until, ChildGuard, Server, TestDir};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// The complete JSON lines of a reader's stdout; a line cut off by the kill is dropped.
fn printed(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .map(|line| {
            serde_json::from_str(line.trim_end())
                .unwrap_or_else(|e| panic!("reader printed a line that is not JSON ({e}): {line}"))
        })
        .collect()
}

fn ids(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|e| e["id"].as_i64().expect("an event id"))
        .collect()
}

fn reader(dir: &TestDir, name: &str, server: &Server, after: i64) -> ChildGuard {
    let mut command = hinter_command();
    command.args([
        "events",
        "--follow",
        "--json",
        "--server",
        &format!("http://{}", server.addr),
        "--after",
        &after.to_string(),
    ]);
    ChildGuard::spawn(dir, name, &mut command)
}

/// Enqueues `n` jobs through `server` in batches of 5 and runs each through the worker
/// protocol (lease, complete), so every job logs created, started and succeeded.
async fn write(server: &Server, tag: &str, n: usize) {
    for start in (0..n).step_by(5) {
        let jobs: Vec<Value> = (start..(start + 5).min(n))
            .map(|i| json!({"job": "evt", "queue": format!("evt-{tag}"), "payload": {"i": i}}))
            .collect();
        server
            .api
            .post("/api/v1/jobs/batch", &json!({ "jobs": jobs }))
            .await
            .expect_status(201);
        let leased = server
            .api
            .lease(json!({"queues": [format!("evt-{tag}")], "worker_id": tag, "max": 5}))
            .await;
        for job in leased {
            let id = job["id"].as_str().expect("id").to_string();
            server
                .api
                .complete(&id, &job["lease_token"], json!(null))
                .await
                .expect_status(200);
        }
    }
}

/// Every event of the store, read through `server`'s API page by page.
async fn all_events(server: &Server) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = server
            .api
            .get(&format!("/api/v1/events?after={after}&limit=1000"))
            .await
            .expect_status(200)
            .body;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        let n = events.len();
        out.extend(events);
        after = page["next_after"].as_i64().expect("next_after");
        if n < 1000 {
            return out;
        }
    }
}

async fn scenario(dir: &TestDir, store: &[String]) {
    let one = Server::start_on(dir, store, "one", &[]).await;
    let two = Server::start_on(dir, store, "two", &[]).await;
    let first = reader(dir, "reader-1", &two, 0);
    let first_out = dir.path().join("reader-1.stdout.log");

    // Writers in both processes, concurrently; the reader is killed while they write.
    let mut first = first;
    tokio::join!(write(&one, "a", 60), write(&two, "b", 60), async {
        wait_until(WAIT, "the first reader to print 40 events", || async {
            printed(&first_out).len() >= 40
        })
        .await;
        first.kill();
    });
    let seen_first = printed(&first_out);
    let resume_at = *ids(&seen_first)
        .last()
        .expect("the first reader printed events");

    let second = reader(dir, "reader-2", &one, resume_at);
    let second_out = dir.path().join("reader-2.stdout.log");
    tokio::join!(write(&one, "c", 30), write(&two, "d", 30));

    // 180 jobs, three events each (on PostgreSQL readable once earlier transactions ended).
    let everything = wait_for(WAIT, "every write's events to be readable", || async {
        let all = all_events(&one).await;
        (all.len() >= 180 * 3).then_some(all)
    })
    .await;
    assert_eq!(everything.len(), 180 * 3, "every write logged its events");
    let last = *ids(&everything).last().expect("events");
    let seen_second = wait_for(
        WAIT,
        "the second reader to reach the last event",
        || async {
            let seen = printed(&second_out);
            ids(&seen)
                .last()
                .is_some_and(|id| *id == last)
                .then_some(seen)
        },
    )
    .await;
    drop(second);

    // Strictly increasing in each reader; together exactly the log, nothing twice.
    for seen in [&seen_first, &seen_second] {
        let ids = ids(seen);
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "ids out of order: {ids:?}"
        );
    }
    let mut together = seen_first.clone();
    together.extend(seen_second.iter().cloned());
    assert_eq!(
        together, everything,
        "the two readers printed the log exactly once"
    );
    let unique: BTreeSet<i64> = ids(&together).into_iter().collect();
    assert_eq!(unique.len(), together.len());
    // Each job's events are in the order they happened.
    let kinds_of = |job: &Value| -> Vec<String> {
        everything
            .iter()
            .filter(|e| e["job_id"] == job["job_id"])
            .map(|e| e["kind"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    for created in everything.iter().filter(|e| e["kind"] == "created") {
        assert_eq!(kinds_of(created), ["created", "started", "succeeded"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_reader_resumes_without_loss_or_repeats_on_sqlite() {
    let dir = TestDir::new("events-sqlite");
    let store = vec![
        "--data-dir".to_string(),
        dir.data_dir().display().to_string(),
    ];
    scenario(&dir, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_reader_resumes_without_loss_or_repeats_on_postgres() {
    let Some(db) = TestDb::new("a_killed_reader_resumes_without_loss_or_repeats_on_postgres")
    else {
        return;
    };
    let dir = TestDir::new("events-pg");
    scenario(&dir, &db.args()).await;
}
