//! Running a command for one attempt of a job: the part `hinter worker` shares between its two
//! modes (leasing over HTTP, `worker_cmd.rs`; leasing straight from the store,
//! `worker_store.rs`). `docs/worker.md` describes it from the command's side.
//!
//! [`JobCommand::run`] spawns the command in its own process group with the job's variables,
//! the payload on stdin and in `$HINTER_PAYLOAD_FILE`, logs its stdout (INFO) and stderr
//! (ERROR) lines, takes the last valid `::result::` line as the result, and maps its end to
//! an [`Outcome`]: exit 0 succeeded, 65 failed for good, anything else failed and retried.
//! When the caller's `stop` future completes first (cancel, timeout, lost lease, worker
//! stopping), it creates the shutdown file, sends SIGTERM to the group, SIGKILL after
//! [`KILL_GRACE`], and answers [`Outcome::Stopped`] with the caller's reason. Whatever the
//! command leaves in its group is killed when it ends; if the attempt's future is dropped
//! while the command runs, the whole group is killed at once.

use chrono::Utc;
use hinter_core::{format_duration, LogStream, NewLogLine, Progress, StoreError};
use hinter_engine::HandlerContext;
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio::time::timeout;
use uuid::Uuid;

/// Between SIGTERM and SIGKILL when a job's command must stop.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long the output of a finished command may stay open (held by a process that left
/// its process group) before it is no longer read.
const OUTPUT_DRAIN: Duration = Duration::from_secs(5);
/// Longest output line read at once; a longer one is split. A worker call carries 1 MiB at most.
const MAX_LINE: u64 = 1024 * 1024 + 1024;
/// The exit code that fails a job permanently (`EX_DATAERR`).
pub const EXIT_PERMANENT: i32 = 65;
/// Longest last stderr line quoted in an error message.
const MAX_ERROR_LINE: usize = 500;
/// Variables of hinter itself that hold secrets; the command does not get them.
const SECRET_VARIABLES: [&str; 2] = ["HINTER_TOKEN", "HINTER_DATABASE_URL"];
/// The command's end as `Child::wait` reports it.
type WaitResult = std::io::Result<ExitStatus>;

/// The command run for each job: a program and its arguments, run directly (no shell).
#[derive(Debug, Clone)]
pub struct JobCommand {
    program: OsString,
    args: Vec<OsString>,
    /// `None`: this process's environment without hinter's secrets (`hinter worker --
    /// COMMAND`). `Some`: exactly these variables (script jobs), plus the job's own.
    environment: Option<Vec<(OsString, OsString)>>,
    /// `None`: a temporary directory per attempt (the one holding the payload file).
    workdir: Option<PathBuf>,
    /// Between SIGTERM and SIGKILL when the command must stop.
    kill_grace: Duration,
    /// Bytes of output kept in the attempt's log when the output is stored
    /// ([`DEFAULT_LOG_CAP`]).
    log_cap: u64,
    /// settings.job's `max_memory`, `max_processes` and `max_output`.
    limits: Limits,
    /// Whether output lines are stored in the attempt's log (script jobs), or only the
    /// progress and checkpoint directives (`hinter worker -- COMMAND`).
    store_lines: bool,
}

/// Limits of one run of a command; over one, the whole process group is killed at once and
/// the attempt fails naming the limit (docs/scripts.md).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Resident memory of the command's process group, in bytes (polled).
    pub max_memory: Option<u64>,
    /// Processes in the command's process group at once (polled).
    pub max_processes: Option<u32>,
    /// Bytes of stdout and stderr (each line counts its bytes plus one).
    pub max_output: Option<u64>,
}

impl Limits {
    fn polled(&self) -> bool {
        self.max_memory.is_some() || self.max_processes.is_some()
    }
}

/// How often the process group of a command with `max_memory` or `max_processes` is
/// measured.
const LIMIT_POLL: Duration = Duration::from_millis(25);

/// Told what a running command does: its pid once spawned, and each output line (the
/// continuous jobs' supervisor keeps them for the API).
pub trait Observer: Send + Sync {
    fn spawned(&self, pid: u32);
    fn line(&self, stream: LogStream, line: &str);
}

/// Output seen so far, against `max_output`.
struct OutputBudget {
    used: std::sync::atomic::AtomicU64,
    limit: u64,
    over: Notify,
}

