//! `GET /api/v1/events` as Server-Sent Events from the real `hinter serve`: a reader follows
//! one queue while an external worker (plain HTTP: lease, report progress, complete) runs a
//! job, sees created → started → progress → succeeded with increasing ids, disconnects,
//! and on reconnecting with `Last-Event-ID` gets exactly what it missed. On SQLite and
//! PostgreSQL. `hinter events --queue` prints the same log, progress included.

use crate::support::pg::TestDb;
use crate::support::{hinter_command, Server, TestDir};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(30);
const QUEUE: &str = "sse-e2e";

/// An open event stream, read frame by frame; the frames as (id, event, data).
struct Stream {
    response: reqwest::Response,
    buffer: String,
}

#[derive(Debug, Clone, PartialEq)]
struct Frame {
    id: Option<i64>,
    event: String,
    data: Value,
}

impl Stream {
    async fn open(server: &Server, last_event_id: Option<i64>) -> Stream {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let mut request = client
            .get(format!(
                "http://{}/api/v1/events?queue={QUEUE}",
                server.addr
            ))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.expect("GET /api/v1/events");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut stream = Stream {
            response,
            buffer: String::new(),
        };
        // `retry: 2000` comes first, before anything of the log.
        let first = stream.block().await;
        assert_eq!(first, "retry: 2000", "the first frame");
        stream
    }

    /// The next frame's text (without its blank line).
    async fn block(&mut self) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return block.trim_end().to_string();
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no SSE frame within {WAIT:?}: {:?}", self.buffer))
                .expect("reading the stream")
                .expect("the stream ended");
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// The next event (keep-alive comments skipped).
    async fn next(&mut self) -> Frame {
        loop {
            let block = self.block().await;
            if block.starts_with(':') {
                continue;
            }
            let mut frame = Frame {
                id: None,
                event: String::new(),
                data: Value::Null,
            };
            for line in block.lines() {
                let (field, value) = line.split_once(": ").expect("field: value");
                match field {
                    "id" => frame.id = Some(value.parse().expect("a numeric id")),
                    "event" => frame.event = value.to_string(),
                    "data" => frame.data = serde_json::from_str(value).expect("JSON data"),
                    other => panic!("unexpected field {other:?} in {block:?}"),
                }
            }
            return frame;
        }
    }

    async fn take(&mut self, n: usize) -> Vec<Frame> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.push(self.next().await);
        }
        out
    }
}

/// Enqueues a job in [`QUEUE`]; its id.
async fn enqueue(server: &Server, n: u32) -> String {
    let job = server
        .api
        .enqueue(json!({"job": "sse", "queue": QUEUE, "payload": {"n": n}}))
        .await;
    job["id"].as_str().expect("id").to_string()
}

/// Leases the job as an external worker over HTTP, reports `progress` (if any) and
/// completes it.
async fn run(server: &Server, id: &str, progress: Option<f64>) {
    let leased = server
        .api
        .lease(json!({"queues": [QUEUE], "worker_id": "sse-worker", "max": 1}))
        .await;
    assert_eq!(leased.len(), 1, "one job leased");
    assert_eq!(leased[0]["id"], json!(id));
    let token = leased[0]["lease_token"].clone();
    if let Some(percent) = progress {
        let answer = server
            .api
            .post(
                &format!("/api/v1/jobs/{id}/report"),
                &json!({
                    "lease_token": token,
                    "progress": {"percent": percent, "message": "half way", "at": chrono_now()},
                    "logs": [],
                }),
            )
            .await;
        answer.expect_status(200);
        // A stale token writes nothing, no event either.
        server
            .api
            .post(
                &format!("/api/v1/jobs/{id}/report"),
                &json!({
                    "lease_token": token.as_i64().expect("token") + 1,
                    "progress": {"percent": 99, "at": chrono_now()},
                }),
            )
            .await
            .expect_status(409);
    }
    server
        .api
        .complete(id, &token, json!({"ok": true}))
        .await
        .expect_status(200);
}

