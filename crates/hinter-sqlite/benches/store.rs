//! `cargo bench -p hinter-sqlite`: raw store throughput, below the HTTP API and the engine.
//! The end-to-end figures come from `hinter bench`; these isolate the store's share.

use chrono::Utc;
use hinter_core::store::{Completion, LeaseRequest};
use hinter_core::{NewJob, Store};
use hinter_sqlite::{SqliteOptions, SqliteStore};
use serde_json::json;
use std::time::{Duration, Instant};

const JOBS: usize = 50_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(&dir.path().join("bench.db"), SqliteOptions::default()).await?;

    let start = Instant::now();
    for chunk in 0..JOBS / 1000 {
        let batch = (0..1000)
            .map(|i| NewJob::new("noop", json!({ "i": chunk * 1000 + i })))
            .collect();
        store.job_insert_many(batch, Utc::now()).await?;
    }
    report("insert, batches of 1000", JOBS, start.elapsed());

    // Lease and complete in batches of 100 from 4 concurrent loops, the shape of a busy
    // worker pool, so group commit has something to group.
    let start = Instant::now();
    let mut loops = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        loops.push(tokio::spawn(async move {
            let mut done = 0usize;
            loop {
                let leased = store
                    .job_lease(LeaseRequest {
                        jobs: Vec::new(),
                        queues: vec!["default".into()],
                        worker_id: format!("bench-{w}"),
                        max: 100,
                        lease_for: Duration::from_secs(60),
                        now: Utc::now(),
                    })
                    .await?;
                if leased.is_empty() {
                    return Ok::<usize, hinter_core::StoreError>(done);
                }
                done += leased.len();
                let completions = leased
                    .into_iter()
                    .map(|j| Completion {
                        id: j.id,
                        lease_token: j.lease_token,
                        result: None,
                    })
                    .collect();
                store.job_complete_many(completions, Utc::now()).await?;
            }
        }));
    }
    let mut drained = 0;
    for l in loops {
        drained += l.await??;
    }
    report(
        "lease + complete, batches of 100, 4 loops",
        drained,
        start.elapsed(),
    );
    Ok(())
}

fn report(what: &str, jobs: usize, took: Duration) {
    println!(
        "{what:<45} {jobs:>7} jobs in {:>7.3} s = {:>9.0} jobs/s",
        took.as_secs_f64(),
        jobs as f64 / took.as_secs_f64()
    );
}
