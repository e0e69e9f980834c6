//! `POST /hooks/{job}` over real HTTP on loopback, on a SQLite store: 202 + Location and a
//! job that runs with the body as its payload; bad JSON 400; a missing token or a wrong
//! signature 401 with nothing created.

use chrono::Utc;
use hinter_core::access::{generate_secret, NewToken, Scope, ACTOR_CLI};
use hinter_core::store::JobFilter;
use hinter_core::{JobDefinition, Store, SystemClock};
use hinter_engine::{HandlerContext, JobError, Registry, Worker, WorkerOptions};
use hinter_server::hooks::{sign, HookConfig};
use hinter_server::{AppState, ConnLimits, ServerConfig};
use hinter_sqlite::{SqliteOptions, SqliteStore};
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

struct Server {
    base: String,
    store: Arc<SqliteStore>,
    http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start(hooks: HookConfig) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("hinter.db"), SqliteOptions::default())
            .await
            .expect("open"),
    );
    let state = AppState {
        store: store.clone(),
        cluster: store.clone(),
        clock: Arc::new(SystemClock),
        definitions: Default::default(),
        config: Arc::new(ServerConfig {
            hooks,
            ..ServerConfig::default()
        }),
        ready: Arc::new(AtomicBool::new(true)),
        metrics: hinter_server::Metrics::new(),
        hub: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(hinter_server::serve(
        listener,
        state,
        ConnLimits::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        base,
        store,
        http: reqwest::Client::new(),
        _stop: stop,
        _dir: dir,
    }
}

impl Server {
    async fn token(&self, scopes: &[Scope]) -> String {
        let (secret, hash) = generate_secret();
        let token = NewToken {
            name: format!(
                "t-{}",
                scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("-")
            ),
            hash,
            scopes: scopes.to_vec(),
            queues: None,
        };
        self.store
            .token_create(token, ACTOR_CLI, Utc::now())
            .await
            .expect("token");
        secret
    }

    async fn hook(
        &self,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, headers, body)
    }

    async fn job_count(&self) -> usize {
        self.store
            .job_list(JobFilter {
                limit: 100,
                ..JobFilter::default()
            })
            .await
            .expect("jobs")
            .len()
    }
}

