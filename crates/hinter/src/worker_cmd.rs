//! `hinter worker`: the worker role. Leases jobs of some queues from a hinter server over the
//! HTTP worker protocol (`docs/http-api.md`) and runs a command for each (`docs/worker.md`).
//!
//! One loop leases while slots are free (`max` = the free slots, long-polling so an idle worker
//! wakes as soon as a job is ready). Each leased job runs in its own task: it spawns the command
//! in its own process group, feeds it the payload, turns its output into log lines and a result,
//! heartbeats the lease (learning of cancellation that way), enforces the job's timeout, and
//! reports how the attempt ended. On SIGTERM/SIGINT the loop stops leasing, waits up to
//! `--stopping-wait-time` for the running jobs, then stops the rest and hands them back to the
//! queue.

use anyhow::Context;
use hinter_client::{Client, Error as ClientError, LeaseRequest, LeasedJob};
use hinter_core::format_duration;
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::ffi::OsString;
use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, Signal as SignalStream, SignalKind};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinError, JoinSet};
use tokio::time::{sleep, sleep_until, timeout, Instant};
use uuid::Uuid;

/// Long-poll of one lease request: an idle worker wakes as soon as a job is ready.
const LEASE_WAIT: Duration = Duration::from_secs(20);
/// Between SIGTERM and SIGKILL when a job's command must stop.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long the output of a finished command may stay open (held by a process that left
/// its process group) before it is no longer read.
const OUTPUT_DRAIN: Duration = Duration::from_secs(5);
/// Longest output line read at once; a longer one is split. A worker call carries 1 MiB at most.
const MAX_LINE: u64 = 1024 * 1024 + 1024;
/// The exit code that fails a job permanently (`EX_DATAERR`).
const EXIT_PERMANENT: i32 = 65;
/// Longest last stderr line quoted in an error message.
const MAX_ERROR_LINE: usize = 500;
/// First and largest pause after the server could not be reached.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The command's end as `Child::wait` reports it.
type WaitResult = std::io::Result<ExitStatus>;

/// The error of an attempt cut short by the worker's own stop.
pub const STOPPED_MESSAGE: &str = "worker stopped before the job finished";

/// `hinter worker [options] -- COMMAND [ARGS...]`
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Each job runs COMMAND ARGS directly (no shell) in its own process group, with the payload \
JSON on stdin and in $HINTER_PAYLOAD_FILE, and HINTER_JOB_ID, HINTER_JOB_NAME, HINTER_QUEUE, \
HINTER_ATTEMPT, HINTER_MAX_ATTEMPTS, HINTER_SHUTDOWN_FILE (= WEBJOBS_SHUTDOWN_FILE) set. \
A stdout line `::result::{json}` sets the result. Exit 0 succeeds, 65 fails permanently, \
anything else fails and is retried. See docs/worker.md.")]
pub struct WorkerArgs {
    /// URL of the hinter server
    #[arg(
        long,
        env = "HINTER_SERVER",
        default_value = hinter_client::DEFAULT_SERVER,
        value_name = "URL"
    )]
    pub server: String,

    /// Bearer token for the server's API (not passed on to COMMAND)
    #[arg(
        long,
        env = "HINTER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// Queue to take jobs from; repeat for several
    #[arg(
        long = "queue",
        short = 'q',
        value_name = "NAME",
        default_value = hinter_core::DEFAULT_QUEUE
    )]
    pub queues: Vec<String>,

    /// How many jobs run at once, at most (1…1000)
    #[arg(
        long,
        short = 'c',
        value_name = "N",
        default_value_t = 4,
        value_parser = clap::value_parser!(u32).range(1..=1000)
    )]
    pub concurrency: u32,

    /// How long a lease lasts without a heartbeat (1s…1h); heartbeats come every third of it
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = lease_arg)]
    pub lease: Duration,

    /// After SIGTERM/SIGINT, how long running jobs may go on before they are stopped and
    /// handed back to the queue
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration_arg)]
    pub stopping_wait_time: Duration,

    /// This worker's name in job listings [default: HOST:PID]
    #[arg(long, value_name = "ID", value_parser = worker_id_arg)]
    pub worker_id: Option<String>,

    /// The command run for each job, with its arguments (after `--`)
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
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

