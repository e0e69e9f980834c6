//! `hinter worker`: the worker role. Runs a command for each job of some queues
//! (`docs/worker.md`), in one of two modes:
//!
//! - **HTTP mode** (`--server URL`, the default): leases jobs from a hinter server over the
//!   HTTP worker protocol (`docs/http-api.md`). This file.
//! - **Store mode** (`--database URL` or `--data-dir DIR`): leases straight from the store
//!   that `hinter serve` processes share, with the engine's worker, and takes part in
//!   membership and leader election. `worker_store.rs`.
//!
//! Both run the command the same way (`exec.rs`). In HTTP mode one loop leases while slots
//! are free (`max` = the free slots, long-polling so an idle worker wakes as soon as a job is
//! ready). Each leased job runs in its own task: it runs the command, heartbeats the lease
//! (learning of cancellation that way), enforces the job's timeout, and reports how the
//! attempt ended. On SIGTERM/SIGINT the loop stops leasing, waits up to
//! `--stopping-wait-time` for the running jobs, then stops the rest and hands them back to the
//! queue.

use crate::exec::{self, AbortOnDrop, JobCommand, JobInfo};
use crate::serve::{ClusterArgs, MaintenanceArgs, StoreArgs};
use anyhow::Context;
use clap::parser::ValueSource;
use clap::ArgMatches;
use hinter_client::{Client, Error as ClientError, LeaseRequest, Leased, LeasedJob, UnreadableJob};
use hinter_core::format_duration;
use serde_json::Value;
use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal as SignalStream, SignalKind};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinError, JoinSet};
use tokio::time::{sleep, sleep_until, Instant};
use uuid::Uuid;

/// Long-poll of one lease request: an idle worker wakes as soon as a job is ready.
const LEASE_WAIT: Duration = Duration::from_secs(20);
/// First and largest pause after the server could not be reached.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The error of an attempt cut short by the worker's own stop.
pub const STOPPED_MESSAGE: &str = "worker stopped before the job finished";

const HTTP_MODE: &str = "HTTP mode (--server: lease from a hinter server)";
const STORE_MODE: &str = "Store mode (--database/--data-dir: lease straight from the store)";

/// `hinter worker [options] -- COMMAND [ARGS...]`
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Modes: with --server URL (or none of the mode flags) the worker leases jobs from a hinter \
server over HTTP (HTTP mode). With --database URL or --data-dir DIR it leases straight from \
that store, the one `hinter serve` uses, lists itself in GET /api/v1/workers and takes part \
in leader election, so maintenance goes on even when no `serve` runs (store mode). --server \
cannot be combined with --database/--data-dir. A flag beats an environment variable \
(HINTER_SERVER; HINTER_DATABASE_URL, HINTER_DATA_DIR).

