//! Several processes on one SQLite file (a `serve` and a `hinter worker --data-dir` on the
//! same machine): a commit of one is announced to the others' subscribers at once
//! (`StoreEvent::Changed`), so they need not wait for their next poll. Two stores on one
//! file stand for two processes: each has its own connections and threads.

use chrono::Utc;
use hinter_core::{NewJob, Store, StoreEvent};
use hinter_sqlite::{SqliteOptions, SqliteStore};
use serde_json::json;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// Far longer than the watcher's look every 10 ms; only a lost wake-up takes this long.
const DEADLINE: Duration = Duration::from_secs(5);

async fn changed(events: &mut tokio::sync::broadcast::Receiver<StoreEvent>) -> bool {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(StoreEvent::Changed) => return true,
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return false,
            }
        }
    };
    tokio::time::timeout(DEADLINE, wait).await.unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_of_another_process_is_announced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("hinter.db");
    let serve = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .expect("open the first store");
    let worker = SqliteStore::open(&path, SqliteOptions::default())
        .await
        .expect("open the second store");
    let mut heard_by_worker = worker.subscribe();
    let mut heard_by_serve = serve.subscribe();
    for round in 0..3 {
        serve
            .job_insert_many(vec![NewJob::new("x", json!(round))], Utc::now())
            .await
            .expect("insert");
        assert!(
            changed(&mut heard_by_worker).await,
            "round {round}: the second store did not hear of the first one's commit"
        );
        worker
            .job_insert_many(vec![NewJob::new("y", json!(round))], Utc::now())
            .await
            .expect("insert");
        assert!(
            changed(&mut heard_by_serve).await,
            "round {round}: the first store did not hear of the second one's commit"
        );
    }
}
