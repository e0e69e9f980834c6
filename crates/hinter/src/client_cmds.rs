//! The client commands of the `hinter` binary — `enqueue`, `jobs`, `queues`, `dead` — which
//! talk to a running server over the HTTP API (`docs/cli.md` has every command with examples).
//!
//! Mounted in `main.rs` as `#[command(flatten)] Client(client_cmds::ClientCommand)` inside the
//! top-level subcommand enum, and run with [`run`]. Every command carries its own
//! [`ClientOpts`] (`--server`, `--token`, `--json`), so the top level needs no arguments for it.
//!
//! # Exit codes
//!
//! | code | constant | meaning |
//! |---|---|---|
//! | 0 | [`exit::OK`] | done (`enqueue --wait`: the job succeeded) |
//! | 1 | [`exit::JOB_FAILED`] | `enqueue --wait`: the job ended `dead` or `cancelled` |
//! | 2 | [`exit::USAGE`] | invalid input: usage error, bad payload JSON, invalid field, unusable --ca-file, API 400/413/422 |
//! | 3 | [`exit::NOT_FOUND`] | no such job or queue (API 404) |
//! | 4 | [`exit::CONFLICT`] | the job's state does not allow it (API 409) |
//! | 5 | [`exit::WAIT_TIMEOUT`] | `enqueue --wait --wait-timeout`: the job had not finished in time |
//! | 69 | [`exit::UNAVAILABLE`] | the server cannot be reached (its TLS certificate not trusted included), or answered 503 (or 502/504/429) |
//! | 70 | [`exit::SOFTWARE`] | the server answered something unexpected (a 500, a body that is not the API's) |
//! | 74 | [`exit::IO`] | cannot read stdin or write stdout |
//! | 77 | [`exit::NO_PERMISSION`] | the token is missing or not allowed (API 401/403) |
//! | 130 | [`exit::INTERRUPTED`] | `enqueue --wait` stopped by Ctrl-C (the job goes on) |

mod followups;
mod scripts;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use hinter_client::{
    Client, Error as ApiError, Include, Job, JobFilter, JobState, JobSummary, TlsProblem,
};
use hinter_core::{format_duration, parse_duration, JobSpec};
use serde::Serialize;
use serde_json::Value;
use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Exit codes of the client commands. See the module documentation.
pub mod exit {
    /// The command did what was asked.
    pub const OK: u8 = 0;
    /// `enqueue --wait`: the job finished unsuccessfully (`dead` or `cancelled`).
    pub const JOB_FAILED: u8 = 1;
    /// Invalid input: usage (clap also uses 2), payload JSON, fields; API 400, 413, 422.
    pub const USAGE: u8 = 2;
    /// API 404: no such job or queue.
    pub const NOT_FOUND: u8 = 3;
    /// API 409: the job is not in a state that allows the operation.
    pub const CONFLICT: u8 = 4;
    /// `enqueue --wait --wait-timeout`: the job had not finished when the wait ran out.
    pub const WAIT_TIMEOUT: u8 = 5;
    /// The server cannot be reached or is unavailable (API 503, 502, 504, 429). `EX_UNAVAILABLE`.
    pub const UNAVAILABLE: u8 = 69;
    /// The server answered something unexpected (API 500, a body that is not the API's).
    /// `EX_SOFTWARE`.
    pub const SOFTWARE: u8 = 70;
    /// Standard input could not be read or standard output not written. `EX_IOERR`.
    pub const IO: u8 = 74;
    /// API 401/403: the token is missing, wrong or not allowed. `EX_NOPERM`.
    pub const NO_PERMISSION: u8 = 77;
    /// `enqueue --wait` was interrupted with Ctrl-C; the job itself goes on.
    pub const INTERRUPTED: u8 = 130;
}

/// The exit code for an error of the API client.
pub fn exit_code_for(error: &ApiError) -> u8 {
    match error {
        ApiError::Api { status, .. } => match *status {
            404 => exit::NOT_FOUND,
            409 => exit::CONFLICT,
            401 | 403 => exit::NO_PERMISSION,
            429 | 502..=504 => exit::UNAVAILABLE,
            400..=499 => exit::USAGE,
            _ => exit::SOFTWARE,
        },
        ApiError::Transport { .. } | ApiError::Tls { .. } => exit::UNAVAILABLE,
        ApiError::InvalidUrl { .. } | ApiError::InvalidCaCertificate { .. } => exit::USAGE,
        _ => exit::SOFTWARE,
    }
}

// ---------------------------------------------------------------------------------------------
// The command line

/// Options every client command takes; they may stand anywhere after the command name.
#[derive(Debug, Clone, Args)]
pub struct ClientOpts {
    /// URL of the hinter server
    #[arg(
        long,
        env = "HINTER_SERVER",
        default_value = hinter_client::DEFAULT_SERVER,
        global = true,
        value_name = "URL"
    )]
    pub server: String,

    /// Bearer token for the server's API
    #[arg(
        long,
        env = "HINTER_TOKEN",
        global = true,
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// PEM file of the CA that signed an https:// server's certificate, trusted besides
    /// the system's root certificates
    #[arg(long, env = "HINTER_CA_FILE", global = true, value_name = "PEM")]
    pub ca_file: Option<std::path::PathBuf>,

    /// Print JSON (the API's answers) instead of human-readable text
    #[arg(long, global = true)]
    pub json: bool,
}

impl ClientOpts {
    fn client(&self) -> Result<Client, Failure> {
        let mut client = Client::builder(&self.server).token(self.token.clone());
        if let Some(ca_file) = &self.ca_file {
            client = client.ca_file(ca_file);
        }
        Ok(client.build()?)
    }
}

/// The client commands, to be flattened into the binary's top-level subcommands. The
/// arguments are boxed so the enum stays small beside other subcommands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Enqueue a job on the server (optionally wait for it to finish)
    Enqueue(Box<EnqueueArgs>),
    /// List, show, cancel and retry jobs
    Jobs(Box<JobsArgs>),
    /// List, pause and resume queues
    Queues(Box<QueuesArgs>),
    /// The dead-letter set: list and retry jobs whose attempts are used up
    Dead(Box<DeadArgs>),
    /// Print the event log (what happened to jobs), oldest first; --follow waits for more
    Events(Box<EventsArgs>),
    /// List the job definitions the server has loaded (script jobs, with their errors)
    Definitions(Box<scripts::DefinitionsArgs>),
    /// Cron and one-shot schedules: list, show, add, rm, pause, resume, history
    Schedules(Box<schedules::SchedulesArgs>),
}

/// `hinter events [--after ID] [--follow] [filters]`
#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub opts: ClientOpts,

    /// Print only events after this event id (0: from the oldest kept). To resume, pass the
    /// id of the last event you handled.
    #[arg(long, value_name = "ID", default_value_t = 0)]
    pub after: i64,

    /// Keep waiting for new events (stop with Ctrl-C); survives a server restart
    #[arg(long, short = 'f')]
    pub follow: bool,

    /// Only events of jobs in this queue
    #[arg(long, value_name = "NAME")]
    pub queue: Option<String>,

    /// Only events of jobs of this definition
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,

    /// Only events of this job
    #[arg(long, value_name = "ID")]
    pub job_id: Option<Uuid>,
}

