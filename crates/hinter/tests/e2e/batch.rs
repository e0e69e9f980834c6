//! Batch enqueue is all or nothing.

use crate::support::{Server, TestDir};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_with_one_invalid_item_enqueues_nothing() {
    let dir = TestDir::new("batch");
    let server = Server::start(&dir, &[]).await;
    let bad = json!({"jobs": [
        {"job": "a", "payload": {"n": 1}},
        {"job": "b", "priority": "high"},
        {"job": "c", "payload": {"n": 3}},
    ]});
    let resp = server
        .post("/api/v1/jobs/batch", &bad)
        .await
        .expect_error(422, "invalid_field");
    assert!(
        resp.message().starts_with("jobs[1].priority"),
        "the message must name the item and field: {resp:?}"
    );
    assert!(
        server.list_jobs("").await.is_empty(),
        "the batch was partly written"
    );
    let queues = server.get("/api/v1/queues").await.expect_status(200).body;
    for q in queues["queues"].as_array().expect("queues") {
        assert_eq!(q["queued"], 0, "{q}");
    }

    // An item out of range (checked after parsing) rolls back the same way.
    let out_of_range = json!({"jobs": [
        {"job": "a"}, {"job": "b"}, {"job": "c", "max_attempts": 0},
    ]});
    let resp = server
        .post("/api/v1/jobs/batch", &out_of_range)
        .await
        .expect_error(422, "invalid_field");
    assert!(
        resp.message().starts_with("jobs[2].max_attempts"),
        "{resp:?}"
    );
    assert!(server.list_jobs("").await.is_empty());
    server.assert_healthy().await;

    // The same batch made valid goes in whole, in order.
    let good = json!({"jobs": [
        {"job": "a", "payload": {"n": 1}},
        {"job": "b", "priority": 7},
        {"job": "c", "payload": {"n": 3}},
    ]});
    let resp = server
        .post("/api/v1/jobs/batch", &good)
        .await
        .expect_status(201);
    let items = resp.body["jobs"].as_array().expect("jobs");
    let names: Vec<_> = items.iter().map(|i| i["job"]["job"].clone()).collect();
    assert_eq!(names, vec![json!("a"), json!("b"), json!("c")]);
    assert!(items.iter().all(|i| i["duplicate"] == false));
    assert_eq!(server.list_jobs("").await.len(), 3);
}
