//! Changing what a running worker runs (`WorkerControl::set_registry`, how script jobs
//! reload) and what handlers report while they run (`HandlerContext::report`, `progress`,
//! `checkpoint`, `log`), and resuming from a checkpoint.

use crate::common::*;
use hinter_core::{JobDefinition, JobState, LogQuery, LogStream, NewJob, NewLogLine, Progress};
use hinter_engine::{HandlerContext, JobError, Registry};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn in_queue(name: &str, queue: &str) -> JobDefinition {
    JobDefinition {
        queue: Some(queue.into()),
        ..def(name)
    }
}

fn answering(registry: &mut Registry, definition: JobDefinition, answer: &'static str) {
    registry.register(definition, move |_ctx: HandlerContext, _payload: Value| async move {
        Ok::<_, JobError>(json!(answer))
    });
}

/// A worker started with nothing to run takes nothing; given a registry, it leases the new
/// names from their queues and runs them; given another, it drops the old names (their
/// jobs wait for a worker that has them) and runs the new ones.
async fn a_running_worker_takes_a_new_registry(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let worker = start_worker(&store, Registry::new(), fast_options(2));
    let control = worker.control();
    let early = enqueue(&store, NewJob::new("resize", json!(1)).queue("media")).await;

    let mut first = Registry::new();
    answering(&mut first, in_queue("resize", "media"), "resized");
    control.set_registry(first).expect("a valid registry");
    assert_eq!(control.job_names(), ["resize"]);
    assert_eq!(control.queues(), ["media"]);
    let done = wait_for_state(&store, early, JobState::Succeeded, Duration::from_secs(20)).await;
    assert_eq!(done.result, Some(json!("resized")));

    let mut second = Registry::new();
    answering(&mut second, def("report"), "reported");
    control.set_registry(second).expect("a valid registry");
    let report = enqueue(&store, NewJob::new("report", json!(2))).await;
    let resize = enqueue(&store, NewJob::new("resize", json!(3)).queue("media")).await;
    let done = wait_for_state(&store, report, JobState::Succeeded, Duration::from_secs(20)).await;
    assert_eq!(done.result, Some(json!("reported")));
    let left = get(&store, resize).await;
    assert_eq!(
        (left.state, left.attempt),
        (JobState::Queued, 0),
        "no longer leased here"
    );
    worker.shutdown().await;
}

/// A handler's report lands in the store under its attempt: lines in order, the progress,
/// and the checkpoint, which the next attempt gets in its context.
async fn handlers_report_lines_progress_and_checkpoints(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let mut registry = Registry::new();
    registry.register(
        def("steps"),
        |ctx: HandlerContext, _payload: Value| async move {
            let now = ctx.now();
            ctx.report(
                vec![
                    NewLogLine::new(now, LogStream::Stdout, format!("attempt {}", ctx.attempt)),
                    NewLogLine::new(
                        now,
                        LogStream::Stderr,
                        "resumed from".to_string()
                            + &ctx
                                .checkpoint
                                .as_ref()
                                .map_or("nothing".into(), |c| c.to_string()),
                    ),
                ],
                Some(Progress {
                    percent: 50.0,
                    message: Some("half".into()),
                    at: now,
                }),
                Some(json!({"attempt": ctx.attempt})),
            )
            .await
            .map_err(|e| JobError::retryable(e.to_string()))?;
            if ctx.attempt == 1 {
                return Err(JobError::retryable("first attempt fails"));
            }
            Ok(json!("done"))
        },
    );
    let worker = start_worker(&store, registry, fast_options(1));
    let id = enqueue(&store, NewJob::new("steps", json!(null))).await;
    // The retry waits out its backoff (about a second).
    let job = wait_for_state(&store, id, JobState::Succeeded, Duration::from_secs(30)).await;
    assert_eq!(job.checkpoint, Some(json!({"attempt": 2})));
    assert_eq!(job.progress.as_ref().map(|p| p.percent), Some(50.0));
    let lines = store
        .job_logs(
            id,
            LogQuery {
                attempt: None,
                after: 0,
                limit: 100,
            },
        )
        .await
        .expect("job_logs")
        .expect("the job exists");
    let texts: Vec<(u32, &str)> = lines.iter().map(|l| (l.attempt, l.line.as_str())).collect();
    assert_eq!(
        texts,
        [
            (1, "attempt 1"),
            (1, "resumed fromnothing"),
            (2, "attempt 2"),
            (2, "resumed from{\"attempt\":1}"),
        ]
    );
    worker.shutdown().await;
}