/// `hinter enqueue JOB [PAYLOAD|-] [options]`
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    #[command(flatten)]
    pub opts: ClientOpts,

    /// Name of the job definition (letters, digits, '-', '_', '.', ':')
    #[arg(value_name = "JOB")]
    pub job: String,

    /// Payload as JSON text; '-' reads it from standard input; absent: null
    #[arg(value_name = "PAYLOAD|-")]
    pub payload: Option<String>,

    /// Queue to put the job in (default: the job definition's, else "default")
    #[arg(long, value_name = "NAME")]
    pub queue: Option<String>,

    /// Run no earlier than this from now (500ms, 30s, 5m, 2h, 1d)
    #[arg(long, value_name = "DURATION", value_parser = duration_arg, allow_hyphen_values = true, conflicts_with = "at")]
    pub delay: Option<Duration>,

    /// Run no earlier than this time (RFC 3339, e.g. 2026-11-24T10:00:00Z)
    #[arg(long, value_name = "TIME", value_parser = time_arg)]
    pub at: Option<DateTime<Utc>>,

    /// Priority from -1000 to 1000; higher runs first (default 0)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub priority: Option<i32>,

    /// Do not enqueue if a job of this name with this key exists (see --unique-for)
    #[arg(long, value_name = "KEY")]
    pub unique_key: Option<String>,

    /// With --unique-key: recognise duplicates for this long after the first enqueue
    /// (default: while the first job is unfinished)
    #[arg(long, value_name = "DURATION", value_parser = duration_arg, allow_hyphen_values = true, requires = "unique_key")]
    pub unique_for: Option<Duration>,

    /// Jobs with the same ordering key in a queue run one at a time, in enqueue order
    #[arg(long, value_name = "KEY")]
    pub ordering_key: Option<String>,

    /// Attempts before the job goes to the dead-letter set, 1 to 1000 (default 10)
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,

    /// Longest one attempt may run (e.g. 5m)
    #[arg(long, value_name = "DURATION", value_parser = duration_arg, allow_hyphen_values = true)]
    pub timeout: Option<Duration>,

    /// When the job finishes, put a reply message (job `hinter.reply`: correlation id, job id,
    /// state, result, error) on this queue
    #[arg(long, value_name = "QUEUE")]
    pub reply_to: Option<String>,

    /// Carried by the reply message and the callback, to match them with this request
    #[arg(long, value_name = "ID")]
    pub correlation_id: Option<String>,

    /// When the job finishes, POST its outcome to this http(s) URL, signed
    /// (see docs/results.md)
    #[arg(long, value_name = "URL")]
    pub callback_url: Option<String>,

    /// Idempotency-Key of the request (1-255 printable ASCII characters; default: a new
    /// random one). Running the command again with the same key (and token) within the
    /// server's --idempotency-ttl answers the first job instead of enqueueing another
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,

    /// Wait for the job to finish, showing progress on stderr; print its result and exit 0
    /// only if it succeeded
    #[arg(long)]
    pub wait: bool,

    /// With --wait: give up waiting after this long (exit 5; the job goes on)
    #[arg(long, value_name = "DURATION", value_parser = duration_arg, allow_hyphen_values = true, requires = "wait")]
    pub wait_timeout: Option<Duration>,

    /// With --wait: show no progress (failed attempts are still reported on stderr)
    #[arg(long, short, requires = "wait")]
    pub quiet: bool,
}

/// `hinter jobs …`
#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: JobsCommand,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs in enqueue order
    List(ListArgs),
    /// Show one job with its payload, result and error history
    Show {
        #[arg(value_name = "ID")]
        id: Uuid,
    },
    /// Cancel a job: a waiting job at once, a running one when its worker stops it
    Cancel {
        #[arg(value_name = "ID")]
        id: Uuid,
    },
    /// Put a dead or cancelled job back in its queue
    Retry {
        #[arg(value_name = "ID")]
        id: Uuid,
    },
    /// Delete finished jobs (succeeded, dead, cancelled) with their runs and logs
    Delete {
        #[arg(value_name = "ID", required = true)]
        ids: Vec<Uuid>,
    },
    /// Print a job's log lines (script jobs: stdout INFO, stderr ERROR) per attempt;
    /// --follow waits for more until the job has finished
    Logs(scripts::LogsArgs),
}

/// Filters and paging of `jobs list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only jobs in this state: scheduled, queued, running, succeeded, dead, cancelled
    #[arg(long, value_name = "STATE")]
    pub state: Option<JobState>,
    #[command(flatten)]
    pub page: PageArgs,
}

/// Filters and paging shared by `jobs list` and `dead list`.
#[derive(Debug, Args)]
pub struct PageArgs {
    /// Only jobs in this queue
    #[arg(long, value_name = "NAME")]
    pub queue: Option<String>,

    /// Only jobs of this job definition
    #[arg(long, value_name = "JOB")]
    pub job: Option<String>,

    /// Jobs per page, 1 to 1000 (default 100; with --all 1000)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,

    /// Start after this cursor (printed by the previous page)
    #[arg(long, value_name = "CURSOR", conflicts_with = "all")]
    pub cursor: Option<String>,

    /// Fetch every page
    #[arg(long)]
    pub all: bool,

    /// Add these to each listed job (with --json): payload, result, errors, runs, or all
    /// (comma-separated). Listings leave them out; `jobs show ID` has everything.
    #[arg(long, value_name = "FIELDS", value_parser = parse_include)]
    pub include: Option<Include>,
}

fn parse_include(s: &str) -> Result<Include, String> {
    s.parse()
}

/// `hinter queues …`
#[derive(Debug, Args)]
pub struct QueuesArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: QueuesCommand,
}

#[derive(Debug, Subcommand)]
pub enum QueuesCommand {
    /// List queues with their job counts per state
    List,
    /// Stop handing out jobs from a queue (running jobs go on; enqueueing still works)
    Pause {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Hand out jobs from a paused queue again
    Resume {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Delete a queue's finished jobs with their runs and logs (default: succeeded, dead and
    /// cancelled ones); waiting and running jobs are never touched
    Purge {
        #[arg(value_name = "NAME")]
        name: String,
        /// Only jobs in this state (repeat for several): succeeded, dead, cancelled
        #[arg(long = "state", value_name = "STATE")]
        states: Vec<JobState>,
    },
}

/// `hinter dead …`
#[derive(Debug, Args)]
pub struct DeadArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: DeadCommand,
}

#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// List dead jobs with their last error
    List(PageArgs),
    /// Put dead jobs back in their queues
    Retry(DeadRetryArgs),
}

