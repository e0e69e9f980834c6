//! `hinter queues list|pause|resume`.

use crate::harness::{id_of, start_server, CliApi, CliServer, Out, TestDir};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const HEADER: [&str; 8] = [
    "QUEUE",
    "STATUS",
    "SCHEDULED",
    "QUEUED",
    "RUNNING",
    "SUCCEEDED",
    "DEAD",
    "CANCELLED",
];

/// The `queues list` table as `(name, [status, counts…])`; checks the header.
#[track_caller]
fn table(out: &Out) -> Vec<Vec<String>> {
    let mut lines = out.stdout.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_else(|| panic!("no table: {out:?}"))
        .split_whitespace()
        .collect();
    assert_eq!(header, HEADER, "table header: {out:?}");
    lines
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn row(name: &str, status: &str, counts: [u32; 6]) -> Vec<String> {
    let mut row = vec![name.to_string(), status.to_string()];
    row.extend(counts.iter().map(u32::to_string));
    row
}

fn listed<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["queues"]
        .as_array()
        .unwrap_or_else(|| panic!("no queues array: {list}"))
        .iter()
        .find(|q| q["name"] == name)
        .unwrap_or_else(|| panic!("queue {name} not listed: {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_list_shows_counts_per_state() {
    let dir = TestDir::new("queues-list");
    let server = start_server(&dir).await;

    server
        .cli(&["queues", "list"])
        .run()
        .await
        .ok()
        .no_stdout()
        .stderr_has("no queues yet");

    // media: 2 queued, 1 scheduled, 1 running, 1 succeeded, 1 dead, 1 cancelled.
    server.make_succeeded("s", "media").await;
    server.make_dead("d", "media", "boom").await;
    let running = server
        .enqueue_id(json!({"job": "r", "queue": "media"}))
        .await;
    let leased = server.lease_from("media", 1, "5s").await;
    assert_eq!(leased.iter().map(id_of).collect::<Vec<_>>(), vec![running]);
    let cancelled = server
        .enqueue_id(json!({"job": "c", "queue": "media"}))
        .await;
    server
        .post(&format!("/api/v1/jobs/{cancelled}/cancel"), &json!({}))
        .await
        .expect_status(200);
    for _ in 0..2 {
        server
            .enqueue_id(json!({"job": "q", "queue": "media"}))
            .await;
    }
    server
        .enqueue_id(json!({"job": "later", "queue": "media", "delay": "1h"}))
        .await;
    // default: 1 queued.
    server.enqueue_id(json!({"job": "q"})).await;

    let out = server.cli(&["queues", "list"]).run().await.ok().no_stderr();
    let mut rows = table(&out);
    rows.sort();
    assert_eq!(
        rows,
        vec![
            row("default", "active", [0, 1, 0, 0, 0, 0]),
            row("media", "active", [1, 2, 1, 1, 1, 1]),
        ],
        "{out:?}"
    );

    // --json is the API's answer.
    let out = server.cli(&["queues", "list", "--json"]).run().await.ok();
    let api = server.get("/api/v1/queues").await.expect_status(200).body;
    assert_eq!(out.json(), api, "{out:?}");
    let media = listed(&api, "media");
    assert_eq!(
        (&media["queued"], &media["scheduled"], &media["paused"]),
        (&json!(2), &json!(1), &json!(false)),
        "{media}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_pause_stops_leases_and_resume_restarts_them() {
    let dir = TestDir::new("queues-pause");
    let server = start_server(&dir).await;

    let id = server.enqueue_id(json!({"job": "x", "queue": "q"})).await;
    let other = server
        .enqueue_id(json!({"job": "x", "queue": "other"}))
        .await;

    server
        .cli(&["queues", "pause", "q"])
        .run()
        .await
        .ok()
        .no_stderr()
        .stdout_has("paused queue q\n");

    // Nothing from q, even when waiting; other queues go on.
    let started = Instant::now();
    let none = server.lease_from("q", 10, "300ms").await;
    assert!(none.is_empty(), "a paused queue handed out {none:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    let leased = server.lease_from("other", 10, "5s").await;
    assert_eq!(leased.iter().map(id_of).collect::<Vec<_>>(), vec![other]);

    let out = server.cli(&["queues", "list", "--json"]).run().await.ok();
    let list = out.json();
    assert_eq!(listed(&list, "q")["paused"], true, "{out:?}");
    assert_eq!(listed(&list, "q")["queued"], 1, "{out:?}");
    assert_eq!(listed(&list, "other")["paused"], false, "{out:?}");
    let out = server.cli(&["queues", "list"]).run().await.ok();
    assert!(
        table(&out).contains(&row("q", "paused", [0, 1, 0, 0, 0, 0])),
        "{out:?}"
    );

    // Enqueueing into a paused queue still works.
    server
        .cli(&["enqueue", "y", "--queue", "q"])
        .run()
        .await
        .ok();

    server
        .cli(&["queues", "resume", "q"])
        .run()
        .await
        .ok()
        .no_stderr()
        .stdout_has("resumed queue q\n");
    let leased = server.lease_from("q", 10, "5s").await;
    assert_eq!(leased.len(), 2, "{leased:?}");
    assert_eq!(id_of(&leased[0]), id);
    assert_eq!(server.queue("q").await.expect("q listed")["paused"], false);

    // A queue can be paused before it has jobs; --json prints the queue object.
    let out = server
        .cli(&["queues", "pause", "empty", "--json"])
        .run()
        .await
        .ok();
    let queue = out.json();
    assert_eq!(
        (&queue["name"], &queue["paused"]),
        (&json!("empty"), &json!(true)),
        "{out:?}"
    );
    assert_eq!(
        server.queue("empty").await.expect("empty listed")["paused"],
        true
    );

    // A name that is not a queue name: exit 2.
    server
        .cli(&["queues", "pause", "no spaces"])
        .run()
        .await
        .code(2)
        .no_stdout()
        .stderr_has("error: ");
}