Each job runs COMMAND ARGS directly (no shell) in its own process group, with the payload \
JSON on stdin and in $HINTER_PAYLOAD_FILE, and HINTER_JOB_ID, HINTER_JOB_NAME, HINTER_QUEUE, \
HINTER_ATTEMPT, HINTER_MAX_ATTEMPTS, HINTER_SHUTDOWN_FILE (= WEBJOBS_SHUTDOWN_FILE) set. \
A stdout line `::result::{json}` sets the result. Exit 0 succeeds, 65 fails permanently, \
anything else fails and is retried. See docs/worker.md.")]
pub struct WorkerArgs {
    /// Queue to take jobs from; repeat for several (at most 1000)
    #[arg(
        long = "queue",
        short = 'q',
        value_name = "NAME",
        default_value = hinter_core::DEFAULT_QUEUE,
        help_heading = "Both modes"
    )]
    pub queues: Vec<String>,

    /// How many jobs run at once, at most (1…1000)
    #[arg(
        long,
        short = 'c',
        value_name = "N",
        default_value_t = 4,
        value_parser = clap::value_parser!(u32).range(1..=1000),
        help_heading = "Both modes"
    )]
    pub concurrency: u32,

    /// How long a lease lasts without a heartbeat (1s…1h); heartbeats come every third of it
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "60s",
        value_parser = lease_arg,
        help_heading = "Both modes"
    )]
    pub lease: Duration,

    /// After SIGTERM/SIGINT, how long running jobs may go on before they are stopped and
    /// handed back to the queue
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "30s",
        value_parser = duration_arg,
        help_heading = "Both modes"
    )]
    pub stopping_wait_time: Duration,

    /// This worker's name in job listings [default: HOST:PID; store mode: HOST:PID:RANDOM,
    /// and a given ID gets a random suffix]
    #[arg(long, value_name = "ID", value_parser = worker_id_arg, help_heading = "Both modes")]
    pub worker_id: Option<String>,

    /// URL of the hinter server to lease from [default: http://127.0.0.1:7433]
    #[arg(long, env = "HINTER_SERVER", value_name = "URL", help_heading = HTTP_MODE)]
    pub server: Option<String>,

    /// Bearer token for the server's API (not passed on to COMMAND)
    #[arg(
        long,
        env = "HINTER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        help_heading = HTTP_MODE
    )]
    pub token: Option<String>,

    /// PostgreSQL URL of the database the `hinter serve` processes use (not passed on to
    /// COMMAND)
    #[arg(
        long,
        env = "HINTER_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL",
        help_heading = STORE_MODE
    )]
    pub database: Option<String>,

    /// Directory of the embedded store (the `--data-dir` of a `hinter serve` on this machine)
    #[arg(long, env = "HINTER_DATA_DIR", value_name = "DIR", help_heading = STORE_MODE)]
    pub data_dir: Option<PathBuf>,

    /// PostgreSQL schema holding hinter's tables
    #[arg(
        long,
        env = "HINTER_DATABASE_SCHEMA",
        default_value = hinter_postgres::DEFAULT_SCHEMA,
        help_heading = STORE_MODE
    )]
    pub schema: String,

    /// `full` or `relaxed` (embedded store only), as for `hinter serve`
    #[arg(
        long,
        env = "HINTER_DURABILITY",
        default_value = "full",
        value_parser = ["full", "relaxed"],
        help_heading = STORE_MODE
    )]
    pub durability: String,

    #[command(flatten, next_help_heading = STORE_MODE)]
    pub maintenance: MaintenanceArgs,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// The command run for each job, with its arguments (after `--`)
    #[arg(
        last = true,
        required = true,
        value_name = "COMMAND",
        help_heading = "Arguments"
    )]
    pub command: Vec<OsString>,
}

/// Where a worker takes its jobs from.
#[derive(Debug, Clone)]
pub enum Mode {
    /// From a hinter server over HTTP.
    Http { server: String },
    /// Straight from the store.
    Store(StoreArgs),
}

/// Flags that only mean something in store mode.
const STORE_ONLY: [(&str, &str); 9] = [
    ("schema", "--schema"),
    ("durability", "--durability"),
    ("rescue_interval", "--rescue-interval"),
    ("retain_succeeded", "--retain-succeeded"),
    ("retain_dead", "--retain-dead"),
    ("retain_cancelled", "--retain-cancelled"),
    ("leader_ttl", "--leader-ttl"),
    ("heartbeat_interval", "--heartbeat-interval"),
    ("dead_after", "--dead-after"),
];

