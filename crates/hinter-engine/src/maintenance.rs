//! Keeping the store healthy: rescue of expired leases and timed-out jobs, promotion of due
//! scheduled jobs (so idle workers wake on time), and retention pruning (finished jobs, the
//! event log, expired idempotency keys).
//!
//! Every step is safe to run in several processes at once: rescues are fenced by lease
//! tokens, promotion and pruning are idempotent. (With PostgreSQL only the elected leader
//! runs them, to save work.)

use chrono::{DateTime, Utc};
use hinter_core::retry::{decide_failure, FailOutcome};
use hinter_core::store::{Expiry, Failure, PruneRequest};
use hinter_core::{format_duration, Clock, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cluster::Leader;

/// How long finished jobs and event log entries are kept.
#[derive(Debug, Clone)]
pub struct Retention {
    pub succeeded: Duration,
    pub dead: Duration,
    pub cancelled: Duration,
    /// Event log entries; as long as succeeded jobs by default, so a kept job's timeline is
    /// complete.
    pub events: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            succeeded: Duration::from_secs(7 * 86_400),
            dead: Duration::from_secs(30 * 86_400),
            cancelled: Duration::from_secs(30 * 86_400),
            events: Duration::from_secs(7 * 86_400),
        }
    }
}

/// Settings of [`Maintenance`].
#[derive(Debug, Clone)]
pub struct MaintenanceOptions {
    /// How often expired leases are looked for.
    pub rescue_interval: Duration,
    /// Longest sleep between promotions of due scheduled jobs.
    pub promote_interval: Duration,
    pub prune_interval: Duration,
    pub retention: Retention,
}

impl Default for MaintenanceOptions {
    fn default() -> Self {
        Self {
            rescue_interval: Duration::from_secs(1),
            promote_interval: Duration::from_secs(1),
            prune_interval: Duration::from_secs(60),
            retention: Retention::default(),
        }
    }
}

/// The maintenance services of one process.
pub struct Maintenance;

