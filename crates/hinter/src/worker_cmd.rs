//! `hinter worker`: the worker role. Runs a command for each job of some queues
//! (`docs/worker.md`), in one of two modes:
//!
//! - **HTTP mode** (`--server URL`, the default): leases jobs from a hinter server over the
//!   HTTP worker protocol (`docs/http-api.md`). This file.
//! - **Store mode** (`--database URL` or `--data-dir DIR`): leases straight from the store
//!   that `hinter serve` processes share, with the engine's worker, and takes part in
//!   membership and leader election. `worker_store.rs`.
//!
//! Both modes are the engine's [`hinter_engine::Worker`] with one fallback handler that runs
//! the command (`worker_store.rs`, `exec.rs`); only the job source differs: a
//! [`hinter_engine::HttpSource`] (leases long-poll the server; cancel requests arrive in
//! heartbeat answers) or the store. So both behave the same: outcomes, heartbeats, timeouts,
//! cancellation, and a graceful stop that hands unfinished jobs back uncounted.

use crate::config::FileOrigin;
use crate::exec::{self, JobCommand};
use crate::serve::{ClusterArgs, MaintenanceArgs, StoreArgs};
use anyhow::Context;
use clap::parser::ValueSource;
use clap::ArgMatches;
use hinter_client::{Client, WorkerReport};
use hinter_engine::HttpSource;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal as SignalStream, SignalKind};

/// Long-poll of one lease request: an idle worker wakes as soon as a job is ready. Short,
/// because a stopping worker lets its open lease request end before it stops.
const LEASE_WAIT: Duration = Duration::from_secs(1);

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
anything else fails and is retried. See docs/worker.md.

With --jobs-dir DIR the worker runs the script jobs of DIR (triggered/NAME/ folders, \
reloaded as they change; docs/scripts.md) and COMMAND is optional.")]
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

    /// PEM file of the CA that signed an https:// server's certificate, trusted besides
    /// the system's root certificates
    #[arg(long, env = "HINTER_CA_FILE", value_name = "PEM", help_heading = HTTP_MODE)]
    pub ca_file: Option<PathBuf>,

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

    /// Folder of script jobs (triggered/NAME/; docs/scripts.md) to run, watched for
    /// changes; then COMMAND is optional and runs every other job of the queues
    #[arg(
        long,
        env = "HINTER_JOBS_DIR",
        value_name = "DIR",
        help_heading = "Both modes"
    )]
    pub jobs_dir: Option<PathBuf>,

    /// The command run for each job, with its arguments (after `--`)
    #[arg(
        last = true,
        required_unless_present = "jobs_dir",
        value_name = "COMMAND",
        help_heading = "Arguments"
    )]
    pub command: Vec<OsString>,

    /// Whether --queue was given (command line, environment or file) rather than defaulted:
    /// a worker of script jobs alone otherwise leases from their queues.
    #[arg(skip)]
    pub queues_given: bool,
}

