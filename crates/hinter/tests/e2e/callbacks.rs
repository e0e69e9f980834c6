//! Callbacks (`callback_url`, docs/callbacks.md): the real `hinter serve` posts a finished
//! job's outcome to a real receiver on loopback, signed; retries a failing receiver; refuses
//! loopback and private targets unless allowed; and a kill -9 loses no delivery.
//!
//! The receiver listens on 127.0.0.1, which the address policy refuses by default: the tests
//! that deliver allow `127.0.0.1/32` explicitly (`--callback-allow-net`).

use crate::support::pg::TestDb;
use crate::support::{hinter_command, id_of, wait_for, wait_until, Server, TestDir};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "callback-test-secret";
/// Long enough for a debug build on a loaded machine; the retries themselves take ~3 s.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    /// Checks `Hinter-Signature: t=…,v1=…` against the body, as a receiver would; returns t.
    fn verify_signature(&self) -> i64 {
        let signature = self.header("hinter-signature");
        let mut t = None;
        let mut v1 = None;
        for part in signature.split(',') {
            match part.split_once('=') {
                Some(("t", value)) => t = value.parse::<i64>().ok(),
                Some(("v1", value)) => v1 = Some(value.to_string()),
                _ => panic!("unexpected part {part:?} in {signature:?}"),
            }
        }
        let t = t.unwrap_or_else(|| panic!("no t= in {signature:?}"));
        let v1 = v1.unwrap_or_else(|| panic!("no v1= in {signature:?}"));
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).expect("key");
        mac.update(format!("{t}.").as_bytes());
        mac.update(&self.body);
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(v1, expected, "the signature does not verify over the body");
        let age = chrono::Utc::now().timestamp() - t;
        assert!((-5..300).contains(&age), "timestamp {t} is {age}s old");
        t
    }
}

#[derive(Default)]
struct Inbox {
    received: Vec<Received>,
    /// Status codes to answer, in turn; 200 once they are used up.
    answers: VecDeque<u16>,
}