/// Stops the maintenance tasks.
pub struct MaintenanceHandle {
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl MaintenanceHandle {
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

impl Maintenance {
    /// Starts the maintenance tasks; each pass runs only while `leader` says this process
    /// leads ([`Leader::always`] for a process alone on its store).
    pub fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        options: MaintenanceOptions,
        leader: Leader,
    ) -> MaintenanceHandle {
        let shutdown = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(rescuer(
                store.clone(),
                clock.clone(),
                options.clone(),
                leader.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(promoter(
                store.clone(),
                clock.clone(),
                options.clone(),
                leader.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(pruner(store, clock, options, leader, shutdown.clone())),
        ];
        MaintenanceHandle { shutdown, tasks }
    }

    /// One rescue pass: every running job whose lease expired or whose timeout passed is
    /// failed (and so retried, or dead when its attempts are used up). Returns how many.
    pub async fn rescue_once(
        store: &dyn Store,
        clock: &dyn Clock,
    ) -> hinter_core::store::StoreResult<usize> {
        let now = clock.now();
        let expired = store.job_expired_list(now, 1000).await?;
        if expired.is_empty() {
            return Ok(0);
        }
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
        let failures: Vec<Failure> = expired
            .into_iter()
            .map(|e| {
                let (error, outcome) = match e.reason {
                    Expiry::LeaseExpired => {
                        let outcome = match decide_failure(
                            e.attempt,
                            e.max_attempts,
                            true,
                            e.cancel_requested,
                            now,
                            &mut rng,
                        ) {
                            // A lost worker is not the job's fault: back to the queue at once.
                            FailOutcome::Retry { .. } => FailOutcome::Retry { run_at: now },
                            other => other,
                        };
                        (
                            "lease expired: the worker stopped heartbeating".to_string(),
                            outcome,
                        )
                    }
                    Expiry::TimedOut => (
                        format!(
                            "timed out after {}",
                            e.timeout.map(format_duration).unwrap_or_default()
                        ),
                        decide_failure(
                            e.attempt,
                            e.max_attempts,
                            true,
                            e.cancel_requested,
                            now,
                            &mut rng,
                        ),
                    ),
                };
                Failure {
                    id: e.id,
                    lease_token: e.lease_token,
                    error,
                    outcome,
                    exit_code: None,
                    rescued: Some(e.reason),
                }
            })
            .collect();
        let results = store.job_fail_many(failures, now).await?;
        let rescued = results.iter().filter(|r| r.is_ok()).count();
        if rescued > 0 {
            tracing::info!(rescued, "rescued jobs with expired leases or timeouts");
        }
        Ok(rescued)
    }
}

async fn rescuer(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    options: MaintenanceOptions,
    leader: Leader,
    shutdown: CancellationToken,
) {
    loop {
        if leader.is_leader() {
            if let Err(e) = Maintenance::rescue_once(store.as_ref(), clock.as_ref()).await {
                tracing::warn!(error = %e, "lease rescue failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(options.rescue_interval) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// How often the leader folds pending job count changes into their totals
/// ([`Store::queue_counts_fold`]).
const COUNTS_FOLD_EVERY: Duration = Duration::from_secs(1);

async fn promoter(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    options: MaintenanceOptions,
    leader: Leader,
    shutdown: CancellationToken,
) {
    let mut last_fold: Option<std::time::Instant> = None;
    loop {
        let now = clock.now();
        // Only the leader promotes; every lease promotes due jobs as well.
        if leader.is_leader() {
            if let Err(e) = store.job_promote_scheduled(now).await {
                tracing::warn!(error = %e, "promoting scheduled jobs failed");
            }
            // Keeps the job counts' pending changes few (PostgreSQL), so listing queues
            // stays quick; on the promotion tick, at most every second.
            if last_fold.is_none_or(|at| at.elapsed() >= COUNTS_FOLD_EVERY) {
                last_fold = Some(std::time::Instant::now());
                if let Err(e) = store.queue_counts_fold().await {
                    tracing::warn!(error = %e, "folding job counts failed");
                }
            }
        }
        let mut sleep = options.promote_interval;
        if let Ok(Some(next)) = store.job_next_scheduled_at().await {
            let until = (next - clock.now()).to_std().unwrap_or(Duration::ZERO);
            sleep = sleep.min(until.max(Duration::from_millis(1)));
        }
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Events per pruning statement: small enough to keep each write short.
const EVENT_PRUNE_BATCH: u32 = 10_000;
/// Most batches per pruning round. The log grows by a few entries per job, so one batch a
/// round could fall behind a busy store; this many keep up with a million jobs a minute.
const EVENT_PRUNE_ROUNDS: u32 = 500;

/// Deletes event log entries from before `before`, batch after batch while batches come back
/// full.
async fn prune_events(store: &dyn Store, before: DateTime<Utc>, shutdown: &CancellationToken) {
    let mut total = 0u64;
    for _ in 0..EVENT_PRUNE_ROUNDS {
        if shutdown.is_cancelled() {
            break;
        }
        match store.events_prune(before, EVENT_PRUNE_BATCH).await {
            Ok(n) => {
                total += n;
                if n < u64::from(EVENT_PRUNE_BATCH) {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "pruning the event log failed");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(pruned = total, "pruned event log entries past retention");
    }
}

/// Idempotency keys per pruning statement; each holds an answer, so fewer than events.
const KEY_PRUNE_BATCH: u32 = 1_000;
/// Most batches per pruning round: a hundred thousand keys a minute.
const KEY_PRUNE_ROUNDS: u32 = 100;

/// Deletes idempotency keys expired at `now`, batch after batch while batches come back full.
async fn prune_idempotency_keys(
    store: &dyn Store,
    now: DateTime<Utc>,
    shutdown: &CancellationToken,
) {
    let mut total = 0u64;
    for _ in 0..KEY_PRUNE_ROUNDS {
        if shutdown.is_cancelled() {
            break;
        }
        match store.idempotency_prune(now, KEY_PRUNE_BATCH).await {
            Ok(n) => {
                total += n;
                if n < u64::from(KEY_PRUNE_BATCH) {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "pruning idempotency keys failed");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(pruned = total, "pruned expired idempotency keys");
    }
}

async fn pruner(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    options: MaintenanceOptions,
    leader: Leader,
    shutdown: CancellationToken,
) {
    let age = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    loop {
        let now = clock.now();
        let request = PruneRequest {
            succeeded_before: now - age(options.retention.succeeded),
            dead_before: now - age(options.retention.dead),
            cancelled_before: now - age(options.retention.cancelled),
            limit: 10_000,
        };
        let pruned = if leader.is_leader() {
            store.job_prune(request).await
        } else {
            Ok(0)
        };
        match pruned {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "pruned finished jobs past retention"),
            Err(e) => tracing::warn!(error = %e, "pruning failed"),
        }
        if leader.is_leader() {
            prune_events(&*store, now - age(options.retention.events), &shutdown).await;
            prune_idempotency_keys(&*store, now, &shutdown).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(options.prune_interval) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