impl OutputBudget {
    fn take(&self, bytes: u64) {
        let before = self
            .used
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        if before <= self.limit && before + bytes > self.limit {
            self.over.notify_one();
        }
    }
}

/// What the output readers share besides the log sink.
#[derive(Clone, Default)]
struct Watchers {
    observer: Option<Arc<dyn Observer>>,
    budget: Option<Arc<OutputBudget>>,
}

impl Watchers {
    fn line(&self, stream: LogStream, line: &str) {
        if let Some(budget) = &self.budget {
            budget.take(line.len() as u64 + 1);
        }
        if let Some(observer) = &self.observer {
            observer.line(stream, line);
        }
    }
}

/// Longest checkpoint passed in `$HINTER_CHECKPOINT`; a larger one is only in
/// `$HINTER_CHECKPOINT_FILE` (a variable's value is bounded by the kernel, 128 KiB on Linux).
pub const MAX_CHECKPOINT_VARIABLE: usize = 64 * 1024;
/// Default bytes of output kept per attempt ([`JobCommand::log_cap`]).
pub const DEFAULT_LOG_CAP: u64 = 1024 * 1024;
/// Most lines or bytes sent in one report of output: within a worker call's body limit.
const REPORT_MAX_LINES: usize = 500;
/// Longest wait, once a command has ended, for its output to be stored.
const LOG_FINISH_LIMIT: Duration = Duration::from_secs(30);
const REPORT_MAX_BYTES: usize = 256 * 1024;

/// What the command is told about the attempt it runs.
#[derive(Debug, Clone, Copy)]
pub struct JobInfo<'a> {
    pub id: Uuid,
    pub job: &'a str,
    pub queue: &'a str,
    pub attempt: u32,
    pub max_attempts: u32,
    pub payload: &'a Value,
    /// The checkpoint an earlier attempt saved (`::checkpoint::`).
    pub checkpoint: Option<&'a Value>,
}

/// How an attempt of the command ended.
#[derive(Debug, PartialEq)]
pub enum Outcome<R> {
    /// Exit code 0, with the last valid `::result::` value.
    Succeeded(Option<Value>),
    /// It failed by itself (exit code, signal) or could not be started; `retry: false` for
    /// exit code 65 and for a command that can never start. `exit_code`: when it exited.
    Failed {
        message: String,
        retry: bool,
        exit_code: Option<i32>,
    },
    /// The caller's `stop` future completed first, with this reason; the command was stopped.
    Stopped(R),
}

impl JobCommand {
    /// `argv[0]` is the program; `None` if `argv` is empty.
    pub fn from_argv(argv: &[OsString]) -> Option<Self> {
        let (program, args) = argv.split_first()?;
        Some(Self {
            program: program.clone(),
            args: args.to_vec(),
            environment: None,
            workdir: None,
            kill_grace: KILL_GRACE,
            log_cap: DEFAULT_LOG_CAP,
            limits: Limits::default(),
            store_lines: true,
        })
    }

    /// Stops a run over one of `limits`.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Runs with exactly `variables` (and the job's `HINTER_*`), not this process's
    /// environment.
    pub fn clean_environment(mut self, variables: Vec<(OsString, OsString)>) -> Self {
        self.environment = Some(variables);
        self
    }

    /// Runs in `dir` instead of a temporary directory.
    pub fn workdir(mut self, dir: PathBuf) -> Self {
        self.workdir = Some(dir);
        self
    }

    /// Stores only the `::progress::` and `::checkpoint::` directives of the output (and
    /// notes on bad ones), not its lines, when the run reports ([`JobCommand::run_reporting`]).
    pub fn directives_only(mut self) -> Self {
        self.store_lines = false;
        self
    }

    /// Waits this long between SIGTERM and SIGKILL (default [`KILL_GRACE`]).
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// The program, for messages.
    pub fn program_name(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }

    /// Runs the command for one attempt of `job`, stopping it when `stop` completes first.
    #[cfg(test)]
    pub async fn run<R>(&self, job: &JobInfo<'_>, stop: impl Future<Output = R>) -> Outcome<R> {
        self.run_reporting(job, None, stop).await
    }

