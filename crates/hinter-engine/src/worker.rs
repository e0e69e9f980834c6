//! The in-process worker: fetcher, job tasks, completer, heartbeater.

use crate::handler::{HandlerContext, JobError, Registry};
use hinter_core::retry::decide_failure;
use hinter_core::store::{Completion, Failure, Heartbeat, LeaseRequest, Release};
use hinter_core::{format_duration, Clock, LeasedJob, Store, StoreError, StoreEvent};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Settings of a [`Worker`].
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Queues to lease from; empty means the queues of the registered handlers.
    pub queues: Vec<String>,
    /// Jobs run at the same time.
    pub concurrency: usize,
    /// Jobs leased ahead of free run slots, so that one lease (one commit) fills many
    /// slots when jobs are short. They wait in the worker with their lease running; on
    /// shutdown they go straight back to the queue. 0 leases only for free slots.
    pub prefetch: usize,
    /// Lease (visibility timeout) asked for each job; heartbeats renew it.
    pub lease_for: Duration,
    /// Fallback re-poll when no store event arrives.
    pub poll_interval: Duration,
    /// On shutdown, how long running jobs may take to finish before they are stopped and
    /// handed back to the queue.
    pub stopping_wait_time: Duration,
    /// How long a cancelled handler may take to return before it is aborted.
    pub cancel_grace: Duration,
    pub worker_id: String,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            queues: Vec::new(),
            concurrency: 10,
            prefetch: 10,
            lease_for: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            stopping_wait_time: Duration::from_secs(30),
            cancel_grace: Duration::from_secs(5),
            worker_id: default_worker_id(),
        }
    }
}

/// `host:pid:random`, unique enough to tell processes apart in listings.
pub fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}:{:04x}", std::process::id(), rand_u16())
}

fn rand_u16() -> u16 {
    rand::random()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Cancelled,
    TimedOut,
    LeaseLost,
}

struct Running {
    lease_token: i64,
    cancel: CancellationToken,
    stop: Option<StopReason>,
    handler: Option<AbortHandle>,
}

enum Outcome {
    Complete(Completion),
    Fail {
        job: LeasedJob,
        error: String,
        retryable: bool,
        cancelled: bool,
    },
    Release(Release),
    Flush(oneshot::Sender<()>),
}

struct Shared {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    registry: Registry,
    options: WorkerOptions,
    queues: Vec<String>,
    running: Mutex<HashMap<Uuid, Running>>,
    outcomes: mpsc::UnboundedSender<Outcome>,
    wake: Notify,
    /// Run slots: at most `concurrency` handlers at once.
    run_slots: Arc<Semaphore>,
    shutdown: CancellationToken,
}

impl Shared {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells a running job to stop; aborts its handler if it does not return in time.
    fn stop_job(self: &Arc<Self>, id: Uuid, reason: StopReason) {
        let mut running = self.running();
        let Some(entry) = running.get_mut(&id) else {
            return;
        };
        if entry.stop.is_none() {
            entry.stop = Some(reason);
        }
        entry.cancel.cancel();
        if reason == StopReason::LeaseLost {
            // Another worker owns the job now: stop at once, report nothing.
            if let Some(handler) = running.remove(&id).and_then(|e| e.handler) {
                handler.abort();
            }
            return;
        }
        if let Some(handler) = entry.handler.clone() {
            let grace = self.options.cancel_grace;
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                handler.abort();
            });
        }
    }
}

/// Runs registered handlers for jobs leased from the store.
pub struct Worker;

/// Controls a started [`Worker`].
pub struct WorkerHandle {
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    fetcher: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

impl Worker {
    /// Starts the worker's tasks on the current tokio runtime.
    pub fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        registry: Registry,
        options: WorkerOptions,
    ) -> WorkerHandle {
        let queues = if options.queues.is_empty() {
            registry.queues()
        } else {
            options.queues.clone()
        };
        let (outcomes, outcome_rx) = mpsc::unbounded_channel();
        let options_concurrency = options.concurrency.max(1);
        let shared = Arc::new(Shared {
            store,
            clock,
            registry,
            options,
            queues,
            running: Mutex::new(HashMap::new()),
            outcomes,
            wake: Notify::new(),
            run_slots: Arc::new(Semaphore::new(options_concurrency)),
            shutdown: CancellationToken::new(),
        });
        let shutdown = shared.shutdown.clone();
        let events = shared.store.subscribe();
        let background = vec![
            tokio::spawn(completer(shared.clone(), outcome_rx)),
            tokio::spawn(heartbeater(shared.clone())),
            tokio::spawn(listener(shared.clone(), events, shutdown.clone())),
        ];
        let fetcher = tokio::spawn(fetcher(shared.clone(), shutdown.clone()));
        WorkerHandle {
            shared,
            shutdown,
            fetcher,
            background,
        }
    }
}

impl WorkerHandle {
    /// Number of jobs running now.
    pub fn running(&self) -> usize {
        self.shared.running().len()
    }

