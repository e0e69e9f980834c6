//! `GET /api/v1/workers` lists the live hinter processes on the store and the leader.

use crate::support::{wait_for, Server, TestDir};
use serde_json::Value;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_lists_itself_as_the_leader() {
    let dir = TestDir::new("workers");
    let server = Server::start(&dir, &[]).await;
    let workers: Vec<Value> = wait_for(
        Duration::from_secs(20),
        "the server to list itself as leader",
        || async {
            let body = server.get("/api/v1/workers").await.expect_status(200).body;
            let workers = body["workers"].as_array().cloned().unwrap_or_default();
            workers
                .iter()
                .any(|w| w["leader"] == true)
                .then_some(workers)
        },
    )
    .await;
    assert_eq!(workers.len(), 1, "{workers:?}");
    let me = &workers[0];
    assert_eq!(me["role"], "serve");
    assert!(me["pid"].as_u64().is_some_and(|p| p > 0));
    assert!(me["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(me["id"].as_str().is_some_and(|id| id.contains(':')));
    assert!(me["last_heartbeat_at"].as_str().is_some());
}