    /// [`JobCommand::run`], also storing the output in the attempt's log through `report`
    /// (with progress and checkpoints from `::progress::` and `::checkpoint::` lines; only
    /// those after [`JobCommand::directives_only`]). Every line is stored before this returns.
    pub async fn run_reporting<R>(
        &self,
        job: &JobInfo<'_>,
        report: Option<HandlerContext>,
        stop: impl Future<Output = R>,
    ) -> Outcome<R> {
        self.run_observed(job, report, None, stop).await
    }

    /// [`JobCommand::run_reporting`], also telling `observer` the pid and every line.
    pub async fn run_observed<R>(
        &self,
        job: &JobInfo<'_>,
        report: Option<HandlerContext>,
        observer: Option<Arc<dyn Observer>>,
        stop: impl Future<Output = R>,
    ) -> Outcome<R> {
        let id = job.id;
        let workdir = match tempfile::Builder::new().prefix("hinter-job-").tempdir() {
            Ok(dir) => dir,
            Err(e) => {
                return Outcome::Failed {
                    message: format!("cannot create a temporary directory for the job: {e}"),
                    retry: true,
                    exit_code: None,
                }
            }
        };
        let mut payload = serde_json::to_vec(job.payload).unwrap_or_else(|_| b"null".to_vec());
        payload.push(b'\n');
        let payload_file = workdir.path().join("payload.json");
        if let Err(e) = tokio::fs::write(&payload_file, &payload).await {
            return Outcome::Failed {
                message: format!("cannot write {}: {e}", payload_file.display()),
                retry: true,
                exit_code: None,
            };
        }
        let shutdown_file = workdir.path().join("shutdown");
        let checkpoint_file = workdir.path().join("checkpoint.json");
        let checkpoint = job
            .checkpoint
            .map(|c| serde_json::to_string(c).unwrap_or_else(|_| "null".into()));
        if let Some(text) = &checkpoint {
            if let Err(e) = tokio::fs::write(&checkpoint_file, text).await {
                return Outcome::Failed {
                    message: format!("cannot write {}: {e}", checkpoint_file.display()),
                    retry: true,
                    exit_code: None,
                };
            }
        }

        let mut command = Command::new(&self.program);
        command.args(&self.args);
        match &self.environment {
            Some(variables) => {
                command.env_clear();
                command.envs(variables.iter().map(|(k, v)| (k, v)));
            }
            None => {
                for name in SECRET_VARIABLES {
                    command.env_remove(name);
                }
            }
        }
        command.current_dir(self.workdir.as_deref().unwrap_or(workdir.path()));
        if let Some(text) = &checkpoint {
            command.env("HINTER_CHECKPOINT_FILE", &checkpoint_file);
            if text.len() <= MAX_CHECKPOINT_VARIABLE {
                command.env("HINTER_CHECKPOINT", text);
            }
        }
        command
            .env("HINTER_JOB_ID", id.to_string())
            .env("HINTER_JOB_NAME", job.job)
            .env("HINTER_QUEUE", job.queue)
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
                    exit_code: None,
                }
            }
        };
        // With `process_group(0)` the child leads a group whose id is its pid.
        let group = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .map(Pid::from_raw);
        // Should this future be dropped (the caller gave up on the attempt) while the
        // command runs, nothing of it outlives the attempt.
        let mut group_guard = KillGroupOnDrop { group, id };
        if let (Some(observer), Some(pid)) = (&observer, child.id()) {
            observer.spawned(pid);
        }
        let watchers = Watchers {
            observer,
            budget: self.limits.max_output.map(|limit| {
                Arc::new(OutputBudget {
                    used: 0.into(),
                    limit,
                    over: Notify::new(),
                })
            }),
        };

        let stdin = child.stdin.take().map(|mut stdin| {
            AbortOnDrop(tokio::spawn(async move {
                // A command that does not read its input closes the pipe: not an error.
                let _ = stdin.write_all(&payload).await;
                let _ = stdin.shutdown().await;
            }))
        });
        let log = report.map(|ctx| OutputLog::start(ctx, self.log_cap, self.store_lines));
        let sink = log.as_ref().map(|log| log.sink.clone());
        let stdout = child
            .stdout
            .take()
            .map(|out| tokio::spawn(read_stdout(out, id, sink.clone(), watchers.clone())));
        let stderr = child
            .stderr
            .take()
            .map(|err| tokio::spawn(read_stderr(err, id, sink, watchers.clone())));

        let ended: Result<WaitResult, Ended<R>> = tokio::select! {
            status = child.wait() => Ok(status),
            reason = stop => Err(Ended::Stopped(reason)),
            breach = watch_limits(group, self.limits, watchers.budget.clone()) => Err(Ended::Limit(breach)),
        };
        let mut over_limit = None;
        let (status, stopped) = match ended {
            Ok(status) => (status, None),
            Err(Ended::Stopped(reason)) => {
                let status =
                    terminate(&mut child, group, &shutdown_file, id, self.kill_grace).await;
                (status, Some(reason))
            }
            Err(Ended::Limit(breach)) => {
                // No grace: a fork bomb or a memory hog is not asked to stop.
                tracing::warn!(job_id = %id, "{breach}: killing the command's process group");
                signal_group(group, Signal::SIGKILL, id);
                if group.is_none() {
                    let _ = child.start_kill();
                }
                over_limit = Some(breach);
                (child.wait().await, None)
            }
        };
        // Whatever the command left running in its group goes with it.
        signal_group(group, Signal::SIGKILL, id);
        group_guard.group = None;
        drop(stdin);
        let result = collect(stdout, id).await.flatten();
        let last_stderr = collect(stderr, id).await.flatten();
        if let Some(log) = log {
            log.finish().await;
        }
        let status_text = match &status {
            Ok(status) => describe_status(*status),
            Err(e) => format!("cannot wait for the command: {e}"),
        };
        if let Some(reason) = stopped {
            tracing::info!(job_id = %id, "the command stopped: {status_text}");
            return Outcome::Stopped(reason);
        }
        if let Some(breach) = over_limit {
            return Outcome::Failed {
                message: breach,
                retry: true,
                exit_code: None,
            };
        }
        match status {
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
                    exit_code: status.code(),
                }
            }
            Err(_) => Outcome::Failed {
                message: status_text,
                retry: true,
                exit_code: None,
            },
        }
    }
}

