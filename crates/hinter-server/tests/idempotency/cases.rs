// `Idempotency-Key` on `POST /api/v1/jobs` and `/jobs/batch`, over real HTTP on loopback
// against a real store. Included by `idempotency.rs` (SQLite) and `idempotency_postgres.rs`
// (PostgreSQL), which each provide `backend::open`.

use chrono::Utc;
use hinter_core::{Backend, ManualClock, Store};
use hinter_server::{AppState, ConnLimits, ServerConfig};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, LOCATION};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The server's `idempotency_ttl` in these tests.
const TTL: Duration = Duration::from_secs(3600);

/// A server on a loopback port over a fresh store, with a clock the test moves.
struct Harness {
    addr: SocketAddr,
    http: reqwest::Client,
    clock: ManualClock,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    _store: Arc<dyn Backend>,
    /// Dropped after the store: the temporary directory or database schema.
    _guard: Box<dyn std::any::Any + Send + Sync>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// One answer, with its body exactly as sent.
#[derive(Debug)]
struct Answer {
    status: u16,
    location: Option<String>,
    replayed: bool,
    bytes: Vec<u8>,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<none>")
    }
    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("<none>")
    }
    /// The first answer's status, body and Location (the replay marker aside).
    fn same_as(&self, other: &Answer) -> bool {
        self.status == other.status && self.bytes == other.bytes && self.location == other.location
    }
}