/// Runs the worker until SIGTERM/SIGINT (then `Ok`) or until the server refuses to lease
/// (a 4xx answer: wrong queue name, token…; then `Err` after the running jobs are handled).
pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.server, args.token.clone())?;
    let (program, program_args) = args
        .command
        .split_first()
        .context("no COMMAND given: `hinter worker [OPTIONS] -- COMMAND [ARGS...]`")?;
    let worker_id = args.worker_id.clone().unwrap_or_else(default_worker_id);
    let mut signals = StopSignals::listen()?;
    let (stop_jobs, stop_jobs_rx) = watch::channel(false);
    let runner = Arc::new(Runner {
        client: client.clone(),
        program: program.clone(),
        args: program_args.to_vec(),
        lease: args.lease,
        stop: stop_jobs_rx,
    });
    let slots = Arc::new(Semaphore::new(args.concurrency as usize));
    let mut running: JoinSet<()> = JoinSet::new();
    tracing::info!(
        server = client.base_url(),
        queues = ?args.queues,
        concurrency = args.concurrency,
        worker_id = %worker_id,
        command = %program.to_string_lossy(),
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
            Ok(jobs) => {
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
                    running.spawn(run_job(runner.clone(), job, permits.next()));
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
    if running.is_empty() {
        if signal_name.is_some() {
            tracing::info!("{why}: stopping");
        }
    } else {
        let wait = format_duration(args.stopping_wait_time);
        let running = running.len();
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
            running = running.len(),
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
struct StopSignals {
    term: SignalStream,
    int: SignalStream,
}

impl StopSignals {
    fn listen() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
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
    program: OsString,
    args: Vec<OsString>,
    lease: Duration,
    /// Becomes `true` when the worker stops the jobs still running.
    stop: watch::Receiver<bool>,
}

/// How an attempt ended, as it is reported.
#[derive(Debug)]
enum Outcome {
    Succeeded(Option<Value>),
    Failed {
        message: String,
        retry: bool,
    },
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
    runner.report(&job, outcome).await;
}

impl Runner {
    fn program_name(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }

    /// Runs the command for one attempt of `job` and says how it ended.
    async fn execute(&self, job: &LeasedJob) -> Outcome {
        let id = job.id;
        let workdir = match tempfile::Builder::new().prefix("hinter-job-").tempdir() {
            Ok(dir) => dir,
            Err(e) => {
                return Outcome::Failed {
                    message: format!("cannot create a temporary directory for the job: {e}"),
                    retry: true,
                }
            }
        };
        let mut payload = serde_json::to_vec(&job.payload).unwrap_or_else(|_| b"null".to_vec());
        payload.push(b'\n');
        let payload_file = workdir.path().join("payload.json");
        if let Err(e) = tokio::fs::write(&payload_file, &payload).await {
            return Outcome::Failed {
                message: format!("cannot write {}: {e}", payload_file.display()),
                retry: true,
            };
        }
        let shutdown_file = workdir.path().join("shutdown");

        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .env_remove("HINTER_TOKEN")
            .env("HINTER_JOB_ID", id.to_string())
            .env("HINTER_JOB_NAME", &job.job)
            .env("HINTER_QUEUE", &job.queue)
            .env("HINTER_ATTEMPT", job.attempt.to_string())
            .env("HINTER_MAX_ATTEMPTS", job.max_attempts.to_string())
            .env("HINTER_PAYLOAD_FILE", &payload_file)
            .env("HINTER_SHUTDOWN_FILE", &shutdown_file)
            .env("WEBJOBS_SHUTDOWN_FILE", &shutdown_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                return Outcome::Failed {
                    message: format!("cannot run {}: {}", self.program_name(), io_reason(&e)),
                    retry: !cannot_ever_run(&e),
                }
            }
        };
        // With `process_group(0)` the child leads a group whose id is its pid.
        let group = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .map(Pid::from_raw);

        let stdin = child.stdin.take().map(|mut stdin| {
            AbortOnDrop(tokio::spawn(async move {
                // A command that does not read its input closes the pipe: not an error.
                let _ = stdin.write_all(&payload).await;
                let _ = stdin.shutdown().await;
            }))
        });
        let stdout = child
            .stdout
            .take()
            .map(|out| tokio::spawn(read_stdout(out, id)));
        let stderr = child
            .stderr
            .take()
            .map(|err| tokio::spawn(read_stderr(err, id)));

        let (events_tx, mut events) = mpsc::channel(4);
        let heartbeat = AbortOnDrop(tokio::spawn(heartbeat_loop(
            self.client.clone(),
            id,
            job.lease_token,
            self.lease,
            events_tx,
        )));
        let deadline = job.timeout.map(|t| Instant::now() + t);
        let mut stop = self.stop.clone();
        let mut events_open = true;
        let mut stop_open = true;
        let ended: Result<WaitResult, StopReason> = loop {
            tokio::select! {
                status = child.wait() => break Ok(status),
                event = events.recv(), if events_open => match event {
                    Some(LeaseEvent::CancelRequested) => break Err(StopReason::Cancelled),
                    Some(LeaseEvent::Lost(why)) => break Err(StopReason::LeaseLost(why)),
                    None => events_open = false,
                },
                () = sleep_until_opt(deadline) => {
                    break Err(StopReason::TimedOut(job.timeout.unwrap_or_default()))
                }
                changed = stop.wait_for(|stop| *stop), if stop_open => match changed {
                    Ok(_) => break Err(StopReason::WorkerStopping),
                    Err(_) => stop_open = false,
                },
            }
        };
        let (status, reason) = match ended {
            Ok(status) => (status, None),
            Err(reason) => {
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
                let status = terminate(&mut child, group, &shutdown_file, id).await;
                (status, Some(reason))
            }
        };
        // Whatever the command left running in its group goes with it.
        signal_group(group, Signal::SIGKILL, id);
        drop(heartbeat);
        drop(stdin);
        let result = collect(stdout, id).await.flatten();
        let last_stderr = collect(stderr, id).await.flatten();
        let status_text = match &status {
            Ok(status) => describe_status(*status),
            Err(e) => format!("cannot wait for the command: {e}"),
        };

        if reason.is_some() {
            tracing::info!(job_id = %id, "the command stopped: {status_text}");
        }
        match reason {
            Some(StopReason::Cancelled) => Outcome::Failed {
                message: "cancelled".to_string(),
                retry: false,
            },
            Some(StopReason::TimedOut(t)) => Outcome::Failed {
                message: format!("timed out after {}", format_duration(t)),
                retry: true,
            },
            Some(StopReason::WorkerStopping) => Outcome::Failed {
                message: STOPPED_MESSAGE.to_string(),
                retry: true,
            },
            Some(StopReason::LeaseLost(_)) => Outcome::LeaseLost,
            None => match status {
                Ok(status) if status.success() => Outcome::Succeeded(result),
                Ok(status) => {
                    let mut message = status_text;
                    if status.code() == Some(EXIT_PERMANENT) {
                        message.push_str(" (failed permanently)");
                    }
                    if let Some(line) = last_stderr {
                        message.push_str(": ");
                        message.push_str(&line);
                    }
                    Outcome::Failed {
                        message,
                        retry: status.code() != Some(EXIT_PERMANENT),
                    }
                }
                Err(_) => Outcome::Failed {
                    message: status_text,
                    retry: true,
                },
            },
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

/// Creates the shutdown file, sends SIGTERM to the command's process group, and SIGKILL after
/// [`KILL_GRACE`] if the command is still running then.
async fn terminate(
    child: &mut Child,
    group: Option<Pid>,
    shutdown_file: &Path,
    id: Uuid,
) -> WaitResult {
    if let Err(e) = std::fs::write(shutdown_file, b"") {
        tracing::warn!(job_id = %id, "cannot create the shutdown file {}: {e}", shutdown_file.display());
    }
    signal_group(group, Signal::SIGTERM, id);
    match timeout(KILL_GRACE, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            tracing::warn!(
                job_id = %id,
                "the command did not stop within {} of SIGTERM: sending SIGKILL",
                format_duration(KILL_GRACE)
            );
            signal_group(group, Signal::SIGKILL, id);
            if group.is_none() {
                let _ = child.start_kill();
            }
            child.wait().await
        }
    }
}

/// Sends `signal` to the process group; a group that is already gone is fine.
fn signal_group(group: Option<Pid>, signal: Signal, id: Uuid) {
    let Some(group) = group else { return };
    match killpg(group, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => {
            tracing::warn!(job_id = %id, "cannot send {signal} to process group {group}: {e}")
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The answer of an output reader, unless the output stays open past [`OUTPUT_DRAIN`] (a
/// process that left the group holds it) or the reader failed.
async fn collect<T>(task: Option<tokio::task::JoinHandle<T>>, id: Uuid) -> Option<T> {
    let task = task?;
    let abort = task.abort_handle();
    match timeout(OUTPUT_DRAIN, task).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(e)) => {
            tracing::error!(job_id = %id, "reading the command's output failed: {e}");
            None
        }
        Err(_) => {
            abort.abort();
            tracing::warn!(
                job_id = %id,
                "the command's output is still open {} after it ended; no longer reading it",
                format_duration(OUTPUT_DRAIN)
            );
            None
        }
    }
}

/// Logs stdout lines at INFO; answers the last valid `::result::` JSON.
async fn read_stdout(out: impl AsyncRead + Unpin, id: Uuid) -> Option<Value> {
    let mut result = None;
    for_each_line(out, id, |line| {
        tracing::info!(job_id = %id, stream = "stdout", "{line}");
        if let Some(json) = line.strip_prefix("::result::") {
            match serde_json::from_str(json) {
                Ok(value) => result = Some(value),
                Err(e) => tracing::error!(
                    job_id = %id,
                    "ignoring a ::result:: line that is not valid JSON: {e}"
                ),
            }
        }
    })
    .await;
    result
}

/// Logs stderr lines at ERROR; answers the last one that is not blank (for the error message).
async fn read_stderr(err: impl AsyncRead + Unpin, id: Uuid) -> Option<String> {
    let mut last = None;
    for_each_line(err, id, |line| {
        tracing::error!(job_id = %id, stream = "stderr", "{line}");
        if !line.trim().is_empty() {
            last = Some(truncate(line.trim(), MAX_ERROR_LINE));
        }
    })
    .await;
    last
}

/// Calls `each` with every line (without its line ending; invalid UTF-8 replaced; a line
/// longer than [`MAX_LINE`] split) until the end of the output.
async fn for_each_line(output: impl AsyncRead + Unpin, id: Uuid, mut each: impl FnMut(&str)) {
    let mut reader = BufReader::new(output);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']);
                if !line.is_empty() {
                    each(line);
                }
            }
            Err(e) => {
                tracing::warn!(job_id = %id, "cannot read the command's output: {e}");
                return;
            }
        }
    }
}

/// `exited with code 3`, `killed by signal SIGKILL`.
fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    match status.signal() {
        Some(number) => match Signal::try_from(number) {
            Ok(signal) => format!("killed by signal {signal}"),
            Err(_) => format!("killed by signal {number}"),
        },
        None => format!("ended with {status}"),
    }
}

/// Starting again will not help: the file is missing, not executable, or not a program.
fn cannot_ever_run(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::PermissionDenied)
        || e.raw_os_error().is_some_and(|code| {
            [Errno::ENOEXEC, Errno::ENOTDIR, Errno::EISDIR, Errno::ELOOP]
                .iter()
                .any(|errno| *errno as i32 == code)
        })
}

/// `No such file or directory`, without std's ` (os error 2)`.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(cut) if text.ends_with(')') => text[..cut].to_string(),
        _ => text,
    }
}

