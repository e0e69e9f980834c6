//! The in-process worker: fetcher, job tasks, completer, heartbeater.

use crate::handler::{HandlerContext, JobError, Registry, StopReason};
use crate::source::{JobSource, StoreSource};
use hinter_core::retry::decide_failure;
use hinter_core::store::{Completion, Failure, Heartbeat, LeaseRequest, Release};
use hinter_core::{
    format_duration, limits, Clock, FieldError, LeasedJob, Store, StoreError, StoreEvent,
};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify, Semaphore};
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Settings of a [`Worker`].
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Queues to lease from; empty means the queues of the handlers registered by name
    /// ([`Registry::queues`]). A worker relying on a fallback handler must name them. At
    /// most [`hinter_core::limits::MAX_LEASE_QUEUES`] distinct valid names.
    pub queues: Vec<String>,
    /// Jobs run at the same time.
    pub concurrency: usize,
    /// The most jobs leased ahead of free run slots while jobs are short (their recent
    /// average run time is under [`PREFETCH_BELOW`]), so one lease, one commit, fills many
    /// slots. They wait in the worker with their lease running; on shutdown they go straight
    /// back to the queue. Within this bound a worker holds about [`PREFETCH_WORK`] of work
    /// ahead (its slots run through that many jobs in that time), so no worker hoards work
    /// that others could start; with slow jobs nothing is prefetched. 0 turns prefetching off.
    pub prefetch: usize,
    /// Lease (visibility timeout) asked for each job; heartbeats renew it.
    pub lease_for: Duration,
    /// Fallback re-poll when no store event arrives.
    pub poll_interval: Duration,
    /// On shutdown, how long running jobs may take to finish before they are stopped and
    /// handed back to the queue.
    pub stopping_wait_time: Duration,
    /// How long a handler told to stop (cancelled, timed out, lease lost, or still running
    /// at the end of `stopping_wait_time`) may take to return before it is aborted: time to
    /// clean up, e.g. to stop a child process gracefully.
    pub cancel_grace: Duration,
    pub worker_id: String,
}

/// Prefetching is on while the average job runs shorter than this.
pub const PREFETCH_BELOW: Duration = Duration::from_millis(10);

/// While prefetching, a worker holds about this much work ahead of its free run slots
/// (within [`WorkerOptions::prefetch`]): a prefetched job waits about this long for a slot.
pub const PREFETCH_WORK: Duration = Duration::from_millis(10);

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            queues: Vec::new(),
            concurrency: 10,
            prefetch: 500,
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
    format!(
        "{}:{}:{:04x}",
        hostname(),
        std::process::id(),
        rand::random::<u16>()
    )
}

/// This machine's name, for listings.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A leased job held by this worker (waiting for a run slot or running). Keyed by job id;
/// the lease token tells attempts of the same job apart.
struct Running {
    lease_token: i64,
    cancel: CancellationToken,
    /// Why the job was told to stop; the first reason wins. Shared with its handler's
    /// context.
    stop: Arc<OnceLock<StopReason>>,
    handler: Option<AbortHandle>,
}

impl Running {
    fn stop_reason(&self) -> Option<StopReason> {
        self.stop.get().copied()
    }

    /// Tells the handler to stop (first reason wins) without aborting it.
    fn tell_stop(&self, reason: StopReason) {
        let _ = self.stop.set(reason);
        self.cancel.cancel();
    }

    /// Tells the handler to stop and aborts it if it has not returned after `grace`.
    fn stop_within(&self, reason: StopReason, grace: Duration) {
        self.tell_stop(reason);
        if let Some(handler) = self.handler.clone() {
            abort_after(handler, grace);
        }
    }

    fn stop_now(&self, reason: StopReason) {
        self.tell_stop(reason);
        if let Some(handler) = &self.handler {
            handler.abort();
        }
    }
}

fn abort_after(handler: AbortHandle, grace: Duration) {
    if grace.is_zero() {
        handler.abort();
        return;
    }
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        handler.abort();
    });
}

