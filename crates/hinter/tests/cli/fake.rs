//! Answers a real server does not give on demand (401, 500, 503, a body that is not the API's),
//! from a tiny fake HTTP server; and what the CLI sends (token, path prefix), as it sees it.

use crate::harness::Cli;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Answers every request with one canned response and records each request's head.
struct FakeServer {
    base: String,
    heads: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    async fn start(status: u16, body: &str) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the fake server");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let response = format!(
            "HTTP/1.1 {status} Canned\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let recorded = heads.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let response = response.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    if let Some(head) = answer(stream, &response).await {
                        recorded.lock().expect("lock").push(head);
                    }
                });
            }
        });
        FakeServer { base, heads, task }
    }

    /// The heads (request line and headers) of the requests so far.
    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("lock").clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request (head and `content-length` body), sends `response`, returns the head.
async fn answer(mut stream: TcpStream, response: &str) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    stream.write_all(response.as_bytes()).await.ok()?;
    let _ = stream.shutdown().await;
    Some(head)
}

fn api_error(code: &str, message: &str) -> String {
    serde_json::json!({"error": {"code": code, "message": message}}).to_string()
}

/// Every documented mapping of an HTTP answer to an exit code, for a plain listing and for a
/// job command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_answers_map_to_the_documented_exit_codes() {
    let id = uuid::Uuid::now_v7().to_string();
    let cases: Vec<(u16, String, i32, &str)> = vec![
        (400, api_error("bad_request", "limit: no"), 2, "limit: no"),
        (
            413,
            api_error("too_large", "over the limit"),
            2,
            "over the limit",
        ),
        (
            422,
            api_error("invalid_field", "priority: out of range"),
            2,
            "priority",
        ),
        (
            404,
            api_error("not_found", "no job with that id"),
            3,
            "no job with that id",
        ),
        (
            409,
            api_error("conflict", "job is succeeded"),
            4,
            "job is succeeded",
        ),
        (
            401,
            api_error("unauthorized", "a token is required"),
            77,
            "hint: pass a valid token",
        ),
        (
            403,
            api_error("forbidden", "not allowed"),
            77,
            "not allowed",
        ),
        (
            503,
            api_error("unavailable", "the store is down"),
            69,
            "the store is down",
        ),
        (
            429,
            api_error("too_many_requests", "slow down"),
            69,
            "slow down",
        ),
        (502, "bad gateway".to_string(), 69, "502"),
        (504, "gateway timeout".to_string(), 69, "504"),
        (500, api_error("internal", "oops"), 70, "oops"),
        (200, "<html>not the API</html>".to_string(), 70, "error: "),
    ];
    for (status, body, code, text) in cases {
        let fake = FakeServer::start(status, &body).await;
        for args in [vec!["jobs", "list"], vec!["jobs", "cancel", &id]] {
            let out = Cli::new(&args).arg("--server").arg(&fake.base).run().await;
            assert_eq!(
                out.code,
                Some(code),
                "HTTP {status} {body} should exit {code}: {out:?}"
            );
            assert!(out.stdout.is_empty(), "HTTP {status}: {out:?}");
            assert!(out.stderr.starts_with("error: "), "HTTP {status}: {out:?}");
            assert!(
                out.stderr.contains(text),
                "HTTP {status}: stderr lacks {text:?}: {out:?}"
            );
        }
    }
}

/// An enqueue the server accepted (201) but answered in a way the CLI cannot read fails, and
/// says the job exists, so a script does not enqueue it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_answer_to_an_accepted_enqueue_says_the_job_exists() {
    let fake = FakeServer::start(201, r#"{"duplicate": false, "job": [[["not a job"]]]}"#).await;
    let out = Cli::new(&["enqueue", "x"])
        .arg("--server")
        .arg(&fake.base)
        .run()
        .await;
    assert_eq!(out.code, Some(70), "{out:?}");
    assert!(out.stderr.contains("HTTP 201"), "{out:?}");
    assert!(out.stderr.contains("do not enqueue it again"), "{out:?}");
}

/// `--token` / `HINTER_TOKEN` become `Authorization: Bearer …` (an empty one sends none), and a
/// path prefix in `--server` is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_path_prefix_reach_the_server() {
    let fake = FakeServer::start(200, r#"{"queues": []}"#).await;
    let authorization = |head: &str| -> Option<String> {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.trim().to_string())
    };

    Cli::new(&[
        "queues", "list", "--token", "s3cret", "--server", &fake.base,
    ])
    .run()
    .await
    .ok();
    Cli::new(&["queues", "list", "--server", &fake.base])
        .env("HINTER_TOKEN", "from-env")
        .run()
        .await
        .ok();
    Cli::new(&["queues", "list", "--server", &fake.base])
        .env("HINTER_TOKEN", "")
        .run()
        .await
        .ok();
    Cli::new(&[
        "queues",
        "list",
        "--token",
        "flag-wins",
        "--server",
        &fake.base,
    ])
    .env("HINTER_TOKEN", "from-env")
    .run()
    .await
    .ok();
    let prefixed = format!("{}/hinter", fake.base);
    Cli::new(&["queues", "list", "--server", &prefixed])
        .run()
        .await
        .ok();

    let heads = fake.heads();
    assert_eq!(heads.len(), 5, "{heads:#?}");
    let seen: Vec<Option<String>> = heads.iter().map(|h| authorization(h)).collect();
    assert_eq!(
        seen,
        vec![
            Some("Bearer s3cret".to_string()),
            Some("Bearer from-env".to_string()),
            None,
            Some("Bearer flag-wins".to_string()),
            None,
        ],
        "{heads:#?}"
    );
    let request_lines: Vec<&str> = heads.iter().filter_map(|h| h.lines().next()).collect();
    assert_eq!(
        request_lines,
        vec![
            "GET /api/v1/queues HTTP/1.1",
            "GET /api/v1/queues HTTP/1.1",
            "GET /api/v1/queues HTTP/1.1",
            "GET /api/v1/queues HTTP/1.1",
            "GET /hinter/api/v1/queues HTTP/1.1",
        ]
    );
}