#[derive(Debug, Args)]
pub struct DeadRetryArgs {
    /// Jobs to retry
    #[arg(
        value_name = "ID",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub ids: Vec<Uuid>,

    /// Retry every dead job (narrowed by --queue and --job)
    #[arg(long)]
    pub all: bool,

    /// With --all: only dead jobs in this queue
    #[arg(long, value_name = "NAME", requires = "all")]
    pub queue: Option<String>,

    /// With --all: only dead jobs of this job definition
    #[arg(long, value_name = "JOB", requires = "all")]
    pub job: Option<String>,
}

mod schedules;

fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

fn time_arg(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!("{e}: expected an RFC 3339 time such as 2026-11-24T10:00:00Z or 2026-11-24T11:00:00+01:00")
        })
}

// ---------------------------------------------------------------------------------------------
// Running

/// Runs a client command. Errors are reported on stderr here and turned into the exit code
/// (see [`exit`]), so this answers `Ok` for every failure the command knows about.
pub async fn run(command: ClientCommand) -> anyhow::Result<ExitCode> {
    let result = match command {
        ClientCommand::Enqueue(args) => enqueue(*args).await,
        ClientCommand::Jobs(args) => jobs(*args).await,
        ClientCommand::Queues(args) => queues(*args).await,
        ClientCommand::Dead(args) => dead(*args).await,
        ClientCommand::Events(args) => events(*args).await,
        ClientCommand::Definitions(args) => scripts::definitions(*args).await,
        ClientCommand::Schedules(args) => schedules::run(*args).await,
    };
    let code = match result {
        Ok(code) => code,
        Err(failure) => {
            failure.report();
            failure.code
        }
    };
    Ok(ExitCode::from(code))
}

/// A command that failed: what to tell the user and which exit code to end with.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
    hint: Option<String>,
}

type CmdResult = Result<u8, Failure>;

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            hint: None,
        }
    }

    fn usage(message: impl Into<String>) -> Self {
        Self::new(exit::USAGE, message)
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    fn context(mut self, prefix: impl std::fmt::Display) -> Self {
        self.message = format!("{prefix}: {}", self.message);
        self
    }

    fn report(&self) {
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "error: {}", clean(&self.message, true));
        if let Some(hint) = &self.hint {
            let _ = writeln!(stderr, "hint: {hint}");
        }
    }
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        let failure = Failure::new(exit_code_for(&error), error.to_string());
        match &error {
            // Only when no connection could be made: a connection that broke mid-request
            // reached a server.
            ApiError::Transport {
                connect_failed: true,
                ..
            } => failure
                .hint("is `hinter serve` running there? Point --server (or HINTER_SERVER) at it."),
            ApiError::Api {
                status: 401 | 403, ..
            } => failure.hint("pass a valid token with --token or HINTER_TOKEN"),
            ApiError::Tls {
                problem: TlsProblem::UntrustedCertificate,
                ..
            } => failure.hint(
                "pass the CA certificate that signed the server's certificate with --ca-file \
                 (or HINTER_CA_FILE)",
            ),
            ApiError::Tls {
                problem: TlsProblem::WrongHostName,
                ..
            } => failure.hint("use a host name in --server that the server's certificate holds"),
            _ => failure,
        }
    }
}

/// Writes to stdout. A closed pipe (`hinter jobs list | head`) is not an error.
fn out(text: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::new(
            exit::IO,
            format!("cannot write to standard output: {e}"),
        )),
    }
}

fn out_json<T: Serialize + ?Sized>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::new(exit::SOFTWARE, format!("cannot print JSON: {e}")))?;
    out(&format!("{text}\n"))
}

fn note(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

// ---------------------------------------------------------------------------------------------
// enqueue

async fn enqueue(args: EnqueueArgs) -> CmdResult {
    let payload = read_payload(args.payload.as_deref())?;
    let spec = JobSpec {
        job: args.job,
        payload,
        queue: args.queue,
        priority: args.priority,
        run_at: args.at,
        delay: args.delay,
        max_attempts: args.max_attempts,
        unique_key: args.unique_key,
        unique_for: args.unique_for,
        ordering_key: args.ordering_key,
        timeout: args.timeout,
        reply_to: args.reply_to,
        correlation_id: args.correlation_id,
        callback_url: args.callback_url,
    };
    // The server checks the same; checking here too gives the answer without a round trip.
    spec.validate()
        .map_err(|e| Failure::usage(format!("invalid job: {e}")))?;
    if let Some(key) = &args.idempotency_key {
        hinter_client::check_idempotency_key(key).map_err(|_| {
            Failure::usage(format!(
                "--idempotency-key {key:?}: must be 1 to {} printable ASCII characters",
                hinter_client::MAX_IDEMPOTENCY_KEY_CHARS
            ))
        })?;
    }
    let client = args.opts.client()?;
    // The client sends the request with the key and sends it again (same key) when the
    // connection fails or breaks before the answer, so a lost reply makes no second job.
    let key = args
        .idempotency_key
        .clone()
        .unwrap_or_else(hinter_client::new_idempotency_key);
    let answer = client
        .enqueue_with_key(&spec, &key)
        .await
        .map_err(|e| match e {
            // The job exists; enqueueing it again would make a second one.
            ApiError::Decode { status, .. } if (200..300).contains(&status) => Failure::from(e)
                .hint(
                    "the server accepted the job but its answer could not be read; \
                     do not enqueue it again, find it with `hinter jobs list`",
                ),
            e => Failure::from(e),
        })?;
    let job = &answer.job;
    let summary = if answer.duplicate {
        format!(
            "duplicate of {} ({}, queue {})",
            job.id, job.state, job.queue
        )
    } else {
        format!("enqueued {} (queue {})", job.id, job.queue)
    };
    if !args.wait {
        if args.opts.json {
            out_json(&answer)?;
        } else {
            out(&format!("{summary}\n"))?;
        }
        return Ok(exit::OK);
    }

    let mut progress = Progress::new(!args.quiet, std::io::stderr().is_terminal());
    progress.line(&summary);
    let (job, end) = wait_for(&client, answer.job, args.wait_timeout, &mut progress).await?;
    progress.finish();
    if args.opts.json {
        out_json(&job)?;
    }
    match end {
        WaitEnd::Finished if job.state == JobState::Succeeded => {
            if !args.opts.json {
                out(&format!(
                    "{}\n",
                    pretty(job.result.as_ref().unwrap_or(&Value::Null))
                ))?;
            }
            Ok(exit::OK)
        }
        WaitEnd::Finished => {
            let why = match job.errors.last() {
                Some(e) => format!(
                    " after {} attempt(s); last error: {}",
                    job.attempt,
                    indent(&e.message)
                ),
                None => String::new(),
            };
            Err(Failure::new(
                exit::JOB_FAILED,
                format!("job {} {}{why}", job.id, job.state),
            ))
        }
        WaitEnd::TimedOut(after) => Err(Failure::new(
            exit::WAIT_TIMEOUT,
            format!(
                "gave up waiting after {}: job {} is {}",
                format_duration(after),
                job.id,
                job.state
            ),
        )
        .hint(format!(
            "it goes on; follow it with `hinter jobs show {}`",
            job.id
        ))),
        WaitEnd::Interrupted => Err(Failure::new(
            exit::INTERRUPTED,
            format!(
                "stopped waiting: job {} is {} and goes on",
                job.id, job.state
            ),
        )),
    }
}

/// Reads the payload argument: JSON text, `-` for stdin, absent for `null`.
fn read_payload(arg: Option<&str>) -> Result<Value, Failure> {
    let (text, source) = match arg {
        None => return Ok(Value::Null),
        Some("-") => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(|e| {
                let code = if e.kind() == std::io::ErrorKind::InvalidData {
                    exit::USAGE
                } else {
                    exit::IO
                };
                Failure::new(
                    code,
                    format!("cannot read the payload from standard input: {e}"),
                )
            })?;
            (text, "payload from standard input")
        }
        Some(text) => (text.to_string(), "payload"),
    };
    parse_payload(&text, source)
}