/// `None` when the backend cannot be used here (PostgreSQL without a test database,
/// outside CI).
async fn harness() -> Option<Harness> {
    let (store, guard) = backend::open().await?;
    let clock = ManualClock::new(Utc::now());
    let state = AppState {
        store: store.clone() as Arc<dyn Store>,
        cluster: store.clone() as Arc<dyn hinter_core::Cluster>,
        clock: Arc::new(clock.clone()),
        definitions: Default::default(),
        config: Arc::new(ServerConfig {
            idempotency_ttl: TTL,
            ..ServerConfig::default()
        }),
        ready: Arc::new(AtomicBool::new(true)),
        metrics: hinter_server::Metrics::new(),
        hub: Default::default(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(hinter_server::serve(
        listener,
        state,
        ConnLimits::default(),
        async {
            let _ = stopped.await;
        },
    ));
    Some(Harness {
        addr,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client"),
        clock,
        stop: Some(stop),
        server: Some(server),
        _store: store,
        _guard: guard,
    })
}

impl Harness {
    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `POST path` with `body` as given, an `Idempotency-Key` of these bytes and an
    /// `Authorization` header when given.
    async fn post(
        &self,
        path: &str,
        body: &str,
        key: Option<&[u8]>,
        authorization: Option<&str>,
    ) -> Answer {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base()))
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(key) = key {
            request = request.header(
                "idempotency-key",
                HeaderValue::from_bytes(key).expect("a header value"),
            );
        }
        if let Some(authorization) = authorization {
            request = request.header(AUTHORIZATION, authorization);
        }
        let response = request.send().await.expect("an answer");
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(LOCATION)
            .map(|v| v.to_str().expect("ascii").to_string());
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true");
        let bytes = response.bytes().await.expect("a body").to_vec();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {bytes:?}"));
        Answer {
            status,
            location,
            replayed,
            bytes,
            body,
        }
    }

    async fn enqueue(&self, body: &str, key: &str) -> Answer {
        self.post("/api/v1/jobs", body, Some(key.as_bytes()), None)
            .await
    }

    /// Every job's id, in enqueue order.
    async fn job_ids(&self) -> Vec<String> {
        let answer: Value = self
            .http
            .get(format!("{}/api/v1/jobs?limit=1000", self.base()))
            .send()
            .await
            .expect("an answer")
            .json()
            .await
            .expect("JSON");
        answer["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .map(|j| j["id"].as_str().expect("id").to_string())
            .collect()
    }

    async fn lease_all(&self) -> Vec<Value> {
        let answer: Value = self
            .http
            .post(format!("{}/api/v1/leases", self.base()))
            .json(&json!({"worker_id": "w", "max": 100}))
            .send()
            .await
            .expect("an answer")
            .json()
            .await
            .expect("JSON");
        answer["jobs"].as_array().expect("jobs").clone()
    }
}

/// A TCP proxy on loopback in front of `upstream` that loses replies: each of its first
/// `lose` connections passes the request on, waits until the server's answer begins (the
/// server has committed and is answering) and then closes the connection without passing the
/// answer on, as when a connection breaks at that moment. Later connections pass everything.
struct LossyProxy {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LossyProxy {
    async fn start(upstream: SocketAddr, lose: usize) -> LossyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(relay(client, upstream, n < lose));
            }
        });
        LossyProxy {
            addr,
            connections,
            task,
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, lose_reply: bool) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    if !lose_reply {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        return;
    }
    let (mut client_read, client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let forward =
        tokio::spawn(async move { tokio::io::copy(&mut client_read, &mut server_write).await });
    let mut first = [0u8; 1];
    let _ = server_read.read(&mut first).await;
    // Everything of this connection closes here: the client never sees an answer.
    forward.abort();
    let _ = forward.await;
    drop(client_write);
    drop(server_read);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_again_answers_the_first_answer_and_makes_no_job() {
    let Some(h) = harness().await else { return };
    let first = h
        .enqueue(r#"{"job": "mail", "payload": {"to": "a", "n": 1.50}}"#, "order-1")
        .await;
    assert_eq!(first.status, 201, "{first:?}");
    assert!(!first.replayed);
    let id = first.body["job"]["id"].as_str().expect("id").to_string();
    assert_eq!(first.location, Some(format!("/api/v1/jobs/{id}")));
    // The job moves on; the kept answer does not.
    assert_eq!(h.lease_all().await.len(), 1);

    // The same request, encoded otherwise (order of fields, spaces).
    let again = h
        .enqueue(
            "{ \"payload\": {\"n\": 1.50, \"to\": \"a\"},\n  \"job\": \"mail\" }",
            "order-1",
        )
        .await;
    assert!(again.same_as(&first), "{again:?}\nvs\n{first:?}");
    assert!(again.replayed, "a replay says so");
    assert_eq!(again.body["job"]["state"], "queued", "the first answer");
    assert_eq!(h.job_ids().await, vec![id.clone()], "no second job");

    // Without a key, or with another, the same body is a new job.
    let other = h
        .enqueue(r#"{"job": "mail", "payload": {"to": "a", "n": 1.50}}"#, "order-2")
        .await;
    assert_eq!(other.status, 201);
    let plain = h
        .post(
            "/api/v1/jobs",
            r#"{"job": "mail", "payload": {"to": "a", "n": 1.50}}"#,
            None,
            None,
        )
        .await;
    assert_eq!(plain.status, 201);
    assert_eq!(h.job_ids().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_again_answers_a_duplicate_and_a_batch_as_first_answered() {
    let Some(h) = harness().await else { return };
    // A unique_key duplicate answers 200 without Location; its replay too.
    h.post("/api/v1/jobs", r#"{"job": "r", "unique_key": "u"}"#, None, None)
        .await;
    let duplicate = h
        .enqueue(r#"{"job": "r", "unique_key": "u"}"#, "dup")
        .await;
    assert_eq!((duplicate.status, duplicate.location.as_deref()), (200, None));
    let again = h
        .enqueue(r#"{"job": "r", "unique_key": "u"}"#, "dup")
        .await;
    assert!(again.same_as(&duplicate), "{again:?}");

    let batch = r#"{"jobs": [{"job": "a"}, {"job": "b", "priority": 3}, {"job": "r", "unique_key": "u"}]}"#;
    let first = h
        .post("/api/v1/jobs/batch", batch, Some(b"batch-1"), None)
        .await;
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(first.body["jobs"].as_array().map(Vec::len), Some(3));
    let before = h.job_ids().await;
    assert_eq!(before.len(), 3, "two new jobs and the first r");
    let again = h
        .post("/api/v1/jobs/batch", batch, Some(b"batch-1"), None)
        .await;
    assert!(again.same_as(&first), "{again:?}\nvs\n{first:?}");
    assert!(again.replayed);
    assert_eq!(h.job_ids().await, before, "no new jobs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_used_for_another_request_is_422_and_changes_nothing() {
    let Some(h) = harness().await else { return };
    let first = h.enqueue(r#"{"job": "mail", "payload": 1}"#, "k").await;
    assert_eq!(first.status, 201);
    for (path, body) in [
        ("/api/v1/jobs", r#"{"job": "mail", "payload": 2}"#),
        ("/api/v1/jobs", r#"{"job": "mail", "payload": 1, "priority": 0}"#),
        ("/api/v1/jobs/batch", r#"{"jobs": [{"job": "mail", "payload": 1}]}"#),
    ] {
        let answer = h.post(path, body, Some(b"k"), None).await;
        assert_eq!(
            (answer.status, answer.code()),
            (422, "idempotency_key_reused"),
            "{path} {body}: {answer:?}"
        );
        assert!(answer.message().contains("Idempotency-Key"), "{answer:?}");
    }
    assert_eq!(h.job_ids().await.len(), 1);
    let again = h.enqueue(r#"{"job": "mail", "payload": 1}"#, "k").await;
    assert!(again.same_as(&first), "the key still answers its request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_are_400_naming_the_header() {
    let Some(h) = harness().await else { return };
    let long = vec![b'k'; 256];
    for bad in [&b""[..], &long[..], b"tab\there", "caf\u{e9}".as_bytes()] {
        let answer = h
            .post("/api/v1/jobs", r#"{"job": "a"}"#, Some(bad), None)
            .await;
        assert_eq!((answer.status, answer.code()), (400, "bad_request"), "{bad:?}");
        assert!(
            answer.message().starts_with("Idempotency-Key:"),
            "{answer:?}"
        );
        let answer = h
            .post("/api/v1/jobs/batch", r#"{"jobs": [{"job": "a"}]}"#, Some(bad), None)
            .await;
        assert_eq!(answer.status, 400, "{bad:?}: {answer:?}");
    }
    let twice = h
        .http
        .post(format!("{}/api/v1/jobs", h.base()))
        .header("idempotency-key", "a")
        .header("idempotency-key", "b")
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"job": "a"}"#)
        .send()
        .await
        .expect("an answer");
    assert_eq!(twice.status(), 400);
    assert_eq!(h.job_ids().await.len(), 0, "nothing enqueued");
    // The longest key and every printable character are fine.
    let fine: String = (0x20u8..=0x7e).map(char::from).collect();
    assert_eq!(h.enqueue(r#"{"job": "a"}"#, &fine).await.status, 201);
    let longest = "k".repeat(255);
    assert_eq!(h.enqueue(r#"{"job": "a"}"#, &longest).await.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_key_enqueues_anew() {
    let Some(h) = harness().await else { return };
    let first = h.enqueue(r#"{"job": "mail"}"#, "daily").await;
    let ttl = chrono::Duration::from_std(TTL).expect("ttl");
    h.clock.advance(ttl - chrono::Duration::milliseconds(1));
    let within = h.enqueue(r#"{"job": "mail"}"#, "daily").await;
    assert!(within.same_as(&first), "still within the retention");
    h.clock.advance(chrono::Duration::milliseconds(1));
    let after = h.enqueue(r#"{"job": "mail"}"#, "daily").await;
    assert_eq!(after.status, 201);
    assert!(!after.replayed);
    assert_ne!(after.body["job"]["id"], first.body["job"]["id"]);
    assert_eq!(h.job_ids().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_per_caller_credentials() {
    let Some(h) = harness().await else { return };
    let body = r#"{"job": "mail"}"#;
    let a = h
        .post("/api/v1/jobs", body, Some(b"k"), Some("Bearer token-a"))
        .await;
    let b = h
        .post("/api/v1/jobs", body, Some(b"k"), Some("Bearer token-b"))
        .await;
    let none = h.post("/api/v1/jobs", body, Some(b"k"), None).await;
    for answer in [&a, &b, &none] {
        assert_eq!((answer.status, answer.replayed), (201, false), "{answer:?}");
    }
    let a_again = h
        .post("/api/v1/jobs", body, Some(b"k"), Some("Bearer token-a"))
        .await;
    assert!(a_again.same_as(&a));
    assert_eq!(h.job_ids().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_make_one_job() {
    let Some(h) = harness().await else { return };
    let h = Arc::new(h);
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let h = h.clone();
        requests.spawn(async move { h.enqueue(r#"{"job": "once"}"#, "together").await });
    }
    let mut answers = Vec::new();
    while let Some(answer) = requests.join_next().await {
        answers.push(answer.expect("task"));
    }
    let first = answers
        .iter()
        .find(|a| !a.replayed)
        .expect("one request inserted");
    assert_eq!(first.status, 201);
    for answer in &answers {
        assert!(answer.same_as(first), "{answer:?}");
    }
    assert_eq!(answers.iter().filter(|a| !a.replayed).count(), 1);
    assert_eq!(h.job_ids().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_retries_a_lost_reply_and_gets_the_one_job() {
    let Some(h) = harness().await else { return };
    let proxy = LossyProxy::start(h.addr, 2).await;
    let client = hinter_client::Client::new(proxy.base(), None)
        .expect("client")
        .with_enqueue_retries(4, Duration::from_millis(20));
    let enqueued = client
        .enqueue(&hinter_client::EnqueueRequest::new(
            "report",
            json!({"day": 7}),
        ))
        .await
        .expect("the retry gets the answer");
    assert_eq!(proxy.connections(), 3, "two lost replies, then the answer");
    assert_eq!(
        h.job_ids().await,
        vec![enqueued.job.id.to_string()],
        "exactly the one job"
    );
    assert!(!enqueued.duplicate);

    // A batch likewise.
    let proxy = LossyProxy::start(h.addr, 1).await;
    let client = hinter_client::Client::new(proxy.base(), None)
        .expect("client")
        .with_enqueue_retries(3, Duration::from_millis(20));
    let batch = client
        .enqueue_batch(&[
            hinter_client::EnqueueRequest::new("a", Value::Null),
            hinter_client::EnqueueRequest::new("b", Value::Null),
        ])
        .await
        .expect("the retry gets the answer");
    assert_eq!(proxy.connections(), 2);
    assert_eq!(h.job_ids().await.len(), 3, "one job and the batch of two");
    assert_eq!(batch.len(), 2);

    // Out of attempts: the error says the server could not be reached properly, and the job
    // that was committed is there once.
    let proxy = LossyProxy::start(h.addr, 2).await;
    let client = hinter_client::Client::new(proxy.base(), None)
        .expect("client")
        .with_enqueue_retries(2, Duration::from_millis(20));
    let lost = client
        .enqueue_with_key(
            &hinter_client::EnqueueRequest::new("c", Value::Null),
            "mine",
        )
        .await;
    assert!(
        matches!(lost, Err(hinter_client::Error::Transport { .. })),
        "{lost:?}"
    );
    assert_eq!(h.job_ids().await.len(), 4);
    // The caller's own key makes its own later retry safe too.
    let direct = hinter_client::Client::new(h.base(), None).expect("client");
    let found = direct
        .enqueue_with_key(
            &hinter_client::EnqueueRequest::new("c", Value::Null),
            "mine",
        )
        .await
        .expect("the kept answer");
    assert_eq!(h.job_ids().await.len(), 4);
    assert_eq!(h.job_ids().await[3], found.job.id.to_string());
}