enum Outcome {
    Complete(Completion),
    Fail {
        job: LeasedJob,
        error: String,
        retryable: bool,
        cancelled: bool,
        exit_code: Option<i32>,
    },
    Release(Release),
    Flush(oneshot::Sender<()>),
}

/// What the worker runs and where it leases it from: replaced whole by
/// [`WorkerHandle::set_registry`], read by the fetcher before each lease and by each job as
/// it starts.
struct Routing {
    registry: Registry,
    queues: Vec<String>,
    /// The job names it leases ([`Registry::job_names`]); empty: any.
    jobs: Vec<String>,
}

impl Routing {
    /// The queues and job names of `registry` (or `options.queues`), checked.
    fn new(registry: Registry, options: &WorkerOptions) -> Result<Self, FieldError> {
        let mut queues = if options.queues.is_empty() {
            registry.queues()
        } else {
            options.queues.clone()
        };
        if !queues.is_empty() {
            limits::check_lease_queues("queues", &queues)?;
        }
        let mut seen = HashSet::new();
        queues.retain(|queue| seen.insert(queue.clone()));
        let jobs = registry.job_names();
        limits::check_lease_job_names("jobs", &jobs)?;
        Ok(Self {
            registry,
            queues,
            jobs,
        })
    }
}

struct Shared {
    source: Arc<dyn JobSource>,
    clock: Arc<dyn Clock>,
    routing: std::sync::RwLock<Arc<Routing>>,
    options: WorkerOptions,
    running: Mutex<HashMap<Uuid, Running>>,
    outcomes: mpsc::UnboundedSender<Outcome>,
    /// Jobs became available in one of our queues.
    wake: Notify,
    /// A held job finished or was handed back: there is room to lease.
    room: Notify,
    /// Run slots: at most `concurrency` handlers at once.
    run_slots: Arc<Semaphore>,
    /// Moving average of handler run time in microseconds; `u64::MAX` until measured.
    average_run_micros: AtomicU64,
    shutdown: CancellationToken,
    /// Set when the source refuses to lease for good (say, the server calls the request
    /// invalid): the worker has stopped leasing.
    fatal: watch::Sender<Option<String>>,
}

impl Shared {
    fn routing(&self) -> Arc<Routing> {
        self.routing
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes the entry of this attempt (not of a newer attempt of the same job).
    fn take(&self, id: Uuid, lease_token: i64) -> Option<Running> {
        let mut running = self.running();
        let entry = match running.get(&id) {
            Some(entry) if entry.lease_token == lease_token => running.remove(&id),
            _ => None,
        };
        drop(running);
        if entry.is_some() {
            self.room.notify_one();
        }
        entry
    }

    /// How many jobs this worker may hold now ([`capacity`]).
    fn capacity(&self) -> usize {
        capacity(
            self.options.concurrency,
            self.options.prefetch,
            self.average_run_micros.load(Ordering::Relaxed),
        )
    }

    fn record_run_time(&self, took: Duration) {
        let sample = took.as_micros().min(u128::from(u64::MAX / 2)) as u64;
        let _ = self
            .average_run_micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == u64::MAX {
                    sample
                } else {
                    (old * 7 + sample) / 8
                })
            });
    }

    /// Tells a running job to stop; aborts its handler if it does not return within
    /// `cancel_grace`. `lease_token` limits this to one attempt; `None` means whichever
    /// attempt is held.
    fn stop_job(self: &Arc<Self>, id: Uuid, lease_token: Option<i64>, reason: StopReason) {
        let grace = self.options.cancel_grace;
        let mut running = self.running();
        let Some(entry) = running.get_mut(&id) else {
            return;
        };
        if lease_token.is_some_and(|t| t != entry.lease_token) {
            return;
        }
        if reason == StopReason::LeaseLost {
            // Another worker (or another attempt) owns the job now: forget it (nothing will
            // be reported, and no heartbeat sent), and let the handler stop.
            if let Some(entry) = running.remove(&id) {
                drop(running);
                entry.stop_within(reason, grace);
                self.room.notify_one();
            }
            return;
        }
        entry.stop_within(reason, grace);
    }
}