fn parse_payload(text: &str, source: &str) -> Result<Value, Failure> {
    serde_json::from_str(text).map_err(|e| {
        let failure = Failure::usage(format!("{source} is not valid JSON: {e}"));
        let looks_like_json = text
            .trim_start()
            .starts_with(|c: char| matches!(c, '{' | '[' | '"' | '-') || c.is_ascii_digit());
        if looks_like_json || text.trim().is_empty() {
            failure
        } else {
            failure.hint(format!(
                "a text payload must be a quoted JSON string: '{}'",
                serde_json::to_string(text.trim()).unwrap_or_default()
            ))
        }
    })
}

enum WaitEnd {
    Finished,
    TimedOut(Duration),
    Interrupted,
}

/// How long one poll may be held by the server; short, so progress shows while a job runs.
const POLL: Duration = Duration::from_secs(1);
/// How long the server may stay unreachable while waiting before giving up.
const OUTAGE_LIMIT: Duration = Duration::from_secs(60);

/// Polls the job until it is finished, the wait times out, or Ctrl-C.
async fn wait_for(
    client: &Client,
    mut job: Job,
    timeout: Option<Duration>,
    progress: &mut Progress,
) -> Result<(Job, WaitEnd), Failure> {
    let start = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut outage_since: Option<Instant> = None;
    progress.update(&job);
    while !job.state.is_finished() {
        let remaining = match timeout {
            Some(t) => match t.checked_sub(start.elapsed()) {
                Some(r) if !r.is_zero() => r,
                _ => return Ok((job, WaitEnd::TimedOut(t))),
            },
            None => Duration::MAX,
        };
        let poll = POLL.min(remaining);
        let asked = Instant::now();
        let answer = tokio::select! {
            answer = client.get_job(job.id, Some(poll)) => answer,
            _ = &mut ctrl_c => return Ok((job, WaitEnd::Interrupted)),
        };
        match answer {
            Ok(current) => {
                outage_since = None;
                job = current;
                progress.update(&job);
            }
            Err(e) if e.is_unavailable() => {
                let since = *outage_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= OUTAGE_LIMIT {
                    return Err(Failure::from(e).context(format!(
                        "stopped waiting for job {} (the job goes on)",
                        job.id
                    )));
                }
                progress.status(&format!("server unavailable, retrying ({e})"));
            }
            Err(e) => return Err(e.into()),
        }
        // A server that answers at once (or an outage) must not make this a busy loop.
        let spent = asked.elapsed();
        if !job.state.is_finished() && spent < poll {
            tokio::select! {
                () = tokio::time::sleep(poll - spent) => {}
                _ = &mut ctrl_c => return Ok((job, WaitEnd::Interrupted)),
            }
        }
    }
    Ok((job, WaitEnd::Finished))
}

/// The progress display of `enqueue --wait` on stderr: on a terminal one line redrawn in
/// place, otherwise one line per change. Attempt errors are always printed as lines.
struct Progress {
    enabled: bool,
    tty: bool,
    start: Instant,
    last: String,
    errors_seen: usize,
    /// A status line is on screen without its newline (terminal only).
    open: bool,
}

impl Progress {
    fn new(enabled: bool, tty: bool) -> Self {
        Self {
            enabled,
            tty,
            start: Instant::now(),
            last: String::new(),
            errors_seen: 0,
            open: false,
        }
    }

    /// A line that stays.
    fn line(&mut self, text: &str) {
        if !self.enabled {
            return;
        }
        self.notice(text);
    }

    /// A line that stays and is shown even with `--quiet`: a failed attempt, so that a
    /// quiet wait through retries does not look like a hang.
    fn notice(&mut self, text: &str) {
        let mut stderr = std::io::stderr().lock();
        if self.open {
            let _ = write!(stderr, "\r\x1b[2K");
            self.open = false;
        }
        let _ = writeln!(stderr, "{text}");
        // Redraw the status under it.
        if self.tty && !self.last.is_empty() {
            drop(stderr);
            let last = std::mem::take(&mut self.last);
            self.status(&last);
        }
    }

    /// The current status: redrawn on a terminal, printed when it changed otherwise.
    fn status(&mut self, text: &str) {
        if !self.enabled {
            return;
        }
        let text = clean(text, false);
        let elapsed = elapsed(self.start.elapsed());
        let mut stderr = std::io::stderr().lock();
        if self.tty {
            let line = truncate(&format!("[{elapsed}] {text}"), 79);
            let _ = write!(stderr, "\r\x1b[2K{line}");
            let _ = stderr.flush();
            self.open = true;
        } else if text != self.last {
            let _ = writeln!(stderr, "[{elapsed}] {text}");
        }
        self.last = text;
    }

    fn update(&mut self, job: &Job) {
        let (new, total) = new_errors(job, self.errors_seen);
        let fresh: Vec<String> = new
            .iter()
            .map(|e| format!("attempt {} failed: {}", e.attempt, indent(&e.message)))
            .collect();
        self.errors_seen = total;
        for line in fresh {
            self.notice(&line);
        }
        self.status(&status_text(job));
    }

    fn finish(&mut self) {
        if self.open {
            let _ = writeln!(std::io::stderr().lock());
            self.open = false;
        }
    }
}

/// One line saying where a job is.
fn status_text(job: &Job) -> String {
    let attempts = format!("{}/{}", job.attempt, job.max_attempts);
    match job.state {
        JobState::Scheduled if job.attempt > 0 => format!(
            "scheduled: retry at {} (attempt {attempts} failed)",
            time(job.run_at)
        ),
        JobState::Scheduled => format!("scheduled for {}", time(job.run_at)),
        JobState::Queued if job.attempt > 0 => {
            format!(
                "queued (attempt {}/{} next)",
                job.attempt + 1,
                job.max_attempts
            )
        }
        JobState::Queued => "queued".to_string(),
        JobState::Running => {
            let worker = job
                .worker_id
                .as_deref()
                .map(|w| format!(" on {w}"))
                .unwrap_or_default();
            let cancel = if job.cancel_requested {
                ", cancel requested"
            } else {
                ""
            };
            let progress = job
                .progress
                .as_ref()
                .map(|p| {
                    let message = p.message.as_deref().map(|m| format!(" {m}"));
                    format!(": {}%{}", percent(p.percent), message.unwrap_or_default())
                })
                .unwrap_or_default();
            format!("running (attempt {attempts}{worker}){cancel}{progress}")
        }
        JobState::Succeeded => format!("succeeded (attempt {attempts})"),
        JobState::Dead => format!("dead after {} attempt(s)", job.attempt),
        JobState::Cancelled => "cancelled".to_string(),
    }
}

