#![allow(clippy::unwrap_used)]
//! The client against a tiny axum stand-in for the server: what goes on the wire, and how
//! answers and failures come back.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use hinter_client::{
    Client, EnqueueRequest, Error, HeartbeatReport, JobFilter, JobState, LeaseRequest,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

const ID: &str = "0192f1c2-0000-7000-8000-000000000001";
const OTHER_ID: &str = "0192f1c2-0000-7000-8000-000000000002";

/// What the stand-in saw: one line per request.
type Seen = Arc<Mutex<Vec<String>>>;

fn job(state: &str) -> Value {
    json!({
        "id": ID, "job": "thumbnail", "queue": "default", "payload": {"src": "a.png"},
        "state": state, "priority": 0, "attempt": 1, "max_attempts": 10,
        "run_at": "2026-11-24T10:00:00Z", "created_at": "2026-11-24T10:00:00Z",
        "started_at": null, "finished_at": null, "unique_key": null, "ordering_key": null,
        "timeout": null, "singleton": false, "cancel_requested": false, "worker_id": null,
        "lease_expires_at": null, "errors": [], "result": null
    })
}

fn api_error(status: StatusCode, code: &str, message: &str) -> (StatusCode, Json<Value>) {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
}

async fn start() -> (Client, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route(
            "/api/v1/jobs",
            post(
                |State(seen): State<Seen>, headers: HeaderMap, Json(body): Json<Value>| async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_string();
                    seen.lock().unwrap().push(format!("enqueue {auth} {body}"));
                    (
                        StatusCode::CREATED,
                        Json(json!({"duplicate": false, "job": job("queued")})),
                    )
                },
            )
            .get(
                |State(seen): State<Seen>, Query(q): Query<Vec<(String, String)>>| async move {
                    seen.lock().unwrap().push(format!("list {q:?}"));
                    Json(json!({"jobs": [job("dead")], "next_cursor": "7"}))
                },
            ),
        )
        .route(
            "/api/v1/jobs/{id}",
            get(
                |State(seen): State<Seen>,
                 Path(id): Path<String>,
                 Query(q): Query<HashMap<String, String>>| async move {
                    seen.lock().unwrap().push(format!("get {id} {q:?}"));
                    if id == ID {
                        Ok(Json(job("succeeded")))
                    } else {
                        Err(api_error(StatusCode::NOT_FOUND, "not_found", "no such job"))
                    }
                },
            ),
        )
        .route(
            "/api/v1/jobs/{id}/cancel",
            post(|| async {
                api_error(
                    StatusCode::CONFLICT,
                    "conflict",
                    "job is succeeded; only scheduled, queued or running jobs can be cancelled",
                )
            }),
        )
        .route(
            "/api/v1/jobs/{id}/heartbeat",
            post(
                |State(seen): State<Seen>, Json(body): Json<Value>| async move {
                    seen.lock().unwrap().push(format!("heartbeat {body}"));
                    Json(json!({"lease_expires_at": "2026-11-24T10:01:00Z",
                                "cancel_requested": true}))
                },
            ),
        )
        .route(
            "/api/v1/leases",
            post(
                |State(seen): State<Seen>, Json(body): Json<Value>| async move {
                    seen.lock().unwrap().push(format!("lease {body}"));
                    let readable = json!({
                        "id": ID, "job": "thumbnail", "queue": "default", "payload": null,
                        "attempt": 1, "max_attempts": 10, "priority": 0,
                        "created_at": "2026-11-24T10:00:00Z", "lease_token": 123,
                        "lease_expires_at": "2026-11-24T10:01:00Z", "timeout": "5m"
                    });
                    // Deeper than serde_json reads: the job comes back as unreadable, with
                    // its id and token, and does not hide the readable one.
                    let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
                    let unreadable = readable
                        .to_string()
                        .replace(ID, OTHER_ID)
                        .replace("123", "456")
                        .replace("\"payload\":null", &format!("\"payload\":{deep}"));
                    (
                        [("content-type", "application/json")],
                        format!("{{\"jobs\": [{unreadable}, {readable}]}}"),
                    )
                },
            ),
        )
        .route(
            "/api/v1/queues",
            get(|| async { Json(json!({"queues": [{"name": "default", "paused": false, "scheduled": 0, "queued": 2, "running": 1, "succeeded": 5, "dead": 1, "cancelled": 0}]})) }),
        )
        .route(
            "/api/v1/queues/{name}/pause",
            post(|Path(name): Path<String>| async move {
                Json(json!({"name": name, "paused": true, "scheduled": 0, "queued": 0,
                            "running": 0, "succeeded": 0, "dead": 0, "cancelled": 0}))
            }),
        )
        .route("/healthz", get(|| async { "not json" }))
        .route(
            "/readyz",
            get(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"status": "not_ready", "reason": "store unreachable"})),
                )
            }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = Client::new(format!("http://{addr}"), Some("s3cret".into())).unwrap();
    (client, seen)
}

fn last(seen: &Seen) -> String {
    seen.lock().unwrap().last().cloned().unwrap_or_default()
}

