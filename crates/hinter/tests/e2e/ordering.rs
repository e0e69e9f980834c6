//! `ordering_key`: jobs sharing a key start in enqueue order, one at a time; other keys are
//! not held up.

use crate::support::{id_of, Server, TestDir};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_key_is_fifo_one_at_a_time_and_beats_priority() {
    let dir = TestDir::new("ordering");
    let server = Server::start(&dir, &[]).await;
    // Later jobs get a higher priority: without the ordering key they would run first.
    let mut ordered = Vec::new();
    for i in 1..=5 {
        let job = server
            .enqueue(
                json!({"job": "sync", "queue": "ord", "ordering_key": "customer-7",
                            "priority": i * 10, "payload": {"i": i}}),
            )
            .await;
        ordered.push(id_of(&job));
    }
    let other = id_of(
        &server
            .enqueue(
                json!({"job": "sync", "queue": "ord", "ordering_key": "customer-8",
                            "payload": {"i": 100}}),
            )
            .await,
    );
    let lease =
        || server.lease(json!({"queues": ["ord"], "worker_id": "w", "max": 10, "lease": "60s"}));

    // Only the head of each key.
    let first = lease().await;
    let mut ids: Vec<String> = first.iter().map(id_of).collect();
    ids.sort();
    let mut want = vec![ordered[0].clone(), other.clone()];
    want.sort();
    assert_eq!(
        ids, want,
        "first lease must hold only the head of each key: {first:?}"
    );
    for job in &first {
        if id_of(job) == other {
            server
                .complete(&other, &job["lease_token"], Value::Null)
                .await
                .expect_status(200);
        }
    }
    let mut current = first
        .into_iter()
        .find(|j| id_of(j) == ordered[0])
        .expect("head of customer-7");

    let mut started = vec![current["payload"]["i"].as_i64().expect("i")];
    for (i, expected) in ordered.iter().enumerate().skip(1) {
        // While one job of the key runs, the next does not start.
        let held = lease().await;
        assert!(
            held.is_empty(),
            "a second job of the key started early: {held:?}"
        );
        server
            .complete(&id_of(&current), &current["lease_token"], json!({"i": i}))
            .await
            .expect_status(200);
        let next = lease().await;
        assert_eq!(next.len(), 1, "exactly the next job of the key: {next:?}");
        assert_eq!(&id_of(&next[0]), expected, "{next:?}");
        current = next.into_iter().next().expect("next job");
        started.push(current["payload"]["i"].as_i64().expect("i"));
    }
    server
        .complete(&id_of(&current), &current["lease_token"], json!({"i": 5}))
        .await
        .expect_status(200);
    assert_eq!(started, vec![1, 2, 3, 4, 5]);
    assert!(lease().await.is_empty());
    assert_eq!(server.list_jobs("state=succeeded").await.len(), 6);
}