/// A progress percent as shown: whole numbers without decimals, others with one.
fn percent(percent: f64) -> String {
    if percent.fract() == 0.0 {
        format!("{percent:.0}")
    } else {
        format!("{percent:.1}")
    }
}

// ---------------------------------------------------------------------------------------------
// jobs, dead

async fn jobs(args: JobsArgs) -> CmdResult {
    let client = args.opts.client()?;
    let json = args.opts.json;
    match args.command {
        JobsCommand::List(list) => {
            let filter = JobFilter {
                state: list.state,
                ..JobFilter::default()
            };
            let page = fetch(&client, filter, &list.page).await?;
            if json {
                out_json(&page)?;
            } else {
                out_table(&jobs_table(&page.jobs), "no jobs found")?;
                more_hint(&page.next_cursor);
            }
        }
        JobsCommand::Logs(logs) => return scripts::logs(&client, logs, json).await,
        JobsCommand::Show { id } => {
            let job = client.get_job(id, None).await?;
            if json {
                out_json(&job)?;
            } else {
                out(&show_job(&job))?;
            }
        }
        JobsCommand::Cancel { id } => {
            let job = client.cancel(id).await?;
            if json {
                out_json(&job)?;
            } else if job.state == JobState::Cancelled {
                out(&format!("cancelled {}\n", job.id))?;
            } else {
                out(&format!(
                    "cancel requested for {} ({}; it ends cancelled when its worker stops it)\n",
                    job.id, job.state
                ))?;
            }
        }
        JobsCommand::Retry { id } => {
            let job = client.retry(id).await?;
            if json {
                out_json(&job)?;
            } else {
                out(&format!("retried {} ({})\n", job.id, job.state))?;
            }
        }
        JobsCommand::Delete { ids } => {
            let mut deleted = Vec::with_capacity(ids.len());
            for id in ids {
                let job = client.delete_job(id).await?;
                if !json {
                    out(&format!("deleted {} ({})\n", job.id, job.state))?;
                }
                deleted.push(job);
            }
            if json {
                out_json(&deleted)?;
            }
        }
    }
    Ok(exit::OK)
}

async fn dead(args: DeadArgs) -> CmdResult {
    let client = args.opts.client()?;
    let json = args.opts.json;
    match args.command {
        DeadCommand::List(page_args) => {
            let filter = JobFilter::default().state(JobState::Dead);
            let page = fetch(&client, filter, &page_args).await?;
            if json {
                out_json(&page)?;
            } else {
                out_table(&dead_table(&page.jobs), "no dead jobs")?;
                more_hint(&page.next_cursor);
            }
            Ok(exit::OK)
        }
        DeadCommand::Retry(retry) => {
            let ids = if retry.all {
                // Collect first: retrying while paging would move the ground under the cursor.
                let filter = JobFilter {
                    state: Some(JobState::Dead),
                    queue: retry.queue,
                    job: retry.job,
                    limit: Some(1000),
                    include: Include::default(),
                };
                let page_args = PageArgs {
                    queue: None,
                    job: None,
                    limit: None,
                    cursor: None,
                    all: true,
                    include: None,
                };
                let page = fetch(&client, filter, &page_args).await?;
                page.jobs.into_iter().map(|j| j.id).collect()
            } else {
                retry.ids
            };
            retry_many(&client, &ids, json).await
        }
    }
}

#[derive(Serialize)]
struct RetryReport {
    retried: Vec<Job>,
    failed: Vec<RetryFailure>,
}

#[derive(Serialize)]
struct RetryFailure {
    id: Uuid,
    error: String,
}

/// Retries each job, going on after a failure; the exit code is that of the first failure.
async fn retry_many(client: &Client, ids: &[Uuid], json: bool) -> CmdResult {
    let mut report = RetryReport {
        retried: Vec::new(),
        failed: Vec::new(),
    };
    let mut code = exit::OK;
    for &id in ids {
        match client.retry(id).await {
            Ok(job) => {
                if !json {
                    out(&format!("retried {} ({})\n", job.id, job.state))?;
                }
                report.retried.push(job);
            }
            Err(e) => {
                if e.is_unavailable() {
                    // Everything after this would fail the same way.
                    return Err(Failure::from(e).context(format!(
                        "retried {} of {} jobs, then",
                        report.retried.len(),
                        ids.len()
                    )));
                }
                let failure = Failure::from(e).context(format!("job {id}"));
                if code == exit::OK {
                    code = failure.code;
                }
                failure.report();
                report.failed.push(RetryFailure {
                    id,
                    error: failure.message,
                });
            }
        }
    }
    if json {
        out_json(&report)?;
    } else if ids.is_empty() {
        note("no dead jobs to retry");
    } else if ids.len() > 1 {
        note(&format!(
            "retried {} of {} jobs",
            report.retried.len(),
            ids.len()
        ));
    }
    Ok(code)
}

/// One page, or with `--all` every page, of a job listing.
async fn fetch(
    client: &Client,
    mut filter: JobFilter,
    page: &PageArgs,
) -> Result<hinter_client::Page, Failure> {
    filter.queue = page.queue.clone().or(filter.queue);
    filter.job = page.job.clone().or(filter.job);
    filter.limit = page.limit.or(filter.limit);
    filter.include = page.include.unwrap_or(filter.include);
    if !page.all {
        return Ok(client.list_jobs(&filter, page.cursor.as_deref()).await?);
    }
    filter.limit = filter.limit.or(Some(1000));
    let mut all = hinter_client::Page {
        jobs: Vec::new(),
        next_cursor: None,
    };
    let mut cursor: Option<String> = None;
    loop {
        let next = client.list_jobs(&filter, cursor.as_deref()).await?;
        all.jobs.extend(next.jobs);
        match next.next_cursor {
            // A cursor that does not move would loop for ever.
            Some(c) if cursor.as_deref() != Some(c.as_str()) => cursor = Some(c),
            _ => return Ok(all),
        }
    }
}

/// Tells how to get the next page (on stderr, so stdout stays the table).
fn more_hint(next_cursor: &Option<String>) {
    if let Some(cursor) = next_cursor {
        note(&format!(
            "more: repeat with --cursor {cursor} for the next page, or use --all"
        ));
    }
}