/// A handler that sums items saves a checkpoint after each (`ctx.checkpoint`), reports
/// progress (`ctx.progress`) and logs (`ctx.log`); its first attempt fails halfway, and the
/// second reads the checkpoint from its context and goes on from there: each item is summed
/// once and the result is right.
async fn a_handler_resumes_from_its_checkpoint(kind: Kind) {
    let (_data, store) = open_store(kind).await;
    let seen: Arc<Mutex<Vec<(u32, u64)>>> = Arc::default();
    let mut registry = Registry::new();
    {
        let seen = seen.clone();
        registry.register(def("sum"), move |ctx: HandlerContext, items: Vec<u64>| {
            let seen = seen.clone();
            async move {
                let (mut done, mut sum) = match &ctx.checkpoint {
                    Some(c) => (
                        c["done"].as_u64().unwrap_or(0) as usize,
                        c["sum"].as_u64().unwrap_or(0),
                    ),
                    None => (0, 0),
                };
                ctx.log(format!("attempt {} starts at item {done}", ctx.attempt))
                    .await?;
                // Out of range: refused, nothing stored, the handler goes on.
                let refused = ctx.progress(101.0, None).await;
                assert!(
                    matches!(refused, Err(hinter_core::StoreError::Invalid(ref e)) if e.field == "progress.percent"),
                    "{refused:?}"
                );
                while done < items.len() {
                    if ctx.attempt == 1 && done == 4 {
                        return Err(JobError::retryable("crashed halfway"));
                    }
                    sum += items[done];
                    seen.lock().expect("lock").push((ctx.attempt, items[done]));
                    done += 1;
                    ctx.checkpoint(json!({"done": done, "sum": sum})).await?;
                    let percent = 100.0 * done as f64 / items.len() as f64;
                    ctx.progress(percent, format!("{done} of {}", items.len()))
                        .await?;
                }
                Ok::<_, JobError>(json!({"sum": sum, "resumed_at": ctx.checkpoint.as_ref().map(|c| c["done"].clone())}))
            }
        });
    }
    let worker = start_worker(&store, registry, fast_options(1));
    let items: Vec<u64> = (1..=10).collect();
    let id = enqueue(&store, NewJob::new("sum", json!(items)).max_attempts(3)).await;
    // The retry waits out its backoff (about a second).
    let job = wait_for_state(&store, id, JobState::Succeeded, Duration::from_secs(30)).await;
    assert_eq!(job.result, Some(json!({"sum": 55, "resumed_at": 4})));
    assert_eq!(job.attempt, 2);
    assert_eq!(job.checkpoint, Some(json!({"done": 10, "sum": 55})));
    let progress = job.progress.expect("progress");
    assert_eq!(
        (progress.percent, progress.message.as_deref()),
        (100.0, Some("10 of 10"))
    );
    let seen = seen.lock().expect("lock").clone();
    let expected: Vec<(u32, u64)> = (1..=4)
        .map(|n| (1, n))
        .chain((5..=10).map(|n| (2, n)))
        .collect();
    assert_eq!(
        seen, expected,
        "each item once: attempt 2 resumed at item 5"
    );
    let lines = store
        .job_logs(
            id,
            LogQuery {
                attempt: None,
                after: 0,
                limit: 100,
            },
        )
        .await
        .expect("job_logs")
        .expect("the job exists");
    let texts: Vec<(u32, &str)> = lines.iter().map(|l| (l.attempt, l.line.as_str())).collect();
    assert_eq!(
        texts,
        [
            (1, "attempt 1 starts at item 0"),
            (2, "attempt 2 starts at item 4")
        ]
    );
    worker.shutdown().await;
}

on_both_backends!(
    a_running_worker_takes_a_new_registry,
    handlers_report_lines_progress_and_checkpoints,
    a_handler_resumes_from_its_checkpoint,
);
