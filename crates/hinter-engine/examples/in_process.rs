//! Runs a typed Rust handler in-process on the embedded store.
//!
//! `cargo run -p hinter-engine --example in_process`

use hinter_core::{Clock, JobDefinition, JobSpec, JobState, Store, SystemClock};
use hinter_engine::{HandlerContext, JobError, Registry, Worker, WorkerOptions};
use std::sync::Arc;
use std::time::Duration;

#[derive(serde::Deserialize)]
struct Thumbnail {
    src: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(
        hinter_sqlite::SqliteStore::open(&dir.path().join("hinter.db"), Default::default()).await?,
    );

    let mut registry = Registry::new();
    registry.register(
        JobDefinition {
            name: "thumbnail".into(),
            max_attempts: Some(3),
            ..Default::default()
        },
        |ctx: HandlerContext, job: Thumbnail| async move {
            if ctx.is_cancelled() {
                return Err(JobError::retryable("stopping"));
            }
            Ok(format!("{} resized on attempt {}", job.src, ctx.attempt))
        },
    );

    let now = SystemClock.now();
    let job = registry.definitions().resolve(
        JobSpec::new("thumbnail", serde_json::json!({ "src": "cat.png" })),
        now,
    )?;
    let id = job.id;
    store.job_insert_many(vec![job], now).await?;

    let worker = Worker::start(
        store.clone(),
        Arc::new(SystemClock),
        registry,
        WorkerOptions::default(),
    )?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let job = store.job_get(id).await?.ok_or("job vanished")?;
        if job.state == JobState::Succeeded {
            println!("{}: {}", job.id, job.result.unwrap_or_default());
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("job still {} after 10 s", job.state).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Graceful stop: running jobs get stopping_wait_time, the rest go back to the queue.
    worker.shutdown().await;
    Ok(())
}