fn jobs_table(jobs: &[JobSummary]) -> Table {
    let mut table = Table::new(&[
        "ID", "JOB", "QUEUE", "STATE", "ATTEMPT", "PRIO", "RUN AT", "CREATED",
    ])
    .right(&[4, 5]);
    for job in jobs {
        let state = if job.cancel_requested && !job.state.is_finished() {
            format!("{} (cancelling)", job.state)
        } else {
            job.state.to_string()
        };
        table.row(vec![
            job.id.to_string(),
            job.job.clone(),
            job.queue.clone(),
            state,
            format!("{}/{}", job.attempt, job.max_attempts),
            job.priority.to_string(),
            time(job.run_at),
            time(job.created_at),
        ]);
    }
    table
}

/// The errors of `job` not shown yet when `seen` were, and how many it has had in all.
/// Counted with the omitted ones: once the history is full, a new error replaces an old one
/// in its tail and its length stays the same.
fn new_errors(job: &Job, seen: usize) -> (&[hinter_core::AttemptError], usize) {
    let omitted = usize::try_from(job.errors_omitted).unwrap_or(usize::MAX);
    let total = job.errors.len().saturating_add(omitted);
    let new = total.saturating_sub(seen).min(job.errors.len());
    (&job.errors[job.errors.len() - new..], total)
}

