// The HTTP API against a real store, through the router without a socket. Included by
// `api.rs` (SQLite) and `api_postgres.rs` (PostgreSQL), which each provide `backend::open`.

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use chrono::Utc;
use hinter_core::retry::FailOutcome;
use hinter_core::store::Failure;
use hinter_core::{Backend, Clock, ManualClock, Store, StoreEvent};
use hinter_server::{router, AppState, ServerConfig};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

const MAX_JOB: usize = 4096;
const MAX_BATCH: usize = 16 * 1024;

struct Harness {
    app: Router,
    store: Arc<dyn Backend>,
    clock: ManualClock,
    ready: Arc<AtomicBool>,
    /// The definitions the API applies and lists (`GET /api/v1/definitions`).
    definitions: hinter_core::Definitions,
    /// Dropped after the store: the temporary directory or database schema.
    _guard: Box<dyn std::any::Any + Send + Sync>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<none>")
    }
    fn error_message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("<none>")
    }
}

async fn harness() -> Option<Harness> {
    harness_with(MAX_JOB).await
}

/// A harness whose bodies may be up to `max_job_bytes`; `None` when the backend cannot be
/// used here (PostgreSQL without a test database, outside CI).
async fn harness_with(max_job_bytes: usize) -> Option<Harness> {
    harness_sized(max_job_bytes, MAX_BATCH).await
}

/// [`harness_with`], with batch bodies up to `max_batch_bytes`.
async fn harness_sized(max_job_bytes: usize, max_batch_bytes: usize) -> Option<Harness> {
    let (store, guard) = backend::open().await?;
    let clock = ManualClock::new(Utc::now());
    let ready = Arc::new(AtomicBool::new(true));
    let definitions = hinter_core::Definitions::new();
    let state = AppState {
        store: store.clone() as Arc<dyn Store>,
        cluster: store.clone() as Arc<dyn hinter_core::Cluster>,
        clock: Arc::new(clock.clone()),
        definitions: definitions.clone(),
        config: Arc::new(ServerConfig {
            max_job_bytes,
            max_batch_bytes,
            ..ServerConfig::default()
        }),
        ready: ready.clone(),
        metrics: hinter_server::Metrics::new(),
        hub: Default::default(),
    };
    Some(Harness {
        app: router(state),
        store,
        clock,
        ready,
        definitions,
        _guard: guard,
    })
}

impl Harness {
    /// Sends a request with a raw body (or none).
    async fn raw(&self, method: Method, uri: &str, body: Option<String>) -> Answer {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.map(Body::from).unwrap_or_else(Body::empty))
            .expect("request");
        let response = self.app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {bytes:?}"))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.raw(Method::GET, uri, None).await
    }

    async fn post(&self, uri: &str, body: Value) -> Answer {
        self.raw(Method::POST, uri, Some(body.to_string())).await
    }

    async fn enqueue(&self, body: Value) -> Value {
        let answer = self.post("/api/v1/jobs", body).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        answer.body["job"].clone()
    }

    async fn lease(&self, body: Value) -> Vec<Value> {
        let answer = self.post("/api/v1/leases", body).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.body["jobs"].as_array().expect("jobs").clone()
    }

    async fn list(&self, query: &str) -> Answer {
        self.get(&format!("/api/v1/jobs{query}")).await
    }
}

/// `GET uri` (an event log page) once it holds at least `n` events: on PostgreSQL a commit's
/// entries become readable once every transaction that started before it has ended, other
/// tests' included.
async fn events_once_settled(h: &Harness, uri: &str, n: usize) -> Answer {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let answer = h.get(uri).await;
        let count = answer.body["events"].as_array().map_or(0, Vec::len);
        if count >= n || tokio::time::Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The answer of a waiting lease, which must be `job` alone.
async fn answered_with(waiter: tokio::task::JoinHandle<Vec<Value>>, job: &Value) -> Vec<Value> {
    let leased = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the lease wait ends when a job arrives")
        .expect("task");
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0]["id"], job["id"]);
    leased
}