impl WorkerArgs {
    /// Picks the mode: `--database`/`--data-dir` mean store mode, `--server` HTTP mode (the
    /// default); a flag on the command line beats an environment variable. Both modes at
    /// once from the same kind of source is a usage error, and so is a flag of the other
    /// mode given on the command line. `matches` are the subcommand's, for where each value
    /// came from.
    pub fn mode(&self, matches: &ArgMatches) -> Result<Mode, String> {
        // One lease names every queue, so the lease's bound is the worker's. The names
        // themselves are checked by the server (HTTP mode) or the engine (store mode).
        hinter_core::limits::check_lease_queue_count("--queue", &self.queues)
            .map_err(|e| e.to_string())?;
        let source = |id: &str| matches.value_source(id);
        let on_command_line = |id: &str| source(id) == Some(ValueSource::CommandLine);
        let from_env = |id: &str| source(id) == Some(ValueSource::EnvVariable);
        let store_cli = on_command_line("database") || on_command_line("data_dir");
        let store_env = from_env("database") || from_env("data_dir");
        let server_cli = on_command_line("server");
        let server_env = from_env("server");
        let store = match (server_cli, store_cli) {
            (true, true) => {
                return Err(
                    "--server (HTTP mode) cannot be used with --database or --data-dir \
                     (store mode): choose one"
                        .to_string(),
                )
            }
            (false, true) => true,
            (true, false) => false,
            (false, false) => match (server_env, store_env) {
                (true, true) => {
                    return Err("HINTER_SERVER (HTTP mode) and HINTER_DATABASE_URL or \
                         HINTER_DATA_DIR (store mode) are both set: choose with --server or \
                         --database/--data-dir"
                        .to_string())
                }
                (_, store_env) => store_env,
            },
        };
        if store {
            if on_command_line("token") {
                return Err("--token is for the HTTP mode (--server); in store mode \
                     (--database/--data-dir) the worker talks to the store directly"
                    .to_string());
            }
            Ok(Mode::Store(StoreArgs {
                data_dir: self
                    .data_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("./hinter-data")),
                database: self.database.clone(),
                schema: self.schema.clone(),
                durability: self.durability.clone(),
            }))
        } else {
            for (id, flag) in STORE_ONLY {
                if on_command_line(id) {
                    return Err(format!(
                        "{flag} is for the store mode (--database/--data-dir); this worker \
                         leases from a server over HTTP (--server)"
                    ));
                }
            }
            Ok(Mode::Http {
                server: self
                    .server
                    .clone()
                    .unwrap_or_else(|| hinter_client::DEFAULT_SERVER.to_string()),
            })
        }
    }

    pub fn job_command(&self) -> anyhow::Result<JobCommand> {
        JobCommand::from_argv(&self.command)
            .context("no COMMAND given: `hinter worker [OPTIONS] -- COMMAND [ARGS...]`")
    }
}

/// Runs the worker in `mode` until SIGTERM/SIGINT.
pub async fn run(args: WorkerArgs, mode: Mode) -> anyhow::Result<()> {
    match mode {
        Mode::Http { server } => run_http(args, server).await,
        Mode::Store(store) => crate::worker_store::run(args, store).await,
    }
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    hinter_core::parse_duration(s).map_err(|e| e.to_string())
}

fn lease_arg(s: &str) -> Result<Duration, String> {
    let lease = duration_arg(s)?;
    if lease < Duration::from_secs(1) || lease > Duration::from_secs(3600) {
        return Err(format!("{s} is out of range 1s…1h"));
    }
    Ok(lease)
}

fn worker_id_arg(s: &str) -> Result<String, String> {
    match s.chars().count() {
        1..=200 => Ok(s.to_string()),
        n => Err(format!("must be 1–200 characters, not {n}")),
    }
}

/// `HOST:PID`.
fn default_worker_id() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_string());
    let host: String = host.chars().take(180).collect();
    format!("{host}:{}", std::process::id())
}