/// A small HTTP receiver on 127.0.0.1 recording every POST; stopped when dropped.
struct Receiver {
    addr: SocketAddr,
    inbox: Arc<Mutex<Inbox>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// On a free port, answering `answers` in turn and then 200.
    async fn start(answers: &[u16]) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the receiver");
        Receiver::serve(listener, answers)
    }

    /// On `port`, which a test kept free.
    async fn start_on(port: u16) -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("binding the receiver on its port");
        Receiver::serve(listener, &[])
    }

    fn serve(listener: tokio::net::TcpListener, answers: &[u16]) -> Receiver {
        let addr = listener.local_addr().expect("receiver address");
        let inbox = Arc::new(Mutex::new(Inbox {
            received: Vec::new(),
            answers: answers.iter().copied().collect(),
        }));
        let app = axum::Router::new()
            .fallback(axum::routing::post(receive))
            .with_state(inbox.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, inbox, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.inbox.lock().expect("inbox").received.clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(inbox): State<Arc<Mutex<Inbox>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let mut inbox = inbox.lock().expect("inbox");
    inbox.received.push(Received {
        headers,
        body: body.to_vec(),
    });
    let status = inbox.answers.pop_front().unwrap_or(200);
    let status = StatusCode::from_u16(status).expect("a status code");
    (
        status,
        if status.is_success() {
            "thanks"
        } else {
            "boom: down for maintenance"
        },
    )
}

fn sqlite(dir: &TestDir) -> Vec<String> {
    vec![
        "--data-dir".to_string(),
        dir.data_dir().display().to_string(),
    ]
}

/// `serve` on `store` with the secret and loopback allowed, as the receivers need.
async fn serve(dir: &TestDir, store: &[String], name: &str) -> Server {
    Server::start_on(
        dir,
        store,
        name,
        &[
            "--callback-secret",
            SECRET,
            "--callback-allow-net",
            "127.0.0.1/32",
        ],
    )
    .await
}

/// Enqueues a job on queue `ext` with `callback_url`, takes it as an external worker and
/// completes it with `result`; returns its id.
async fn run_job(server: &Server, callback_url: &str, result: Value) -> String {
    let job = server
        .enqueue(json!({
            "job": "work",
            "queue": "ext",
            "payload": {"n": 1},
            "correlation_id": "order-7",
            "callback_url": callback_url,
        }))
        .await;
    let id = id_of(&job);
    let leased = server
        .lease(json!({"queues": ["ext"], "worker_id": "test-worker", "max": 1}))
        .await;
    assert_eq!(leased.len(), 1, "{leased:?}");
    assert_eq!(id_of(&leased[0]), id);
    server
        .complete(&id, &leased[0]["lease_token"], result)
        .await
        .expect_status(200);
    id
}

/// The job's first follow-up (its callback delivery) once `done` says so.
async fn delivery_when(server: &Server, id: &str, what: &str, done: fn(&Value) -> bool) -> Value {
    wait_for(DELIVERY_TIMEOUT, what, || async {
        let job = server.job(id).await;
        let delivery = job["followups"].get(0).cloned()?;
        done(&delivery).then_some(delivery)
    })
    .await
}

fn finished(delivery: &Value) -> bool {
    matches!(delivery["state"].as_str(), Some("succeeded" | "dead"))
}

async fn signed_delivery(dir: &TestDir, store: &[String]) {
    let receiver = Receiver::start(&[]).await;
    let server = serve(dir, store, "serve").await;
    let id = run_job(
        &server,
        &receiver.url("/hooks/done?src=hinter"),
        json!({"ok": true}),
    )
    .await;

    let delivery = delivery_when(&server, &id, "the delivery to finish", finished).await;
    assert_eq!(delivery["state"], "succeeded", "{delivery}");
    assert_eq!(delivery["job"], "hinter.callback");
    assert_eq!(delivery["queue"], "hinter.callbacks");
    assert_eq!(delivery["result"], json!({"status": 200}), "{delivery}");
    assert_eq!(delivery["runs"].as_array().map(Vec::len), Some(1));

    let received = receiver.received();
    assert_eq!(received.len(), 1, "one POST: {received:?}");
    let post = &received[0];
    post.verify_signature();
    assert_eq!(post.header("content-type"), "application/json");
    assert!(post.header("user-agent").starts_with("hinter/"));
    assert_eq!(post.header("hinter-event"), "job.succeeded");
    assert_eq!(post.header("hinter-attempt"), "1");
    assert_eq!(post.header("hinter-delivery"), id_of(&delivery));
    let outcome = post.json();
    assert_eq!(outcome["job_id"], id.as_str());
    assert_eq!(outcome["job"], "work");
    assert_eq!(outcome["queue"], "ext");
    assert_eq!(outcome["state"], "succeeded");
    assert_eq!(outcome["result"], json!({"ok": true}));
    assert_eq!(outcome["correlation_id"], "order-7");
    assert_eq!(outcome["attempt"], 1);
    assert_eq!(outcome["error"], Value::Null);
    // Exactly the outcome the delivery job carries.
    assert_eq!(outcome, delivery["payload"]["outcome"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_callback_reaches_its_receiver_on_sqlite() {
    let dir = TestDir::new("callback-signed");
    signed_delivery(&dir, &sqlite(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_callback_reaches_its_receiver_on_postgres() {
    let Some(db) = TestDb::new("a_signed_callback_reaches_its_receiver_on_postgres") else {
        return;
    };
    let dir = TestDir::new("callback-signed-pg");
    signed_delivery(&dir, &db.args()).await;
}

async fn third_try(dir: &TestDir, store: &[String]) {
    let receiver = Receiver::start(&[500, 500]).await;
    let server = serve(dir, store, "serve").await;
    let id = run_job(&server, &receiver.url("/flaky"), json!("done")).await;

    let delivery = delivery_when(&server, &id, "the delivery to finish", finished).await;
    assert_eq!(delivery["state"], "succeeded", "{delivery}");
    assert_eq!(delivery["attempt"], 3, "{delivery}");
    let runs = delivery["runs"].as_array().cloned().unwrap_or_default();
    let outcomes: Vec<&str> = runs.iter().filter_map(|r| r["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["failed", "failed", "succeeded"], "{delivery}");
    for run in &runs[..2] {
        assert_eq!(
            run["error"], "receiver answered 500 Internal Server Error: boom: down for maintenance",
            "{run}"
        );
    }
    assert_eq!(runs[2]["error"], Value::Null);

    let received = receiver.received();
    assert_eq!(received.len(), 3, "{received:?}");
    for (i, post) in received.iter().enumerate() {
        post.verify_signature();
        assert_eq!(post.header("hinter-attempt"), (i + 1).to_string());
        assert_eq!(post.header("hinter-delivery"), id_of(&delivery));
        assert_eq!(
            post.body, received[0].body,
            "every attempt posts the same body"
        );
    }

    // `hinter jobs show` tells the delivery's story.
    let shown = hinter_command()
        .args(["jobs", "show", &id, "--server", server.base()])
        .output()
        .expect("hinter jobs show");
    assert!(shown.status.success(), "{shown:?}");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains(&format!(
            "{}: delivered on attempt 3/20, receiver answered 200",
            receiver.url("/flaky")
        )),
        "{text}"
    );
    assert_eq!(
        text.matches(": failed: receiver answered 500 Internal Server Error: boom")
            .count(),
        2,
        "{text}"
    );
    assert!(text.contains("  attempt 3 at "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_twice_gets_the_delivery_on_the_third_try_on_sqlite() {
    let dir = TestDir::new("callback-retry");
    third_try(&dir, &sqlite(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_twice_gets_the_delivery_on_the_third_try_on_postgres() {
    let Some(db) = TestDb::new("a_receiver_failing_twice_gets_the_delivery_on_the_third_try")
    else {
        return;
    };
    let dir = TestDir::new("callback-retry-pg");
    third_try(&dir, &db.args()).await;
}

/// This machine's host name, if it resolves to refused addresses only (it usually resolves
/// to loopback or the container's private address); a name the enqueue check cannot see
/// through.
async fn host_name_of_refused_addresses() -> Option<String> {
    let name = nix::unistd::gethostname().ok()?.into_string().ok()?;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
        .await
        .ok()?
        .collect();
    let policy = hinter_core::callback_policy::AddressPolicy::default();
    (!addrs.is_empty() && addrs.iter().all(|a| policy.check(a.ip()).is_err())).then_some(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_to_loopback_and_private_addresses_are_refused_unless_allowed() {
    let dir = TestDir::new("callback-refused");
    let receiver = Receiver::start(&[]).await;
    let port = receiver.addr.port();
    let server =
        Server::start_on(&dir, &sqlite(&dir), "serve", &["--callback-secret", SECRET]).await;

    // Refused at enqueue: literal addresses in refused ranges, and localhost.
    for url in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://localhost:{port}/hook"),
        format!("http://[::1]:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        "http://10.0.0.1/hook".to_string(),
        "http://169.254.169.254/latest/meta-data/".to_string(),
    ] {
        let resp = server
            .post(
                "/api/v1/jobs",
                &json!({"job": "work", "queue": "ext", "callback_url": url}),
            )
            .await
            .expect_error(422, "invalid_field");
        let message = resp.message();
        assert!(message.starts_with("callback_url: "), "{url}: {message}");
        assert!(message.contains("--callback-allow-net"), "{url}: {message}");
    }
    let resp = server
        .post(
            "/api/v1/jobs/batch",
            &json!({"jobs": [
                {"job": "work", "queue": "ext", "callback_url": "https://example.com/ok"},
                {"job": "work", "queue": "ext", "callback_url": format!("http://127.0.0.1:{port}/")},
            ]}),
        )
        .await
        .expect_error(422, "invalid_field");
    assert!(
        resp.message().starts_with("jobs[1].callback_url: "),
        "{}",
        resp.message()
    );
    // Other schemes never pass.
    server
        .post(
            "/api/v1/jobs",
            &json!({"job": "work", "callback_url": "file:///etc/passwd"}),
        )
        .await
        .expect_error(422, "invalid_field");

    // A host name is checked at delivery, for every address it resolves to: refused for
    // good, and nothing is sent.
    match host_name_of_refused_addresses().await {
        Some(name) => {
            let url = format!("http://{name}:{port}/hook");
            let id = run_job(&server, &url, json!(1)).await;
            let delivery = delivery_when(&server, &id, "the delivery to end", finished).await;
            assert_eq!(delivery["state"], "dead", "{delivery}");
            let runs = delivery["runs"].as_array().cloned().unwrap_or_default();
            assert_eq!(runs.len(), 1, "refused for good, not retried: {delivery}");
            let error = runs[0]["error"].as_str().unwrap_or_default();
            assert!(
                error.starts_with(&format!("not delivered to {name}: it resolves to ")),
                "{error}"
            );
            assert!(error.contains("--callback-allow-net"), "{error}");
        }
        None => eprintln!(
            "note: this machine's host name does not resolve to refused addresses only; \
             the delivery-time refusal was not tried here (unit tests cover it)"
        ),
    }
    assert!(receiver.received().is_empty(), "{:?}", receiver.received());

    // A server with no secret refuses callbacks: they are signed.
    let unsigned = Server::start_on(
        &dir,
        &sqlite(&dir),
        "unsigned",
        &["--callback-allow-net", "127.0.0.1/32"],
    )
    .await;
    let resp = unsigned
        .post(
            "/api/v1/jobs",
            &json!({"job": "work", "callback_url": receiver.url("/hook")}),
        )
        .await
        .expect_error(422, "invalid_field");
    assert!(
        resp.message().contains("no --callback-secret"),
        "{}",
        resp.message()
    );
}

async fn restart_loses_nothing(dir: &TestDir, store: &[String]) {
    // The receiver is down: its port is kept free until it starts.
    let port = crate::support::free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let mut server = serve(dir, store, "first").await;
    let id = run_job(&server, &url, json!({"ok": 1})).await;

    // Two attempts failed; the delivery waits for its third (about 2 s away): kill -9 now.
    let delivery = delivery_when(&server, &id, "two failed attempts", |d| {
        d["state"] == "scheduled" && d["attempt"] == 2
    })
    .await;
    let refused = format!("connect to 127.0.0.1:{port} refused");
    for run in delivery["runs"].as_array().cloned().unwrap_or_default() {
        assert_eq!(run["error"], refused.as_str(), "{delivery}");
    }
    server.kill();

    let server = serve(dir, store, "second").await;
    let receiver = Receiver::start_on(port).await;
    let delivery = delivery_when(&server, &id, "the delivery after the restart", finished).await;
    assert_eq!(delivery["state"], "succeeded", "{delivery}");
    wait_until(DELIVERY_TIMEOUT, "the POST", || async {
        !receiver.received().is_empty()
    })
    .await;
    let received = receiver.received();
    assert_eq!(received.len(), 1, "{received:?}");
    received[0].verify_signature();
    assert_eq!(received[0].json()["job_id"], id.as_str());
    let attempt: u32 = received[0]
        .header("hinter-attempt")
        .parse()
        .expect("a number");
    assert!(attempt >= 3, "attempt {attempt}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loses_no_delivery_on_sqlite() {
    let dir = TestDir::new("callback-restart");
    restart_loses_nothing(&dir, &sqlite(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loses_no_delivery_on_postgres() {
    let Some(db) = TestDb::new("a_restart_loses_no_delivery_on_postgres") else {
        return;
    };
    let dir = TestDir::new("callback-restart-pg");
    restart_loses_nothing(&dir, &db.args()).await;
}