/// Why a command was ended before it exited.
enum Ended<R> {
    Stopped(R),
    /// Over a limit: the message saying which.
    Limit(String),
}

/// Completes with a message naming the limit when the command's group goes over one of
/// `limits`; never, without limits.
async fn watch_limits(
    group: Option<Pid>,
    limits: Limits,
    budget: Option<Arc<OutputBudget>>,
) -> String {
    let output = async {
        match &budget {
            Some(budget) => {
                budget.over.notified().await;
                format!(
                    "stopped: its output went over max_output ({})",
                    format_bytes(budget.limit)
                )
            }
            None => std::future::pending().await,
        }
    };
    let polled = async {
        let Some(group) = group.filter(|_| limits.polled()) else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(LIMIT_POLL).await;
            // Short blocking reads of /proc (no disk behind them).
            let usage = crate::procfs::group_usage(group.as_raw(), LIMIT_POLL / 2);
            if let Some(max) = limits.max_processes {
                if usage.processes > max as usize {
                    return format!(
                        "stopped: over max_processes ({max}): {} processes in its group",
                        usage.processes
                    );
                }
            }
            if let Some(max) = limits.max_memory {
                if usage.memory > max {
                    return format!(
                        "stopped: over max_memory ({}): {} resident",
                        format_bytes(max),
                        format_bytes_approx(usage.memory)
                    );
                }
            }
        }
    };
    tokio::select! {
        message = output => message,
        message = polled => message,
    }
}