/// HTTP mode: runs the worker until SIGTERM/SIGINT (then `Ok`) or until the server refuses
/// to lease (a 4xx answer: wrong queue name, token…; then `Err` after the running jobs are
/// handled).
async fn run_http(args: WorkerArgs, server: String) -> anyhow::Result<()> {
    let client = Client::new(&server, args.token.clone())?;
    let command = args.job_command()?;
    let program = command.program_name();
    let worker_id = args.worker_id.clone().unwrap_or_else(default_worker_id);
    let mut signals = StopSignals::listen()?;
    let (stop_jobs, stop_jobs_rx) = watch::channel(false);
    let runner = Arc::new(Runner {
        client: client.clone(),
        command,
        lease: args.lease,
        stop: stop_jobs_rx,
        active: AtomicUsize::new(0),
    });
    let slots = Arc::new(Semaphore::new(args.concurrency as usize));
    let mut running: JoinSet<()> = JoinSet::new();
    tracing::info!(
        server = client.base_url(),
        queues = ?args.queues,
        concurrency = args.concurrency,
        worker_id = %worker_id,
        command = %program,
        "hinter worker started"
    );

    let mut failures: u32 = 0;
    let mut fatal: Option<anyhow::Error> = None;
    let signal_name = loop {
        while let Some(done) = running.try_join_next() {
            log_task_end(done);
        }
        let first = tokio::select! {
            biased;
            name = signals.recv() => break Some(name),
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(e) => {
                    fatal = Some(anyhow::Error::new(e).context("the job slots were closed"));
                    break None;
                }
            },
        };
        let mut permits = vec![first];
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            permits.push(permit);
        }
        let request = LeaseRequest::new(worker_id.clone())
            .queues(args.queues.iter().cloned())
            .max(u32::try_from(permits.len()).unwrap_or(1))
            .lease(args.lease)
            .wait(LEASE_WAIT);
        let answer = tokio::select! {
            biased;
            name = signals.recv() => break Some(name),
            answer = client.lease(&request) => answer,
        };
        match answer {
            Ok(Leased { jobs, unreadable }) => {
                if failures > 0 {
                    tracing::info!(
                        server = client.base_url(),
                        "the hinter server answers again"
                    );
                    failures = 0;
                }
                let mut permits = permits.into_iter();
                for job in jobs {
                    // The server hands out `max` jobs at most; should it send more, they run
                    // all the same rather than wait for their lease to expire.
                    runner.active.fetch_add(1, Ordering::SeqCst);
                    running.spawn(run_job(runner.clone(), job, permits.next()));
                }
                // Reported at once: waiting for their leases to expire would cost them an
                // attempt each and hold their run slots for the whole lease.
                for job in unreadable {
                    let runner = runner.clone();
                    running.spawn(async move { runner.report_unreadable(job).await });
                }
            }
            Err(e) if is_transient(&e) => {
                drop(permits);
                failures = failures.saturating_add(1);
                let pause = backoff(failures);
                tracing::warn!(
                    server = client.base_url(),
                    "cannot lease jobs: {e}; trying again in {}",
                    format_duration(pause)
                );
                tokio::select! {
                    biased;
                    name = signals.recv() => break Some(name),
                    () = sleep(pause) => {}
                }
            }
            Err(e) => {
                fatal = Some(anyhow::Error::new(e).context(format!(
                    "the hinter server at {} refused to lease jobs",
                    client.base_url()
                )));
                break None;
            }
        }
    };

    let why = match (&signal_name, &fatal) {
        (Some(name), _) => format!("{name} received"),
        (None, Some(e)) => format!("{e:#}"),
        (None, None) => "stopping".to_string(),
    };
    let active = runner.active.load(Ordering::SeqCst);
    if active == 0 {
        if signal_name.is_some() {
            tracing::info!("{why}: stopping");
        }
    } else {
        let wait = format_duration(args.stopping_wait_time);
        let running = active;
        if fatal.is_some() {
            tracing::error!(
                running,
                "{why}; taking no more jobs; waiting up to {wait} for the running ones"
            );
        } else {
            tracing::info!(
                running,
                "{why}: taking no more jobs; waiting up to {wait} for the running ones"
            );
        }
    }
    let finished = running.is_empty()
        || tokio::select! {
            () = join_all(&mut running) => true,
            () = sleep(args.stopping_wait_time) => false,
            name = signals.recv() => {
                tracing::warn!("{name} received again: stopping the running jobs now");
                false
            }
        };
    if !finished {
        tracing::warn!(
            running = runner.active.load(Ordering::SeqCst),
            "stopping the jobs still running; they go back to the queue"
        );
        // Every job task holds a receiver; a send error only means none is left.
        let _ = stop_jobs.send(true);
        join_all(&mut running).await;
    }
    match fatal {
        Some(e) => Err(e),
        None => {
            tracing::info!("hinter worker stopped");
            Ok(())
        }
    }
}

async fn join_all(running: &mut JoinSet<()>) {
    while let Some(done) = running.join_next().await {
        log_task_end(done);
    }
}

fn log_task_end(done: Result<(), JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            tracing::error!("a job task panicked: {e}; its job returns when its lease expires");
        }
    }
}

/// Worth trying again later: the server is unreachable, overloaded, or answered garbage
/// (a proxy in between, say). Any other 4xx is a mistake that repeating will not fix.
fn is_transient(e: &ClientError) -> bool {
    e.is_unavailable()
        || matches!(e, ClientError::Decode { .. })
        || e.status().is_some_and(|s| s >= 500 || s == 429 || s == 408)
}

/// 0.5 s × 2^(n−1), at most 30 s, ±20 %.
fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = BACKOFF_MIN.saturating_mul(1 << exp).min(BACKOFF_MAX);
    base.mul_f64(rand::random_range(0.8..1.2))
}

/// SIGTERM and SIGINT, listened to from the start so neither kills the worker outright.
pub struct StopSignals {
    term: SignalStream,
    int: SignalStream,
}

impl StopSignals {
    pub fn listen() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            Some(()) = self.term.recv() => "SIGTERM",
            Some(()) = self.int.recv() => "SIGINT",
            else => std::future::pending().await,
        }
    }
}

