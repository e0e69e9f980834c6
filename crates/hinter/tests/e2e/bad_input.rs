//! Bad requests get a clear error and the server keeps serving; an unusable data dir stops
//! the server at once with a message, not a panic.

use crate::support::{free_port, hinter_command, ChildGuard, Server, TestDir};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_the_server_keeps_serving() {
    let dir = TestDir::new("bad-input");
    let server = Server::start(&dir, &["--max-job-bytes", "1000"]).await;

    // Not JSON.
    for body in ["{", "{\"job\": }", "nope", "{\"job\":\"a\"} trailing"] {
        let resp = server
            .post_raw("/api/v1/jobs", body)
            .await
            .expect_error(400, "malformed_json");
        assert!(!resp.message().is_empty(), "{resp:?}");
        server.assert_healthy().await;
    }
    // Not UTF-8.
    server
        .post_raw("/api/v1/jobs", b"{\"job\": \"\xff\"}".to_vec())
        .await
        .expect_error(400, "malformed_json");
    server.assert_healthy().await;

    // Wrong types, missing, unknown and out-of-range fields: 422 naming the field.
    let field_errors = [
        (json!({"job": 5}), "job"),
        (json!({"job": "a", "priority": "high"}), "priority"),
        (json!({"job": "a", "max_attempts": "three"}), "max_attempts"),
        (json!({"job": "a", "delay": "soon"}), "delay"),
        (json!({"job": "a", "priority": 5000}), "priority"),
        (json!({"job": "a", "colour": "red"}), "colour"),
        (json!({"payload": {}}), "job"),
        (json!({"job": "has spaces"}), "job"),
        (json!(["job", "a"]), "expected a JSON object"),
    ];
    for (body, field) in field_errors {
        let resp = server
            .post("/api/v1/jobs", &body)
            .await
            .expect_error(422, "invalid_field");
        assert!(
            resp.message().contains(field),
            "the message for {body} must name {field}: {resp:?}"
        );
        server.assert_healthy().await;
    }
    // Worker calls check their fields too.
    let resp = server
        .post("/api/v1/leases", &json!({"worker_id": "w", "max": 0}))
        .await
        .expect_error(422, "invalid_field");
    assert!(resp.message().starts_with("max"), "{resp:?}");
    let resp = server
        .post(
            "/api/v1/leases",
            &json!({"worker_id": "w", "lease": "10ms"}),
        )
        .await
        .expect_error(422, "invalid_field");
    assert!(resp.message().starts_with("lease"), "{resp:?}");
    server.assert_healthy().await;

    // Bad query parameters: 400 naming the parameter.
    for (path, param) in [
        ("/api/v1/jobs?state=exploded", "state"),
        ("/api/v1/jobs?limit=0", "limit"),
        ("/api/v1/jobs?cursor=not-a-cursor", "cursor"),
    ] {
        let resp = server.get(path).await.expect_error(400, "bad_request");
        assert!(resp.message().contains(param), "{path}: {resp:?}");
        server.assert_healthy().await;
    }

    // Too large: 2000 bytes against a 1000-byte limit.
    let big = json!({"job": "a", "payload": "x".repeat(2000)});
    let resp = server
        .post("/api/v1/jobs", &big)
        .await
        .expect_error(413, "too_large");
    assert!(resp.message().contains("1000"), "{resp:?}");
    server.assert_healthy().await;
    let big_complete = json!({"lease_token": 1, "result": "x".repeat(2000)});
    server
        .post(
            "/api/v1/jobs/00000000-0000-0000-0000-000000000000/complete",
            &big_complete,
        )
        .await
        .expect_error(413, "too_large");
    server.assert_healthy().await;

    // Unknown things.
    server
        .get("/api/v1/jobs/not-a-uuid")
        .await
        .expect_error(404, "not_found");
    server
        .get("/api/v1/jobs/00000000-0000-0000-0000-000000000000")
        .await
        .expect_error(404, "not_found");
    server
        .get("/api/v1/nothing")
        .await
        .expect_error(404, "not_found");
    server.assert_healthy().await;

    // None of it was written, and the server still does its job.
    assert!(server.list_jobs("").await.is_empty());
    let ok = server
        .enqueue(json!({"job": "a", "payload": "x".repeat(900)}))
        .await;
    assert_eq!(ok["state"], "queued");
    assert_eq!(server.get("/readyz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_data_dir_exits_nonzero_with_a_message() {
    let dir = TestDir::new("bad-data-dir");
    // Root can write anywhere, so permissions prove nothing; a path under a regular file
    // cannot be a directory for anyone.
    let file = dir.write("not-a-directory", "just a file\n");
    let data_dir = file.join("data");
    let port = free_port();
    let mut serve = ChildGuard::spawn(
        &dir,
        "serve-bad-data-dir",
        hinter_command()
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}")),
    );
    let status = serve.wait_exit(Duration::from_secs(20)).await;
    let stderr = serve.log();
    assert!(!status.success(), "serve must fail; stderr:\n{stderr}");
    assert!(
        matches!(status.code(), Some(c) if c != 101),
        "a plain failure exit, not a panic (101) or a signal ({status}); stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&data_dir.display().to_string()),
        "stderr must name the data dir {}:\n{stderr}",
        data_dir.display()
    );
    assert!(
        !stderr.contains("panicked"),
        "a panic instead of a message:\n{stderr}"
    );
}

/// `--listen` takes a host name as well as an address (`localhost:PORT`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_accepts_a_host_name() {
    let dir = TestDir::new("listen-host");
    let port = free_port();
    let mut command = hinter_command();
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.data_dir())
        .arg("--listen")
        .arg(format!("localhost:{port}"));
    let mut server = ChildGuard::spawn_logged(&dir, "serve", &mut command);
    let http = reqwest::Client::new();
    let url = format!("http://localhost:{port}/readyz");
    crate::support::wait_until(
        Duration::from_secs(30),
        "serve on localhost is ready",
        || {
            let (http, url) = (http.clone(), url.clone());
            async move { matches!(http.get(&url).send().await, Ok(resp) if resp.status() == 200) }
        },
    )
    .await;
    server.assert_running();
    let log = server.log();
    assert!(!log.contains("invalid socket address"), "{log}");
}