/// `12.3 MiB`.
fn format_bytes_approx(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Creates the shutdown file, sends SIGTERM to the command's process group, and SIGKILL after
/// `grace` if the command is still running then.
async fn terminate(
    child: &mut Child,
    group: Option<Pid>,
    shutdown_file: &Path,
    id: Uuid,
    grace: Duration,
) -> WaitResult {
    if let Err(e) = std::fs::write(shutdown_file, b"") {
        tracing::warn!(job_id = %id, "cannot create the shutdown file {}: {e}", shutdown_file.display());
    }
    signal_group(group, Signal::SIGTERM, id);
    match timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            tracing::warn!(
                job_id = %id,
                "the command did not stop within {} of SIGTERM: sending SIGKILL",
                format_duration(grace)
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

/// Kills the command's process group when dropped, unless `group` was cleared once the
/// command was waited for. (While the leader is not waited for, its pid, and so the group's
/// id, cannot be reused.)
struct KillGroupOnDrop {
    group: Option<Pid>,
    id: Uuid,
}

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if self.group.is_some() {
            tracing::warn!(job_id = %self.id, "the attempt was abandoned: killing its command");
            signal_group(self.group, Signal::SIGKILL, self.id);
        }
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

/// Logs stdout lines at INFO (and into `sink`, with progress and checkpoints); answers the
/// last valid `::result::` JSON.
async fn read_stdout(
    out: impl AsyncRead + Unpin,
    id: Uuid,
    sink: Option<Arc<OutputSink>>,
    watchers: Watchers,
) -> Option<Value> {
    let mut result = None;
    for_each_line(out, id, |line| {
        tracing::info!(job_id = %id, stream = "stdout", "{line}");
        watchers.line(LogStream::Stdout, line);
        if let Some(sink) = &sink {
            sink.line(LogStream::Stdout, line);
        }
        if let Some(json) = line.strip_prefix("::result::") {
            match serde_json::from_str(json) {
                Ok(value) => result = Some(value),
                Err(e) => {
                    let warning = format!("ignoring a ::result:: line that is not valid JSON: {e}");
                    tracing::error!(job_id = %id, "{warning}");
                    if let Some(sink) = &sink {
                        sink.line(LogStream::Hinter, &warning);
                    }
                }
            }
        } else if let Some(sink) = &sink {
            sink.directive(line);
        }
    })
    .await;
    result
}

/// Logs stderr lines at ERROR (and into `sink`); answers the last one that is not blank
/// (for the error message).
async fn read_stderr(
    err: impl AsyncRead + Unpin,
    id: Uuid,
    sink: Option<Arc<OutputSink>>,
    watchers: Watchers,
) -> Option<String> {
    let mut last = None;
    for_each_line(err, id, |line| {
        tracing::error!(job_id = %id, stream = "stderr", "{line}");
        watchers.line(LogStream::Stderr, line);
        if let Some(sink) = &sink {
            sink.line(LogStream::Stderr, line);
        }
        if !line.trim().is_empty() {
            last = Some(truncate(line.trim(), MAX_ERROR_LINE));
        }
    })
    .await;
    last
}

/// Where the output readers put what is to be stored: lines up to the cap (past it only
/// counted), and the latest progress and checkpoint. Bounded by the cap whatever the
/// command prints; [`OutputLog`] ships it.
struct OutputSink {
    state: Mutex<SinkState>,
    wake: Notify,
    cap: u64,
    /// False: the command's own lines are not stored (directives still are).
    keep_lines: bool,
}

#[derive(Default)]
struct SinkState {
    lines: VecDeque<NewLogLine>,
    progress: Option<Progress>,
    checkpoint: Option<Value>,
    kept_bytes: u64,
    dropped_lines: u64,
    dropped_bytes: u64,
    /// Lines the store refused or could not take (lease lost, store away).
    lost_lines: u64,
    closed: bool,
}

impl OutputSink {
    fn state(&self) -> std::sync::MutexGuard<'_, SinkState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn line(&self, stream: LogStream, text: &str) {
        if !self.keep_lines && stream != LogStream::Hinter {
            return;
        }
        let bytes = text.len() as u64 + 1;
        {
            let mut state = self.state();
            // The kept log is a prefix of the output: past the first line over the cap,
            // nothing more of the command's output is kept.
            if stream != LogStream::Hinter
                && (state.dropped_lines > 0 || state.kept_bytes + bytes > self.cap)
            {
                state.dropped_lines += 1;
                state.dropped_bytes += bytes;
                return;
            }
            state.kept_bytes += bytes;
            state
                .lines
                .push_back(NewLogLine::new(Utc::now(), stream, text).storable());
        }
        self.wake.notify_one();
    }

    /// `::progress::42 message` and `::checkpoint::{json}`; a malformed one is noted in the
    /// log, never fatal.
    fn directive(&self, line: &str) {
        if let Some(rest) = line.strip_prefix("::progress::") {
            match parse_progress(rest) {
                Ok(progress) => self.state().progress = Some(progress),
                Err(why) => self.line(LogStream::Hinter, &format!("ignoring {line:?}: {why}")),
            }
        } else if let Some(json) = line.strip_prefix("::checkpoint::") {
            match serde_json::from_str::<Value>(json) {
                Ok(value) => match hinter_core::limits::check_json("checkpoint", &value) {
                    Ok(()) => self.state().checkpoint = Some(value),
                    Err(e) => self.line(
                        LogStream::Hinter,
                        &format!("ignoring a ::checkpoint:: line: {e}"),
                    ),
                },
                Err(e) => self.line(
                    LogStream::Hinter,
                    &format!("ignoring a ::checkpoint:: line that is not valid JSON: {e}"),
                ),
            }
        } else {
            return;
        }
        self.wake.notify_one();
    }
}

/// `42 resizing` → 42 %, "resizing"; the percentage from 0 to 100.
fn parse_progress(text: &str) -> Result<Progress, String> {
    let text = text.trim();
    let (number, message) = match text.split_once(char::is_whitespace) {
        Some((number, message)) => (number, message.trim()),
        None => (text, ""),
    };
    let percent: f64 = number
        .parse()
        .ok()
        .filter(|p: &f64| (0.0..=100.0).contains(p))
        .ok_or_else(|| format!("{number:?} is not a percentage from 0 to 100"))?;
    let mut message = message.to_string();
    if message.len() > hinter_core::output::MAX_PROGRESS_MESSAGE_BYTES {
        let mut cut = hinter_core::output::MAX_PROGRESS_MESSAGE_BYTES;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    Ok(Progress {
        percent,
        message: (!message.is_empty()).then(|| message.replace('\0', "\u{FFFD}")),
        at: Utc::now(),
    })
}

/// Ships what the [`OutputSink`] collects to the store, in batches, while the command runs:
/// whatever arrived while the previous report was being written goes in the next.
struct OutputLog {
    sink: Arc<OutputSink>,
    /// Aborted if the attempt is abandoned before [`OutputLog::finish`].
    shipper: AbortOnDrop<()>,
}

impl OutputLog {
    fn start(ctx: HandlerContext, cap: u64, keep_lines: bool) -> Self {
        let sink = Arc::new(OutputSink {
            state: Mutex::new(SinkState::default()),
            wake: Notify::new(),
            cap,
            keep_lines,
        });
        let shipper = AbortOnDrop(tokio::spawn(ship(ctx, sink.clone())));
        Self { sink, shipper }
    }

    /// Once the output is read: notes what was dropped at the cap, and waits until
    /// everything is stored (or given up on).
    async fn finish(mut self) {
        {
            let mut state = self.sink.state();
            if state.dropped_lines > 0 {
                let note = format!(
                    "output over this attempt's log cap of {}: {} more lines ({} bytes) were \
                     not kept",
                    format_bytes(self.sink.cap),
                    state.dropped_lines,
                    state.dropped_bytes
                );
                state
                    .lines
                    .push_back(NewLogLine::new(Utc::now(), LogStream::Hinter, note));
            }
            state.closed = true;
        }
        self.sink.wake.notify_one();
        if timeout(LOG_FINISH_LIMIT, &mut self.shipper.0)
            .await
            .is_err()
        {
            // The store or server is too slow: the outcome matters more than the last lines
            // (the shipper is aborted when `self` is dropped).
            tracing::warn!(
                "the job's last output lines could not be stored within {}; going on without them",
                format_duration(LOG_FINISH_LIMIT)
            );
        }
    }
}

/// `1 MiB`, `512 KiB`, `300 bytes`.
fn format_bytes(bytes: u64) -> String {
    const KIB: u64 = 1024;
    if bytes >= KIB * KIB && bytes.is_multiple_of(KIB * KIB) {
        format!("{} MiB", bytes / (KIB * KIB))
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

async fn ship(ctx: HandlerContext, sink: Arc<OutputSink>) {
    let mut gone = false;
    loop {
        let (lines, progress, checkpoint, closed) = {
            let mut state = sink.state();
            let mut lines = Vec::new();
            let mut bytes = 0;
            while let Some(line) = state.lines.front() {
                if lines.len() >= REPORT_MAX_LINES
                    || (bytes + line.line.len() > REPORT_MAX_BYTES && !lines.is_empty())
                {
                    break;
                }
                bytes += line.line.len();
                lines.extend(state.lines.pop_front());
            }
            let closed = state.closed && state.lines.is_empty();
            (
                lines,
                state.progress.take(),
                state.checkpoint.take(),
                closed,
            )
        };
        if lines.is_empty() && progress.is_none() && checkpoint.is_none() {
            if closed {
                let lost = sink.state().lost_lines;
                if lost > 0 {
                    tracing::warn!(job_id = %ctx.id, lost, "log lines of the job could not be stored");
                }
                return;
            }
            sink.wake.notified().await;
            continue;
        }
        if gone {
            sink.state().lost_lines += lines.len() as u64;
            continue;
        }
        let count = lines.len() as u64;
        let mut delay = Duration::from_millis(50);
        let mut tries = 0;
        loop {
            tries += 1;
            match ctx
                .report(lines.clone(), progress.clone(), checkpoint.clone())
                .await
            {
                Ok(()) => break,
                // The attempt is no longer this worker's: nothing more is stored.
                Err(StoreError::StaleLease(_) | StoreError::NotFound(_)) => {
                    gone = true;
                    sink.state().lost_lines += count;
                    break;
                }
                Err(e) if tries >= 5 => {
                    tracing::warn!(job_id = %ctx.id, error = %e, "could not store the job's output");
                    sink.state().lost_lines += count;
                    break;
                }
                Err(e) => {
                    tracing::debug!(job_id = %ctx.id, error = %e, "storing the job's output; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }
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
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Instant;

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

    fn sink(cap: u64) -> OutputSink {
        OutputSink {
            state: Mutex::new(SinkState::default()),
            wake: Notify::new(),
            cap,
            keep_lines: true,
        }
    }

    #[test]
    fn the_kept_output_is_a_prefix_up_to_the_cap() {
        let sink = sink(10);
        sink.line(LogStream::Stdout, "abcd"); // 5 bytes with its newline
        sink.line(LogStream::Stderr, "efgh"); // 10
        sink.line(LogStream::Stdout, "i"); // over: dropped
        sink.line(LogStream::Stdout, ""); // would fit, but the log stays a prefix
        sink.line(LogStream::Hinter, "a note of hinter's own is always kept");
        let state = sink.state();
        let kept: Vec<&str> = state.lines.iter().map(|l| l.line.as_str()).collect();
        assert_eq!(
            kept,
            ["abcd", "efgh", "a note of hinter's own is always kept"]
        );
        assert_eq!((state.dropped_lines, state.dropped_bytes), (2, 3));
    }

    #[test]
    fn directives_set_progress_and_checkpoints_or_say_why_not() {
        let sink = sink(1 << 20);
        sink.directive("::progress::42.5 resizing  a.png ");
        sink.directive("::checkpoint::{\"done\": [1, 2]}");
        sink.directive("::progress::101");
        sink.directive("::checkpoint::{oops");
        sink.directive("plain output");
        let state = sink.state();
        let progress = state.progress.as_ref().expect("progress");
        assert_eq!(
            (progress.percent, progress.message.as_deref()),
            (42.5, Some("resizing  a.png"))
        );
        assert_eq!(state.checkpoint, Some(json!({"done": [1, 2]})));
        let notes: Vec<&str> = state.lines.iter().map(|l| l.line.as_str()).collect();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].contains("\"101\" is not a percentage from 0 to 100"),
            "{notes:?}"
        );
        assert!(
            notes[1].starts_with("ignoring a ::checkpoint:: line that is not valid JSON"),
            "{notes:?}"
        );
        assert!(parse_progress("7").is_ok_and(|p| p.message.is_none()));
        assert!(parse_progress("-1 x").is_err());
        assert!(parse_progress("NaN").is_err());
        for bad in [
            "1e400", "inf", "-inf", "101", "100.0001", "-0.5", "\"50\"", "", "50%",
        ] {
            assert!(parse_progress(bad).is_err(), "{bad:?}");
        }
        assert!(parse_progress("100").is_ok_and(|p| p.percent == 100.0));
        assert!(parse_progress("0.5 x").is_ok_and(|p| p.percent == 0.5));
        let long = "é".repeat(hinter_core::output::MAX_PROGRESS_MESSAGE_BYTES);
        let cut = parse_progress(&format!("50 {long}")).expect("a long message is cut");
        let message = cut.message.expect("message");
        assert!(message.len() <= hinter_core::output::MAX_PROGRESS_MESSAGE_BYTES);
        assert!(message.len() > hinter_core::output::MAX_PROGRESS_MESSAGE_BYTES - 2);
        let mended = parse_progress("50 a\0b").expect("a NUL is mended");
        assert_eq!(mended.message.as_deref(), Some("a\u{FFFD}b"));
        assert_eq!(format_bytes(1 << 20), "1 MiB");
        assert_eq!(format_bytes(1536), "1536 bytes");
    }

    #[tokio::test]
    async fn reads_lines_and_the_last_valid_result() {
        let out: &[u8] =
            b"hello\n::result::{\"n\": 1}\r\n::result::{\"n\": 2}\n::result::{oops\n\xffbad\nno newline";
        let result = read_stdout(out, Uuid::nil(), None, Watchers::default()).await;
        assert_eq!(result, Some(json!({"n": 2})));
        let err: &[u8] = b"first\nlast problem\n\n  \n";
        assert_eq!(
            read_stderr(err, Uuid::nil(), None, Watchers::default())
                .await
                .as_deref(),
            Some("last problem")
        );
    }

    fn sh(script: &str) -> JobCommand {
        JobCommand::from_argv(&["/bin/sh".into(), "-c".into(), script.into()]).expect("a program")
    }

    fn info(payload: &Value) -> JobInfo<'_> {
        JobInfo {
            id: Uuid::nil(),
            job: "test",
            queue: "default",
            attempt: 2,
            max_attempts: 3,
            payload,
            checkpoint: None,
        }
    }

    #[tokio::test]
    async fn maps_exit_codes_and_reads_the_payload_and_variables() {
        let payload = json!({"n": 7});
        let never = std::future::pending::<()>;
        let command = sh(
            r#"read -r line; printf '::result::{"stdin": %s, "attempt": %s, "job": "%s"}\n' "$line" "$HINTER_ATTEMPT" "$HINTER_JOB_NAME""#,
        );
        assert_eq!(
            command.run(&info(&payload), never()).await,
            Outcome::Succeeded(Some(
                json!({"stdin": {"n": 7}, "attempt": 2, "job": "test"})
            ))
        );
        assert_eq!(
            sh("echo bad input >&2; exit 65")
                .run(&info(&payload), never())
                .await,
            Outcome::Failed {
                message: "exited with code 65 (failed permanently): bad input".into(),
                retry: false,
                exit_code: Some(65),
            }
        );
        assert_eq!(
            sh("exit 3").run(&info(&payload), never()).await,
            Outcome::Failed {
                message: "exited with code 3".into(),
                retry: true,
                exit_code: Some(3),
            }
        );
        let missing = JobCommand::from_argv(&["/nonexistent/hinter-job".into()])
            .expect("a program")
            .run(&info(&payload), never())
            .await;
        assert_eq!(
            missing,
            Outcome::Failed {
                message: "cannot run /nonexistent/hinter-job: No such file or directory".into(),
                retry: false,
                exit_code: None,
            }
        );
    }

    #[tokio::test]
    async fn a_stop_terminates_the_group_with_the_shutdown_file_first() {
        let payload = json!(null);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let started = dir.path().join("started");
        let marker = dir.path().join("terminated");
        let script = format!(
            "trap 'if [ -e \"$HINTER_SHUTDOWN_FILE\" ]; then touch {}; fi; exit 143' TERM; \
             touch {}; while :; do sleep 0.05; done",
            marker.display(),
            started.display()
        );
        let began = Instant::now();
        let outcome = sh(&script)
            .run(&info(&payload), async {
                // Stop once the trap is set.
                while !started.exists() {
                    assert!(
                        began.elapsed() < Duration::from_secs(20),
                        "the script never started"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                "stop please"
            })
            .await;
        assert_eq!(outcome, Outcome::Stopped("stop please"));
        assert!(marker.exists(), "SIGTERM came after the shutdown file");
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "the script stopped on SIGTERM"
        );
    }
}