/// What every job task shares.
struct Runner {
    client: Client,
    command: JobCommand,
    lease: Duration,
    /// Becomes `true` when the worker stops the jobs still running.
    stop: watch::Receiver<bool>,
    /// Commands running now. Counted apart from the job tasks, which also report outcomes
    /// and may not have been joined yet when the worker stops.
    active: AtomicUsize,
}

/// How an attempt ended, as it is reported.
#[derive(Debug)]
enum Outcome {
    Succeeded(Option<Value>),
    Failed {
        message: String,
        retry: bool,
    },
    /// Stopped because the worker is stopping: hand the job back, the attempt not counted.
    Released,
    /// The lease is no longer ours: report nothing.
    LeaseLost,
}

/// Why a running command was stopped.
#[derive(Debug)]
enum StopReason {
    Cancelled,
    TimedOut(Duration),
    WorkerStopping,
    LeaseLost(String),
}

/// What the heartbeat task tells the job task.
enum LeaseEvent {
    CancelRequested,
    Lost(String),
}

async fn run_job(runner: Arc<Runner>, job: LeasedJob, _slot: Option<OwnedSemaphorePermit>) {
    tracing::info!(
        job_id = %job.id,
        job = %job.job,
        queue = %job.queue,
        attempt = job.attempt,
        max_attempts = job.max_attempts,
        "running job"
    );
    let outcome = runner.execute(&job).await;
    // Before the outcome is reported: once the server shows the job finished, it no longer
    // counts as running here.
    runner.active.fetch_sub(1, Ordering::SeqCst);
    runner.report(&job, outcome).await;
}

impl Runner {
    /// Runs the command for one attempt of `job` and says how it ended.
    async fn execute(&self, job: &LeasedJob) -> Outcome {
        let id = job.id;
        let (events_tx, mut events) = mpsc::channel(4);
        // Heartbeats go on until the command has ended and its output is read.
        let _heartbeat = AbortOnDrop(tokio::spawn(heartbeat_loop(
            self.client.clone(),
            id,
            job.lease_token,
            self.lease,
            events_tx,
        )));
        let deadline = job.timeout.map(|t| Instant::now() + t);
        let mut stop = self.stop.clone();
        let stop = async move {
            let mut events_open = true;
            let mut stop_open = true;
            let reason = loop {
                tokio::select! {
                    event = events.recv(), if events_open => match event {
                        Some(LeaseEvent::CancelRequested) => break StopReason::Cancelled,
                        Some(LeaseEvent::Lost(why)) => break StopReason::LeaseLost(why),
                        None => events_open = false,
                    },
                    () = sleep_until_opt(deadline) => {
                        break StopReason::TimedOut(job.timeout.unwrap_or_default())
                    }
                    changed = stop.wait_for(|stop| *stop), if stop_open => match changed {
                        Ok(_) => break StopReason::WorkerStopping,
                        Err(_) => stop_open = false,
                    },
                }
            };
            match &reason {
                StopReason::Cancelled => {
                    tracing::info!(job_id = %id, "cancel requested: stopping the command")
                }
                StopReason::TimedOut(t) => tracing::warn!(
                    job_id = %id,
                    "timed out after {}: stopping the command",
                    format_duration(*t)
                ),
                StopReason::WorkerStopping => {
                    tracing::warn!(job_id = %id, "worker stopping: stopping the command")
                }
                StopReason::LeaseLost(why) => tracing::warn!(
                    job_id = %id,
                    "lost the lease ({why}): stopping the command; the job is no longer \
                     this worker's, nothing is reported"
                ),
            }
            reason
        };
        let info = JobInfo {
            id,
            job: &job.job,
            queue: &job.queue,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            payload: &job.payload,
        };
        match self.command.run(&info, stop).await {
            exec::Outcome::Succeeded(result) => Outcome::Succeeded(result),
            exec::Outcome::Failed { message, retry } => Outcome::Failed { message, retry },
            exec::Outcome::Stopped(StopReason::Cancelled) => Outcome::Failed {
                message: "cancelled".to_string(),
                retry: false,
            },
            exec::Outcome::Stopped(StopReason::TimedOut(t)) => Outcome::Failed {
                message: format!("timed out after {}", format_duration(t)),
                retry: true,
            },
            exec::Outcome::Stopped(StopReason::WorkerStopping) => Outcome::Released,
            exec::Outcome::Stopped(StopReason::LeaseLost(_)) => Outcome::LeaseLost,
        }
    }