fn chrono_now() -> String {
    chrono::Utc::now().to_rfc3339()
}

fn kinds(frames: &[Frame]) -> Vec<(&str, &str)> {
    frames
        .iter()
        .map(|f| (f.event.as_str(), f.data["job_id"].as_str().unwrap_or("")))
        .collect()
}

async fn scenario(dir: &TestDir, store: &[String]) {
    let server = Server::start_on(dir, store, "serve", &[]).await;

    // From now on: nothing of the log before the stream opened.
    let mut stream = Stream::open(&server, None).await;
    let a = enqueue(&server, 1).await;
    run(&server, &a, Some(50.0)).await;
    let seen = stream.take(4).await;
    assert_eq!(
        kinds(&seen),
        [
            ("created", a.as_str()),
            ("started", a.as_str()),
            ("progress", a.as_str()),
            ("succeeded", a.as_str()),
        ]
    );
    let ids: Vec<i64> = seen.iter().map(|f| f.id.expect("an id")).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    for frame in &seen {
        assert_eq!(frame.data["id"], json!(frame.id.expect("id")));
        assert_eq!(frame.data["kind"], json!(frame.event));
        assert_eq!(frame.data["queue"], QUEUE);
    }
    assert_eq!(
        seen[2].data["data"],
        json!({"percent": 50.0, "message": "half way"})
    );
    assert_eq!(seen[2].data["attempt"], 1);
    let last_seen = *ids.last().expect("ids");
    drop(stream);

    // Missed while disconnected: another job run through, one more enqueued.
    let b = enqueue(&server, 2).await;
    run(&server, &b, None).await;
    let c = enqueue(&server, 3).await;

    let mut resumed = Stream::open(&server, Some(last_seen)).await;
    let missed = resumed.take(4).await;
    assert_eq!(
        kinds(&missed),
        [
            ("created", b.as_str()),
            ("started", b.as_str()),
            ("succeeded", b.as_str()),
            ("created", c.as_str()),
        ]
    );
    assert!(missed[0].id.expect("id") > last_seen, "nothing seen twice");
    // Exactly the log after the last id seen, as the JSON API gives it.
    let page = server
        .api
        .get(&format!("/api/v1/events?after={last_seen}&queue={QUEUE}"))
        .await
        .expect_status(200)
        .body;
    let data: Vec<Value> = missed.iter().map(|f| f.data.clone()).collect();
    assert_eq!(page["events"], json!(data), "nothing lost, nothing twice");
    // And then only what comes next.
    let d = enqueue(&server, 4).await;
    let next = resumed.take(1).await;
    assert_eq!(kinds(&next), [("created", d.as_str())]);

    // The CLI prints the same log, progress included.
    let output = hinter_command()
        .args([
            "events",
            "--json",
            "--queue",
            QUEUE,
            "--after",
            "0",
            "--server",
            &format!("http://{}", server.addr),
        ])
        .output()
        .expect("hinter events");
    assert!(output.status.success(), "{output:?}");
    let printed: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let progress: Vec<&Value> = printed.iter().filter(|e| e["kind"] == "progress").collect();
    assert_eq!(progress.len(), 1, "{printed:?}");
    assert_eq!(progress[0]["job_id"], json!(a));
    assert_eq!(printed.len(), 4 + 4 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_follows_a_job_and_resumes_from_last_event_id_on_sqlite() {
    let dir = TestDir::new("sse-sqlite");
    let store = vec![
        "--data-dir".to_string(),
        dir.data_dir().display().to_string(),
    ];
    scenario(&dir, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_follows_a_job_and_resumes_from_last_event_id_on_postgres() {
    let Some(db) = TestDb::new("sse_follows_a_job_and_resumes_from_last_event_id_on_postgres")
    else {
        return;
    };
    let dir = TestDir::new("sse-pg");
    scenario(&dir, &db.args()).await;
}
