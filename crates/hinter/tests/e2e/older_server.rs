//! A worker in server mode (`HttpSource`, what `hinter worker --server` runs) against a
//! server older than `POST /api/v1/outcomes`: it falls back to one request per job. The
//! server is the real router on loopback, in this process, with that one route answering
//! 404 as an older server's would.

use crate::support::wait_for;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hinter_client::Client;
use hinter_core::{JobDefinition, JobState, NewJob, Store, SystemClock};
use hinter_engine::{HandlerContext, HttpSource, JobError, Registry, Worker, WorkerOptions};
use hinter_server::{AppState, ServerConfig};
use hinter_sqlite::{SqliteOptions, SqliteStore};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Requests per kind the server saw: outcomes batches (refused), one-job outcomes.
#[derive(Default)]
struct Seen {
    batches: AtomicUsize,
    single: AtomicUsize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_go_job_by_job_to_a_server_without_the_batch_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = Arc::new(
        SqliteStore::open(&dir.path().join("hinter.db"), SqliteOptions::default())
            .await
            .expect("open the store"),
    );
    let store: Arc<dyn Store> = sqlite.clone();
    let state = AppState {
        store: store.clone(),
        cluster: sqlite,
        clock: Arc::new(SystemClock),
        definitions: hinter_core::Definitions::new(),
        config: Arc::new(ServerConfig::default()),
        ready: Arc::new(AtomicBool::new(true)),
        metrics: hinter_server::Metrics::new(),
        hub: Default::default(),
    };
    let seen = Arc::new(Seen::default());
    let counted = seen.clone();
    let older = move |request: Request, next: Next| {
        let seen = counted.clone();
        async move {
            let path = request.uri().path().to_string();
            if path == "/api/v1/outcomes" {
                seen.batches.fetch_add(1, Ordering::SeqCst);
                return (
                    axum::http::StatusCode::NOT_FOUND,
                    axum::Json(json!({"error": {"code": "not_found", "message": "no route"}})),
                )
                    .into_response();
            }
            if path.ends_with("/complete") || path.ends_with("/fail") {
                seen.single.fetch_add(1, Ordering::SeqCst);
            }
            let response: Response = next.run(request).await;
            response
        }
    };
    let app = hinter_server::router(state).layer(axum::middleware::from_fn(older));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let jobs: Vec<NewJob> = (0..6)
        .map(|i| {
            let name = if i % 2 == 0 { "ok" } else { "bad" };
            NewJob::new(name, json!({"i": i}))
        })
        .collect();
    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    store
        .job_insert_many(jobs, chrono::Utc::now())
        .await
        .expect("enqueue");

    let mut registry = Registry::new();
    registry.register(
        JobDefinition {
            name: "ok".into(),
            ..JobDefinition::default()
        },
        |_ctx: HandlerContext, payload: Value| async move { Ok::<Value, JobError>(payload) },
    );
    registry.register(
        JobDefinition {
            name: "bad".into(),
            ..JobDefinition::default()
        },
        |_ctx: HandlerContext, _payload: Value| async move {
            Err::<(), JobError>(JobError::permanent("cannot do this one"))
        },
    );
    let client = Client::new(&base, None).expect("client");
    let source = Arc::new(HttpSource::new(client, Duration::from_millis(200)));
    let worker = Worker::start_on(
        source,
        Arc::new(SystemClock),
        registry,
        WorkerOptions {
            concurrency: 4,
            ..WorkerOptions::default()
        },
    )
    .expect("start the worker");

    for (i, id) in ids.iter().enumerate() {
        let job = wait_for(Duration::from_secs(30), "the job to finish", || {
            let store = store.clone();
            async move {
                let job = store.job_get(*id).await.ok().flatten()?;
                job.state.is_finished().then_some(job)
            }
        })
        .await;
        if i % 2 == 0 {
            assert_eq!(job.state, JobState::Succeeded, "{job:?}");
            assert_eq!(job.result, Some(json!({"i": i})));
        } else {
            assert_eq!(job.state, JobState::Dead, "{job:?}");
            assert_eq!(job.errors[0].message, "cannot do this one");
        }
    }
    worker.shutdown().await;
    server.abort();
    // Batches already on their way when the first 404 came back try too: at most one per
    // kind of outcome (complete, fail, release).
    let batches = seen.batches.load(Ordering::SeqCst);
    assert!(
        (1..=3).contains(&batches),
        "tried the batch route {batches} times; once it answered 404 it is not asked again"
    );
    assert_eq!(seen.single.load(Ordering::SeqCst), 6, "one request per job");
}