    /// Fails a leased job this worker could not read, for good: reading it again would fail
    /// the same way.
    async fn report_unreadable(&self, job: UnreadableJob) {
        let message = format!("hinter worker could not read the leased job: {}", job.error);
        tracing::error!(job_id = %job.id, "{message}");
        let patience = self.lease.min(Duration::from_secs(30));
        let client = &self.client;
        let answer = with_retries(patience, job.id, || {
            client.fail(job.id, job.lease_token, &message, false)
        })
        .await;
        if let Err(e) = answer {
            log_report_error(job.id, "fail", &e);
        }
    }

    /// Tells the server how the attempt ended, trying again while the server is unreachable
    /// (at most as long as the lease, after which the report would be stale anyway).
    async fn report(&self, job: &LeasedJob, outcome: Outcome) {
        let id = job.id;
        let token = job.lease_token;
        let client = &self.client;
        let patience = self.lease.min(Duration::from_secs(30));
        let (message, retry) = match outcome {
            Outcome::LeaseLost => return,
            Outcome::Released => {
                match with_retries(patience, id, || client.release(id, token)).await {
                    Ok(job) => tracing::info!(
                        job_id = %id,
                        state = %job.state,
                        "job handed back to the queue; the attempt does not count"
                    ),
                    Err(e) => log_report_error(id, "release", &e),
                }
                return;
            }
            Outcome::Succeeded(result) => {
                let answer =
                    with_retries(patience, id, || client.complete(id, token, result.as_ref()))
                        .await;
                match answer {
                    Ok(done) => {
                        tracing::info!(job_id = %id, state = %done.state, "job succeeded");
                        return;
                    }
                    // The result is too large or otherwise unacceptable: the attempt fails.
                    Err(e) if matches!(e.status(), Some(413 | 422)) => {
                        (format!("the server refused the job's result: {e}"), false)
                    }
                    Err(e) => {
                        log_report_error(id, "complete", &e);
                        return;
                    }
                }
            }
            Outcome::Failed { message, retry } => (message, retry),
        };
        let answer = with_retries(patience, id, || client.fail(id, token, &message, retry)).await;
        match answer {
            Ok(done) => tracing::warn!(
                job_id = %id,
                state = %done.state,
                retry,
                "job failed: {message}"
            ),
            Err(e) => log_report_error(id, "fail", &e),
        }
    }
}

fn log_report_error(id: Uuid, call: &str, e: &ClientError) {
    if e.is_stale_lease() || e.is_not_found() {
        tracing::warn!(
            job_id = %id,
            "cannot {call} the job: {e}; the lease was lost, the job is no longer this worker's"
        );
    } else {
        tracing::error!(
            job_id = %id,
            "cannot {call} the job: {e}; it returns to the queue when its lease expires"
        );
    }
}

/// Calls `call` until it succeeds, fails for good, or `patience` is used up.
async fn with_retries<T, F, Fut>(
    patience: Duration,
    id: Uuid,
    mut call: F,
) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let give_up = Instant::now() + patience;
    let mut failures = 0;
    loop {
        match call().await {
            Err(e) if is_transient(&e) && Instant::now() < give_up => {
                failures += 1;
                let pause =
                    backoff(failures).min(give_up.saturating_duration_since(Instant::now()));
                tracing::warn!(
                    job_id = %id,
                    "cannot report the job's outcome: {e}; trying again in {}",
                    format_duration(pause)
                );
                sleep(pause).await;
            }
            answer => return answer,
        }
    }
}

