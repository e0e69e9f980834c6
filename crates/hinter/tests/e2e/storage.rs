//! The data dir under the server: deleting the database while it runs stops every write
//! (503 naming the cause) and readiness; a clean stop leaves no write-ahead log behind.

use crate::support::{Server, TestDir};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_deleted_while_serving_refuses_writes_and_makes_the_server_not_ready() {
    let dir = TestDir::new("deleted-db");
    let server = Server::start(&dir, &[]).await;
    server.enqueue(json!({"job": "before"})).await;

    for name in ["hinter.db", "hinter.db-wal", "hinter.db-shm"] {
        let path = dir.data_dir().join(name);
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("rm {}: {e}", path.display()));
    }

    for _ in 0..3 {
        let refused = server
            .post("/api/v1/jobs", &json!({"job": "after"}))
            .await
            .expect_error(503, "unavailable");
        assert!(
            refused.message().contains("database file was deleted"),
            "{}",
            refused.message()
        );
    }
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status, 503, "{:?}", ready.body);
    assert_eq!(ready.body["status"], "not_ready");
    let reason = ready.body["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("database file was deleted"), "{reason}");
    assert_eq!(server.get("/healthz").await.status, 200);

    let log = server.stderr();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors.len() == 1 && errors[0].contains("every write is refused from now on"),
        "the deletion is logged once at ERROR, and nothing else is; log:\n{log}"
    );
    assert!(
        !dir.data_dir().join("hinter.db").exists(),
        "nothing created a new, empty database in its place"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_the_wal_and_a_clean_stop_leaves_it_empty() {
    let dir = TestDir::new("wal-stop");
    let mut server = Server::start(&dir, &[]).await;
    for i in 0..50 {
        server
            .enqueue(json!({"job": "fill", "payload": {"i": i}}))
            .await;
    }
    let ready = server.get("/readyz").await.expect_status(200);
    assert_eq!(ready.body["status"], "ready");
    assert_eq!(ready.body["details"]["wal_limit_bytes"], 64 * 1024 * 1024);
    assert!(
        ready.body["details"]["wal_bytes"].is_u64(),
        "{:?}",
        ready.body
    );

    let status = server
        .terminate(Duration::from_secs(20))
        .await
        .expect("the server did not exit within 20 s of SIGTERM");
    assert!(status.success(), "exit status {status}");
    let wal = std::fs::metadata(dir.data_dir().join("hinter.db-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(wal, 0, "the WAL after a clean stop");

    let server = Server::start(&dir, &[]).await;
    assert_eq!(server.list_jobs("job=fill").await.len(), 50);
}
