//! Pausing a queue stops new leases from it (and only from it); resuming restarts them.

use crate::support::{id_of, Server, TestDir};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn queue<'a>(queues: &'a Value, name: &str) -> &'a Value {
    queues["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["name"] == name)
        .unwrap_or_else(|| panic!("queue {name} not listed: {queues}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_queue_hands_out_nothing_until_resumed() {
    let dir = TestDir::new("pause");
    let server = Server::start(&dir, &[]).await;

    // A queue can be paused before it has jobs; enqueueing to it still works.
    let paused = server
        .post("/api/v1/queues/pq/pause", &json!({}))
        .await
        .expect_status(200)
        .body;
    assert_eq!(paused["name"], "pq");
    assert_eq!(paused["paused"], true);
    let a = id_of(&server.enqueue(json!({"job": "a", "queue": "pq"})).await);
    let b = id_of(&server.enqueue(json!({"job": "b", "queue": "pq"})).await);
    let elsewhere = id_of(&server.enqueue(json!({"job": "c", "queue": "open"})).await);

    // Nothing from the paused queue, even when waiting for it.
    let started = Instant::now();
    let none = server
        .lease(json!({"queues": ["pq"], "worker_id": "w", "max": 10, "wait": "300ms"}))
        .await;
    assert!(none.is_empty(), "a paused queue handed out {none:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "the lease did not wait: {:?}",
        started.elapsed()
    );
    // Other queues are not held up.
    let open = server
        .lease(json!({"queues": ["pq", "open"], "worker_id": "w", "max": 10}))
        .await;
    assert_eq!(open.iter().map(id_of).collect::<Vec<_>>(), vec![elsewhere]);

    let queues = server.get("/api/v1/queues").await.expect_status(200).body;
    let pq = queue(&queues, "pq");
    assert_eq!(pq["paused"], true, "{pq}");
    assert_eq!(pq["queued"], 2, "{pq}");
    assert_eq!(pq["running"], 0, "{pq}");
    let open_q = queue(&queues, "open");
    assert_eq!(open_q["paused"], false, "{open_q}");
    assert_eq!(open_q["running"], 1, "{open_q}");
    for id in [&a, &b] {
        assert_eq!(server.job(id).await["state"], "queued");
    }

    // Resume: the jobs are handed out, in order.
    let resumed = server
        .post("/api/v1/queues/pq/resume", &json!({}))
        .await
        .expect_status(200)
        .body;
    assert_eq!(resumed["paused"], false, "{resumed}");
    assert_eq!(resumed["queued"], 2, "{resumed}");
    let leased = server
        .lease(json!({"queues": ["pq"], "worker_id": "w", "max": 10, "wait": "5s"}))
        .await;
    assert_eq!(leased.iter().map(id_of).collect::<Vec<_>>(), vec![a, b]);
    let queues = server.get("/api/v1/queues").await.expect_status(200).body;
    let pq = queue(&queues, "pq");
    assert_eq!(
        (
            pq["paused"].clone(),
            pq["queued"].clone(),
            pq["running"].clone()
        ),
        (json!(false), json!(0), json!(2)),
        "{pq}"
    );
}

/// A paused queue does not stop jobs that are already running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_does_not_stop_running_jobs() {
    let dir = TestDir::new("pause-running");
    let server = Server::start(&dir, &[]).await;
    let id = id_of(&server.enqueue(json!({"job": "a", "queue": "pr"})).await);
    let leased = server
        .lease(json!({"queues": ["pr"], "worker_id": "w"}))
        .await;
    assert_eq!(leased.len(), 1);
    server
        .post("/api/v1/queues/pr/pause", &json!({}))
        .await
        .expect_status(200);
    let token = &leased[0]["lease_token"];
    server
        .post(
            &format!("/api/v1/jobs/{id}/heartbeat"),
            &json!({"lease_token": token}),
        )
        .await
        .expect_status(200);
    let done = server
        .complete(&id, token, json!(1))
        .await
        .expect_status(200);
    assert_eq!(done.body["state"], "succeeded");
}