/// Runs registered handlers for jobs leased from a store or a server ([`JobSource`]).
pub struct Worker;

/// Controls a started [`Worker`].
pub struct WorkerHandle {
    shared: Arc<Shared>,
    fetcher: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

impl Worker {
    /// Starts the worker's tasks on the current tokio runtime. Refuses queues a lease could
    /// not name: more than [`limits::MAX_LEASE_QUEUES`] or an invalid name.
    pub fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        registry: Registry,
        options: WorkerOptions,
    ) -> Result<WorkerHandle, FieldError> {
        Self::start_on(Arc::new(StoreSource(store)), clock, registry, options)
    }

    /// [`Worker::start`] on any [`JobSource`], e.g. [`crate::HttpSource`] for a worker that
    /// leases from a `hinter serve` over HTTP.
    pub fn start_on(
        source: Arc<dyn JobSource>,
        clock: Arc<dyn Clock>,
        registry: Registry,
        options: WorkerOptions,
    ) -> Result<WorkerHandle, FieldError> {
        let routing = Routing::new(registry, &options)?;
        if routing.queues.is_empty() {
            tracing::warn!(
                worker_id = %options.worker_id,
                "this worker has no queues to lease from: register handlers by name or set \
                 WorkerOptions::queues"
            );
        }
        let (outcomes, outcome_rx) = mpsc::unbounded_channel();
        let concurrency = options.concurrency.max(1);
        let shared = Arc::new(Shared {
            source,
            clock,
            routing: std::sync::RwLock::new(Arc::new(routing)),
            options,
            running: Mutex::new(HashMap::new()),
            outcomes,
            wake: Notify::new(),
            room: Notify::new(),
            run_slots: Arc::new(Semaphore::new(concurrency)),
            average_run_micros: AtomicU64::new(u64::MAX),
            shutdown: CancellationToken::new(),
            fatal: watch::channel(None).0,
        });
        let events = shared.source.subscribe();
        let background = vec![
            tokio::spawn(completer(shared.clone(), outcome_rx)),
            tokio::spawn(heartbeater(shared.clone())),
            tokio::spawn(listener(shared.clone(), events)),
        ];
        let fetcher = tokio::spawn(fetcher(shared.clone()));
        Ok(WorkerHandle {
            shared,
            fetcher,
            background,
        })
    }
}

/// A handle that can change what a running [`Worker`] runs ([`WorkerHandle::control`]);
/// cheap to clone, usable while the [`WorkerHandle`] itself waits to be shut down.
#[derive(Clone)]
pub struct WorkerControl {
    shared: Arc<Shared>,
}

impl WorkerControl {
    /// See [`WorkerHandle::set_registry`].
    pub fn set_registry(&self, registry: Registry) -> Result<(), FieldError> {
        let routing = Routing::new(registry, &self.shared.options)?;
        *self
            .shared
            .routing
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(routing);
        // A fetcher waiting for jobs of the old names asks again at once.
        self.shared.wake.notify_one();
        Ok(())
    }

    /// The job names the worker leases now (sorted; empty: any, with a fallback).
    pub fn job_names(&self) -> Vec<String> {
        self.shared.routing().jobs.clone()
    }

    /// The queues the worker leases from now.
    pub fn queues(&self) -> Vec<String> {
        self.shared.routing().queues.clone()
    }
}

impl WorkerHandle {
    /// A handle to change what this worker runs while it runs.
    pub fn control(&self) -> WorkerControl {
        WorkerControl {
            shared: self.shared.clone(),
        }
    }

    /// Replaces what the worker runs (hot reload of script jobs): the next lease asks for
    /// the new registry's job names and queues, and jobs that start from now on get its
    /// handlers. Jobs already running keep the handler they started with. A job leased
    /// under the old registry whose name the new one lacks fails (retryable: "no handler"),
    /// and goes back to its queue with backoff for a worker that has it. Refuses what
    /// [`Worker::start`] refuses, keeping the old registry.
    pub fn set_registry(&self, registry: Registry) -> Result<(), FieldError> {
        self.control().set_registry(registry)
    }