fn id_of(job: &Value) -> String {
    job["id"].as_str().expect("id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_answers_201_with_location() {
    let Some(h) = harness().await else { return };
    let answer = h
        .post(
            "/api/v1/jobs",
            json!({"job": "thumbnail", "payload": {"src": "a.png"}, "priority": 5}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(answer.body["duplicate"], json!(false));
    let job = &answer.body["job"];
    assert_eq!(job["state"], "queued");
    assert_eq!(job["queue"], "default");
    assert_eq!(job["priority"], 5);
    assert_eq!(job["max_attempts"], 10);
    assert_eq!(job["payload"], json!({"src": "a.png"}));
    let location = answer.headers[header::LOCATION].to_str().expect("ascii");
    assert_eq!(location, format!("/api/v1/jobs/{}", id_of(job)));

    let shown = h.get(location).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.body, *job);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_job_is_scheduled() {
    let Some(h) = harness().await else { return };
    let job = h.enqueue(json!({"job": "later", "delay": "5m"})).await;
    assert_eq!(job["state"], "scheduled");
    assert!(h.lease(json!({"worker_id": "w"})).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_unique_key_answers_200_with_the_first_job() {
    let Some(h) = harness().await else { return };
    let body = json!({"job": "mail", "unique_key": "user-7", "unique_for": "10m"});
    let first = h.enqueue(body.clone()).await;
    let second = h.post("/api/v1/jobs", body).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(second.body["duplicate"], json!(true));
    assert_eq!(second.body["job"]["id"], first["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_is_all_or_nothing() {
    let Some(h) = harness().await else { return };
    let answer = h
        .post(
            "/api/v1/jobs/batch",
            json!({"jobs": [{"job": "a"}, {"job": "b", "priority": 5000}, {"job": "c"}]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.error_code(), "invalid_field");
    assert!(
        answer.error_message().starts_with("jobs[1].priority: "),
        "{}",
        answer.error_message()
    );
    let answer = h
        .post(
            "/api/v1/jobs/batch",
            json!({"jobs": [{"job": "a"}, {"job": "b"}, {"job": "c", "max_attempts": "x"}]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        answer.error_message().starts_with("jobs[2].max_attempts: "),
        "{}",
        answer.error_message()
    );
    let empty = h.post("/api/v1/jobs/batch", json!({"jobs": []})).await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);
    let list = h.list("").await;
    assert_eq!(list.body["jobs"], json!([]), "nothing may be inserted");

    let answer = h
        .post(
            "/api/v1/jobs/batch",
            json!({"jobs": [{"job": "a"}, {"job": "b", "queue": "q2"}, {"job": "c"}]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let names: Vec<&str> = answer.body["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|item| item["job"]["job"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(answer.body["jobs"][1]["job"]["queue"], "q2");
    assert_eq!(answer.body["jobs"][0]["duplicate"], json!(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400() {
    let Some(h) = harness().await else { return };
    for body in ["{\"job\": ", "not json", "", "{\"job\": \"a\"} trailing"] {
        let answer = h
            .raw(Method::POST, "/api/v1/jobs", Some(body.to_string()))
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(answer.error_code(), "malformed_json", "{body:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_errors_are_422_naming_the_field() {
    let Some(h) = harness().await else { return };
    let cases = [
        (json!({"job": "a", "priority": "high"}), "priority: "),
        (
            json!({"job": "a", "colour": "red"}),
            "colour: unknown field",
        ),
        (json!({"payload": {}}), "missing field `job`"),
        (json!({"job": "a b"}), "job: "),
        (json!({"job": "a", "unique_for": "10m"}), "unique_for: "),
        (json!({"job": "a", "delay": "soon"}), "delay: "),
        (json!(["a"]), "the body: expected a JSON object"),
    ];
    for (body, expected) in cases {
        let answer = h.post("/api/v1/jobs", body.clone()).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(answer.error_code(), "invalid_field");
        assert!(
            answer.error_message().starts_with(expected),
            "{body}: {}",
            answer.error_message()
        );
    }
    let lease = h
        .post("/api/v1/leases", json!({"queues": ["default"]}))
        .await;
    assert_eq!(lease.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(lease.error_message().contains("worker_id"));
    let lease = h
        .post("/api/v1/leases", json!({"worker_id": "w", "max": 0}))
        .await;
    assert!(lease.error_message().starts_with("max: "));
    let lease = h
        .post("/api/v1/leases", json!({"worker_id": "w", "lease": "2h"}))
        .await;
    assert!(lease.error_message().starts_with("lease: "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_413() {
    let Some(h) = harness().await else { return };
    let big = "x".repeat(MAX_JOB);
    let answer = h
        .post("/api/v1/jobs", json!({"job": "a", "payload": big}))
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.error_code(), "too_large");

    // A declared Content-Length over the limit is refused before reading.
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/jobs")
        .header(header::CONTENT_LENGTH, (MAX_JOB + 1).to_string())
        .body(Body::from("x".repeat(MAX_JOB + 1)))
        .expect("request");
    let response = h.app.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // One batch item over the per-job limit, the batch itself under its limit.
    let small = "y".repeat(100);
    let answer = h
        .post(
            "/api/v1/jobs/batch",
            json!({"jobs": [{"job": "a", "payload": small}, {"job": "b", "payload": big}]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        answer.error_message().starts_with("jobs[1] "),
        "{}",
        answer.error_message()
    );

    // Many items under the per-job limit, over the batch limit.
    let item = json!({"job": "a", "payload": "z".repeat(MAX_JOB / 2)});
    let answer = h
        .post("/api/v1/jobs/batch", json!({"jobs": vec![item; 10]}))
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(h.list("").await.body["jobs"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_and_pages() {
    let Some(h) = harness().await else { return };
    let mut ids = Vec::new();
    for i in 0..5 {
        let queue = if i % 2 == 0 { "even" } else { "odd" };
        ids.push(id_of(
            &h.enqueue(json!({"job": "n", "queue": queue, "payload": i}))
                .await,
        ));
    }
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_string();
    loop {
        let page = h.list(&query).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let jobs = page.body["jobs"].as_array().expect("jobs");
        assert!(jobs.len() <= 2);
        seen.extend(jobs.iter().map(id_of));
        match page.body["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every job once, in enqueue order");

    let odd = h.list("?queue=odd").await;
    assert_eq!(odd.body["jobs"].as_array().expect("jobs").len(), 2);
    let queued = h.list("?state=queued&job=n").await;
    assert_eq!(queued.body["jobs"].as_array().expect("jobs").len(), 5);
    let none = h.list("?state=succeeded").await;
    assert_eq!(none.body["jobs"], json!([]));
    assert_eq!(none.body["next_cursor"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_parameters_are_400() {
    let Some(h) = harness().await else { return };
    for (query, name) in [
        ("?state=done", "state"),
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?cursor=abc", "cursor"),
    ] {
        let answer = h.list(query).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(answer.error_code(), "bad_request");
        assert!(
            answer.error_message().starts_with(name),
            "{query}: {}",
            answer.error_message()
        );
    }
    let job = h.enqueue(json!({"job": "a"})).await;
    let answer = h
        .get(&format!("/api/v1/jobs/{}?wait=forever", id_of(&job)))
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error_message().starts_with("wait"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_jobs_routes_and_methods_answer_json_errors() {
    let Some(h) = harness().await else { return };
    let missing = h
        .get("/api/v1/jobs/0192f1c2-0000-7000-8000-000000000000")
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error_code(), "not_found");
    let bad_id = h.get("/api/v1/jobs/not-a-uuid").await;
    assert_eq!(bad_id.status, StatusCode::NOT_FOUND);
    let route = h.get("/api/v1/nothing").await;
    assert_eq!(route.status, StatusCode::NOT_FOUND);
    assert_eq!(route.error_code(), "not_found");
    let method = h.raw(Method::DELETE, "/api/v1/jobs", None).await;
    assert_eq!(method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(method.error_code(), "method_not_allowed");
    let allow = method.headers[header::ALLOW].to_str().expect("ascii");
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let cancel = h
        .post(
            "/api/v1/jobs/0192f1c2-0000-7000-8000-000000000000/cancel",
            json!({}),
        )
        .await;
    assert_eq!(cancel.status, StatusCode::NOT_FOUND);
    for action in ["heartbeat", "complete", "fail"] {
        let answer = h
            .post(
                &format!("/api/v1/jobs/0192f1c2-0000-7000-8000-000000000000/{action}"),
                if action == "fail" {
                    json!({"lease_token": 1, "error": "x"})
                } else {
                    json!({"lease_token": 1})
                },
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{action}: {}",
            answer.body
        );
        assert_eq!(answer.error_code(), "not_found");
    }
}

/// A worker leasing over HTTP reports itself (`PUT /api/v1/workers/{id}`), is listed with
/// role `worker`, and leaves (`DELETE`); what it reports is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_report_themselves_and_leave() {
    let Some(h) = harness().await else { return };
    let report = json!({"host": "box-1", "pid": 42, "queues": ["a", "b"], "concurrency": 3,
                        "started_at": "2026-11-29T10:00:00Z"});
    let put = |id: &str, body: Value| {
        let request = Request::builder()
            .method(Method::PUT)
            .uri(format!("/api/v1/workers/{id}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("request");
        let app = h.app.clone();
        async move {
            let response = app.oneshot(request).await.expect("answer");
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("body");
            (
                status,
                serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = put("box-1:42", report.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["role"], "worker");
    let listed = h.get("/api/v1/workers").await;
    let workers = listed.body["workers"].as_array().expect("workers").clone();
    let me = workers
        .iter()
        .find(|w| w["id"] == "box-1:42")
        .unwrap_or_else(|| panic!("not listed: {}", listed.body));
    assert_eq!(
        (&me["role"], &me["pid"], &me["queues"], &me["concurrency"]),
        (&json!("worker"), &json!(42), &json!(["a", "b"]), &json!(3))
    );
    for (bad, field) in [
        (
            json!({"host": "", "pid": 1, "concurrency": 1, "started_at": "2026-11-29T10:00:00Z"}),
            "host",
        ),
        (
            json!({"host": "h\u{0}", "pid": 1, "concurrency": 1, "started_at": "2026-11-29T10:00:00Z"}),
            "host",
        ),
        (
            json!({"host": "h", "pid": 1, "concurrency": 1, "queues": ["a b"], "started_at": "2026-11-29T10:00:00Z"}),
            "queues[0]",
        ),
        (
            json!({"host": "h", "pid": 1, "concurrency": 1, "started_at": "2026-11-29T10:00:00Z", "role": "serve"}),
            "role",
        ),
        (
            json!({"host": "h", "pid": -1, "concurrency": 1, "started_at": "2026-11-29T10:00:00Z"}),
            "pid",
        ),
        (
            json!({"host": "h", "pid": 1u64 << 40, "concurrency": 1, "started_at": "2026-11-29T10:00:00Z"}),
            "pid",
        ),
        (
            json!({"host": "h".repeat(201), "pid": 1, "concurrency": 1, "started_at": "2026-11-29T10:00:00Z"}),
            "host",
        ),
        (
            json!({"host": "h", "pid": 1, "concurrency": 1, "started_at": "+10000-01-01T00:00:00Z"}),
            "started_at",
        ),
    ] {
        let (status, body) = put("x", bad.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(field), "{bad}: {message}");
    }
    let request = Request::builder()
        .method(Method::DELETE)
        .uri("/api/v1/workers/box-1:42")
        .body(Body::empty())
        .expect("request");
    let response = h.app.clone().oneshot(request).await.expect("answer");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let listed = h.get("/api/v1/workers").await;
    assert!(
        !listed.body["workers"]
            .as_array()
            .expect("workers")
            .iter()
            .any(|w| w["id"] == "box-1:42"),
        "{}",
        listed.body
    );
}

/// `release` hands a leased job back: queued at once, the attempt not counted; only with the
/// current lease token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_hands_the_job_back_uncounted() {
    let Some(h) = harness().await else { return };
    let job = h.enqueue(json!({"job": "resize", "queue": "rel"})).await;
    let url = format!("/api/v1/jobs/{}", id_of(&job));
    let leased = h
        .lease(json!({"queues": ["rel"], "worker_id": "w", "max": 1}))
        .await;
    let token = leased[0]["lease_token"].as_i64().expect("token");

    for wrong in [json!(token + 1), json!(-1), json!(i64::MAX), json!(i64::MIN)] {
        let stale = h
            .post(&format!("{url}/release"), json!({"lease_token": wrong}))
            .await;
        assert_eq!(stale.status, StatusCode::CONFLICT, "{wrong}: {}", stale.body);
        assert_eq!(stale.error_code(), "stale_lease");
    }
    let huge = h
        .post(&format!("{url}/release"), json!({"lease_token": u64::MAX}))
        .await;
    assert_eq!(huge.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", huge.body);
    let bad = h
        .post(
            &format!("{url}/release"),
            json!({"lease_token": token, "x": 1}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    assert_eq!(h.get(&url).await.body["state"], "running");

    let released = h
        .post(&format!("{url}/release"), json!({"lease_token": token}))
        .await;
    assert_eq!(released.status, StatusCode::OK, "{}", released.body);
    assert_eq!(released.body["state"], "queued");
    assert_eq!(released.body["attempt"], 0);
    assert_eq!(released.body["errors"], json!([]));

    let again = h
        .post(&format!("{url}/release"), json!({"lease_token": token}))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    // Leasable again, as its first counted attempt.
    let leased = h
        .lease(json!({"queues": ["rel"], "worker_id": "w2", "max": 1}))
        .await;
    assert_eq!(leased[0]["attempt"], 1);
    let unknown = h
        .post(
            "/api/v1/jobs/0192f1c2-0000-7000-8000-000000000009/release",
            json!({"lease_token": 1}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_heartbeat_complete() {
    let Some(h) = harness().await else { return };
    let job = h
        .enqueue(json!({"job": "resize", "payload": {"w": 10}, "timeout": "5m"}))
        .await;
    let leased = h
        .lease(json!({"queues": ["default"], "worker_id": "host-1:42", "max": 10, "lease": "30s"}))
        .await;
    assert_eq!(leased.len(), 1);
    let lease = &leased[0];
    assert_eq!(lease["id"], job["id"]);
    assert_eq!(lease["attempt"], 1);
    assert_eq!(lease["payload"], json!({"w": 10}));
    assert_eq!(lease["timeout"], "5m");
    let token = lease["lease_token"].as_i64().expect("token");
    let url = format!("/api/v1/jobs/{}", id_of(&job));

    let running = h.get(&url).await;
    assert_eq!(running.body["state"], "running");
    assert_eq!(running.body["worker_id"], "host-1:42");

    let beat = h
        .post(
            &format!("{url}/heartbeat"),
            json!({"lease_token": token, "lease": "60s"}),
        )
        .await;
    assert_eq!(beat.status, StatusCode::OK, "{}", beat.body);
    assert_eq!(beat.body["cancel_requested"], json!(false));
    assert!(beat.body["lease_expires_at"].is_string());

    let done = h
        .post(
            &format!("{url}/complete"),
            json!({"lease_token": token, "result": {"ok": true}}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["state"], "succeeded");
    assert_eq!(done.body["result"], json!({"ok": true}));

    let again = h
        .post(&format!("{url}/complete"), json!({"lease_token": token}))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.error_code(), "stale_lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_token_after_rescue_is_409_and_changes_nothing() {
    let Some(h) = harness().await else { return };
    let job = h.enqueue(json!({"job": "slow"})).await;
    let url = format!("/api/v1/jobs/{}", id_of(&job));
    let first = h.lease(json!({"worker_id": "w1", "lease": "1s"})).await;
    let old_token = first[0]["lease_token"].as_i64().expect("token");

    // The lease runs out; the rescuer fails the attempt and the job is due again at once.
    h.clock.advance(chrono::Duration::seconds(5));
    let expired = h
        .store
        .job_expired_list(h.clock.now(), 10)
        .await
        .expect("expired list");
    assert_eq!(expired.len(), 1);
    let results = h
        .store
        .job_fail_many(
            vec![Failure {
                id: expired[0].id,
                lease_token: expired[0].lease_token,
                error: "lease expired".into(),
                outcome: FailOutcome::Retry {
                    run_at: h.clock.now(),
                },
                exit_code: None,
                rescued: None,
            }],
            h.clock.now(),
        )
        .await
        .expect("fail");
    assert!(results[0].is_ok(), "{results:?}");
    let second = h.lease(json!({"worker_id": "w2"})).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0]["attempt"], 2);
    let new_token = second[0]["lease_token"].as_i64().expect("token");
    assert_ne!(old_token, new_token);

    for (action, body) in [
        ("heartbeat", json!({"lease_token": old_token})),
        ("complete", json!({"lease_token": old_token, "result": 1})),
        (
            "fail",
            json!({"lease_token": old_token, "error": "late", "retry": false}),
        ),
    ] {
        let answer = h.post(&format!("{url}/{action}"), body).await;
        assert_eq!(
            answer.status,
            StatusCode::CONFLICT,
            "{action}: {}",
            answer.body
        );
        assert_eq!(answer.error_code(), "stale_lease", "{action}");
    }
    let shown = h.get(&url).await;
    assert_eq!(shown.body["state"], "running");
    assert_eq!(shown.body["worker_id"], "w2");
    assert_eq!(shown.body["result"], Value::Null);

    let done = h
        .post(
            &format!("{url}/complete"),
            json!({"lease_token": new_token}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_retries_then_dead_then_manual_retry_and_cancel() {
    let Some(h) = harness().await else { return };
    let job = h.enqueue(json!({"job": "flaky", "max_attempts": 2})).await;
    let url = format!("/api/v1/jobs/{}", id_of(&job));
    let leased = h.lease(json!({"worker_id": "w"})).await;
    let token = leased[0]["lease_token"].as_i64().expect("token");
    let failed = h
        .post(
            &format!("{url}/fail"),
            json!({"lease_token": token, "error": "boom"}),
        )
        .await;
    assert_eq!(failed.status, StatusCode::OK, "{}", failed.body);
    assert_eq!(failed.body["state"], "scheduled");
    assert_eq!(failed.body["errors"][0]["message"], "boom");
    assert_eq!(failed.body["errors"][0]["attempt"], 1);

    // Failing twice with the same token is refused.
    let twice = h
        .post(
            &format!("{url}/fail"),
            json!({"lease_token": token, "error": "boom"}),
        )
        .await;
    assert_eq!(twice.error_code(), "stale_lease");

    // After the backoff the second (last) attempt fails too: dead.
    h.clock.advance(chrono::Duration::seconds(10));
    let leased = h.lease(json!({"worker_id": "w"})).await;
    assert_eq!(leased.len(), 1);
    let token = leased[0]["lease_token"].as_i64().expect("token");
    let dead = h
        .post(
            &format!("{url}/fail"),
            json!({"lease_token": token, "error": "boom again"}),
        )
        .await;
    assert_eq!(dead.body["state"], "dead", "{}", dead.body);

    let retried = h.post(&format!("{url}/retry"), json!({})).await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    assert_eq!(retried.body["state"], "queued");
    assert_eq!(retried.body["errors"].as_array().expect("errors").len(), 2);
    let retry_again = h.post(&format!("{url}/retry"), json!({})).await;
    assert_eq!(retry_again.status, StatusCode::CONFLICT);
    assert_eq!(retry_again.error_code(), "conflict");

    let cancelled = h.post(&format!("{url}/cancel"), json!({})).await;
    assert_eq!(cancelled.status, StatusCode::OK);
    assert_eq!(cancelled.body["state"], "cancelled");
    let cancel_again = h.post(&format!("{url}/cancel"), json!({})).await;
    assert_eq!(cancel_again.status, StatusCode::CONFLICT);
    assert_eq!(cancel_again.error_code(), "conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_and_cancel_of_a_running_job() {
    let Some(h) = harness().await else { return };
    let a = h.enqueue(json!({"job": "a"})).await;
    let b = h.enqueue(json!({"job": "b"})).await;
    let leased = h.lease(json!({"worker_id": "w", "max": 2})).await;
    assert_eq!(leased.len(), 2);
    let token_of = |id: &Value| {
        leased
            .iter()
            .find(|l| l["id"] == *id)
            .and_then(|l| l["lease_token"].as_i64())
            .expect("leased")
    };
    let dead = h
        .post(
            &format!("/api/v1/jobs/{}/fail", id_of(&a)),
            json!({"lease_token": token_of(&a["id"]), "error": "bad input", "retry": false}),
        )
        .await;
    assert_eq!(dead.body["state"], "dead", "{}", dead.body);

    let url = format!("/api/v1/jobs/{}", id_of(&b));
    let cancel = h.post(&format!("{url}/cancel"), json!({})).await;
    assert_eq!(cancel.body["state"], "running");
    assert_eq!(cancel.body["cancel_requested"], json!(true));
    let beat = h
        .post(
            &format!("{url}/heartbeat"),
            json!({"lease_token": token_of(&b["id"])}),
        )
        .await;
    assert_eq!(beat.body["cancel_requested"], json!(true), "{}", beat.body);
    let stopped = h
        .post(
            &format!("{url}/fail"),
            json!({"lease_token": token_of(&b["id"]), "error": "stopped"}),
        )
        .await;
    assert_eq!(stopped.body["state"], "cancelled", "{}", stopped.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_queue_hands_out_no_leases() {
    let Some(h) = harness().await else { return };
    h.enqueue(json!({"job": "a", "queue": "media"})).await;
    let paused = h.post("/api/v1/queues/media/pause", json!({})).await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.body);
    assert_eq!(paused.body["name"], "media");
    assert_eq!(paused.body["paused"], json!(true));
    assert_eq!(paused.body["queued"], 1);
    assert!(h
        .lease(json!({"worker_id": "w", "queues": ["media"]}))
        .await
        .is_empty());

    let queues = h.get("/api/v1/queues").await;
    assert_eq!(queues.status, StatusCode::OK);
    let media = queues.body["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["name"] == "media")
        .cloned()
        .expect("media listed");
    assert_eq!(media["paused"], json!(true));

    let resumed = h.post("/api/v1/queues/media/resume", json!({})).await;
    assert_eq!(resumed.body["paused"], json!(false));
    assert_eq!(
        h.lease(json!({"worker_id": "w", "queues": ["media"]}))
            .await
            .len(),
        1
    );

    let unused = h.post("/api/v1/queues/empty/resume", json!({})).await;
    assert_eq!(unused.status, StatusCode::OK, "{}", unused.body);
    assert_eq!(unused.body["queued"], 0);
    let bad = h.post("/api/v1/queues/a%20b/pause", json!({})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_when_the_job_finishes() {
    let Some(h) = harness().await else { return };
    let h = Arc::new(h);
    let job = h.enqueue(json!({"job": "a"})).await;
    let url = format!("/api/v1/jobs/{}", id_of(&job));

    // Without anything happening, the wait runs out and the job is answered as it is.
    let started = tokio::time::Instant::now();
    let answer = h.get(&format!("{url}?wait=300ms")).await;
    assert_eq!(answer.body["state"], "queued");
    assert!(started.elapsed() >= Duration::from_millis(300));

    let leased = h.lease(json!({"worker_id": "w"})).await;
    let token = leased[0]["lease_token"].as_i64().expect("token");
    let waiter = {
        let h = h.clone();
        let url = url.clone();
        tokio::spawn(async move { h.get(&format!("{url}?wait=30s")).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "the wait must hold the answer");
    let started = tokio::time::Instant::now();
    let done = h
        .post(&format!("{url}/complete"), json!({"lease_token": token}))
        .await;
    assert_eq!(done.status, StatusCode::OK);
    let answer = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the wait ends when the job finishes")
        .expect("task");
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["state"], "succeeded");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_wait_returns_when_a_job_arrives() {
    let Some(h) = harness().await else { return };
    let h = Arc::new(h);
    let waiter = {
        let h = h.clone();
        tokio::spawn(async move {
            h.lease(json!({"worker_id": "w", "queues": ["media"], "wait": "20s"}))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "nothing to lease yet");
    h.enqueue(json!({"job": "other-queue"})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "a job on another queue does not count"
    );
    let job = h.enqueue(json!({"job": "a", "queue": "media"})).await;
    answered_with(waiter, &job).await;

    // With a wait and nothing to do, the answer is empty after the wait.
    let started = tokio::time::Instant::now();
    let none = h
        .lease(json!({"worker_id": "w", "queues": ["media"], "wait": "400ms"}))
        .await;
    assert!(none.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(400));
}

/// A lease waiting on its queue is parked with the store: a job enqueued through the same
/// server is leased for it in the enqueue's own transaction, so the enqueue announces no
/// `JobsAvailable` (nothing waits), and the waiting lease's answer is that job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_lease_is_handed_a_job_in_its_enqueue() {
    let Some(h) = harness().await else { return };
    let h = Arc::new(h);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // The wait parks once its first lease found nothing: tried until one job is handed.
    for round in 0.. {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no job was leased in its enqueue's transaction"
        );
        let waiter = {
            let h = h.clone();
            tokio::spawn(async move {
                h.lease(json!({"worker_id": "w", "queues": ["handed"], "max": 3, "wait": "20s"}))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut events = h.store.subscribe();
        let job = h.enqueue(json!({"job": "a", "queue": "handed"})).await;
        let leased = answered_with(waiter, &job).await;
        // Everything the enqueue announced has arrived once a later write's event has.
        let marker = format!("marker-{round}");
        h.store
            .queue_set_paused(&marker, false)
            .await
            .expect("the marker");
        let mut announced = false;
        loop {
            match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
                Ok(Ok(StoreEvent::JobsAvailable { queue })) if queue == marker => break,
                Ok(Ok(StoreEvent::JobsAvailable { queue })) if queue == "handed" => {
                    announced = true
                }
                Ok(Ok(_)) => {}
                other => panic!("waiting for the marker event: {other:?}"),
            }
        }
        if !announced {
            break;
        }
        let done = h
            .post(
                &format!("/api/v1/jobs/{}/complete", id_of(&job)),
                json!({"lease_token": leased[0]["lease_token"]}),
            )
            .await;
        assert_eq!(done.status, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let Some(h) = harness().await else { return };
    let health = h.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body, json!({"status": "ok"}));
    let ready = h.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body["status"], "ready");
    assert!(ready.body.get("reason").is_none(), "{}", ready.body);
    // The SQLite store reports its write-ahead log; details never decide readiness.
    if backend::KIND == "sqlite" {
        assert_eq!(ready.body["details"]["wal_limit_bytes"], 64 * 1024 * 1024);
    }
    h.ready.store(false, Ordering::Release);
    let not_ready = h.get("/readyz").await;
    assert_eq!(not_ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(not_ready.body["status"], "not_ready");
    assert!(not_ready.body["reason"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_names_at_most_the_bound_of_queues() {
    let Some(h) = harness_with(1 << 20).await else { return };
    let bound = hinter_core::limits::MAX_LEASE_QUEUES;
    let names = |n: usize| (0..n).map(|i| format!("q{i}")).collect::<Vec<_>>();
    let over = h
        .post(
            "/api/v1/leases",
            json!({"worker_id": "w", "queues": names(bound + 1)}),
        )
        .await;
    assert_eq!(
        over.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        over.body
    );
    assert_eq!(over.error_code(), "invalid_field");
    assert!(
        over.error_message().starts_with("queues: ")
            && over.error_message().contains(&format!("at most {bound}")),
        "{}",
        over.error_message()
    );

    // The bound counts distinct names: all of them, each twice, is fine.
    let job = h.enqueue(json!({"job": "a", "queue": "q999"})).await;
    let mut queues = names(bound);
    queues.extend(names(bound));
    let leased = h
        .lease(json!({"worker_id": "w", "queues": queues, "max": 5}))
        .await;
    assert_eq!(leased.len(), 1);
    assert_eq!(id_of(&leased[0]), id_of(&job));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_error_is_stored_cut_to_the_bound() {
    let Some(h) = harness_with(1 << 20).await else { return };
    let job = h.enqueue(json!({"job": "a"})).await;
    let leased = h.lease(json!({"worker_id": "w"})).await;
    let token = leased[0]["lease_token"].as_i64().expect("token");
    let huge = "z".repeat(100_000);
    let failed = h
        .post(
            &format!("/api/v1/jobs/{}/fail", id_of(&job)),
            json!({"lease_token": token, "error": huge}),
        )
        .await;
    assert_eq!(failed.status, StatusCode::OK, "{}", failed.body);
    let message = failed.body["errors"][0]["message"]
        .as_str()
        .expect("message");
    assert!(message.len() <= hinter_core::limits::MAX_ERROR_BYTES);
    assert!(message.starts_with("zzzz"));
    assert!(
        message.ends_with("… [truncated from 100000 bytes]"),
        "{}",
        &message[message.len() - 40..]
    );
    assert_eq!(failed.body["errors_omitted"], 0);
}

/// `GET /api/v1/jobs/{id}` shows the job's attempts as `runs`, oldest first (a released
/// attempt as `released`); listings leave them out unless `include=runs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_shows_its_runs_and_listings_only_when_asked() {
    let Some(h) = harness().await else { return };
    let job = h.enqueue(json!({"job": "flaky"})).await;
    let url = format!("/api/v1/jobs/{}", id_of(&job));
    let leased = h.lease(json!({"worker_id": "w1"})).await;
    let token = leased[0]["lease_token"].as_i64().expect("token");
    let released = h
        .post(&format!("{url}/release"), json!({"lease_token": token}))
        .await;
    assert_eq!(released.status, StatusCode::OK, "{}", released.body);
    let leased = h.lease(json!({"worker_id": "w2"})).await;
    let token = leased[0]["lease_token"].as_i64().expect("token");
    h.clock.advance(chrono::Duration::milliseconds(1500));
    let failed = h
        .post(
            &format!("{url}/fail"),
            json!({"lease_token": token, "error": "boom"}),
        )
        .await;
    assert_eq!(failed.status, StatusCode::OK, "{}", failed.body);

    let shown = h.get(&url).await;
    assert_eq!(shown.status, StatusCode::OK);
    let runs = shown.body["runs"].as_array().expect("runs").clone();
    assert_eq!(runs.len(), 2, "{}", shown.body);
    assert_eq!(
        (
            &runs[0]["outcome"],
            &runs[0]["worker_id"],
            &runs[0]["attempt"]
        ),
        (&json!("released"), &json!("w1"), &json!(1))
    );
    assert_eq!(
        (
            &runs[1]["outcome"],
            &runs[1]["worker_id"],
            &runs[1]["error"]
        ),
        (&json!("failed"), &json!("w2"), &json!("boom"))
    );
    assert_eq!(runs[1]["duration_ms"], 1500);
    assert_eq!(runs[1]["exit_code"], Value::Null);

    let listed = h.list("").await;
    assert_eq!(listed.body["jobs"][0].get("runs"), None, "{}", listed.body);
    let listed = h.list("?include=runs").await;
    assert_eq!(listed.body["jobs"][0]["runs"], json!(runs));
    let listed = h.list("?include=all").await;
    assert_eq!(listed.body["jobs"][0]["runs"], json!(runs));
    assert!(listed.body["jobs"][0].get("payload").is_some(), "{}", listed.body);
    let bad = h.list("?include=runs,secrets").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert!(
        bad.error_message().starts_with("include: "),
        "{}",
        bad.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_page_after_an_id_with_filters() {
    let Some(h) = harness().await else { return };
    let a = h.enqueue(json!({"job": "a", "queue": "q1"})).await;
    let b = h.enqueue(json!({"job": "b", "queue": "q2"})).await;
    let leased = h.lease(json!({"worker_id": "w", "queues": ["q1"]})).await;
    let token = leased[0]["lease_token"].as_i64().expect("token");
    let done = h
        .post(
            &format!("/api/v1/jobs/{}/complete", id_of(&a)),
            json!({"lease_token": token}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK);

    let all = events_once_settled(&h, "/api/v1/events", 4).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    let events = all.body["events"].as_array().expect("events").clone();
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["kind"].as_str().unwrap_or(""), e["job"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        kinds,
        [("created", "a"), ("created", "b"), ("started", "a"), ("succeeded", "a")]
    );
    assert_eq!(events[2]["data"]["worker_id"], "w");
    assert_eq!(events[2]["attempt"], 1);
    assert_eq!(events[1]["job_id"], b["id"]);
    let last = events[3]["id"].as_i64().expect("id");
    assert_eq!(all.body["next_after"], last);

    // After an id, with a limit, by queue, job and job id.
    let first = events[0]["id"].as_i64().expect("id");
    let page = h.get(&format!("/api/v1/events?after={first}&limit=2")).await;
    assert_eq!(page.body["events"].as_array().map(Vec::len), Some(2));
    assert_eq!(page.body["events"][0], events[1]);
    assert_eq!(page.body["next_after"], events[2]["id"]);
    for (query, want) in [
        ("queue=q2", vec![1]),
        ("job=a", vec![0, 2, 3]),
        (&format!("job_id={}", id_of(&a)) as &str, vec![0, 2, 3]),
    ] {
        let page = h.get(&format!("/api/v1/events?{query}")).await;
        let got = page.body["events"].as_array().expect("events").clone();
        let want: Vec<Value> = want.into_iter().map(|i| events[i].clone()).collect();
        assert_eq!(got, want, "{query}");
    }
    // The largest id reads nothing and stays there, on every backend.
    let past = h.get(&format!("/api/v1/events?after={}", i64::MAX)).await;
    assert_eq!(past.status, StatusCode::OK, "{}", past.body);
    assert_eq!(past.body["events"], json!([]));
    assert_eq!(past.body["next_after"], i64::MAX);
    // A filter matching nothing still answers where the log ends.
    let none = h.get("/api/v1/events?queue=nobody").await;
    assert_eq!(none.body["events"], json!([]));
    assert_eq!(none.body["next_after"], last);

    // Bad parameters are 400 and name the parameter.
    for query in [
        "after=-1",
        "after=x",
        "after=99999999999999999999",
        "limit=0",
        "limit=1001",
        "wait=forever",
        "job_id=nope",
        "queue=a%00b",
        "colour=red",
    ] {
        let answer = h.get(&format!("/api/v1/events?{query}")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}: {}", answer.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_returns_when_an_event_is_logged() {
    let Some(h) = harness().await else { return };
    let h = Arc::new(h);
    let end = h.get("/api/v1/events").await.body["next_after"]
        .as_i64()
        .expect("next_after");
    let started = tokio::time::Instant::now();
    let empty = h.get(&format!("/api/v1/events?after={end}&wait=300ms")).await;
    assert_eq!(empty.body["events"], json!([]));
    assert!(started.elapsed() >= Duration::from_millis(300));

    let waiter = {
        let h = h.clone();
        tokio::spawn(async move {
            h.get(&format!("/api/v1/events?after={end}&queue=later&wait=30s"))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.enqueue(json!({"job": "elsewhere"})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "an event of another queue does not count");
    let job = h.enqueue(json!({"job": "x", "queue": "later"})).await;
    let answer = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the wait ends when a matching event is logged")
        .expect("task");
    assert_eq!(answer.body["events"][0]["job_id"], job["id"]);
    assert_eq!(answer.body["events"][0]["kind"], "created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_keeps_the_exit_code_in_the_run_and_the_log() {
    let Some(h) = harness().await else { return };
    let job = h.enqueue(json!({"job": "cmd", "max_attempts": 3})).await;
    let url = format!("/api/v1/jobs/{}", id_of(&job));
    let leased = h.lease(json!({"worker_id": "w"})).await;
    let token = leased[0]["lease_token"].as_i64().expect("token");
    // Out of range for an exit code: refused, and nothing changes.
    for bad in [json!(1u64 << 40), json!("3"), json!(1.5)] {
        let answer = h
            .post(
                &format!("{url}/fail"),
                json!({"lease_token": token, "error": "boom", "exit_code": bad}),
            )
            .await;
        assert!(answer.status.is_client_error(), "{bad}: {}", answer.body);
        assert_eq!(h.get(&url).await.body["state"], "running");
    }
    let failed = h
        .post(
            &format!("{url}/fail"),
            json!({"lease_token": token, "error": "boom", "exit_code": i32::MIN}),
        )
        .await;
    assert_eq!(failed.status, StatusCode::OK, "{}", failed.body);
    let shown = h.get(&url).await;
    assert_eq!(shown.body["runs"][0]["exit_code"], i32::MIN, "{}", shown.body);
    let events = events_once_settled(
        &h,
        &format!("/api/v1/events?job_id={}", id_of(&job)),
        3,
    )
    .await;
    let failed_event = events.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "failed")
        .cloned()
        .expect("a failed event");
    assert_eq!(
        failed_event["data"],
        json!({"error": "boom", "exit_code": i32::MIN})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_limited_to_job_names() {
    let Some(h) = harness().await else { return };
    let report = h.enqueue(json!({"job": "report", "priority": 9})).await;
    let resize = h.enqueue(json!({"job": "resize"})).await;
    let leased = h
        .lease(json!({"worker_id": "w", "max": 10, "jobs": ["resize", "unknown"]}))
        .await;
    assert_eq!(leased.len(), 1, "{leased:?}");
    assert_eq!(leased[0]["id"], resize["id"]);
    let rest = h.lease(json!({"worker_id": "w", "max": 10, "jobs": []})).await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0]["id"], report["id"]);
    // Names are checked like job names; too many are refused.
    let many: Vec<String> = (0..1001).map(|i| format!("job-{i}")).collect();
    for bad in [json!(["a\u{0}b"]), json!([""]), json!(many), json!("resize")] {
        let answer = h
            .post("/api/v1/leases", json!({"worker_id": "w", "jobs": bad}))
            .await;
        assert!(answer.status.is_client_error(), "{}", answer.body);
    }
}

/// `report` appends lines under the running attempt and sets progress and checkpoint;
/// `logs` pages through them by `after`, per `attempt`; stale tokens are 409, unknown jobs
/// 404, bad reports 422, bad parameters 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_and_logs() {
    let Some(h) = harness().await else { return };
    let id = id_of(&h.enqueue(json!({"job": "script"})).await);
    let leased = h.lease(json!({"worker_id": "w"})).await;
    let token = leased[0]["lease_token"].clone();
    let now = Utc::now().to_rfc3339();
    let report = h
        .post(
            &format!("/api/v1/jobs/{id}/report"),
            json!({"lease_token": token, "logs": [
                {"at": now, "stream": "stdout", "line": "one"},
                {"at": now, "stream": "stderr", "line": "two"},
                {"at": now, "stream": "hinter", "line": "three"}],
              "progress": {"percent": 30, "message": "going", "at": now},
              "checkpoint": {"k": 1}}),
        )
        .await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.body);
    assert_eq!(report.body, json!({"logged": 3}));
    let job = h.get(&format!("/api/v1/jobs/{id}")).await.body;
    assert_eq!(job["progress"]["percent"], json!(30.0));
    assert_eq!(job["progress"]["message"], "going");
    assert_eq!(job["checkpoint"], json!({"k": 1}));

    let all = h.get(&format!("/api/v1/jobs/{id}/logs")).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    let lines = all.body["lines"].as_array().expect("lines").clone();
    let levels: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["level"].as_str().unwrap_or(""), l["line"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(levels, [("info", "one"), ("error", "two"), ("warn", "three")]);
    assert_eq!(all.body["next_after"], lines[2]["id"]);
    let first_id = lines[0]["id"].as_i64().expect("id");
    let page = h
        .get(&format!("/api/v1/jobs/{id}/logs?after={first_id}&limit=1&attempt=1"))
        .await;
    assert_eq!(page.body["lines"].as_array().map(Vec::len), Some(1));
    assert_eq!(page.body["lines"][0]["line"], "two");
    let other = h.get(&format!("/api/v1/jobs/{id}/logs?attempt=2")).await;
    assert_eq!(other.body["lines"], json!([]));
    assert_eq!(other.body["next_after"], json!(0));

    for bad in ["after=-1", "after=x", "attempt=0", "limit=0", "limit=1001"] {
        let answer = h.get(&format!("/api/v1/jobs/{id}/logs?{bad}")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}: {}", answer.body);
    }
    let unknown = h
        .get("/api/v1/jobs/01a228aa-0000-7000-8000-000000000000/logs")
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);

    let stale = h
        .post(
            &format!("/api/v1/jobs/{id}/report"),
            json!({"lease_token": 1, "logs": [{"at": now, "stream": "stdout", "line": "x"}]}),
        )
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.body);
    assert_eq!(stale.error_code(), "stale_lease");
    let bad = h
        .post(
            &format!("/api/v1/jobs/{id}/report"),
            json!({"lease_token": token, "progress": {"percent": 101, "at": now}}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    assert!(bad.error_message().contains("progress.percent"), "{}", bad.body);
    let unknown_field = h
        .post(
            &format!("/api/v1/jobs/{id}/report"),
            json!({"lease_token": token, "lines": []}),
        )
        .await;
    assert_eq!(unknown_field.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", unknown_field.body);
    let lines_after = h.get(&format!("/api/v1/jobs/{id}/logs")).await;
    assert_eq!(lines_after.body["lines"].as_array().map(Vec::len), Some(3), "nothing more");
}

/// `GET /api/v1/definitions` lists the catalog (with errors) and code definitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_are_listed() {
    let Some(h) = harness().await else { return };
    let empty = h.get("/api/v1/definitions").await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.body, json!({"definitions": []}));
    h.definitions.replace_all(
        vec![
            hinter_core::JobDefinition {
                name: "script".into(),
                queue: Some("media".into()),
                ..Default::default()
            },
            hinter_core::JobDefinition {
                name: "code".into(),
                max_attempts: Some(2),
                ..Default::default()
            },
        ],
        vec![
            hinter_core::DefinitionInfo {
                name: "script".into(),
                kind: "triggered".into(),
                folder: Some("jobs/triggered/script".into()),
                file: Some("run.sh".into()),
                interpreter: Some(vec!["bash".into()]),
                settings: json!({"queue": "media"}),
                error: None,
                status: None,
            },
            hinter_core::DefinitionInfo {
                name: "broken".into(),
                kind: "triggered".into(),
                folder: Some("jobs/triggered/broken".into()),
                file: None,
                interpreter: None,
                settings: Value::Null,
                error: Some("nothing to run".into()),
                status: None,
            },
        ],
    );
    let listed = h.get("/api/v1/definitions").await.body;
    let names: Vec<(&str, &str)> = listed["definitions"]
        .as_array()
        .expect("definitions")
        .iter()
        .map(|d| (d["name"].as_str().unwrap_or(""), d["kind"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(names, [("broken", "triggered"), ("script", "triggered"), ("code", "code")]);
    assert_eq!(listed["definitions"][0]["error"], "nothing to run");
    assert_eq!(listed["definitions"][2]["settings"]["max_attempts"], 2);
    // The definition applies on enqueue.
    let job = h.enqueue(json!({"job": "script"})).await;
    assert_eq!(job["queue"], "media");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_create_show_change_pause_delete() {
    let Some(h) = harness().await else { return };
    let nightly = json!({"name": "nightly", "cron": "30 2 * * *", "time_zone": "America/New_York",
                         "job": "report", "payload": {"kind": "daily"}});
    let created = h.post("/api/v1/schedules", nightly.clone()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.headers[header::LOCATION], "/api/v1/schedules/nightly");
    assert_eq!(created.body["overlap"], "skip");
    assert_eq!(created.body["misfire"], "run_once");
    assert_eq!(created.body["source"], "api");
    let times = created.body["next_fire_times"].as_array().expect("times");
    assert_eq!(times.len(), 5);
    assert_eq!(created.body["next_fire_at"], times[0]);

    let dup = h.post("/api/v1/schedules", nightly).await;
    assert_eq!(dup.status, StatusCode::CONFLICT, "{}", dup.body);
    assert!(dup.error_message().contains("nightly"));

    for (body, field) in [
        (json!({"name": "x", "cron": "61 * * * *", "job": "j"}), "cron"),
        (json!({"name": "x", "cron": "* * *", "job": "j"}), "cron"),
        (json!({"name": "x", "cron": "* * * * *", "time_zone": "Mars/Base", "job": "j"}), "time_zone"),
        (json!({"name": "x", "job": "j"}), "cron"),
        (json!({"name": "x", "cron": "* * * * *", "job": "j", "overlap": "maybe"}), "overlap"),
        (json!({"name": "x", "cron": "* * * * *", "job": "j", "every": "1m"}), "every"),
    ] {
        let answer = h.post("/api/v1/schedules", body.clone()).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", answer.body);
        assert!(answer.error_message().contains(field), "{body}: {}", answer.body);
    }
    assert_eq!(h.raw(Method::POST, "/api/v1/schedules", Some("{".into())).await.status, StatusCode::BAD_REQUEST);

    let shown = h.get("/api/v1/schedules/nightly").await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.body["payload"], json!({"kind": "daily"}));
    let missing = h.get("/api/v1/schedules/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error_code(), "not_found");

    let changed = h
        .raw(Method::PUT, "/api/v1/schedules/nightly",
             Some(json!({"cron": "@hourly", "job": "report", "overlap": "allow"}).to_string()))
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(changed.body["cron"], "@hourly");
    assert_eq!(changed.body["created_at"], created.body["created_at"]);
    let renamed = h
        .raw(Method::PUT, "/api/v1/schedules/nightly",
             Some(json!({"name": "other", "cron": "@hourly", "job": "report"}).to_string()))
        .await;
    assert_eq!(renamed.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(renamed.error_message().starts_with("name"), "{}", renamed.body);
    let put_new = h
        .raw(Method::PUT, "/api/v1/schedules/once",
             Some(json!({"at": "2030-01-01T00:00:00Z", "job": "report"}).to_string()))
        .await;
    assert_eq!(put_new.status, StatusCode::CREATED, "{}", put_new.body);
    assert_eq!(put_new.body["next_fire_times"], json!(["2030-01-01T00:00:00Z"]));

    let paused = h.post("/api/v1/schedules/nightly/pause", json!(null)).await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.body);
    assert_eq!(paused.body["paused"], true);
    assert_eq!(paused.body["next_fire_times"], json!([]));
    let resumed = h.post("/api/v1/schedules/nightly/resume", json!(null)).await;
    assert_eq!(resumed.body["paused"], false);
    assert_eq!(resumed.body["next_fire_times"].as_array().map(Vec::len), Some(5));
    assert_eq!(h.post("/api/v1/schedules/nope/pause", json!(null)).await.status, StatusCode::NOT_FOUND);

    let history = h.get("/api/v1/schedules/nightly/occurrences").await;
    assert_eq!(history.status, StatusCode::OK);
    assert_eq!(history.body["occurrences"], json!([]));
    assert_eq!(h.get("/api/v1/schedules/nope/occurrences").await.status, StatusCode::NOT_FOUND);

    let listed = h.get("/api/v1/schedules").await;
    let names: Vec<&str> = listed.body["schedules"].as_array().expect("list").iter()
        .map(|s| s["name"].as_str().expect("name")).collect();
    assert_eq!(names, ["nightly", "once"]);

    let deleted = h.raw(Method::DELETE, "/api/v1/schedules/nightly", None).await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(h.get("/api/v1/schedules/nightly").await.status, StatusCode::NOT_FOUND);
    assert_eq!(h.raw(Method::DELETE, "/api/v1/schedules/nightly", None).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_history_shows_fired_jobs_and_pages() {
    let Some(h) = harness().await else { return };
    let created = h
        .post("/api/v1/schedules", json!({"name": "tick", "cron": "* * * * * *", "job": "t", "overlap": "allow"}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let scheduler = hinter_engine::Scheduler::new(
        h.store.clone(),
        Arc::new(h.clock.clone()),
        hinter_engine::SchedulerOptions::default(),
    );
    for _ in 0..3 {
        h.clock.advance(chrono::Duration::seconds(1));
        scheduler.fire_due().await.expect("fire");
    }
    let page = h.get("/api/v1/schedules/tick/occurrences?limit=2").await;
    let occurrences = page.body["occurrences"].as_array().expect("occurrences");
    assert_eq!(occurrences.len(), 2, "{}", page.body);
    assert!(occurrences.iter().all(|o| o["outcome"] == "fired"));
    let job_id = occurrences[0]["job_id"].as_str().expect("job id");
    assert_eq!(h.get(&format!("/api/v1/jobs/{job_id}")).await.status, StatusCode::OK);
    let before = page.body["next_before"].as_str().expect("next page");
    let rest = h.get(&format!("/api/v1/schedules/tick/occurrences?before={before}")).await;
    assert!(rest.body["next_before"].is_null(), "{}", rest.body);
    assert!(!rest.body["occurrences"].as_array().expect("rest").is_empty());
    assert_eq!(h.get("/api/v1/schedules/tick/occurrences?before=yesterday").await.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_finished_jobs_and_purge_a_queue() {
    let Some(h) = harness().await else { return };
    let waiting = id_of(&h.enqueue(json!({"job": "a", "queue": "del"})).await);
    let answer = h.raw(Method::DELETE, &format!("/api/v1/jobs/{waiting}"), None).await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.body);
    h.post(&format!("/api/v1/jobs/{waiting}/cancel"), json!({})).await;
    let answer = h.raw(Method::DELETE, &format!("/api/v1/jobs/{waiting}"), None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["state"], "cancelled", "answered as it was");
    let gone = h.get(&format!("/api/v1/jobs/{waiting}")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let again = h.raw(Method::DELETE, &format!("/api/v1/jobs/{waiting}"), None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.body);
    let audit = h.get("/api/v1/audit").await.body;
    assert!(
        audit.to_string().contains("job.delete"),
        "the delete is audited: {audit}"
    );

    // One dead elsewhere; three dead, three succeeded, one still queued in "purge".
    h.enqueue(json!({"job": "p", "queue": "elsewhere"})).await;
    for i in 0..7 {
        h.enqueue(json!({"job": "p", "queue": "purge", "payload": i})).await;
    }
    let leased = h
        .lease(json!({"worker_id": "w", "queues": ["purge", "elsewhere"], "max": 7}))
        .await;
    assert_eq!(leased.len(), 7);
    for (i, job) in leased.iter().enumerate() {
        let id = id_of(job);
        let token = job["lease_token"].clone();
        let answer = if i < 4 {
            h.post(
                &format!("/api/v1/jobs/{id}/fail"),
                json!({"lease_token": token, "error": "x", "retry": false}),
            )
            .await
        } else {
            h.post(
                &format!("/api/v1/jobs/{id}/complete"),
                json!({"lease_token": token}),
            )
            .await
        };
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    let count = |state: &'static str, queue: &'static str| {
        let h = &h;
        async move {
            h.get(&format!("/api/v1/jobs?state={state}&queue={queue}&limit=100"))
                .await
                .body["jobs"]
                .as_array()
                .map_or(0, Vec::len)
        }
    };
    let dead_before = count("dead", "purge").await;
    assert_eq!(dead_before, 3);
    let purged = h
        .post("/api/v1/queues/purge/purge", json!({"states": ["dead"]}))
        .await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.body);
    assert_eq!(purged.body["deleted"], json!(dead_before));
    assert_eq!(count("dead", "purge").await, 0);
    assert_eq!(count("succeeded", "purge").await, 3);
    assert_eq!(count("queued", "purge").await, 1, "a waiting job is never purged");
    assert_eq!(count("dead", "elsewhere").await, 1, "other queues are left alone");
    // Without a body: every finished state.
    let purged = h.raw(Method::POST, "/api/v1/queues/purge/purge", None).await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.body);
    assert_eq!(count("succeeded", "purge").await, 0);
    assert_eq!(count("queued", "purge").await, 1);
    for (body, status) in [
        (json!({"states": ["queued"]}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"states": []}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"states": ["gone"]}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"state": ["dead"]}), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let answer = h.post("/api/v1/queues/purge/purge", body.clone()).await;
        assert!(
            answer.status == status || answer.status == StatusCode::BAD_REQUEST,
            "{body}: {} {}",
            answer.status,
            answer.body
        );
        assert!(answer.body.to_string().contains("state"), "{body}: {}", answer.body);
    }
    assert_eq!(count("queued", "purge").await, 1);
}

/// A heartbeat carries progress, a checkpoint and log lines, stored with the lease
/// extension under its lease token; the next attempt's lease hands the checkpoint over. A
/// stale token (409) and every bad part (422 naming it, 413 over the size limit) change
/// nothing: not the progress, not the checkpoint, not the log, not the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_carries_progress_checkpoint_and_logs() {
    let Some(h) = harness().await else { return };
    let job = h.enqueue(json!({"job": "a", "max_attempts": 3})).await;
    let url = format!("/api/v1/jobs/{}", id_of(&job));
    let leased = h.lease(json!({"worker_id": "w"})).await;
    let token = leased[0]["lease_token"].as_i64().expect("token");
    assert_eq!(leased[0]["checkpoint"], Value::Null, "a first attempt has none");

    let now = Utc::now().to_rfc3339();
    let beat = h
        .post(
            &format!("{url}/heartbeat"),
            json!({"lease_token": token, "lease": "60s",
                   "progress": {"percent": 40, "message": "4 of 10"},
                   "checkpoint": {"done": 4},
                   "logs": [{"at": now, "stream": "stdout", "line": "item 4\u{0}done"}]}),
        )
        .await;
    assert_eq!(beat.status, StatusCode::OK, "{}", beat.body);
    assert_eq!(beat.body["cancel_requested"], json!(false));
    let job = h.get(&url).await.body;
    assert_eq!(job["progress"]["percent"], json!(40.0));
    assert_eq!(job["progress"]["message"], "4 of 10");
    assert!(job["progress"]["at"].is_string(), "{job}");
    assert_eq!(job["checkpoint"], json!({"done": 4}));
    let logs = h.get(&format!("{url}/logs")).await.body;
    assert_eq!(logs["lines"][0]["line"], "item 4\u{FFFD}done", "a NUL is mended");
    assert_eq!(logs["lines"][0]["attempt"], 1);

    // The old body still works, and keeps what was reported.
    let plain = h
        .post(&format!("{url}/heartbeat"), json!({"lease_token": token}))
        .await;
    assert_eq!(plain.status, StatusCode::OK, "{}", plain.body);
    let before = h.get(&url).await.body;
    assert_eq!(before["checkpoint"], json!({"done": 4}));

    // A later heartbeat would move the lease: none of the refused ones below may.
    h.clock.advance(chrono::Duration::seconds(10));
    let stale = h
        .post(
            &format!("{url}/heartbeat"),
            json!({"lease_token": token + 1, "progress": {"percent": 90},
                   "checkpoint": {"done": 9},
                   "logs": [{"at": now, "stream": "stdout", "line": "stale"}]}),
        )
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{}", stale.body);
    assert_eq!(stale.error_code(), "stale_lease");

    let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
    let long = "x".repeat(hinter_core::output::MAX_PROGRESS_MESSAGE_BYTES + 1);
    let p = |progress: &str| format!(r#"{{"lease_token": {token}, "progress": {progress}}}"#);
    for (body, field) in [
        (p(r#"{"percent": 101}"#), "progress.percent"),
        (p(r#"{"percent": -1}"#), "progress.percent"),
        (p(r#"{"percent": -0.001, "message": "m"}"#), "progress.percent"),
        (p(r#"{"percent": 1e400}"#), "progress.percent"),
        (p(r#"{"percent": "50"}"#), "progress.percent"),
        (p(r#"{"percent": null}"#), "progress.percent"),
        (p(r#"{"message": "no percent"}"#), "progress"),
        (p(r#"{"percent": 5, "pct": 5}"#), "progress"),
        (p(r#"{"percent": 5, "message": "a\u0000b"}"#), "progress.message"),
        (p(&format!(r#"{{"percent": 5, "message": "{long}"}}"#)), "progress.message"),
        (p("42"), "progress"),
        (
            format!(r#"{{"lease_token": {token}, "checkpoint": {deep}}}"#),
            "checkpoint",
        ),
        (
            format!(r#"{{"lease_token": {token}, "checkpoint": {{"a": 1}}, "logs": [{{"line": "x"}}]}}"#),
            "logs",
        ),
    ] {
        let answer = h
            .raw(Method::POST, &format!("{url}/heartbeat"), Some(body.clone()))
            .await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", answer.body);
        assert!(answer.error_message().contains(field), "{body}: {}", answer.body);
    }
    let huge = format!(
        r#"{{"lease_token": {token}, "checkpoint": "{}"}}"#,
        "x".repeat(MAX_JOB)
    );
    let too_large = h
        .raw(Method::POST, &format!("{url}/heartbeat"), Some(huge))
        .await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", too_large.body);

    let after = h.get(&url).await.body;
    for key in ["progress", "checkpoint", "lease_expires_at", "state", "attempt"] {
        assert_eq!(after[key], before[key], "{key} changed by a refused heartbeat");
    }
    let logs = h.get(&format!("{url}/logs")).await.body;
    assert_eq!(logs["lines"].as_array().map(Vec::len), Some(1), "{logs}");

    // The attempt fails; the next one is handed the last checkpoint.
    let failed = h
        .post(&format!("{url}/fail"), json!({"lease_token": token, "error": "crashed"}))
        .await;
    assert_eq!(failed.status, StatusCode::OK, "{}", failed.body);
    h.clock.advance(chrono::Duration::seconds(5));
    let again = h.lease(json!({"worker_id": "w2"})).await;
    assert_eq!(again.len(), 1, "the retry is due");
    assert_eq!(again[0]["attempt"], 2);
    assert_eq!(again[0]["checkpoint"], json!({"done": 4}));
    let token2 = again[0]["lease_token"].as_i64().expect("token");

    // The answer still tells a cancelled job's worker, with or without a report.
    let cancel = h.post(&format!("{url}/cancel"), json!({})).await;
    assert_eq!(cancel.status, StatusCode::OK, "{}", cancel.body);
    let told = h
        .post(
            &format!("{url}/heartbeat"),
            json!({"lease_token": token2, "progress": {"percent": 100}, "checkpoint": {"done": 10}}),
        )
        .await;
    assert_eq!(told.status, StatusCode::OK, "{}", told.body);
    assert_eq!(told.body["cancel_requested"], json!(true));
    let job = h.get(&url).await.body;
    assert_eq!(job["progress"]["percent"], json!(100.0));
    assert!(job["progress"].get("message").is_none(), "{job}");
    assert_eq!(job["checkpoint"], json!({"done": 10}));
}

/// `GET /api/v1/jobs/{id}?wait=`: answers as soon as the job finishes (with its result), runs
/// out cleanly with the job as it is when it does not, answers 404 at once for an unknown job,
/// and refuses a bad `wait` naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_returns_at_the_finish_times_out_and_refuses_bad_waits() {
    let Some(h) = harness().await else { return };
    let h = Arc::new(h);
    let job = h.enqueue(json!({"job": "a"})).await;
    let url = format!("/api/v1/jobs/{}", id_of(&job));
    let leased = h.lease(json!({"worker_id": "w"})).await;
    let token = leased[0]["lease_token"].as_i64().expect("token");

    // A running job that does not finish: 200 with the job still running, after the wait.
    let started = tokio::time::Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(20), h.get(&format!("{url}?wait=1s")))
        .await
        .expect("a wait of 1s does not hang");
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["state"], "running");
    assert!(started.elapsed() >= Duration::from_secs(1), "{:?}", started.elapsed());

    // Finished from another task 300 ms in: the poll answers then, with the result.
    let finisher = {
        let h = h.clone();
        let url = url.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            h.post(
                &format!("{url}/complete"),
                json!({"lease_token": token, "result": {"thumbnails": 3}}),
            )
            .await
        })
    };
    let started = tokio::time::Instant::now();
    let answer = h.get(&format!("{url}?wait=30s")).await;
    let took = started.elapsed();
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["state"], "succeeded");
    assert_eq!(answer.body["result"], json!({"thumbnails": 3}));
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
    let done = finisher.await.expect("task");
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);

    // Already finished: at once.
    let started = tokio::time::Instant::now();
    let answer = h.get(&format!("{url}?wait=30s")).await;
    assert_eq!(answer.body["state"], "succeeded");
    assert!(started.elapsed() < Duration::from_secs(10));

    let started = tokio::time::Instant::now();
    let missing = h
        .get("/api/v1/jobs/0192f1c2-0000-7000-8000-000000000001?wait=30s")
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);
    assert!(started.elapsed() < Duration::from_secs(10), "a 404 does not wait");

    for bad in ["abc", "-1s", "99999d", "1x", "%00", "1e400s"] {
        let started = tokio::time::Instant::now();
        let answer = h.get(&format!("{url}?wait={bad}")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "wait={bad}: {}", answer.body);
        assert!(answer.error_message().starts_with("wait"), "wait={bad}: {}", answer.body);
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

/// Schedule fields at and past their bounds: each refusal is a 422 naming the field and
/// stores nothing; what is accepted (odd characters, NUL inside the payload, the longest
/// name, a thousand schedules) reads back unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_fields_at_the_extremes() {
    let Some(h) = harness().await else { return };
    let base = |extra: Value| {
        let mut body = json!({"name": "x", "cron": "* * * * *", "job": "j"});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        body
    };
    // Long, but under the harness's body limit of 4 KiB.
    let long_cron = "* ".repeat(1500);
    for (body, field) in [
        (base(json!({"priority": 1001})), "priority"),
        (base(json!({"priority": -1001})), "priority"),
        (base(json!({"priority": 2_147_483_648_i64})), "priority"),
        (base(json!({"name": "n".repeat(201)})), "name"),
        (base(json!({"name": "a b"})), "name"),
        (base(json!({"job": "hinter.callback"})), "job"),
        (base(json!({"queue": "q".repeat(201)})), "queue"),
        (base(json!({"time_zone": "UTC\u{0}"})), "time_zone"),
        (base(json!({"time_zone": "x".repeat(3000)})), "time_zone"),
        (base(json!({"cron": long_cron})), "cron"),
        (base(json!({"cron": "* * * * *\u{0}"})), "cron"),
        (
            json!({"name": "x", "at": "+10000-01-01T00:00:00Z", "job": "j"}),
            "at",
        ),
    ] {
        let answer = h.post("/api/v1/schedules", body.clone()).await;
        assert!(
            answer.status == StatusCode::UNPROCESSABLE_ENTITY
                || answer.status == StatusCode::BAD_REQUEST,
            "{}: {} {}",
            body.to_string().chars().take(200).collect::<String>(),
            answer.status,
            answer.body
        );
        assert!(
            answer.body.to_string().contains(field),
            "{field}: {}",
            answer.body
        );
    }
    let huge = h
        .raw(
            Method::POST,
            "/api/v1/schedules",
            Some(r#"{"name": "x", "cron": "* * * * *", "job": "j", "priority": 1e400}"#.into()),
        )
        .await;
    assert!(
        huge.status.is_client_error() && huge.body.to_string().contains("priority"),
        "{} {}",
        huge.status,
        huge.body
    );
    let listed = h.get("/api/v1/schedules").await.body;
    assert_eq!(listed["schedules"], json!([]), "nothing was stored");

    let name = "n".repeat(200);
    let payload = json!({"s": "a\u{0}b 🌍 \"q\"", "big": 12345678901234567890_u64, "f": 0.1});
    let created = h
        .post(
            "/api/v1/schedules",
            base(json!({"name": name, "payload": payload, "priority": -1000,
                        "time_zone": "Pacific/Chatham"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let read = h.get(&format!("/api/v1/schedules/{name}")).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["payload"], payload);
    assert_eq!(read.body["priority"], -1000);
    for i in 0..1000 {
        let answer = h
            .post("/api/v1/schedules", base(json!({"name": format!("s{i}")})))
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    }
    let listed = h.get("/api/v1/schedules").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(
        listed.body["schedules"].as_array().map(Vec::len),
        Some(1001),
        "every schedule is listed"
    );
}

/// `POST /api/v1/outcomes` with `items`.
async fn outcomes(h: &Harness, items: Vec<Value>) -> Answer {
    h.post("/api/v1/outcomes", json!({ "outcomes": items })).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_apply_each_job_alone() {
    let Some(h) = harness().await else { return };
    let mut ids = Vec::new();
    for name in ["done", "broken", "flaky", "handed-back", "stale"] {
        let job = h
            .enqueue(json!({"job": name, "queue": "out", "max_attempts": 3}))
            .await;
        ids.push(id_of(&job));
    }
    let leased = h
        .lease(json!({"queues": ["out"], "worker_id": "w", "max": 10}))
        .await;
    assert_eq!(leased.len(), 5);
    let token = |id: &str| {
        leased
            .iter()
            .find(|j| j["id"] == id)
            .and_then(|j| j["lease_token"].as_i64())
            .expect("leased")
    };
    let unknown = "0192f1c2-0000-7000-8000-00000000000a";
    let answer = outcomes(
        &h,
        vec![
            json!({"id": ids[0], "lease_token": token(&ids[0]), "outcome": "complete", "result": {"w": 1}}),
            json!({"id": ids[1], "lease_token": token(&ids[1]), "outcome": "fail", "error": "bad input", "retry": false, "exit_code": 3}),
            json!({"id": ids[2], "lease_token": token(&ids[2]), "outcome": "fail", "error": "try later"}),
            json!({"id": ids[3], "lease_token": token(&ids[3]), "outcome": "release"}),
            json!({"id": ids[4], "lease_token": token(&ids[4]) + 1, "outcome": "complete"}),
            json!({"id": unknown, "lease_token": 1, "outcome": "complete"}),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let items = answer.body["outcomes"].as_array().expect("outcomes");
    let got: Vec<(Value, Value, Value)> = items
        .iter()
        .map(|i| (i["id"].clone(), i["status"].clone(), i["state"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (json!(ids[0]), json!(200), json!("succeeded")),
            (json!(ids[1]), json!(200), json!("dead")),
            (json!(ids[2]), json!(200), json!("scheduled")),
            (json!(ids[3]), json!(200), json!("queued")),
            (json!(ids[4]), json!(409), Value::Null),
            (json!(unknown), json!(404), Value::Null),
        ],
        "{}",
        answer.body
    );
    assert_eq!(items[4]["error"]["code"], "stale_lease");
    assert_eq!(items[5]["error"]["code"], "not_found");

    // Each job is as its own route would have left it.
    let urls: Vec<String> = ids.iter().map(|id| format!("/api/v1/jobs/{id}")).collect();
    let show = |i: usize| h.get(&urls[i]);
    let done = show(0).await.body;
    assert_eq!((&done["state"], &done["result"]), (&json!("succeeded"), &json!({"w": 1})));
    let broken = show(1).await.body;
    assert_eq!(broken["errors"][0]["message"], "bad input");
    assert_eq!(broken["runs"][0]["exit_code"], 3, "{broken}");
    let flaky = show(2).await.body;
    assert_eq!((&flaky["state"], &flaky["attempt"]), (&json!("scheduled"), &json!(1)));
    let back = show(3).await.body;
    assert_eq!((&back["state"], &back["attempt"]), (&json!("queued"), &json!(0)));
    let stale = show(4).await.body;
    assert_eq!(stale["state"], "running", "a stale token changes nothing");

    // The same outcomes again: every token is spent now.
    let again = outcomes(
        &h,
        vec![json!({"id": ids[0], "lease_token": token(&ids[0]), "outcome": "complete"})],
    )
    .await;
    assert_eq!(again.body["outcomes"][0]["status"], 409, "{}", again.body);
    assert_eq!(show(0).await.body["result"], json!({"w": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_refuse_a_malformed_request_whole_and_a_malformed_item_alone() {
    let Some(h) = harness_sized(MAX_JOB, 1024 * 1024).await else { return };
    let job = h.enqueue(json!({"job": "resize", "queue": "whole"})).await;
    let id = id_of(&job);
    let leased = h
        .lease(json!({"queues": ["whole"], "worker_id": "w"}))
        .await;
    let token = leased[0]["lease_token"].as_i64().expect("token");
    let ok = json!({"id": id, "lease_token": token, "outcome": "complete"});
    let other = "0192f1c2-0000-7000-8000-00000000000b";
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"id": other, "lease_token": 1, "outcome": "release"}))
        .collect();
    for (what, body, field) in [
        ("no items", json!({"outcomes": []}), "outcomes"),
        ("1,001 items", json!({"outcomes": many}), "outcomes"),
        ("no list", json!({}), "outcomes"),
        ("an unknown field", json!({"outcomes": [ok], "wait": 1}), "wait"),
        (
            "an unknown outcome",
            json!({"outcomes": [ok, {"id": other, "lease_token": 1, "outcome": "finish"}]}),
            "outcomes[1].outcome",
        ),
        (
            "a token out of range",
            json!({"outcomes": [ok, {"id": other, "lease_token": u64::MAX, "outcome": "release"}]}),
            "outcomes[1].lease_token",
        ),
        (
            "an id that is no UUID",
            json!({"outcomes": [ok, {"id": "job-1", "lease_token": 1, "outcome": "release"}]}),
            "outcomes[1].id",
        ),
        (
            "an item that is no object",
            json!({"outcomes": [ok, [1, 2]]}),
            "outcomes[1]",
        ),
    ] {
        let answer = h.post("/api/v1/outcomes", body).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {}", answer.body);
        assert_eq!(answer.error_code(), "invalid_field", "{what}");
        assert!(
            answer.error_message().contains(field),
            "{what}: the message names {field}: {}",
            answer.error_message()
        );
    }
    for (what, body) in [
        ("not JSON", "{\"outcomes\": [".to_string()),
        ("NUL in an id", format!("{{\"outcomes\": [{{\"id\": \"{id}\\u0000\", \"lease_token\": 1, \"outcome\": \"release\"}}]}}")),
    ] {
        let answer = h.raw(Method::POST, "/api/v1/outcomes", Some(body)).await;
        assert!(answer.status.is_client_error(), "{what}: {} {}", answer.status, answer.body);
    }
    assert_eq!(
        h.get(&format!("/api/v1/jobs/{id}")).await.body["state"],
        "running",
        "a refused request changes nothing"
    );

    // Rules of one item (the fields of its outcome, one outcome per job) refuse it alone.
    let tokenless = |outcome: &str, extra: Value| {
        let mut item = json!({"id": other, "lease_token": 1, "outcome": outcome});
        for (k, v) in extra.as_object().expect("object") {
            item[k] = v.clone();
        }
        item
    };
    let items = vec![
        tokenless("fail", json!({"error": "x", "result": 1})),
        tokenless("fail", json!({})),
        tokenless("complete", json!({"error": "x"})),
        tokenless("complete", json!({"exit_code": 2})),
        tokenless("release", json!({"retry": true})),
        tokenless("release", json!({"result": null, "error": "x"})),
        ok.clone(),
        json!({"id": id, "lease_token": token, "outcome": "release"}),
    ];
    let answer = outcomes(&h, items).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let got: Vec<(i64, String)> = answer.body["outcomes"]
        .as_array()
        .expect("outcomes")
        .iter()
        .map(|o| {
            let message = o["error"]["message"].as_str().unwrap_or("");
            (o["status"].as_i64().unwrap_or(0), message.split(':').next().unwrap_or("").to_string())
        })
        .collect();
    let expected: Vec<(i64, String)> = [
        (422, "outcomes[0].result"),
        (422, "outcomes[1].error"),
        (422, "outcomes[2].error"),
        (422, "outcomes[3].exit_code"),
        (422, "outcomes[4].retry"),
        (422, "outcomes[5].error"),
        (200, ""),
        (422, "outcomes[7].id"),
    ]
    .into_iter()
    .map(|(s, m)| (s, m.to_string()))
    .collect();
    assert_eq!(got, expected, "{}", answer.body);
    assert_eq!(h.get(&format!("/api/v1/jobs/{id}")).await.body["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_refuse_a_result_too_large_or_deep_for_its_job_alone() {
    let Some(h) = harness().await else { return };
    for _ in 0..3 {
        h.enqueue(json!({"job": "render", "queue": "big"})).await;
    }
    let leased = h
        .lease(json!({"queues": ["big"], "worker_id": "w", "max": 3}))
        .await;
    let item = |i: usize, result: Value| {
        json!({"id": leased[i]["id"], "lease_token": leased[i]["lease_token"], "outcome": "complete", "result": result})
    };
    let mut deep = json!(1);
    for _ in 0..70 {
        deep = json!([deep]);
    }
    let answer = outcomes(
        &h,
        vec![
            item(0, json!("x".repeat(MAX_JOB + 1))),
            item(1, deep),
            item(2, json!({"fine": true})),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let items = &answer.body["outcomes"];
    assert_eq!(items[0]["status"], 413, "{answer:?}", answer = answer.body);
    assert_eq!(items[0]["error"]["code"], "too_large");
    assert_eq!(items[1]["status"], 422);
    assert!(
        items[1]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("outcomes[1].result")),
        "{}",
        items[1]
    );
    assert_eq!((&items[2]["status"], &items[2]["state"]), (&json!(200), &json!("succeeded")));
    for (i, state) in [(0, "running"), (1, "running"), (2, "succeeded")] {
        let shown = h
            .get(&format!("/api/v1/jobs/{}", leased[i]["id"].as_str().expect("id")))
            .await;
        assert_eq!(shown.body["state"], state, "job {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_carries_the_last_batch_outcomes() {
    let Some(h) = harness_sized(MAX_JOB, 1024 * 1024).await else { return };
    for i in 0..4 {
        h.enqueue(json!({"job": "step", "queue": "ride", "payload": {"i": i}}))
            .await;
    }
    let first = h
        .lease(json!({"queues": ["ride"], "worker_id": "w", "max": 2}))
        .await;
    assert_eq!(first.len(), 2);
    let no_outcomes = h
        .post("/api/v1/leases", json!({"queues": ["ride"], "worker_id": "w", "max": 1}))
        .await;
    assert!(
        no_outcomes.body.get("outcomes").is_none(),
        "no outcomes asked, none answered: {}",
        no_outcomes.body
    );
    let third = no_outcomes.body["jobs"][0].clone();

    // Refused whole, nothing applied: a bad lease field, too many outcomes, a bad item.
    let done = |job: &Value| json!({"id": job["id"], "lease_token": job["lease_token"], "outcome": "complete"});
    let too_many: Vec<Value> = (0..1001).map(|_| done(&first[0])).collect();
    for (what, body, field) in [
        ("max 0", json!({"queues": ["ride"], "worker_id": "w", "max": 0, "outcomes": [done(&first[0])]}), "max"),
        ("1,001 outcomes", json!({"queues": ["ride"], "worker_id": "w", "outcomes": too_many}), "outcomes"),
        ("an unknown outcome", json!({"queues": ["ride"], "worker_id": "w", "outcomes": [{"id": first[0]["id"], "lease_token": 1, "outcome": "finish"}]}), "outcomes[0].outcome"),
    ] {
        let answer = h.post("/api/v1/leases", body).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {}", answer.body);
        assert!(answer.error_message().contains(field), "{what}: {}", answer.error_message());
    }
    let shown = h
        .get(&format!("/api/v1/jobs/{}", first[0]["id"].as_str().expect("id")))
        .await;
    assert_eq!(shown.body["state"], "running", "a refused lease applies no outcome");

    // The first two done (one of them twice: refused alone), the third failed; the next
    // batch comes in the same answer.
    let answer = h
        .post(
            "/api/v1/leases",
            json!({"queues": ["ride"], "worker_id": "w", "max": 5, "outcomes": [
                done(&first[0]),
                done(&first[1]),
                {"id": third["id"], "lease_token": third["lease_token"], "outcome": "fail", "error": "no", "retry": false},
                done(&first[1]),
            ]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let statuses: Vec<(Value, Value)> = answer.body["outcomes"]
        .as_array()
        .expect("outcomes answered")
        .iter()
        .map(|o| (o["status"].clone(), o["state"].clone()))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (json!(200), json!("succeeded")),
            (json!(200), json!("succeeded")),
            (json!(200), json!("dead")),
            (json!(422), Value::Null),
        ],
        "{}",
        answer.body
    );
    let next = answer.body["jobs"].as_array().expect("jobs");
    assert_eq!(next.len(), 1, "the one job left: {}", answer.body);
    assert_eq!(next[0]["payload"], json!({"i": 3}));
}

/// Extremes of an outcome's fields, as the one-job routes take them: tokens that name no
/// lease, NUL in an error and a result, an error over the kept bound, an exit code out of
/// range, `outcomes: null` on a lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcome_fields_at_their_extremes() {
    let Some(h) = harness_sized(64 * 1024, 1024 * 1024).await else { return };
    for _ in 0..3 {
        h.enqueue(json!({"job": "edge", "queue": "edge"})).await;
    }
    let leased = h
        .lease(json!({"queues": ["edge"], "worker_id": "w", "max": 3}))
        .await;
    let (a, b, c) = (&leased[0], &leased[1], &leased[2]);
    let answer = outcomes(
        &h,
        vec![
            json!({"id": a["id"], "lease_token": -1, "outcome": "complete"}),
            json!({"id": b["id"], "lease_token": i64::MIN, "outcome": "release"}),
            json!({"id": c["id"], "lease_token": i64::MAX, "outcome": "fail", "error": "x"}),
        ],
    )
    .await;
    let statuses: Vec<Value> = answer.body["outcomes"]
        .as_array()
        .expect("outcomes")
        .iter()
        .map(|o| o["status"].clone())
        .collect();
    assert_eq!(statuses, vec![json!(409); 3], "{}", answer.body);

    for (what, item) in [
        ("exit code over i32", json!({"id": a["id"], "lease_token": a["lease_token"], "outcome": "fail", "error": "x", "exit_code": 2_147_483_648_i64})),
        ("a token that is no integer", json!({"id": a["id"], "lease_token": 1.5, "outcome": "complete"})),
    ] {
        let refused = outcomes(&h, vec![item]).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {}", refused.body);
    }

    let long = "é".repeat(20_000);
    let answer = outcomes(
        &h,
        vec![
            json!({"id": a["id"], "lease_token": a["lease_token"], "outcome": "complete", "result": {"text": "a\u{0}b"}}),
            json!({"id": b["id"], "lease_token": b["lease_token"], "outcome": "fail", "error": format!("nul \u{0} {long}"), "retry": false}),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    for (i, state) in [(0, "succeeded"), (1, "dead")] {
        assert_eq!(answer.body["outcomes"][i]["state"], state, "{}", answer.body);
    }
    let done = h
        .get(&format!("/api/v1/jobs/{}", a["id"].as_str().expect("id")))
        .await;
    assert_eq!(done.body["result"], json!({"text": "a\u{0}b"}), "kept as sent");
    let dead = h
        .get(&format!("/api/v1/jobs/{}", b["id"].as_str().expect("id")))
        .await;
    let kept = dead.body["errors"][0]["message"].as_str().expect("message");
    assert!(kept.starts_with("nul "), "{kept:.40}");
    assert!(kept.len() <= hinter_core::limits::MAX_ERROR_BYTES, "cut to the bound: {}", kept.len());

    let lease = h
        .post(
            "/api/v1/leases",
            json!({"queues": ["edge"], "worker_id": "w", "outcomes": null}),
        )
        .await;
    assert_eq!(lease.status, StatusCode::OK, "{}", lease.body);
    assert!(lease.body.get("outcomes").is_none(), "{}", lease.body);
}