#[tokio::test]
async fn enqueue_sends_token_and_body() {
    let (client, seen) = start().await;
    let answer = client
        .enqueue(
            &EnqueueRequest::new("thumbnail", json!({"src": "a.png"}))
                .delay(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert!(!answer.duplicate);
    assert_eq!(answer.job.id.to_string(), ID);
    assert_eq!(answer.job.state, JobState::Queued);
    assert_eq!(
        last(&seen),
        r#"enqueue Bearer s3cret {"delay":"30s","job":"thumbnail","payload":{"src":"a.png"}}"#
    );
}

#[tokio::test]
async fn get_job_with_wait_and_not_found() {
    let (client, seen) = start().await;
    let id: Uuid = ID.parse().unwrap();
    let job = client
        .get_job(id, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(last(&seen), format!(r#"get {ID} {{"wait": "5s"}}"#));

    let err = client.get_job(Uuid::nil(), None).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(
        err,
        Error::Api {
            status: 404,
            code: "not_found".into(),
            message: "no such job".into()
        }
    );
    let job = client.wait_for_finish(id, None).await.unwrap();
    assert_eq!(job.state, JobState::Succeeded);
}

#[tokio::test]
async fn list_jobs_passes_filters_and_cursor() {
    let (client, seen) = start().await;
    let filter = JobFilter::default()
        .state(JobState::Dead)
        .queue("media")
        .limit(2);
    let page = client.list_jobs(&filter, Some("5")).await.unwrap();
    assert_eq!(page.next_cursor.as_deref(), Some("7"));
    assert_eq!(page.jobs.len(), 1);
    assert_eq!(
        last(&seen),
        r#"list [("state", "dead"), ("queue", "media"), ("limit", "2"), ("cursor", "5")]"#
    );
    client.list_jobs(&JobFilter::default(), None).await.unwrap();
    assert_eq!(last(&seen), "list []");
}

#[tokio::test]
async fn conflict_is_reported() {
    let (client, _) = start().await;
    let err = client.cancel(ID.parse().unwrap()).await.unwrap_err();
    assert!(err.is_conflict() && !err.is_stale_lease(), "{err}");
    assert!(err.to_string().contains("only scheduled"), "{err}");
}

#[tokio::test]
async fn worker_protocol() {
    let (client, seen) = start().await;
    let jobs = client
        .lease(&LeaseRequest::new("w1").max(5).wait(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(jobs.unreadable.len(), 1, "{jobs:?}");
    assert_eq!(jobs.unreadable[0].id.to_string(), OTHER_ID);
    assert_eq!(jobs.unreadable[0].lease_token, 456);
    assert!(
        jobs.unreadable[0].error.contains("recursion limit"),
        "{:?}",
        jobs.unreadable[0]
    );
    let jobs = jobs.jobs;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].lease_token, 123);
    assert_eq!(jobs[0].timeout, Some(Duration::from_secs(300)));
    assert_eq!(
        last(&seen),
        r#"lease {"max":5,"queues":["default"],"wait":"1s","worker_id":"w1"}"#
    );
    let ack = client
        .heartbeat(jobs[0].id, 123, Some(Duration::from_secs(90)))
        .await
        .unwrap();
    assert!(ack.cancel_requested);
    assert_eq!(
        last(&seen),
        r#"heartbeat {"lease":"90s","lease_token":123}"#
    );
    let report = HeartbeatReport::default()
        .progress(40.0, Some("4 of 10"))
        .checkpoint(json!({"done": 4}));
    let ack = client
        .heartbeat_with(jobs[0].id, 123, None, &report)
        .await
        .unwrap();
    assert!(ack.cancel_requested);
    assert_eq!(
        last(&seen),
        r#"heartbeat {"checkpoint":{"done":4},"lease_token":123,"progress":{"message":"4 of 10","percent":40.0}}"#
    );
}

#[tokio::test]
async fn queues_and_health() {
    let (client, _) = start().await;
    let queues = client.queues().await.unwrap();
    assert_eq!((queues[0].name.as_str(), queues[0].queued), ("default", 2));
    let paused = client.pause_queue("media").await.unwrap();
    assert!(paused.paused && paused.name == "media");

    let err = client.healthz().await.unwrap_err();
    assert!(matches!(err, Error::Decode { status: 200, .. }), "{err}");
    let err = client.readyz().await.unwrap_err();
    assert!(
        err.is_unavailable() && err.code() == Some("not_ready"),
        "{err}"
    );
}

#[tokio::test]
async fn unreachable_server_is_a_transport_error() {
    // Bind, then drop, to get a port nobody listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = Client::new(format!("http://127.0.0.1:{port}"), None).unwrap();
    let err = client.queues().await.unwrap_err();
    match &err {
        Error::Transport { url, timed_out, .. } => {
            assert_eq!(url, &format!("http://127.0.0.1:{port}"));
            assert!(!timed_out);
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
    assert!(err.is_unavailable());
    assert!(
        err.to_string().contains("cannot reach the hinter server"),
        "{err}"
    );
}