fn dead_table(jobs: &[JobSummary]) -> Table {
    let mut table =
        Table::new(&["ID", "JOB", "QUEUE", "ATTEMPTS", "DIED", "LAST ERROR"]).right(&[3]);
    for job in jobs {
        table.row(vec![
            job.id.to_string(),
            job.job.clone(),
            job.queue.clone(),
            format!("{}/{}", job.attempt, job.max_attempts),
            job.finished_at.map(time).unwrap_or_else(|| "-".into()),
            job.last_error
                .as_ref()
                .map(|e| truncate(&e.message, 60))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    table
}

/// `jobs show`: one field a line, then payload, result and errors.
fn show_job(job: &Job) -> String {
    let opt_time = |t: Option<DateTime<Utc>>| t.map(time).unwrap_or_else(|| "-".into());
    let opt = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    // A job waiting for its next attempt keeps the last attempt's start and worker; say so,
    // or it reads as running.
    let waiting = matches!(job.state, JobState::Scheduled | JobState::Queued);
    let last = |value: String| {
        if waiting && value != "-" {
            format!("{value} (last attempt)")
        } else {
            value
        }
    };
    let fields: Vec<(&str, String)> = vec![
        ("id", job.id.to_string()),
        ("job", job.job.clone()),
        ("queue", job.queue.clone()),
        (
            "state",
            if job.cancel_requested && !job.state.is_finished() {
                format!("{} (cancel requested)", job.state)
            } else {
                job.state.to_string()
            },
        ),
        ("attempt", format!("{}/{}", job.attempt, job.max_attempts)),
        ("priority", job.priority.to_string()),
        ("run at", time(job.run_at)),
        ("created at", time(job.created_at)),
        ("started at", last(opt_time(job.started_at))),
        ("finished at", opt_time(job.finished_at)),
        ("worker", last(opt(&job.worker_id))),
        ("lease until", opt_time(job.lease_expires_at)),
        (
            "timeout",
            job.timeout
                .map(format_duration)
                .unwrap_or_else(|| "-".into()),
        ),
        ("unique key", opt(&job.unique_key)),
        ("ordering key", opt(&job.ordering_key)),
        ("singleton", if job.singleton { "yes" } else { "no" }.into()),
        (
            "progress",
            scripts::progress_line(job).unwrap_or_else(|| "-".into()),
        ),
        ("payload", pretty(&job.payload)),
        (
            "result",
            job.result
                .as_ref()
                .map(pretty)
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "checkpoint",
            job.checkpoint
                .as_ref()
                .map(pretty)
                .unwrap_or_else(|| "-".into()),
        ),
    ];
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut text = String::new();
    for (key, value) in fields {
        let value = clean(&value, true).replace('\n', &format!("\n{:width$} ", ""));
        text.push_str(&format!("{:width$} {value}\n", format!("{key}:")));
    }
    if job.errors.is_empty() {
        text.push_str(&format!("{:width$} -\n", "errors:"));
    } else {
        text.push_str("errors:\n");
        for (i, e) in job.errors.iter().enumerate() {
            if i == hinter_core::limits::ERRORS_KEPT_FIRST && job.errors_omitted > 0 {
                text.push_str(&format!(
                    "  … {} more errors omitted …\n",
                    job.errors_omitted
                ));
            }
            text.push_str(&format!(
                "  attempt {} at {}: {}\n",
                e.attempt,
                time(e.at),
                indent(&clean(&e.message, true))
            ));
        }
    }
    text.push_str(&show_runs(&job.runs, width));
    text.push_str(&followups::show(job, width));
    text
}

/// The attempts of a job as a short table, oldest first.
fn show_runs(runs: &[hinter_core::Run], width: usize) -> String {
    if runs.is_empty() {
        return format!("{:width$} -\n", "runs:");
    }
    let mut rows = vec![[
        "ATTEMPT".to_string(),
        "OUTCOME".into(),
        "WORKER".into(),
        "STARTED".into(),
        "DURATION".into(),
        "EXIT".into(),
    ]];
    for run in runs {
        rows.push([
            run.attempt.to_string(),
            run.outcome.to_string(),
            clean(&run.worker_id, false),
            time(run.started_at),
            run.duration_ms
                .map(|ms| format_duration(Duration::from_millis(ms)))
                .unwrap_or_else(|| "-".into()),
            run.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::from("runs:\n");
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:w$}"))
            .collect();
        text.push_str(&format!("  {}\n", cells.join("  ").trim_end()));
    }
    text
}

// ---------------------------------------------------------------------------------------------
// queues

async fn queues(args: QueuesArgs) -> CmdResult {
    let client = args.opts.client()?;
    let json = args.opts.json;
    match args.command {
        QueuesCommand::List => {
            let queues = client.queues().await?;
            if json {
                out_json(&QueuesOut { queues: &queues })?;
            } else {
                let mut table = Table::new(&[
                    "QUEUE",
                    "STATUS",
                    "SCHEDULED",
                    "QUEUED",
                    "RUNNING",
                    "SUCCEEDED",
                    "DEAD",
                    "CANCELLED",
                ])
                .right(&[2, 3, 4, 5, 6, 7]);
                for q in &queues {
                    table.row(vec![
                        q.name.clone(),
                        if q.paused { "paused" } else { "active" }.into(),
                        q.scheduled.to_string(),
                        q.queued.to_string(),
                        q.running.to_string(),
                        q.succeeded.to_string(),
                        q.dead.to_string(),
                        q.cancelled.to_string(),
                    ]);
                }
                out_table(&table, "no queues yet")?;
            }
        }
        QueuesCommand::Pause { name } => {
            let queue = client.pause_queue(&name).await?;
            if json {
                out_json(&queue)?;
            } else {
                out(&format!("paused queue {}\n", queue.name))?;
            }
        }
        QueuesCommand::Resume { name } => {
            let queue = client.resume_queue(&name).await?;
            if json {
                out_json(&queue)?;
            } else {
                out(&format!("resumed queue {}\n", queue.name))?;
            }
        }
        QueuesCommand::Purge { name, states } => {
            let deleted = client.purge_queue(&name, &states).await?;
            if json {
                out_json(&serde_json::json!({ "queue": name, "deleted": deleted }))?;
            } else {
                out(&format!(
                    "deleted {deleted} finished jobs of queue {name}\n"
                ))?;
            }
        }
    }
    Ok(exit::OK)
}

/// `queues list --json`: the API's answer, fields in the API's order.
#[derive(Serialize)]
struct QueuesOut<'a> {
    queues: &'a [hinter_client::QueueInfo],
}

// ---------------------------------------------------------------------------------------------
// Formatting

/// A plain text table: columns two spaces apart, no trailing blanks.
struct Table {
    header: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| h.to_string()).collect(),
            right: vec![false; header.len()],
            rows: Vec::new(),
        }
    }

    /// Right-aligns these columns (numbers).
    fn right(mut self, columns: &[usize]) -> Self {
        for &c in columns {
            if let Some(r) = self.right.get_mut(c) {
                *r = true;
            }
        }
        self
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.iter().map(|c| clean(c, false)).collect());
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut text = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = width.saturating_sub(cell.chars().count());
                if self.right[i] {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

fn out_table(table: &Table, empty: &str) -> Result<(), Failure> {
    if table.is_empty() {
        note(empty);
        Ok(())
    } else {
        out(&table.render())
    }
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// `3.2s`, `1m05s`, `2h03m`.
fn elapsed(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    }
}

/// Replaces control characters (terminal escapes, tabs; newlines unless kept) with spaces,
/// so text from jobs cannot garble the terminal or a table.
fn clean(text: &str, keep_newlines: bool) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && !(keep_newlines && c == '\n') {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// Continuation lines of a multi-line message, indented under its first line.
fn indent(text: &str) -> String {
    text.trim_end().replace('\n', "\n    ")
}

/// At most `max` characters, with `…` when cut; only the first line.
fn truncate(text: &str, max: usize) -> String {
    let first = text.lines().next().unwrap_or("");
    let cut_lines = first.len() < text.trim_end().len();
    match first.char_indices().nth(max.saturating_sub(1)) {
        Some((cut, _)) if first.chars().count() > max => format!("{}…", &first[..cut]),
        _ if cut_lines => format!("{first} …"),
        _ => first.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// events

/// How long one request of `events --follow` waits for new events.
const FOLLOW_WAIT: Duration = Duration::from_secs(30);

async fn events(args: EventsArgs) -> CmdResult {
    if args.after < 0 {
        return Err(Failure::new(
            exit::USAGE,
            format!("--after: {} is not an event id (0 or more)", args.after),
        ));
    }
    let client = args.opts.client()?;
    let filter = hinter_client::EventFilter {
        queue: args.queue,
        job: args.job,
        job_id: args.job_id,
        queues: None,
    };
    let mut after = args.after;
    let mut down = false;
    loop {
        let wait = args.follow.then_some(FOLLOW_WAIT);
        let page = match client.events(after, &filter, Some(1000), wait).await {
            Ok(page) => page,
            // Following outlives a server restart: try again, say so once.
            Err(e @ ApiError::Transport { .. }) if args.follow => {
                if !down {
                    note(&format!("warning: {e}; trying again every second"));
                    down = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if std::mem::take(&mut down) {
            note("the server answers again; following");
        }
        let n = page.events.len();
        let mut text = String::new();
        for event in &page.events {
            if args.opts.json {
                let line = serde_json::to_string(event)
                    .map_err(|e| Failure::new(exit::SOFTWARE, format!("cannot print JSON: {e}")))?;
                text.push_str(&line);
            } else {
                text.push_str(&format!(
                    "{:>8}  {}  {:<16} {} {} {} attempt {}",
                    event.id,
                    event.at.to_rfc3339_opts(SecondsFormat::Millis, true),
                    event.kind.as_str(),
                    event.job_id,
                    event.job,
                    event.queue,
                    event.attempt
                ));
                if !event.data.is_null() {
                    text.push_str(&format!("  {}", event.data));
                }
            }
            text.push('\n');
        }
        if !text.is_empty() {
            out(&text)?;
        }
        after = page.next_after;
        if !args.follow && n < 1000 {
            return Ok(exit::OK);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(Debug, Subcommand)]
    enum Top {
        Serve,
        #[command(flatten)]
        Client(ClientCommand),
    }

    fn parse(args: &[&str]) -> Result<ClientCommand, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("hinter").chain(args.iter().copied()))?;
        match cli.command {
            Top::Client(c) => Ok(c),
            Top::Serve => panic!("not a client command"),
        }
    }

    #[test]
    fn clap_definitions_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn enqueue_parses_options_anywhere() {
        let cmd = parse(&[
            "enqueue",
            "thumbnail",
            r#"{"src":"a.png"}"#,
            "--queue",
            "media",
            "--priority",
            "-5",
            "--delay",
            "30s",
            "--json",
            "--server",
            "http://h:1",
            "--wait",
            "--wait-timeout",
            "2m",
        ])
        .unwrap();
        let ClientCommand::Enqueue(args) = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(args.job, "thumbnail");
        assert_eq!(args.priority, Some(-5));
        assert_eq!(args.delay, Some(Duration::from_secs(30)));
        assert_eq!(args.wait_timeout, Some(Duration::from_secs(120)));
        assert!(args.opts.json && args.wait);
        assert_eq!(args.opts.server, "http://h:1");
    }

    #[test]
    fn global_options_reach_subcommands() {
        let cmd = parse(&["jobs", "list", "--state", "dead", "--json", "--all"]).unwrap();
        let ClientCommand::Jobs(args) = cmd else {
            panic!("{cmd:?}")
        };
        assert!(args.opts.json);
        let JobsCommand::List(list) = args.command else {
            panic!()
        };
        assert_eq!(list.state, Some(JobState::Dead));
        assert!(list.page.all);

        let cmd = parse(&["queues", "--server", "http://x:2", "pause", "media"]).unwrap();
        let ClientCommand::Queues(args) = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(args.opts.server, "http://x:2");
    }

    #[test]
    fn usage_errors() {
        for bad in [
            vec!["enqueue", "x", "--delay", "10x"],
            vec![
                "enqueue",
                "x",
                "--delay",
                "1s",
                "--at",
                "2026-11-24T10:00:00Z",
            ],
            vec!["enqueue", "x", "--at", "tomorrow"],
            vec!["enqueue", "x", "--unique-for", "1m"],
            vec!["enqueue", "x", "--wait-timeout", "1m"],
            vec!["jobs", "show", "not-a-uuid"],
            vec!["jobs", "list", "--state", "done"],
            vec!["jobs", "list", "--limit", "0"],
            vec!["jobs", "list", "--all", "--cursor", "3"],
            vec!["dead", "retry"],
            vec!["dead", "retry", "--queue", "q"],
        ] {
            let err = parse(&bad).expect_err(&format!("{bad:?} should be refused"));
            assert_eq!(err.exit_code(), i32::from(exit::USAGE), "{bad:?}");
        }
        assert!(parse(&["dead", "retry", "--all", "--queue", "q"]).is_ok());
    }

    #[test]
    fn payloads() {
        assert_eq!(read_payload(None).unwrap(), Value::Null);
        assert_eq!(
            read_payload(Some(r#"{"a": [1, 2]}"#)).unwrap(),
            serde_json::json!({"a": [1, 2]})
        );
        let err = read_payload(Some("hello")).unwrap_err();
        assert_eq!(err.code, exit::USAGE);
        assert!(err.message.contains("not valid JSON"), "{}", err.message);
        assert!(err.hint.unwrap().contains(r#"'"hello"'"#));
        let err = read_payload(Some(r#"{"a": }"#)).unwrap_err();
        assert!(err.message.contains("column"), "{}", err.message);
        assert!(err.hint.is_none());
    }

    #[test]
    fn exit_codes_for_api_errors() {
        let api = |status| ApiError::Api {
            status,
            code: String::new(),
            message: String::new(),
        };
        assert_eq!(exit_code_for(&api(400)), exit::USAGE);
        assert_eq!(exit_code_for(&api(422)), exit::USAGE);
        assert_eq!(exit_code_for(&api(413)), exit::USAGE);
        assert_eq!(exit_code_for(&api(404)), exit::NOT_FOUND);
        assert_eq!(exit_code_for(&api(409)), exit::CONFLICT);
        assert_eq!(exit_code_for(&api(401)), exit::NO_PERMISSION);
        assert_eq!(exit_code_for(&api(503)), exit::UNAVAILABLE);
        assert_eq!(exit_code_for(&api(500)), exit::SOFTWARE);
        let transport = ApiError::Transport {
            url: "http://127.0.0.1:1".into(),
            reason: "refused".into(),
            timed_out: false,
            connect_failed: true,
        };
        assert_eq!(exit_code_for(&transport), exit::UNAVAILABLE);
        let failure = Failure::from(transport);
        assert!(failure.message.contains("http://127.0.0.1:1"));
        assert!(failure.hint.is_some());
    }

    /// A job as the API shows it after `failures` failed attempts with the kept history.
    fn failed_job(failures: usize) -> Job {
        use hinter_core::limits::{ERRORS_KEPT_FIRST, ERRORS_KEPT_LAST};
        let keep = ERRORS_KEPT_FIRST + ERRORS_KEPT_LAST;
        let attempts: Vec<usize> = if failures <= keep {
            (1..=failures).collect()
        } else {
            (1..=ERRORS_KEPT_FIRST)
                .chain(failures + 1 - ERRORS_KEPT_LAST..=failures)
                .collect()
        };
        let errors: Vec<Value> = attempts
            .iter()
            .map(|a| serde_json::json!({"attempt": a, "at": "2026-01-01T00:00:00Z", "message": format!("e{a}")}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "id": "0190a4b2-0000-7000-8000-000000000001", "job": "j", "queue": "default",
            "payload": null, "state": "scheduled", "priority": 0, "attempt": failures,
            "max_attempts": 100, "run_at": "2026-01-01T00:00:00Z",
            "created_at": "2026-01-01T00:00:00Z", "started_at": null, "finished_at": null,
            "unique_key": null, "ordering_key": null, "timeout": null, "singleton": false,
            "cancel_requested": false, "worker_id": null, "lease_expires_at": null,
            "errors": errors, "errors_omitted": failures.saturating_sub(keep), "result": null
        }))
        .unwrap()
    }

    #[test]
    fn new_errors_counts_omitted_ones() {
        let messages = |errors: &[hinter_core::AttemptError]| -> Vec<String> {
            errors.iter().map(|e| e.message.clone()).collect()
        };
        let (few, many) = (failed_job(3), failed_job(31));
        let (new, total) = new_errors(&few, 1);
        assert_eq!((messages(new), total), (vec!["e2".into(), "e3".into()], 3));
        // The history is full: the 30th and 31st errors still show as new.
        let (new, total) = new_errors(&many, 29);
        assert_eq!(
            (messages(new), total),
            (vec!["e30".into(), "e31".into()], 31)
        );
        let (new, _) = new_errors(&many, 31);
        assert!(new.is_empty());
        let shown = show_job(&many);
        assert!(shown.contains("attempt 5 at"), "{shown}");
        assert!(
            shown.contains("… 6 more errors omitted …\n  attempt 12 at"),
            "{shown}"
        );
    }

    #[test]
    fn show_lists_the_runs_oldest_first() {
        let mut job = failed_job(1);
        assert!(
            show_job(&job).contains("runs:         -\n"),
            "{}",
            show_job(&job)
        );
        job.runs = serde_json::from_value(serde_json::json!([
            {"attempt": 1, "worker_id": "host-1:4711", "started_at": "2026-11-24T10:00:00Z",
             "finished_at": "2026-11-24T10:00:02Z", "outcome": "failed", "error": "e1",
             "exit_code": 3, "duration_ms": 2000},
            {"attempt": 2, "worker_id": "w2", "started_at": "2026-11-24T10:00:05Z",
             "finished_at": null, "outcome": "running", "error": null, "exit_code": null,
             "duration_ms": null}
        ]))
        .unwrap();
        let shown = show_job(&job);
        assert!(
            shown.ends_with(
                "runs:\n\
                 \x20 ATTEMPT  OUTCOME  WORKER       STARTED               DURATION  EXIT\n\
                 \x20 1        failed   host-1:4711  2026-11-24T10:00:00Z  2s        3\n\
                 \x20 2        running  w2           2026-11-24T10:00:05Z  -         -\n"
            ),
            "{shown}"
        );
    }

    #[test]
    fn tables_align() {
        let mut table = Table::new(&["ID", "N", "NAME"]).right(&[1]);
        table.row(vec!["a".into(), "5".into(), "x".into()]);
        table.row(vec![
            "bbbb".into(),
            "12345".into(),
            "line\nbreak\x1b[31m".into(),
        ]);
        assert_eq!(
            table.render(),
            "ID        N  NAME\n\
             a         5  x\n\
             bbbb  12345  line break [31m\n"
        );
    }

    #[test]
    fn text_helpers() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("abcdefghij", 5), "abcd…");
        assert_eq!(truncate("first\nsecond", 60), "first …");
        assert_eq!(elapsed(Duration::from_millis(3200)), "3.2s");
        assert_eq!(elapsed(Duration::from_secs(65)), "1m05s");
        assert_eq!(elapsed(Duration::from_secs(7380)), "2h03m");
    }
}