    /// Graceful stop: lease nothing more, give running jobs `stopping_wait_time`, then stop
    /// the rest and hand them back to the queue. Returns once every outcome is stored (or
    /// could not be: the leases then expire and the jobs are rescued).
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.fetcher.await;
        let deadline = tokio::time::Instant::now() + self.shared.options.stopping_wait_time;
        while !self.shared.running().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let leftovers: Vec<(Uuid, Running)> = self.shared.running().drain().collect();
        if !leftovers.is_empty() {
            tracing::warn!(
                jobs = leftovers.len(),
                "stopping jobs still running after stopping_wait_time; they go back to the queue"
            );
        }
        for (id, entry) in leftovers {
            entry.cancel.cancel();
            if let Some(handler) = entry.handler {
                handler.abort();
            }
            let _ = self.shared.outcomes.send(Outcome::Release(Release {
                id,
                lease_token: entry.lease_token,
            }));
        }
        let (tx, rx) = oneshot::channel();
        if self.shared.outcomes.send(Outcome::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(30), rx).await;
        }
        for task in self.background {
            task.abort();
        }
    }
}

async fn fetcher(shared: Arc<Shared>, shutdown: CancellationToken) {
    // Lease slots: running plus prefetched jobs.
    let slots = Arc::new(Semaphore::new(
        shared.options.concurrency.max(1) + shared.options.prefetch,
    ));
    let mut failures = 0u32;
    loop {
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.cancelled() => return,
        };
        // Let jobs that are about to finish do so, so one lease fills many slots: fewer,
        // larger group commits.
        tokio::task::yield_now().await;
        let mut permits = vec![first];
        while let Ok(p) = slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        let request = LeaseRequest {
            queues: shared.queues.clone(),
            worker_id: shared.options.worker_id.clone(),
            max: u32::try_from(permits.len()).unwrap_or(u32::MAX),
            lease_for: shared.options.lease_for,
            now: shared.clock.now(),
        };
        let leased = tokio::select! {
            r = shared.store.job_lease(request) => r,
            _ = shutdown.cancelled() => return,
        };
        match leased {
            Ok(jobs) => {
                failures = 0;
                let got = jobs.len();
                for job in jobs {
                    let Some(permit) = permits.pop() else { break };
                    start_job(&shared, job, permit);
                }
                drop(permits);
                if got == 0 {
                    tokio::select! {
                        _ = shared.wake.notified() => {}
                        _ = tokio::time::sleep(shared.options.poll_interval) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
            Err(e) => {
                failures += 1;
                let wait = shared.options.poll_interval * failures.min(10);
                tracing::warn!(error = %e, retry_in = ?wait, "leasing jobs failed");
                drop(permits);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

fn start_job(shared: &Arc<Shared>, job: LeasedJob, permit: OwnedSemaphorePermit) {
    let cancel = CancellationToken::new();
    shared.running().insert(
        job.id,
        Running {
            lease_token: job.lease_token,
            cancel: cancel.clone(),
            stop: None,
            handler: None,
        },
    );
    let shared = shared.clone();
    tokio::spawn(async move {
        let run_slot = tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => None,
            slot = shared.run_slots.clone().acquire_owned() => slot.ok(),
        };
        let Some(run_slot) = run_slot else {
            // Prefetched but never started: hand it back untouched.
            if shared.running().remove(&job.id).is_some() {
                let _ = shared.outcomes.send(Outcome::Release(Release {
                    id: job.id,
                    lease_token: job.lease_token,
                }));
            }
            return;
        };
        let outcome = run_job(&shared, &job, cancel).await;
        drop(run_slot);
        drop(permit);
        // Whoever removes the entry reports the outcome: this task, or shutdown / a lost
        // lease, which took it first.
        let Some(entry) = shared.running().remove(&job.id) else {
            return;
        };
        let outcome = match outcome {
            Ok(result) => Outcome::Complete(Completion {
                id: job.id,
                lease_token: job.lease_token,
                result,
            }),
            Err(e) => Outcome::Fail {
                cancelled: entry.stop == Some(StopReason::Cancelled),
                error: e.message,
                retryable: e.retryable,
                job,
            },
        };
        let _ = shared.outcomes.send(outcome);
    });
}

async fn run_job(
    shared: &Arc<Shared>,
    job: &LeasedJob,
    cancel: CancellationToken,
) -> Result<Option<Value>, JobError> {
    let Some(handler) = shared.registry.get(&job.job) else {
        return Err(JobError::retryable(format!(
            "no handler for job {:?} in worker {}",
            job.job, shared.options.worker_id
        )));
    };
    let ctx = HandlerContext::new(job, cancel.clone());
    let mut task = tokio::spawn(handler.call(ctx, job.payload.clone()));
    if let Some(entry) = shared.running().get_mut(&job.id) {
        entry.handler = Some(task.abort_handle());
    }
    let joined = match job.timeout {
        Some(limit) => match tokio::time::timeout(limit, &mut task).await {
            Ok(joined) => joined,
            Err(_) => {
                shared.stop_job(job.id, StopReason::TimedOut);
                task.abort();
                return Err(JobError::retryable(format!(
                    "timed out after {}",
                    format_duration(limit)
                )));
            }
        },
        None => task.await,
    };
    match joined {
        Ok(result) => result,
        Err(e) if e.is_panic() => {
            let panic = e.into_panic();
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(JobError::retryable(format!("handler panicked: {message}")))
        }
        Err(_) => Err(JobError::retryable("handler was stopped")),
    }
}

/// Writes outcomes in batches: whatever arrived while the previous batch was committing.
async fn completer(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Outcome>) {
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
    while let Some(first) = rx.recv().await {
        tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let now = shared.clock.now();
        let mut completions = Vec::new();
        let mut failures = Vec::new();
        let mut releases = Vec::new();
        let mut flushes = Vec::new();
        for outcome in batch {
            match outcome {
                Outcome::Complete(c) => completions.push(c),
                Outcome::Fail {
                    job,
                    error,
                    retryable,
                    cancelled,
                } => {
                    let outcome = decide_failure(
                        job.attempt,
                        job.max_attempts,
                        retryable,
                        cancelled,
                        now,
                        &mut rng,
                    );
                    failures.push(Failure {
                        id: job.id,
                        lease_token: job.lease_token,
                        error,
                        outcome,
                    });
                }
                Outcome::Release(r) => releases.push(r),
                Outcome::Flush(tx) => flushes.push(tx),
            }
        }
        write_outcomes(&shared, completions, failures, releases).await;
        for tx in flushes {
            let _ = tx.send(());
        }
    }
}

/// Stores outcomes, retrying while the store is unavailable. Gives up after a while: the
/// leases then expire and the rescuer returns the jobs, so nothing is lost.
async fn write_outcomes(
    shared: &Arc<Shared>,
    completions: Vec<Completion>,
    failures: Vec<Failure>,
    releases: Vec<Release>,
) {
    let store = &shared.store;
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=20 {
        let now = shared.clock.now();
        let (c, f, r) = tokio::join!(
            async {
                if completions.is_empty() {
                    Ok(Vec::new())
                } else {
                    store.job_complete_many(completions.clone(), now).await
                }
            },
            async {
                if failures.is_empty() {
                    Ok(Vec::new())
                } else {
                    store.job_fail_many(failures.clone(), now).await
                }
            },
            async {
                if releases.is_empty() {
                    Ok(Vec::new())
                } else {
                    store.job_release_many(releases.clone(), now).await
                }
            },
        );
        match (c, f, r) {
            (Ok(c), Ok(f), Ok(r)) => {
                let stale = c.iter().filter(|r| r.is_err()).count()
                    + f.iter().filter(|r| r.is_err()).count()
                    + r.iter().filter(|r| r.is_err()).count();
                if stale > 0 {
                    tracing::info!(
                        stale,
                        "some outcomes were refused: their leases had expired"
                    );
                }
                return;
            }
            (c, f, r) => {
                let error = [c.err(), f.err(), r.err()]
                    .into_iter()
                    .flatten()
                    .next()
                    .unwrap_or(StoreError::Unavailable("unknown".into()));
                tracing::warn!(%error, attempt, "storing job outcomes failed; retrying");
                // Parts may have been written; the rest is retried and the written ones
                // come back as stale, which is harmless.
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    tracing::error!("gave up storing job outcomes; their leases will expire and be rescued");
}

async fn heartbeater(shared: Arc<Shared>) {
    let every = (shared.options.lease_for / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let beats: Vec<Heartbeat> = shared
            .running()
            .iter()
            .map(|(id, r)| Heartbeat {
                id: *id,
                lease_token: r.lease_token,
                lease_for: shared.options.lease_for,
            })
            .collect();
        if beats.is_empty() {
            continue;
        }
        let ids: Vec<Uuid> = beats.iter().map(|b| b.id).collect();
        match shared
            .store
            .job_heartbeat_many(beats, shared.clock.now())
            .await
        {
            Ok(answers) => {
                for (id, answer) in ids.into_iter().zip(answers) {
                    match answer {
                        Ok(ack) if ack.cancel_requested => {
                            shared.stop_job(id, StopReason::Cancelled)
                        }
                        Ok(_) => {}
                        Err(StoreError::StaleLease(_)) | Err(StoreError::NotFound(_)) => {
                            tracing::warn!(%id, "lease lost; stopping the job");
                            shared.stop_job(id, StopReason::LeaseLost);
                        }
                        Err(e) => tracing::warn!(%id, error = %e, "heartbeat failed"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeats failed"),
        }
    }
}

async fn listener(
    shared: Arc<Shared>,
    mut events: broadcast::Receiver<StoreEvent>,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = shutdown.cancelled() => return,
        };
        match event {
            Ok(StoreEvent::JobsAvailable { queue }) => {
                if shared.queues.contains(&queue) {
                    shared.wake.notify_one();
                }
            }
            Ok(StoreEvent::CancelRequested { id }) => shared.stop_job(id, StopReason::Cancelled),
            Ok(StoreEvent::JobFinished { .. }) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => shared.wake.notify_one(),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