    /// Number of jobs held now (running or waiting for a run slot).
    pub fn running(&self) -> usize {
        self.shared.running().len()
    }

    /// Resolves, with the reason, once the worker stopped leasing for good because its
    /// source refused the lease request as invalid (a server answering 4xx). Jobs held
    /// go on; call [`WorkerHandle::shutdown`] next.
    pub async fn fatal_error(&self) -> String {
        let mut fatal = self.shared.fatal.subscribe();
        loop {
            if let Some(why) = fatal.borrow_and_update().clone() {
                return why;
            }
            if fatal.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Graceful stop: lease nothing more, give running jobs `stopping_wait_time`, then tell
    /// the rest to stop ([`StopReason::Shutdown`]), give them `cancel_grace` to return, abort
    /// what is still running, and hand those jobs back to the queue (attempt not counted).
    /// Returns once every outcome is stored (or could not be: the leases then expire and the
    /// jobs are rescued).
    pub async fn shutdown(self) {
        self.shutdown_early_on(std::future::pending()).await
    }

    /// [`WorkerHandle::shutdown`], but the wait of `stopping_wait_time` ends early when
    /// `hurry` completes (a second Ctrl-C, say). Running jobs still get `cancel_grace`.
    pub async fn shutdown_early_on(self, hurry: impl Future<Output = ()>) {
        let shared = self.shared.clone();
        shared.shutdown.cancel();
        let _ = self.fetcher.await;
        let deadline = tokio::time::Instant::now() + shared.options.stopping_wait_time;
        tokio::pin!(hurry);
        while !shared.running().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                _ = &mut hurry => break,
            }
        }
        let stopping = {
            let running = shared.running();
            for entry in running.values() {
                entry.tell_stop(StopReason::Shutdown);
            }
            running.len()
        };
        if stopping > 0 {
            tracing::warn!(
                jobs = stopping,
                grace = %format_duration(shared.options.cancel_grace),
                "stopping jobs still running after stopping_wait_time; they go back to the queue"
            );
            // Handlers that return now report as usual (an error hands the job back); the
            // heartbeater keeps their leases meanwhile.
            let grace = tokio::time::Instant::now() + shared.options.cancel_grace;
            while !shared.running().is_empty() && tokio::time::Instant::now() < grace {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let leftovers: Vec<(Uuid, Running)> = shared.running().drain().collect();
        for (id, entry) in leftovers {
            entry.stop_now(StopReason::Shutdown);
            let _ = shared.outcomes.send(Outcome::Release(Release {
                id,
                lease_token: entry.lease_token,
            }));
        }
        let (tx, rx) = oneshot::channel();
        if shared.outcomes.send(Outcome::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(30), rx).await;
        }
        for task in self.background {
            task.abort();
        }
    }
}

/// How many jobs a worker of `concurrency` slots may hold when its jobs run `average`
/// microseconds (`u64::MAX`: not measured yet): its slots, and while jobs are short
/// ([`PREFETCH_BELOW`]) as many more as the slots get through in [`PREFETCH_WORK`], at most
/// `prefetch`. One lease then fills many slots (measured: `hinter bench --only drain`, no-op
/// jobs, drains 25-60 % faster with 500 ahead than with 50), while a job of a few
/// milliseconds is not held back long from a worker with free slots.
fn capacity(concurrency: usize, prefetch: usize, average: u64) -> usize {
    let slots = concurrency.max(1);
    if average >= PREFETCH_BELOW.as_micros() as u64 {
        return slots;
    }
    let work = PREFETCH_WORK.as_micros() as u64;
    let ahead = (slots as u64).saturating_mul(work) / average.max(1);
    slots.saturating_add(usize::try_from(ahead).unwrap_or(usize::MAX).min(prefetch))
}

async fn fetcher(shared: Arc<Shared>) {
    let shutdown = shared.shutdown.clone();
    let mut failures = 0u32;
    // Park again without leasing first: the last handoff left nothing for this worker.
    let mut park_next = false;
    loop {
        // Wait for room, then let jobs that are about to finish do so, so one lease fills
        // many slots: fewer, larger group commits.
        loop {
            if shared.running().len() < shared.capacity() {
                break;
            }
            tokio::select! {
                _ = shared.room.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
        tokio::task::yield_now().await;
        let room = shared
            .capacity()
            .saturating_sub(shared.running().len())
            .max(1);
        let routing = shared.routing();
        if routing.queues.is_empty() {
            // Nothing to run yet (script jobs not loaded): wait for a new registry.
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = tokio::time::sleep(shared.options.poll_interval) => {}
                _ = shutdown.cancelled() => return,
            }
            continue;
        }
        let request = |now| LeaseRequest {
            jobs: routing.jobs.clone(),
            queues: routing.queues.clone(),
            worker_id: shared.options.worker_id.clone(),
            // A larger room fills over several leases.
            max: u32::try_from(room)
                .unwrap_or(u32::MAX)
                .min(limits::MAX_LEASE_JOBS),
            lease_for: shared.options.lease_for,
            now,
        };
        if std::mem::take(&mut park_next) {
            match idle(&shared, request(shared.clock.now())).await {
                Idle::Stop => return,
                Idle::Park => park_next = true,
                Idle::Lease => {}
            }
            continue;
        }
        // Not raced against shutdown: once sent, the lease may commit, and its jobs must
        // then be handed back rather than forgotten.
        match shared.source.lease(request(shared.clock.now())).await {
            Ok(jobs) if shutdown.is_cancelled() => {
                hand_back(&shared, jobs);
                return;
            }
            Ok(jobs) => {
                failures = 0;
                let got = jobs.len();
                for job in jobs {
                    start_job(&shared, job);
                }
                if got == 0 && !shared.source.lease_waits() {
                    match idle(&shared, request(shared.clock.now())).await {
                        Idle::Stop => return,
                        Idle::Park => park_next = true,
                        Idle::Lease => {}
                    }
                }
            }
            Err(StoreError::Invalid(e)) => {
                tracing::error!(error = %e, "leasing jobs was refused; taking no more jobs");
                shared.fatal.send_replace(Some(e.message));
                return;
            }
            Err(e) => {
                failures += 1;
                let wait = shared.options.poll_interval * failures.min(10);
                tracing::warn!(error = %e, retry_in = ?wait, "leasing jobs failed");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// How an idle wait ended.
#[derive(Debug, PartialEq)]
enum Idle {
    /// Lease again.
    Lease,
    /// Jobs were handed over, fewer than asked for: the insert's lease found no more for
    /// this worker at its commit, so park again without a lease that would find nothing.
    /// (A job queued since then announced itself, and its wake-up is kept for the next
    /// wait.)
    Park,
    /// The worker is stopping.
    Stop,
}

/// Waits, with nothing leased, for a reason to lease again: a wake-up, the poll tick, or jobs
/// an insert in this process leased for `request`, parked with the store meanwhile
/// (`hinter_core::handoff`), which start at once.
async fn idle(shared: &Arc<Shared>, request: LeaseRequest) -> Idle {
    let request_max = request.max as usize;
    let mut handoff = shared.source.park(request);
    let handed = async {
        match handoff.as_mut() {
            Some(handoff) => handoff.jobs().await,
            None => std::future::pending().await,
        }
    };
    let ended = tokio::select! {
        jobs = handed => {
            let short = !jobs.is_empty() && jobs.len() < request_max;
            for job in jobs {
                start_job(shared, job);
            }
            if short { Idle::Park } else { Idle::Lease }
        }
        _ = shared.wake.notified() => Idle::Lease,
        _ = tokio::time::sleep(shared.options.poll_interval) => Idle::Lease,
        _ = shared.shutdown.cancelled() => Idle::Stop,
    };
    // Withdrawn, with what an insert that had taken it leased meanwhile: started, or on a
    // stop handed back uncounted.
    let handed = match handoff {
        Some(handoff) => handoff.withdraw().await,
        None => Vec::new(),
    };
    match ended {
        Idle::Stop => hand_back(shared, handed),
        _ => handed.into_iter().for_each(|job| start_job(shared, job)),
    }
    ended
}

/// Hands `jobs` back to the queue unstarted; the attempt is not counted.
fn hand_back(shared: &Shared, jobs: Vec<LeasedJob>) {
    for job in &jobs {
        let _ = shared.outcomes.send(Outcome::Release(Release::from(job)));
    }
}

fn start_job(shared: &Arc<Shared>, job: LeasedJob) {
    let cancel = CancellationToken::new();
    let stop = Arc::new(OnceLock::new());
    let previous = shared.running().insert(
        job.id,
        Running {
            lease_token: job.lease_token,
            cancel: cancel.clone(),
            stop: stop.clone(),
            handler: None,
        },
    );
    if let Some(stale) = previous {
        // An older attempt of this job lost its lease (it was rescued and is leased again
        // here): stop it, its outcome would be refused anyway.
        tracing::warn!(id = %job.id, "lease of an earlier attempt was lost; stopping it");
        stale.stop_within(StopReason::LeaseLost, shared.options.cancel_grace);
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let run_slot = tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => None,
            slot = shared.run_slots.clone().acquire_owned() => slot.ok(),
        };
        let Some(run_slot) = run_slot else {
            // Prefetched but never started: hand it back untouched.
            if shared.take(job.id, job.lease_token).is_some() {
                let _ = shared.outcomes.send(Outcome::Release(Release::from(&job)));
            }
            return;
        };
        let started = std::time::Instant::now();
        let outcome = run_job(&shared, &job, cancel, stop).await;
        // A result no client could read back is the handler's error, and it would be the
        // same on every attempt.
        let outcome = outcome.and_then(|result| match &result {
            Some(value) => hinter_core::limits::check_json("result", value)
                .map(|()| result)
                .map_err(|e| JobError::permanent(format!("the handler's {e}"))),
            None => Ok(result),
        });
        shared.record_run_time(started.elapsed());
        drop(run_slot);
        // Whoever takes the entry reports the outcome: this task, or shutdown / a lost
        // lease, which took it first.
        let Some(entry) = shared.take(job.id, job.lease_token) else {
            return;
        };
        let outcome = match outcome {
            Ok(result) => Outcome::Complete(Completion {
                id: job.id,
                lease_token: job.lease_token,
                result,
            }),
            // Stopped by shutdown: back to the queue, the attempt not counted.
            Err(_) if entry.stop_reason() == Some(StopReason::Shutdown) => {
                Outcome::Release(Release {
                    id: job.id,
                    lease_token: job.lease_token,
                })
            }
            Err(e) => Outcome::Fail {
                cancelled: entry.stop_reason() == Some(StopReason::Cancelled),
                error: e.message,
                retryable: e.retryable,
                exit_code: e.exit_code,
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
    stop: Arc<OnceLock<StopReason>>,
) -> Result<Option<Value>, JobError> {
    let Some(handler) = shared.routing().registry.get(&job.job) else {
        return Err(JobError::retryable(format!(
            "no handler for job {:?} in worker {}",
            job.job, shared.options.worker_id
        )));
    };
    let reporter = crate::handler::Reporter {
        source: shared.source.clone(),
        clock: shared.clock.clone(),
    };
    let ctx = HandlerContext::new(job, cancel.clone(), stop, reporter);
    let payload = job.payload.clone();
    // The handler is called inside the task, so a panic while it builds its future is
    // caught like a panic while it runs.
    let mut task = tokio::spawn(async move { handler.call(ctx, payload).await });
    {
        let mut running = shared.running();
        match running.get_mut(&job.id) {
            Some(entry) if entry.lease_token == job.lease_token => {
                entry.handler = Some(task.abort_handle());
                if entry.cancel.is_cancelled() {
                    // Told to stop before it started: the same grace as everyone.
                    abort_after(task.abort_handle(), shared.options.cancel_grace);
                }
            }
            // Taken by shutdown or a lost lease before the handler started.
            _ => {
                task.abort();
                return Err(JobError::retryable("stopped before it started"));
            }
        }
    }
    let joined = match job.timeout {
        Some(limit) => match tokio::time::timeout(limit, &mut task).await {
            Ok(joined) => joined,
            Err(_) => {
                shared.stop_job(job.id, Some(job.lease_token), StopReason::TimedOut);
                // The attempt has failed; the handler gets `cancel_grace` to clean up (a
                // command is sent SIGTERM, then SIGKILL) while it keeps its run slot.
                let _ = tokio::time::timeout(shared.options.cancel_grace, &mut task).await;
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
                    exit_code,
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
                        exit_code,
                        rescued: None,
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
    let source = &shared.source;
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=20 {
        let now = shared.clock.now();
        let (c, f, r) = tokio::join!(
            async {
                if completions.is_empty() {
                    Ok(Vec::new())
                } else {
                    source.complete_many(completions.clone(), now).await
                }
            },
            async {
                if failures.is_empty() {
                    Ok(Vec::new())
                } else {
                    source.fail_many(failures.clone(), now).await
                }
            },
            async {
                if releases.is_empty() {
                    Ok(Vec::new())
                } else {
                    source.release_many(releases.clone(), now).await
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
        let ids: Vec<(Uuid, i64)> = beats.iter().map(|b| (b.id, b.lease_token)).collect();
        match shared
            .source
            .heartbeat_many(beats, shared.clock.now())
            .await
        {
            Ok(answers) => {
                for ((id, token), answer) in ids.into_iter().zip(answers) {
                    match answer {
                        Ok(ack) if ack.cancel_requested => {
                            shared.stop_job(id, Some(token), StopReason::Cancelled)
                        }
                        Ok(_) => {}
                        Err(StoreError::StaleLease(_)) | Err(StoreError::NotFound(_)) => {
                            tracing::warn!(%id, "lease lost; stopping the job");
                            shared.stop_job(id, Some(token), StopReason::LeaseLost);
                        }
                        Err(e) => tracing::warn!(%id, error = %e, "heartbeat failed"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeats failed"),
        }
    }
}

async fn listener(shared: Arc<Shared>, mut events: broadcast::Receiver<StoreEvent>) {
    let shutdown = shared.shutdown.clone();
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = shutdown.cancelled() => return,
        };
        match event {
            Ok(StoreEvent::JobsAvailable { queue }) => {
                if shared.routing().queues.contains(&queue) {
                    shared.wake.notify_one();
                }
            }
            Ok(StoreEvent::CancelRequested { id }) => {
                shared.stop_job(id, None, StopReason::Cancelled)
            }
            Ok(StoreEvent::JobFinished { .. } | StoreEvent::Logged) => {}
            // Another process wrote: there may be jobs (a cancel request arrives with the
            // next heartbeat).
            Ok(StoreEvent::Changed) => shared.wake.notify_one(),
            Err(broadcast::error::RecvError::Lagged(_)) => shared.wake.notify_one(),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_holds_about_ten_milliseconds_of_work_ahead() {
        // Not measured yet, or slow jobs: the run slots only.
        assert_eq!(capacity(16, 500, u64::MAX), 16);
        assert_eq!(capacity(16, 500, 10_000), 16);
        assert_eq!(capacity(16, 500, 250_000), 16);
        // 5 ms jobs: 16 slots run 32 in 10 ms.
        assert_eq!(capacity(16, 500, 5_000), 16 + 32);
        // 9.9 ms: about one each.
        assert_eq!(capacity(16, 500, 9_900), 16 + 16);
        // No-op jobs: bounded by `prefetch`.
        assert_eq!(capacity(16, 500, 3), 16 + 500);
        assert_eq!(capacity(16, 500, 0), 16 + 500);
        assert_eq!(capacity(16, 0, 3), 16, "0 turns prefetching off");
        // No slot asked for still runs one job; extremes do not overflow.
        assert_eq!(capacity(0, 0, 1), 1);
        assert_eq!(capacity(usize::MAX, 1, 1), usize::MAX);
        assert_eq!(capacity(4, usize::MAX, 1), 4 + 40_000);
    }
}
