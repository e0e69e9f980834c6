//! Rule 20: concurrent workers.

use crate::support::*;
use hinter_core::store::{Completion, JobFilter};
use hinter_core::{JobState, NewJob, Store};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

const WORKERS: u32 = 8;

/// Completes leased jobs in one batch; every completion must be accepted.
async fn complete_all(
    store: &dyn Store,
    leased: &[hinter_core::LeasedJob],
    now: chrono::DateTime<chrono::Utc>,
) {
    let completions = leased
        .iter()
        .map(|l| Completion {
            id: l.id,
            lease_token: l.lease_token,
            result: None,
        })
        .collect();
    let answers = store
        .job_complete_many(completions, now)
        .await
        .expect("job_complete_many");
    assert_eq!(answers.len(), leased.len());
    for answer in answers {
        answer.expect("a worker completes its own lease");
    }
}

async fn all_jobs(store: &dyn Store, state: JobState) -> Vec<hinter_core::Job> {
    list(
        store,
        JobFilter {
            state: Some(state),
            limit: 1000,
            ..JobFilter::default()
        },
    )
    .await
}

/// Eight workers leasing (and completing) at once from 200 jobs never get the same job twice,
/// and between them lease every job.
pub async fn concurrent_leases_are_exclusive(store: Arc<dyn Store>) {
    let now = base_time();
    let batch: Vec<NewJob> = (0..200).map(|_| job("work")).collect();
    let all: BTreeSet<Uuid> = batch.iter().map(|j| j.id).collect();
    insert_many(&*store, batch, now).await;

    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let store = store.clone();
        workers.push(tokio::spawn(async move {
            let store = &*store;
            let worker = format!("worker-{w}");
            let mut mine = Vec::new();
            loop {
                let leased = lease_with(store, &["default"], &worker, 1 + w % 4, LEASE, now).await;
                if leased.is_empty() {
                    return mine;
                }
                mine.extend(leased.iter().map(|l| l.id));
                complete_all(store, &leased, now + secs(1)).await;
            }
        }));
    }
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for worker in workers {
        for id in worker.await.expect("worker task") {
            total += 1;
            assert!(seen.insert(id), "job {id} was leased twice");
        }
    }
    assert_eq!(total, 200);
    assert_eq!(seen, all);
    let done = all_jobs(&*store, JobState::Succeeded).await;
    assert_eq!(done.len(), 200);
    assert!(done.iter().all(|j| j.attempt == 1), "every job leased once");
}

/// Under concurrent workers, singleton jobs of one name never run two at a time, and jobs
/// sharing an ordering key run one at a time in enqueue order.
pub async fn concurrent_leases_respect_singleton_and_ordering(store: Arc<dyn Store>) {
    let now = base_time();
    let mut batch = Vec::new();
    let mut ordered = Vec::new();
    for i in 0..60 {
        let new = match i % 3 {
            0 => job_in("report", "q").singleton(true),
            1 => {
                let new = job_in("ordered", "q").ordering_key("K");
                ordered.push(new.id);
                new
            }
            _ => job_in("free", "q"),
        };
        batch.push(new);
    }
    let total = batch.len();
    insert_many(&*store, batch, now).await;

    let started = Arc::new(Mutex::new(Vec::new()));
    let finished = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let store = store.clone();
        let started = started.clone();
        let finished = finished.clone();
        workers.spawn(async move {
            let store = &*store;
            let worker = format!("worker-{w}");
            while finished.load(Ordering::SeqCst) < total {
                let leased = lease_with(store, &["q"], &worker, 3, LEASE, now).await;
                if leased.is_empty() {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                for l in &leased {
                    if l.job == "ordered" {
                        started.lock().expect("lock").push(l.id);
                    }
                }
                for l in &leased {
                    if l.job == "free" {
                        continue;
                    }
                    let running = list(
                        store,
                        JobFilter {
                            state: Some(JobState::Running),
                            job: Some(l.job.clone()),
                            limit: 100,
                            ..JobFilter::default()
                        },
                    )
                    .await;
                    assert_eq!(
                        ids(&running),
                        vec![l.id],
                        "only one {} job may run at a time",
                        l.job
                    );
                }
                tokio::task::yield_now().await;
                complete_all(store, &leased, now + secs(1)).await;
                finished.fetch_add(leased.len(), Ordering::SeqCst);
            }
        });
    }
    // The first failing worker fails the test at once (the others are aborted).
    while let Some(done) = workers.join_next().await {
        done.expect("worker task");
    }
    let started = started.lock().expect("lock").clone();
    assert_eq!(started, ordered, "ordered jobs start in enqueue order");
    assert_eq!(all_jobs(&*store, JobState::Succeeded).await.len(), total);
}