/// At most `max` characters of `text`, with `…` when cut.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Aborts the task when dropped, so no helper outlives its job.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_exit_statuses() {
        assert_eq!(
            describe_status(ExitStatus::from_raw(3 << 8)),
            "exited with code 3"
        );
        assert_eq!(
            describe_status(ExitStatus::from_raw(9)),
            "killed by signal SIGKILL"
        );
        assert_eq!(
            describe_status(ExitStatus::from_raw(15)),
            "killed by signal SIGTERM"
        );
    }

    #[test]
    fn missing_programs_fail_for_good() {
        let missing = std::io::Error::from_raw_os_error(Errno::ENOENT as i32);
        assert!(cannot_ever_run(&missing));
        assert_eq!(io_reason(&missing), "No such file or directory");
        let busy = std::io::Error::from_raw_os_error(Errno::ETXTBSY as i32);
        assert!(!cannot_ever_run(&busy));
        let noexec = std::io::Error::from_raw_os_error(Errno::ENOEXEC as i32);
        assert!(cannot_ever_run(&noexec));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(600));
        assert!(backoff(3) >= Duration::from_millis(1600));
        assert!(backoff(40) <= BACKOFF_MAX.mul_f64(1.2));
    }

    #[test]
    fn lease_is_range_checked() {
        assert_eq!(lease_arg("60s"), Ok(Duration::from_secs(60)));
        assert!(lease_arg("500ms").is_err());
        assert!(lease_arg("2h").is_err());
        assert!(worker_id_arg("").is_err());
        assert!(worker_id_arg(&"x".repeat(201)).is_err());
    }

    #[tokio::test]
    async fn reads_lines_and_the_last_valid_result() {
        let out: &[u8] =
            b"hello\n::result::{\"n\": 1}\r\n::result::{\"n\": 2}\n::result::{oops\n\xffbad\nno newline";
        let result = read_stdout(out, Uuid::nil()).await;
        assert_eq!(result, Some(serde_json::json!({"n": 2})));
        let err: &[u8] = b"first\nlast problem\n\n  \n";
        assert_eq!(
            read_stderr(err, Uuid::nil()).await.as_deref(),
            Some("last problem")
        );
    }
}