/// Settings that would make the server useless are refused at start, naming the flag:
/// a body limit of 0 (every request 413), a rescue interval of 0 (a busy loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn useless_settings_are_refused_at_start() {
    let dir = TestDir::new("useless-settings");
    for (flag, value, says, code) in [
        ("--max-job-bytes", "0", "at least 256 bytes", 2),
        ("--max-batch-bytes", "0", "at least 256 bytes", 2),
        ("--rescue-interval", "0", "at least 100ms", 2),
        ("--rescue-interval", "-1s", "cannot be negative", 2),
        ("--max-connections", "0", "must be from 1 to 1000000", 1),
        (
            "--max-connections",
            "18446744073709551615",
            "must be from 1 to 1000000",
            1,
        ),
        ("--idle-timeout", "0", "must be longer than 0", 1),
    ] {
        let mut serve = ChildGuard::spawn(
            &dir,
            "serve-useless",
            hinter_command()
                .arg("serve")
                .arg("--data-dir")
                .arg(dir.data_dir())
                .arg("--listen")
                .arg(format!("127.0.0.1:{}", free_port()))
                .arg(flag)
                .arg(value),
        );
        let status = serve.wait_exit(Duration::from_secs(20)).await;
        let stderr = serve.log();
        assert_eq!(status.code(), Some(code), "{flag} {value}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains(says),
            "{flag} {value}: {stderr}"
        );
    }
    assert!(
        !dir.data_dir().join("hinter.db").exists(),
        "nothing was opened"
    );
}
