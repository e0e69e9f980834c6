//! SIGTERM stops the server gracefully: open long-polls are answered at once instead of
//! holding the stop for their whole wait, and the process exits cleanly.

use crate::support::{Server, TestDir};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_long_polls_and_exits_cleanly() {
    let dir = TestDir::new("sigterm");
    let mut server = Server::start(&dir, &[]).await;
    let api = server.api.clone();
    let poll = tokio::spawn(async move {
        api.post(
            "/api/v1/leases",
            &json!({"queues": ["default"], "worker_id": "w", "wait": "60s"}),
        )
        .await
    });
    let job = api_wait_then(&server).await;
    let started = Instant::now();
    let status = server
        .terminate(Duration::from_secs(20))
        .await
        .expect("the server did not exit within 20 s of SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown waited {:?} for a 60 s long-poll",
        started.elapsed()
    );
    let answer = poll.await.expect("the long-poll task").expect_status(200);
    assert_eq!(answer.body["jobs"], json!([]));
    // Nothing acknowledged is lost: the job enqueued before the stop is still there.
    let server = Server::start(&dir, &[]).await;
    assert_eq!(server.job(&job).await["state"], "queued");
}

/// Enqueues a job in another queue (so the long-poll keeps waiting) and gives the
/// long-poll a moment to be in flight by making one more request after it.
async fn api_wait_then(server: &Server) -> String {
    let enqueued = server
        .enqueue(json!({"job": "elsewhere", "queue": "other"}))
        .await;
    crate::support::id_of(&enqueued)
}