/// Extends the lease every third of it; tells the job task when a cancel was requested or the
/// lease is lost. Runs until aborted (or the lease is lost).
async fn heartbeat_loop(
    client: Client,
    id: Uuid,
    lease_token: i64,
    lease: Duration,
    events: mpsc::Sender<LeaseEvent>,
) {
    let every = lease / 3;
    let client =
        client.with_timeout(every.clamp(Duration::from_secs(1), hinter_client::DEFAULT_TIMEOUT));
    let mut cancel_told = false;
    let mut pause = every;
    loop {
        sleep(pause).await;
        pause = every;
        match client.heartbeat(id, lease_token, Some(lease)).await {
            Ok(ack) => {
                if ack.cancel_requested && !cancel_told {
                    cancel_told = true;
                    let _ = events.send(LeaseEvent::CancelRequested).await;
                }
            }
            Err(e) if e.is_stale_lease() || e.is_not_found() || e.is_conflict() => {
                let _ = events.send(LeaseEvent::Lost(e.to_string())).await;
                return;
            }
            Err(e) => {
                // Try again sooner, to keep the lease.
                pause = (every / 3).max(Duration::from_millis(250));
                tracing::warn!(
                    job_id = %id,
                    "heartbeat failed: {e}; trying again in {}",
                    format_duration(pause)
                );
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(600));
        assert!(backoff(3) >= Duration::from_millis(1600));
        assert!(backoff(40) <= BACKOFF_MAX.mul_f64(1.2));
    }

    #[derive(clap::Parser)]
    struct TestCli {
        #[command(flatten)]
        args: WorkerArgs,
    }

    /// The mode `hinter worker ARGV` picks (only flags that decide whatever the environment).
    fn mode_of(argv: &[&str]) -> Result<Mode, String> {
        use clap::{CommandFactory, FromArgMatches};
        let matches = TestCli::command()
            .try_get_matches_from(std::iter::once("worker").chain(argv.iter().copied()))
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        let cli = TestCli::from_arg_matches(&matches).unwrap_or_else(|e| panic!("{e}"));
        cli.args.mode(&matches)
    }

    #[test]
    fn the_mode_follows_the_flags() {
        match mode_of(&["--server", "http://h:1", "--", "true"]) {
            Ok(Mode::Http { server }) => assert_eq!(server, "http://h:1"),
            other => panic!("{other:?}"),
        }
        match mode_of(&[
            "--database",
            "postgres://db/x",
            "--schema",
            "s",
            "--",
            "true",
        ]) {
            Ok(Mode::Store(store)) => {
                assert_eq!(store.database.as_deref(), Some("postgres://db/x"));
                assert_eq!(store.schema, "s");
            }
            other => panic!("{other:?}"),
        }
        match mode_of(&["--data-dir", "/tmp/d", "--", "true"]) {
            Ok(Mode::Store(store)) => {
                assert_eq!(store.data_dir, PathBuf::from("/tmp/d"));
                assert_eq!(store.database, None);
            }
            other => panic!("{other:?}"),
        }
        let both = mode_of(&["--server", "h", "--database", "postgres://db", "--", "true"]);
        assert!(both.is_err_and(|e| e.contains("cannot be used with")));
        let both = mode_of(&["--server", "h", "--data-dir", "/tmp/d", "--", "true"]);
        assert!(both.is_err_and(|e| e.contains("cannot be used with")));
        let stray = mode_of(&["--server", "h", "--leader-ttl", "1s", "--", "true"]);
        assert!(stray.is_err_and(|e| e.starts_with("--leader-ttl is for the store mode")));
        let stray = mode_of(&["--data-dir", "/tmp/d", "--token", "t", "--", "true"]);
        assert!(stray.is_err_and(|e| e.starts_with("--token is for the HTTP mode")));
    }

    #[test]
    fn queues_are_bounded_like_a_lease() {
        let mut argv: Vec<String> = Vec::new();
        for i in 0..=hinter_core::limits::MAX_LEASE_QUEUES {
            argv.extend(["--queue".to_string(), format!("q{i}")]);
        }
        argv.extend(["--server", "h", "--", "true"].map(String::from));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let many = mode_of(&argv);
        assert!(
            many.as_ref()
                .is_err_and(|e| e.starts_with("--queue: names 1001 queues")),
            "{many:?}"
        );
        // The same names again are not more queues.
        let mut argv = argv[..argv.len() - 6].to_vec();
        argv.extend_from_within(..);
        argv.extend(["--server", "h", "--", "true"]);
        assert!(mode_of(&argv).is_ok());
    }

    #[test]
    fn lease_is_range_checked() {
        assert_eq!(lease_arg("60s"), Ok(Duration::from_secs(60)));
        assert!(lease_arg("500ms").is_err());
        assert!(lease_arg("2h").is_err());
        assert!(worker_id_arg("").is_err());
        assert!(worker_id_arg(&"x".repeat(201)).is_err());
    }
}