fn secrets(pairs: &[(&str, &str)], header: &str) -> HookConfig {
    HookConfig {
        secrets: pairs
            .iter()
            .map(|(j, s)| (j.to_string(), s.as_bytes().to_vec()))
            .collect(),
        signature_header: header.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_with_a_token_enqueues_and_the_job_runs_with_the_body() {
    let server = start(HookConfig::default()).await;
    let token = server.token(&[Scope::Enqueue]).await;
    let bearer = format!("Bearer {token}");
    // Runs `build` jobs and hands their payloads to the test.
    let (seen, mut payloads) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let mut registry = Registry::new();
    registry.register(
        JobDefinition {
            name: "build".into(),
            ..JobDefinition::default()
        },
        move |_ctx: HandlerContext, payload: Value| {
            let seen = seen.clone();
            async move {
                let _ = seen.send(payload);
                Ok::<_, JobError>(())
            }
        },
    );
    let worker = Worker::start(
        server.store.clone(),
        Arc::new(SystemClock),
        registry,
        WorkerOptions {
            poll_interval: Duration::from_millis(50),
            ..WorkerOptions::default()
        },
    )
    .expect("worker");

    let body = r#"{"ref": "refs/heads/main", "commits": [1, 2.50, {"x": null}]}"#;
    let (status, headers, answer) = server
        .hook("/hooks/build", body, &[("authorization", &bearer)])
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let id = answer["id"].as_str().expect("id in the body");
    assert_eq!(headers["location"], format!("/api/v1/jobs/{id}").as_str());
    assert_eq!(answer["job"]["job"], "build");
    let payload = tokio::time::timeout(Duration::from_secs(10), payloads.recv())
        .await
        .expect("the job ran")
        .expect("a payload");
    let sent: Value = serde_json::from_str(body).expect("json");
    assert_eq!(payload, sent);
    worker.shutdown().await;

    // Bad JSON: 400, nothing created; a missing or a wrong token: 401, nothing created.
    let before = server.job_count().await;
    let (status, _, answer) = server
        .hook("/hooks/build", "{not json", &[("authorization", &bearer)])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["code"], "malformed_json");
    let (status, _, answer) = server.hook("/hooks/build", "{}", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let (status, _, _) = server
        .hook("/hooks/build", "{}", &[("authorization", "Bearer nope")])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A read-only token lacks enqueue.
    let reader = server.token(&[Scope::Read]).await;
    let (status, _, _) = server
        .hook(
            "/hooks/build",
            "{}",
            &[("authorization", &format!("Bearer {reader}"))],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A job name the API refuses: 422.
    let (status, _, _) = server
        .hook("/hooks/bad%20name", "{}", &[("authorization", &bearer)])
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(server.job_count().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_hook_needs_the_right_signature() {
    let server = start(secrets(&[("deploy", "s3cret")], "x-signature")).await;
    // A token exists, so the API is not open; the sender has none.
    server.token(&[Scope::Admin]).await;
    let body = r#"{"action": "published", "n": 12345678901234567890}"#;
    let good = sign(b"s3cret", body.as_bytes());
    let (status, headers, answer) = server
        .hook("/hooks/deploy", body, &[("x-signature", &good)])
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let id = answer["id"].as_str().expect("id");
    assert_eq!(headers["location"], format!("/api/v1/jobs/{id}").as_str());
    let job = server
        .store
        .job_get(id.parse().expect("uuid"))
        .await
        .expect("get")
        .expect("the job exists");
    assert_eq!(
        job.payload,
        serde_json::from_str::<Value>(body).expect("json")
    );
    assert_eq!(server.job_count().await, 1);

    let wrong_secret = sign(b"guess", body.as_bytes());
    let other_body = sign(b"s3cret", b"{}");
    for (case, headers) in [
        ("wrong secret", vec![("x-signature", wrong_secret.as_str())]),
        (
            "signature of another body",
            vec![("x-signature", other_body.as_str())],
        ),
        ("not hex", vec![("x-signature", "sha256=xyz")]),
        ("no signature", vec![]),
        (
            "the default header instead",
            vec![("x-hub-signature-256", good.as_str())],
        ),
    ] {
        let (status, _, answer) = server.hook("/hooks/deploy", body, &headers).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {answer}");
        assert_eq!(answer["error"]["code"], "unauthorized", "{case}");
    }
    // Another hook's secret does not open this one.
    let (status, _, _) = server
        .hook("/hooks/build", body, &[("x-signature", &good)])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        server.job_count().await,
        1,
        "nothing created by refused requests"
    );

    // Signed but not JSON: the signature passes, the body is refused.
    let garbage = "not json";
    let signed = sign(b"s3cret", garbage.as_bytes());
    let (status, _, _) = server
        .hook("/hooks/deploy", garbage, &[("x-signature", &signed)])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(server.job_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_hook_is_not_open_on_an_open_api() {
    // No token at all (a loopback server's open API): unsigned requests still do not pass.
    let server = start(secrets(&[("deploy", "s3cret")], "x-hub-signature-256")).await;
    let (status, _, _) = server.hook("/hooks/deploy", "{}", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Hooks without a secret are as open as the rest of the API.
    let (status, _, _) = server.hook("/hooks/other", "{}", &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(server.job_count().await, 1);
}

/// A signed body of exactly the job size limit is taken whole; one byte more is 413 before
/// any signature check, and a body nested past the JSON limit is refused naming the payload;
/// neither creates a job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_hook_bodies_at_the_size_and_depth_limits() {
    let server = start(secrets(&[("deploy", "s3cret")], "x-signature")).await;
    server.token(&[Scope::Admin]).await;
    let limit = ServerConfig::default().max_job_bytes;
    let frame = r#"{"blob": ""}"#;
    let at_limit = format!(r#"{{"blob": "{}"}}"#, "é".repeat((limit - frame.len()) / 2));
    let at_limit = format!("{at_limit}{}", " ".repeat(limit - at_limit.len()));
    assert_eq!(at_limit.len(), limit);
    let signature = sign(b"s3cret", at_limit.as_bytes());
    let (status, _, answer) = server
        .hook("/hooks/deploy", &at_limit, &[("x-signature", &signature)])
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let id = answer["id"].as_str().expect("id");
    let job = server
        .store
        .job_get(id.parse().expect("uuid"))
        .await
        .expect("get")
        .expect("the job exists");
    assert_eq!(
        job.payload,
        serde_json::from_str::<Value>(&at_limit).expect("json"),
        "kept exactly"
    );

    let over = format!("{at_limit} ");
    let signature = sign(b"s3cret", over.as_bytes());
    let (status, _, answer) = server
        .hook("/hooks/deploy", &over, &[("x-signature", &signature)])
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");

    let deep = format!("{}1{}", "[".repeat(65), "]".repeat(65));
    let signature = sign(b"s3cret", deep.as_bytes());
    let (status, _, answer) = server
        .hook("/hooks/deploy", &deep, &[("x-signature", &signature)])
        .await;
    assert!(status.is_client_error(), "{status} {answer}");
    assert!(
        answer.to_string().contains("payload")
            || answer.to_string().contains("deep")
            || answer.to_string().contains("nest"),
        "{answer}"
    );
    assert_eq!(
        server.job_count().await,
        1,
        "only the body at the limit made a job"
    );
}