/// Where a setting that picks the worker's mode was given, highest precedence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    CommandLine,
    Env,
    FileSection,
    FileTop,
    Unset,
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
    /// default). The mode is chosen where it is named with the highest precedence: command
    /// line, environment, the file's `[worker]` section, the file's top level. Both modes at
    /// one level is a usage error, and so is a flag of the other mode given on the command
    /// line. `matches` are the subcommand's, for where each value came from; `file_origin`
    /// tells where in hinter.toml a value that is not a built-in default came from.
    pub fn mode(
        &self,
        matches: &ArgMatches,
        file_origin: impl Fn(&str) -> Option<FileOrigin>,
    ) -> Result<Mode, String> {
        // One lease names every queue, so the lease's bound is the worker's. The names
        // themselves are checked by the server (HTTP mode) or the engine (store mode).
        hinter_core::limits::check_lease_queue_count("--queue", &self.queues)
            .map_err(|e| e.to_string())?;
        let source = |id: &str| matches.value_source(id);
        let on_command_line = |id: &str| source(id) == Some(ValueSource::CommandLine);
        let level = |id: &str| match source(id) {
            Some(ValueSource::CommandLine) => Level::CommandLine,
            Some(ValueSource::EnvVariable) => Level::Env,
            Some(ValueSource::DefaultValue) => match file_origin(id) {
                Some(FileOrigin::Section) => Level::FileSection,
                Some(FileOrigin::TopLevel) => Level::FileTop,
                None => Level::Unset,
            },
            _ => Level::Unset,
        };
        let store_level = level("database").min(level("data_dir"));
        let server_level = level("server");
        if store_level == server_level && store_level != Level::Unset {
            return Err(match store_level {
                Level::CommandLine => "--server (HTTP mode) cannot be used with --database or \
                     --data-dir (store mode): choose one"
                    .to_string(),
                Level::Env => "HINTER_SERVER (HTTP mode) and HINTER_DATABASE_URL or \
                     HINTER_DATA_DIR (store mode) are both set: choose with --server or \
                     --database/--data-dir"
                    .to_string(),
                Level::FileSection => "the config file's [worker] section sets both server \
                     (HTTP mode) and database or data_dir (store mode): keep one"
                    .to_string(),
                _ => "the config file sets both server (HTTP mode) and database or data_dir \
                     (store mode) at the top level: choose one in its [worker] section, or \
                     with --server or --database/--data-dir"
                    .to_string(),
            });
        }
        let store = store_level < server_level;
        if store {
            if on_command_line("token") {
                return Err("--token is for the HTTP mode (--server); in store mode \
                     (--database/--data-dir) the worker talks to the store directly"
                    .to_string());
            }
            if on_command_line("ca_file") {
                return Err(
                    "--ca-file is for an https:// server (--server); in store mode \
                     TLS to PostgreSQL is set in the URL (sslmode, sslrootcert)"
                        .to_string(),
                );
            }
            Ok(Mode::Store(StoreArgs {
                data_dir: self
                    .data_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("./hinter-data")),
                database: self.database.clone(),
                schema: self.schema.clone(),
                durability: self.durability.clone(),
                clock_offset: chrono::Duration::zero(),
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
            .map(JobCommand::directives_only)
            .context("no COMMAND given: `hinter worker [OPTIONS] -- COMMAND [ARGS...]`")
    }

    /// The command, if one was given (with --jobs-dir it is optional).
    pub fn job_command_if_any(&self) -> anyhow::Result<Option<JobCommand>> {
        if self.command.is_empty() && self.jobs_dir.is_some() {
            return Ok(None);
        }
        self.job_command().map(Some)
    }

    /// The queues to lease from: --queue, or with script jobs alone and no --queue, none
    /// named (the scripts' own queues).
    pub fn lease_queues(&self) -> Vec<String> {
        if self.command.is_empty() && self.jobs_dir.is_some() && !self.queues_given {
            Vec::new()
        } else {
            self.queues.clone()
        }
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

/// HTTP mode: the engine's worker on an [`HttpSource`], until SIGTERM/SIGINT (then `Ok`) or
/// until the server refuses to lease (a 4xx answer: wrong queue name, token…; then `Err`
/// after the running jobs are handled).
async fn run_http(args: WorkerArgs, server: String) -> anyhow::Result<()> {
    let mut client = Client::builder(&server).token(args.token.clone());
    if let Some(ca_file) = &args.ca_file {
        client = client.ca_file(ca_file);
    }
    let client = client.build()?;
    // What a lease may name, checked before anything starts (as in store mode).
    hinter_core::limits::check_lease_queues("--queue", &args.queues)?;
    let worker_id = args.worker_id.clone().unwrap_or_else(default_worker_id);
    let signals = StopSignals::listen()?;
    let where_ = format!("server {}", client.base_url());
    let report = WorkerReport {
        host: hinter_engine::hostname(),
        pid: std::process::id(),
        queues: args.queues.clone(),
        concurrency: args.concurrency,
        started_at: chrono::Utc::now(),
    };
    // The first report also checks the token, so a worker the server will not serve stops
    // at once with a clear message (exit 77), before taking any job.
    if let Err(e) = client.report_worker(&worker_id, &report).await {
        if matches!(e.status(), Some(401 | 403)) {
            return Err(anyhow::Error::new(e).context(format!(
                "the server {} refused this worker; pass a token with the work scope \
                 (--token or HINTER_TOKEN)",
                client.base_url()
            )));
        }
        tracing::debug!(error = %e, "could not report this worker to the server");
    }
    let membership = exec::AbortOnDrop(tokio::spawn(report_alive(
        client.clone(),
        worker_id.clone(),
        report,
    )));
    let source = Arc::new(HttpSource::new(client.clone(), LEASE_WAIT));
    let outcome =
        crate::worker_store::run_worker(&args, source, worker_id.clone(), signals, &where_).await;
    drop(membership);
    if let Err(e) = client.remove_worker(&worker_id).await {
        tracing::debug!(error = %e, "could not leave the server's list of workers");
    }
    outcome
}

/// How often an HTTP-mode worker reports itself to `GET /api/v1/workers` (the server forgets
/// processes silent for `--dead-after`, 30 s by default).
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Reports this worker alive every [`REPORT_EVERY`]. Failures are only logged: leasing says
/// loudly enough when the server is away.
async fn report_alive(client: Client, id: String, report: WorkerReport) {
    loop {
        if let Err(e) = client.report_worker(&id, &report).await {
            tracing::debug!(error = %e, "could not report this worker to the server");
        }
        tokio::time::sleep(REPORT_EVERY).await;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
        cli.args.mode(&matches, |_| None)
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

    /// The mode `hinter worker ARGV` picks with `toml` as hinter.toml.
    fn mode_with_file(toml: &str, argv: &[&str]) -> Result<Mode, String> {
        use clap::{CommandFactory, FromArgMatches};
        let file = crate::config::ConfigFile::parse(std::path::Path::new("hinter.toml"), toml)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut layered = crate::config::Layered::new(crate::Cli::command(), Some(file))
            .unwrap_or_else(|e| panic!("{e}"));
        let argv = ["hinter", "worker"]
            .iter()
            .chain(argv)
            .chain(&["--", "true"]);
        let matches = layered
            .command
            .try_get_matches_from_mut(argv)
            .unwrap_or_else(|e| panic!("{e}"));
        let sub = matches.subcommand_matches("worker").expect("worker");
        let args = WorkerArgs::from_arg_matches(sub).unwrap_or_else(|e| panic!("{e}"));
        let path = ["worker".to_string()];
        args.mode(sub, |id| layered.file_origin(&path, id))
    }

    #[test]
    fn the_mode_follows_the_file() {
        match mode_with_file("data_dir = \"/srv/d\"\n", &[]) {
            Ok(Mode::Store(store)) => assert_eq!(store.data_dir, PathBuf::from("/srv/d")),
            other => panic!("{other:?}"),
        }
        // [worker] beats the top level.
        let file = "data_dir = \"/srv/d\"\n[worker]\nserver = \"http://h:1\"\n";
        match mode_with_file(file, &[]) {
            Ok(Mode::Http { server }) => assert_eq!(server, "http://h:1"),
            other => panic!("{other:?}"),
        }
        let file = "server = \"http://h:1\"\n[worker]\ndatabase = \"postgres://db/x\"\n";
        match mode_with_file(file, &[]) {
            Ok(Mode::Store(store)) => {
                assert_eq!(store.database.as_deref(), Some("postgres://db/x"))
            }
            other => panic!("{other:?}"),
        }
        // A flag beats the file.
        match mode_with_file("data_dir = \"/srv/d\"\n", &["--server", "http://h:2"]) {
            Ok(Mode::Http { server }) => assert_eq!(server, "http://h:2"),
            other => panic!("{other:?}"),
        }
        let both = mode_with_file("server = \"http://h:1\"\ndata_dir = \"/srv/d\"\n", &[]);
        assert!(both.is_err_and(|e| e.contains("at the top level")));
        let both = mode_with_file("[worker]\nserver = \"http://h:1\"\ndata_dir = \"d\"\n", &[]);
        assert!(both.is_err_and(|e| e.contains("[worker] section sets both")));
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
