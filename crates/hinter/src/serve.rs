//! `hinter serve`: API, maintenance and workers in one process on one store.

use anyhow::{bail, Context};
use hinter_core::{format_duration, Backend, Clock, ProcessInfo, SystemClock};
use hinter_engine::{
    ClusterOptions, Coordinator, Maintenance, MaintenanceOptions, Registry, Retention, Worker,
    WorkerOptions,
};
use hinter_postgres::{PostgresOptions, PostgresStore};
use hinter_server::{AppState, ConnLimits, ServerConfig};
use hinter_sqlite::{Durability, SqliteOptions, SqliteStore};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where the store lives.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Directory of the embedded SQLite store (created if missing).
    #[arg(long, env = "HINTER_DATA_DIR", default_value = "./hinter-data")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL (postgres://user:password@host:port/db) to share one store between
    /// many processes on many machines. Overrides --data-dir.
    #[arg(long, env = "HINTER_DATABASE_URL")]
    pub database: Option<String>,
    /// PostgreSQL schema holding hinter's tables (created if missing).
    #[arg(long, env = "HINTER_DATABASE_SCHEMA", default_value = hinter_postgres::DEFAULT_SCHEMA)]
    pub schema: String,
    /// `full`: every acknowledgement is fsynced; `relaxed`: faster, but the last
    /// acknowledged jobs may be lost on power failure or OS crash.
    #[arg(long, env = "HINTER_DURABILITY", default_value = "full", value_parser = ["full", "relaxed"])]
    pub durability: String,
    /// Runs this process on a clock moved by this much (`30s`, `-30s`): the clock-skew tests
    /// stand in for a machine whose clock is wrong with it. Hidden: not for production.
    #[arg(long, env = "HINTER_CLOCK_OFFSET", default_value = "0s", value_parser = parse_offset, allow_hyphen_values = true, hide = true)]
    pub clock_offset: chrono::Duration,
}

/// A signed duration: `30s`, `-1.5s`.
fn parse_offset(s: &str) -> Result<chrono::Duration, String> {
    let (negative, magnitude) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let d = parse_duration(magnitude)?;
    let d = chrono::Duration::from_std(d).map_err(|e| e.to_string())?;
    Ok(if negative { -d } else { d })
}

impl StoreArgs {
    /// The clock of this process: the wall clock, moved by `--clock-offset`.
    pub fn clock(&self) -> Arc<dyn Clock> {
        if self.clock_offset.is_zero() {
            Arc::new(SystemClock)
        } else {
            Arc::new(hinter_core::ShiftedClock {
                offset: self.clock_offset,
            })
        }
    }

    /// The flags that name this store again, for commands in messages (password hidden).
    pub fn flags(&self) -> String {
        match &self.database {
            Some(url) if self.schema != hinter_postgres::DEFAULT_SCHEMA => {
                format!("--database '{}' --schema {}", redact(url), self.schema)
            }
            Some(url) => format!("--database '{}'", redact(url)),
            None => format!("--data-dir {}", self.data_dir.display()),
        }
    }

    /// The store in a log line: the data dir, or the database (password hidden) and schema.
    pub fn describe(&self) -> String {
        match &self.database {
            Some(url) => format!("{} (schema {})", redact(url), self.schema),
            None => format!("{}", self.data_dir.display()),
        }
    }

    /// Opens the configured store, with an error that says what to fix.
    pub async fn open(&self) -> anyhow::Result<Arc<dyn Backend>> {
        if let Some(url) = &self.database {
            let store = PostgresStore::connect(url, self.postgres_options()?)
                .await
                .with_context(|| format!("cannot use the database {}", redact(url)))?;
            return Ok(Arc::new(store));
        }
        let durability = match self.durability.as_str() {
            "relaxed" => Durability::Relaxed,
            _ => Durability::Full,
        };
        let store = open_sqlite(&self.data_dir, durability).await?;
        Ok(Arc::new(store))
    }
}

impl StoreArgs {
    fn postgres_options(&self) -> anyhow::Result<PostgresOptions> {
        if self.durability != "full" {
            bail!(
                "--durability {}: only the embedded store has a relaxed mode; PostgreSQL \
                 commits are always durable (synchronous_commit=on)",
                self.durability
            );
        }
        Ok(PostgresOptions {
            schema: Some(self.schema.clone()),
            clock: self.clock(),
            ..PostgresOptions::default()
        })
    }

    /// Brings the store's schema up to date without starting anything; returns the schema
    /// version and where the store is.
    pub async fn migrate(&self) -> anyhow::Result<(i64, String)> {
        if let Some(url) = &self.database {
            let version = PostgresStore::migrate(url, &self.postgres_options()?)
                .await
                .with_context(|| format!("cannot migrate the database {}", redact(url)))?;
            return Ok((version, format!("{} (schema {})", redact(url), self.schema)));
        }
        open_sqlite(&self.data_dir, Durability::Full).await?;
        Ok((
            hinter_sqlite::SCHEMA_VERSION,
            self.data_dir.join("hinter.db").display().to_string(),
        ))
    }
}

/// Hides a password in a database URL before it is shown anywhere.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

pub async fn open_sqlite(dir: &Path, durability: Durability) -> anyhow::Result<SqliteStore> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
    let probe = dir.join(".hinter-write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("the data dir {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    let options = SqliteOptions {
        durability,
        ..SqliteOptions::default()
    };
    SqliteStore::open(&dir.join("hinter.db"), options)
        .await
        .with_context(|| format!("cannot open the store in {}", dir.display()))
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address the HTTP API listens on: IP:PORT or HOST:PORT (`localhost:7433`).
    #[arg(long, env = "HINTER_LISTEN", default_value = "127.0.0.1:7433")]
    pub listen: String,
    /// Largest request body for one job, in bytes (also each item of a batch, each outcome).
    #[arg(long, env = "HINTER_MAX_JOB_BYTES", default_value_t = 1024 * 1024, value_parser = parse_byte_limit)]
    pub max_job_bytes: usize,
    /// Largest batch body (a batch enqueue, a worker's outcomes), in bytes.
    #[arg(long, env = "HINTER_MAX_BATCH_BYTES", default_value_t = 64 * 1024 * 1024, value_parser = parse_byte_limit)]
    pub max_batch_bytes: usize,
    /// How long an enqueue's Idempotency-Key answers a retry with the first answer
    /// (1s to 3650d).
    #[arg(long, env = "HINTER_IDEMPOTENCY_TTL", default_value = "24h", value_parser = parse_idempotency_ttl)]
    pub idempotency_ttl: Duration,
    /// Longest long-poll (`wait`) of `GET /api/v1/jobs/{id}`, `POST /api/v1/leases` and
    /// `GET /api/v1/events`: a longer wait asked for is cut to it (1ms to 1h).
    #[arg(long, env = "HINTER_MAX_WAIT", default_value = "60s", value_parser = parse_max_wait)]
    pub max_wait: Duration,
    /// Serve without API tokens on an address beyond loopback (for a gateway in front that
    /// authenticates requests). Without it, such a listen address needs a token
    /// (`hinter tokens create`).
    #[arg(long, env = "HINTER_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    #[command(flatten)]
    pub connections: ConnectionArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub maintenance: MaintenanceArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub jobs: HostedArgs,
    #[command(flatten)]
    pub hooks: HookArgs,
    #[command(flatten)]
    pub callbacks: crate::callbacks::CallbackArgs,
    /// API tokens declared in `hinter.toml` (`[[tokens]]`), besides those in the store.
    #[arg(skip)]
    pub declared_tokens: Vec<hinter_core::access::NewToken>,
}

/// How `serve` runs the jobs it has handlers for (script jobs): the engine's worker in
/// process, with the same graceful stop as `hinter worker`.
#[derive(Debug, Clone, clap::Args)]
pub struct HostedArgs {
    /// Jobs this server runs at once, of the jobs it has handlers for.
    #[arg(long, env = "HINTER_CONCURRENCY", value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub concurrency: u32,
    /// After SIGTERM/SIGINT, how long the jobs this server runs may go on before they are
    /// stopped and handed back to the queue.
    #[arg(long, env = "HINTER_STOPPING_WAIT_TIME", value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub stopping_wait_time: Duration,
    /// Folder of script jobs (triggered/NAME/, continuous/NAME/; docs/scripts.md), watched
    /// for changes. Must exist when given [default: ./jobs, if it exists]
    #[arg(long, env = "HINTER_JOBS_DIR", value_name = "DIR")]
    pub jobs_dir: Option<PathBuf>,
}

/// HTTP hooks (`POST /hooks/{job}`) that senders sign instead of sending a token.
#[derive(Debug, Clone, clap::Args)]
pub struct HookArgs {
    /// Lets POST /hooks/JOB be signed instead of carrying a token: JOB=ENV_VAR names the
    /// environment variable holding that hook's secret; requests then carry the HMAC-SHA256
    /// of their body under it in --hook-signature-header. Repeat for more hooks.
    #[arg(
        long = "hook-secret",
        env = "HINTER_HOOK_SECRET",
        value_name = "JOB=ENV_VAR",
        value_delimiter = ','
    )]
    pub hook_secret: Vec<String>,
    /// The request header signed hooks carry their signature in (hex, `sha256=` allowed).
    #[arg(
        long,
        env = "HINTER_HOOK_SIGNATURE_HEADER",
        value_name = "HEADER",
        default_value = "X-Hub-Signature-256"
    )]
    pub hook_signature_header: String,
}

impl HookArgs {
    /// The hooks' secrets, read from the variables named; a missing or empty one is an error
    /// naming it.
    pub fn config(&self) -> anyhow::Result<hinter_server::hooks::HookConfig> {
        let header = axum_header_name(&self.hook_signature_header)?;
        let mut secrets = std::collections::BTreeMap::new();
        for item in &self.hook_secret {
            let Some((job, var)) = item.split_once('=') else {
                bail!("--hook-secret {item:?}: expected JOB=ENV_VAR");
            };
            hinter_core::definition::validate_name("job", job)
                .map_err(|e| anyhow::anyhow!("--hook-secret {item:?}: {e}"))?;
            let secret = std::env::var(var).unwrap_or_default();
            if secret.is_empty() {
                bail!(
                    "--hook-secret {item:?}: the environment variable {var} is not set or empty; \
                     it must hold the hook's secret"
                );
            }
            secrets.insert(job.to_string(), secret.into_bytes());
        }
        Ok(hinter_server::hooks::HookConfig {
            secrets,
            signature_header: header,
        })
    }
}

/// A header name as HTTP allows it, in lower case.
fn axum_header_name(name: &str) -> anyhow::Result<String> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid {
        bail!("--hook-signature-header {name:?}: not a valid HTTP header name");
    }
    Ok(name.to_ascii_lowercase())
}

/// HTTPS for the API: both files, or neither (plain HTTP).
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// Serve HTTPS with this PEM certificate chain (the server's certificate first, then
    /// intermediates); needs --tls-key
    #[arg(long, env = "HINTER_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1)
    #[arg(long, env = "HINTER_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The loaded certificate and key, `None` for plain HTTP.
    pub fn config(&self) -> anyhow::Result<Option<hinter_server::TlsConfig>> {
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => hinter_server::TlsConfig::from_pem_files(cert, key)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("--tls-cert/--tls-key: {e}")),
            (Some(_), None) => bail!(
                "--tls-cert needs --tls-key (HINTER_TLS_KEY) too: the certificate's private key"
            ),
            (None, Some(_)) => bail!(
                "--tls-key needs --tls-cert (HINTER_TLS_CERT) too: the certificate of that key"
            ),
        }
    }
}

/// On top of the longest `stopping_wait_time` a script may have: time for a stopped
/// script's end to be read before the engine gives up on its attempt.
pub const SCRIPT_STOP_MARGIN: Duration = Duration::from_secs(2);

/// Limits on HTTP connections, so idle or slow clients cannot use up the process's files.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// Most HTTP connections served at once; past it, a small reserve answers only
    /// /healthz and /readyz (503 for the rest) and further connections are closed.
    /// Default: 10000, or less when the open file limit (ulimit -n) is lower.
    #[arg(long, env = "HINTER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Close a keep-alive connection with no request under way for this long. A request
    /// being handled (long-polls included) is never cut by it.
    #[arg(long, env = "HINTER_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Close a connection whose request headers are not complete this long after they began.
    #[arg(long, env = "HINTER_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// Answer 408 when a request body has not arrived whole this long after its headers.
    #[arg(long, env = "HINTER_BODY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// Most Server-Sent-Events streams (GET /api/v1/events with Accept: text/event-stream)
    /// open at once; past it they get 503 with Retry-After. 0: no event streams; at most
    /// 1,000,000 (each is a connection).
    #[arg(long, env = "HINTER_MAX_EVENT_STREAMS", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(0..=MAX_EVENT_STREAMS))]
    pub max_event_streams: u32,
}

impl ConnectionArgs {
    /// How often an event stream with nothing to send sends a keep-alive comment: every
    /// 15 s, or more often when the idle timeout is shorter, so it never cuts a stream.
    pub fn event_keep_alive(&self) -> Duration {
        Duration::from_secs(15).min(self.idle_timeout / 2)
    }
}

/// Largest `--max-connections`: far above what one process can hold open, and far below
/// what a semaphore can count.
const MAX_CONNECTIONS: usize = 1_000_000;

/// Open files kept for everything but HTTP connections (store, logs, the health reserve).
const FILES_KEPT: u64 = 256;

impl ConnectionArgs {
    /// The limits, checked for sense.
    pub fn limits(&self) -> anyhow::Result<ConnLimits> {
        for (flag, value) in [
            ("--idle-timeout", self.idle_timeout),
            ("--header-timeout", self.header_timeout),
            ("--body-timeout", self.body_timeout),
        ] {
            if value.is_zero() {
                bail!("{flag} 0: must be longer than 0");
            }
        }
        let file_limit = open_file_limit();
        let max_connections = match self.max_connections {
            Some(n) if !(1..=MAX_CONNECTIONS).contains(&n) => {
                bail!("--max-connections {n}: must be from 1 to {MAX_CONNECTIONS}")
            }
            Some(n) => {
                if let Some(files) =
                    file_limit.filter(|f| (n as u64).saturating_add(FILES_KEPT) > *f)
                {
                    tracing::warn!(
                        max_connections = n,
                        open_file_limit = files,
                        "--max-connections is close to or above the open file limit (ulimit -n): \
                         connections past the limit fail to be accepted"
                    );
                }
                n
            }
            None => default_max_connections(file_limit),
        };
        Ok(ConnLimits {
            max_connections,
            idle_timeout: self.idle_timeout,
            header_timeout: self.header_timeout,
        })
    }
}

/// 10,000, or fewer when the open file limit leaves less room beside [`FILES_KEPT`].
fn default_max_connections(file_limit: Option<u64>) -> usize {
    let default = ConnLimits::default().max_connections;
    match file_limit {
        Some(files) => usize::try_from(files.saturating_sub(FILES_KEPT))
            .unwrap_or(default)
            .clamp(16, default),
        None => default,
    }
}

/// The soft limit on open files of this process, when the system tells it.
fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use nix::sys::resource::{getrlimit, Resource};
        getrlimit(Resource::RLIMIT_NOFILE)
            .ok()
            .map(|(soft, _)| soft)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The maintenance the elected leader runs; every process that may lead (`serve`, and
/// `worker` on a store) takes the same flags, so the settings do not depend on who leads.
#[derive(Debug, Clone, clap::Args)]
pub struct MaintenanceArgs {
    /// How often expired leases are rescued.
    #[arg(long, env = "HINTER_RESCUE_INTERVAL", default_value = "1s", value_parser = parse_interval, allow_hyphen_values = true)]
    pub rescue_interval: Duration,
    /// Keep succeeded jobs this long.
    #[arg(long, env = "HINTER_RETAIN_SUCCEEDED", default_value = "7d", value_parser = parse_duration)]
    pub retain_succeeded: Duration,
    /// Keep dead jobs this long.
    #[arg(long, env = "HINTER_RETAIN_DEAD", default_value = "30d", value_parser = parse_duration)]
    pub retain_dead: Duration,
    /// Keep cancelled jobs this long.
    #[arg(long, env = "HINTER_RETAIN_CANCELLED", default_value = "30d", value_parser = parse_duration)]
    pub retain_cancelled: Duration,
    /// Keep event log entries this long (readers resuming from an older id get what is left).
    #[arg(long, env = "HINTER_RETAIN_EVENTS", default_value = "7d", value_parser = parse_duration)]
    pub retain_events: Duration,
}

impl MaintenanceArgs {
    pub fn options(&self) -> MaintenanceOptions {
        MaintenanceOptions {
            rescue_interval: self.rescue_interval,
            retention: Retention {
                succeeded: self.retain_succeeded,
                dead: self.retain_dead,
                cancelled: self.retain_cancelled,
                events: self.retain_events,
            },
            ..MaintenanceOptions::default()
        }
    }
}

/// Membership and leader election timings. Hidden from `--help` (the defaults suit
/// production; tests shorten them); documented in docs/cli.md and docs/worker.md.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Time to live of the leadership lease; the leader renews it every third of it and a
    /// successor takes over at most this long after the leader died.
    #[arg(long, env = "HINTER_LEADER_TTL", default_value = "15s", value_parser = parse_duration, hide = true)]
    pub leader_ttl: Duration,
    /// How often this process reports itself alive (`GET /api/v1/workers`).
    #[arg(long, env = "HINTER_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = parse_duration, hide = true)]
    pub heartbeat_interval: Duration,
    /// A process not heard from for this long is taken for dead: no longer listed, then
    /// forgotten.
    #[arg(long, env = "HINTER_DEAD_AFTER", default_value = "30s", value_parser = parse_duration, hide = true)]
    pub dead_after: Duration,
}

impl ClusterArgs {
    /// The options, checked for sense.
    pub fn options(&self) -> anyhow::Result<ClusterOptions> {
        let floor = Duration::from_millis(100);
        for (flag, value) in [
            ("--leader-ttl", self.leader_ttl),
            ("--heartbeat-interval", self.heartbeat_interval),
            ("--dead-after", self.dead_after),
        ] {
            if value < floor {
                bail!("{flag} {}: must be at least 100ms", format_duration(value));
            }
        }
        if self.dead_after <= self.heartbeat_interval {
            bail!(
                "--dead-after {} must be longer than --heartbeat-interval {}, or live processes \
                 would be taken for dead",
                format_duration(self.dead_after),
                format_duration(self.heartbeat_interval)
            );
        }
        Ok(ClusterOptions {
            heartbeat_interval: self.heartbeat_interval,
            dead_after: self.dead_after,
            leader_ttl: self.leader_ttl,
        })
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    hinter_core::parse_duration(s).map_err(|e| e.to_string())
}

/// `--idempotency-ttl`: a key must outlive a client's retries, and its expiry be storable.
fn parse_max_wait(s: &str) -> Result<Duration, String> {
    let wait = hinter_core::parse_duration(s).map_err(|e| e.to_string())?;
    if wait.is_zero() || wait > Duration::from_secs(3600) {
        return Err(format!("{s:?} is not from 1ms to 1h"));
    }
    Ok(wait)
}

fn parse_idempotency_ttl(s: &str) -> Result<Duration, String> {
    let ttl = parse_duration(s)?;
    let max = hinter_core::limits::MAX_DURATION;
    if ttl < Duration::from_secs(1) || ttl > max {
        return Err(format!(
            "must be from 1s to {}",
            hinter_core::format_duration(max)
        ));
    }
    Ok(ttl)
}

/// Shortest interval of a periodic task: shorter would make it a busy loop.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// A duration that paces a loop: at least [`MIN_INTERVAL`].
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let interval = parse_duration(s)?;
    if interval < MIN_INTERVAL {
        return Err(format!(
            "{s:?} is too short; an interval must be at least {}",
            format_duration(MIN_INTERVAL)
        ));
    }
    Ok(interval)
}

/// Smallest body limit: below it not even a small job fits, and every request would get 413.
pub const MIN_BODY_LIMIT: usize = 256;

/// A body size limit in bytes, at least [`MIN_BODY_LIMIT`].
pub fn parse_byte_limit(s: &str) -> Result<usize, String> {
    let bytes: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a number of bytes, got {s:?}"))?;
    if bytes < MIN_BODY_LIMIT {
        return Err(format!(
            "{bytes} bytes is too small; the limit must be at least {MIN_BODY_LIMIT} bytes"
        ));
    }
    Ok(bytes)
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    args.cluster.options()?;
    args.connections.limits()?;
    args.tls.config()?;
    // Bind first: with the port taken, fail before the store is created or migrated.
    // A host name is resolved; the first of its addresses that can be bound is used.
    let listener = tokio::net::TcpListener::bind(args.listen.as_str())
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    // Script jobs (--jobs-dir) are added to these by `serve_on`.
    let handlers = Registry::new();
    serve_on(listener, args, handlers, shutdown_signal()).await
}

/// Largest `--max-event-streams`: far above any connection limit, and below what a
/// semaphore can count.
const MAX_EVENT_STREAMS: i64 = 1_000_000;

/// Feeds `GET /metrics`, the per-minute counts of `GET /api/v1/stats` and the event streams
/// (through `hub`) from the event log, from now on ([`hinter_server::live::follow_log`]). The
/// counts of the last day before now are read back in the background
/// (`hinter_server::stats::spawn_backfill`), up to the id the follower starts after, so
/// nothing is counted twice and start does not wait.
async fn count_events(
    store: Arc<dyn hinter_core::Store>,
    metrics: hinter_server::Metrics,
    hub: hinter_server::EventHub,
    clock: Arc<dyn hinter_core::Clock>,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>)> {
    let (last, counting) =
        hinter_server::live::follow_log(store.clone(), metrics.clone(), hub, clock.clone())
            .await
            .context("reading the end of the event log")?;
    let backfill =
        hinter_server::stats::spawn_backfill(store, metrics.stats().clone(), last, clock);
    Ok((counting, backfill))
}

/// `serve` on a bound listener until `shutdown` resolves: the API, maintenance, and a worker
/// of the engine's runtime for the jobs `handlers` knows and the script jobs of the jobs
/// folder (none of either: no worker). The worker leases only those job names, from their
/// definitions' queues, so it never takes a job meant for an external worker; the API
/// applies the definitions' defaults on enqueue. The jobs folder is watched: script jobs
/// added, changed or removed are picked up while serving.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    args: ServeArgs,
    handlers: Registry,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let cluster_options = args.cluster.options()?;
    let cluster_leader_ttl = cluster_options.leader_ttl;
    let limits = args.connections.limits()?;
    let tls = args.tls.config()?;
    // Every server delivers callbacks (`hinter.callback` jobs, queue `hinter.callbacks`).
    let mut handlers = handlers;
    args.callbacks.deliverer()?.register(&mut handlers);

    let scripts = crate::scripts::jobs_dir(args.jobs.jobs_dir.as_deref())?
        .map(crate::scripts::ScriptHost::new);
    // Shared with the API: script reloads replace what it holds. Each registry of script
    // jobs is built on a copy of the code handlers taken now, before any script is added.
    let definitions = handlers.definitions().clone();
    let base = handlers.snapshot();
    let loaded = scripts.as_ref().map(|host| host.load()).unwrap_or_default();
    let registry = match &scripts {
        Some(host) => {
            let registry = host.registry(&base, &loaded);
            host.publish(&definitions, &registry, &loaded);
            tracing::info!(
                jobs_dir = %host.dir().display(),
                loaded = loaded.iter().filter(|j| j.is_runnable()).count(),
                failed = loaded.iter().filter(|j| !j.is_runnable()).count(),
                "script jobs loaded; watching the folder for changes"
            );
            registry
        }
        None => handlers.clone(),
    };
    let hooks = args.hooks.config()?;
    let backend = args.store.open().await?;
    let local = listener
        .local_addr()
        .context("reading the listen address")?;
    let auth = safe_listening(&args, local, backend.as_ref()).await?;
    let clock = args.store.clock();
    let now = clock.now();
    let worker_options = WorkerOptions {
        worker_id: hinter_engine::default_worker_id(),
        concurrency: args.jobs.concurrency as usize,
        stopping_wait_time: args.jobs.stopping_wait_time,
        // A stopped script gets its own stopping_wait_time between SIGTERM and SIGKILL.
        cancel_grace: if scripts.is_some() {
            crate::scripts::settings::MAX_STOPPING_WAIT + SCRIPT_STOP_MARGIN
        } else {
            WorkerOptions::default().cancel_grace
        },
        ..WorkerOptions::default()
    };
    // With a jobs folder, a worker runs even with no script yet: one may be added.
    let hosting = !registry.is_empty() || scripts.is_some();
    let process = ProcessInfo {
        id: worker_options.worker_id.clone(),
        host: hinter_engine::hostname(),
        pid: std::process::id(),
        role: "serve".into(),
        queues: if hosting {
            registry.queues()
        } else {
            Vec::new()
        },
        concurrency: if hosting { args.jobs.concurrency } else { 0 },
        started_at: now,
        last_heartbeat_at: now,
        machine: hinter_core::cluster::this_machine(),
    };
    let worker_id = worker_options.worker_id.clone();
    let coordinator = Coordinator::start(backend.clone(), clock.clone(), process, cluster_options);
    let store: Arc<dyn hinter_core::Store> = backend.clone();
    let ready = Arc::new(AtomicBool::new(false));
    let metrics = hinter_server::Metrics::new();
    store.observe_commits(metrics.commit_observer());
    let leader = coordinator.leader();
    metrics.set_leader_source(Arc::new(move || leader.is_leader()));
    let hub = hinter_server::EventHub::default();
    let (counting, backfilling) =
        count_events(store.clone(), metrics.clone(), hub.clone(), clock.clone()).await?;
    let state = AppState {
        store: store.clone(),
        cluster: backend.clone(),
        clock: clock.clone(),
        definitions: definitions.clone(),
        config: Arc::new(ServerConfig {
            max_job_bytes: args.max_job_bytes,
            max_batch_bytes: args.max_batch_bytes,
            process_dead_after: args.cluster.dead_after,
            body_timeout: args.connections.body_timeout,
            max_event_streams: args.connections.max_event_streams as usize,
            event_keep_alive: args.connections.event_keep_alive(),
            idempotency_ttl: args.idempotency_ttl,
            max_wait: args.max_wait,
            auth,
            hooks,
            callbacks: args.callbacks.server_config(),
            ..ServerConfig::default()
        }),
        ready: ready.clone(),
        metrics,
        hub,
    };
    let maintenance = Maintenance::start(
        store.clone(),
        clock.clone(),
        args.maintenance.options(),
        coordinator.leader(),
    );
    // Every server runs the scheduler; the store makes each tick fire once (scheduler.rs).
    let scheduler = hinter_engine::Scheduler::new(
        store.clone(),
        clock.clone(),
        hinter_engine::SchedulerOptions {
            definitions: handlers.definitions().clone(),
            process_id: Some(worker_options.worker_id.clone()),
            ..hinter_engine::SchedulerOptions::default()
        },
    )
    .start();
    let clock_for_scripts = clock.clone();
    let worker = if hosting {
        Some(Worker::start(
            store.clone(),
            clock,
            registry,
            worker_options,
        )?)
    } else {
        None
    };

    // The folders' schedules, kept in step on every reload (scheduler.rs fires them).
    let scripts = scripts.map(|host| host.with_schedules(store.clone(), clock_for_scripts));
    if let Some(host) = &scripts {
        host.sync_schedules(&loaded).await;
    }
    // File-change triggers of the folders' `watch` settings.
    let scripts = scripts.map(|host| {
        let watches = crate::scripts::watch::Watches::start(
            store.clone(),
            definitions.clone(),
            crate::scripts::watch::specs(&loaded),
        );
        host.with_watches(Arc::new(watches))
    });
    // Continuous jobs run on every server with the folder; a singleton on one of them.
    let continuous = scripts.as_ref().map(|host| {
        let supervisor = crate::scripts::continuous::Supervisor::new(
            host.clone(),
            backend.clone(),
            args.store.clock(),
            worker_id.clone(),
            cluster_leader_ttl,
        );
        supervisor.update(&loaded);
        let status = supervisor.clone();
        definitions.set_status_source(Arc::new(move |name: &str| status.status(name)));
        supervisor
    });
    let watching = match (scripts, &worker) {
        (Some(host), Some(worker)) => Some(host.watch(
            base,
            loaded,
            worker.control(),
            definitions,
            continuous.clone(),
        )?),
        _ => None,
    };
    let local = listener
        .local_addr()
        .context("reading the listen address")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        listen = %local,
        scheme,
        dashboard = %format!("{scheme}://{local}/"),
        store = %args.store.describe(),
        max_connections = limits.max_connections,
        "hinter is serving"
    );
    ready.store(true, Ordering::SeqCst);
    let stopping = ready.clone();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        stopping.store(false, Ordering::SeqCst);
        tracing::info!("shutting down: no new requests or jobs, finishing open ones");
        let _ = stop.send(true);
    });
    let mut http_stopped = stopped.clone();
    let http_stop = async move {
        let _ = http_stopped.wait_for(|stop| *stop).await;
    };
    let api = async move {
        match tls {
            Some(tls) => hinter_server::serve_tls(listener, state, limits, tls, http_stop).await,
            None => hinter_server::serve(listener, state, limits, http_stop).await,
        }
    };
    // The hosted worker stops with the API, not after it: its running jobs get their
    // stopping_wait_time while open requests finish.
    let jobs = async move {
        if let Some(worker) = worker {
            let _ = stopped.wait_for(|stop| *stop).await;
            if let Some(watching) = watching {
                watching.stop();
            }
            match continuous {
                Some(continuous) => {
                    tokio::join!(worker.shutdown(), continuous.shutdown());
                }
                None => worker.shutdown().await,
            }
        }
    };
    tokio::join!(api, jobs);
    counting.abort();
    backfilling.abort();
    scheduler.shutdown().await;
    maintenance.shutdown().await;
    coordinator.shutdown().await;
    // SQLite: fold the WAL into the database and truncate it, so a stopped store is one file.
    if let Err(e) = store.close().await {
        tracing::warn!(error = %e, "closing the store");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Whether `addr` is a loopback address (`127.0.0.0/8`, `::1`, and `::ffff:127.…`).
fn is_loopback(addr: std::net::SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// Safe by default: beyond loopback the API needs tokens. With none in the store (or
/// declared), listening there is refused unless `--insecure-no-auth` says a gateway in front
/// authenticates. A server beyond loopback keeps requiring a token even when the last one is
/// revoked; on loopback, no token at all means an open API.
async fn safe_listening(
    args: &ServeArgs,
    local: std::net::SocketAddr,
    store: &dyn hinter_core::Store,
) -> anyhow::Result<hinter_server::AuthConfig> {
    let auth = hinter_server::AuthConfig {
        declared: args.declared_tokens.clone(),
        ..hinter_server::AuthConfig::default()
    };
    if is_loopback(local) {
        return Ok(auth);
    }
    let tokens = store
        .token_list()
        .await
        .context("reading the API tokens")?
        .len()
        + auth.declared.len();
    if tokens > 0 {
        return Ok(hinter_server::AuthConfig {
            require_tokens: true,
            ..auth
        });
    }
    if args.insecure_no_auth {
        tracing::warn!(
            listen = %local,
            "--insecure-no-auth: the API takes requests from anyone who can reach {local} \
             without a token; only do this behind a gateway that authenticates them"
        );
        return Ok(auth);
    }
    bail!(
        "refusing to listen on {} without API tokens: anyone who can reach it could \
         enqueue, cancel and lease jobs.\n\
         Create a token first, on the same store:\n\
         \x20   hinter tokens create admin --scope admin {}\n\
         and give it to clients with --token or HINTER_TOKEN. Or listen on 127.0.0.1, or pass \
         --insecure-no-auth (HINTER_INSECURE_NO_AUTH=true) if a gateway in front of hinter \
         authenticates requests.",
        args.listen,
        args.store.flags()
    )
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hook_secrets_come_from_the_environment() {
        let args = |secrets: &[&str], header: &str| super::HookArgs {
            hook_secret: secrets.iter().map(|s| s.to_string()).collect(),
            hook_signature_header: header.into(),
        };
        // PATH is set and not empty wherever tests run.
        let config = args(&["build=PATH"], "X-Signature")
            .config()
            .expect("valid");
        assert_eq!(config.signature_header, "x-signature");
        assert_eq!(
            config.secrets.get("build").map(Vec::len),
            std::env::var("PATH").ok().map(|p| p.len())
        );
        let err = |a: super::HookArgs| a.config().expect_err("refused").to_string();
        assert!(err(args(&["build=HINTER_NO_SUCH_VARIABLE_XYZ"], "h"))
            .contains("HINTER_NO_SUCH_VARIABLE_XYZ"));
        assert!(err(args(&["build"], "h")).contains("JOB=ENV_VAR"));
        assert!(err(args(&["bad name=PATH"], "h")).contains("job"));
        assert!(err(args(&[], "bad header")).contains("--hook-signature-header"));
    }

    #[test]
    fn limits_and_intervals_have_floors() {
        assert!(super::parse_byte_limit("0").is_err());
        assert!(super::parse_byte_limit("255").is_err());
        assert_eq!(super::parse_byte_limit("256"), Ok(256));
        assert!(super::parse_interval("0").is_err());
        assert!(super::parse_interval("99ms").is_err());
        assert!(super::parse_interval("100ms").is_ok());
    }

    #[test]
    fn clock_offsets_are_signed_bounded_durations() {
        let secs = chrono::Duration::seconds;
        assert_eq!(super::parse_offset("30s"), Ok(secs(30)));
        assert_eq!(super::parse_offset("-30s"), Ok(secs(-30)));
        assert_eq!(
            super::parse_offset("-3650d"),
            Ok(chrono::Duration::days(-3650))
        );
        for bad in ["", "-", "--1s", "3651d", "-3651d", "1e9s", "1s\0"] {
            assert!(super::parse_offset(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn default_connection_cap_fits_the_file_limit() {
        assert_eq!(super::default_max_connections(None), 10_000);
        assert_eq!(super::default_max_connections(Some(1_048_576)), 10_000);
        assert_eq!(super::default_max_connections(Some(1024)), 768);
        assert_eq!(super::default_max_connections(Some(100)), 16);
    }

    #[test]
    fn loopback_is_127_8_and_ipv6_one_also_mapped() {
        for (addr, loopback) in [
            ("127.0.0.1:7433", true),
            ("127.1.2.3:7433", true),
            ("[::1]:7433", true),
            ("[::ffff:127.0.0.1]:7433", true),
            ("0.0.0.0:7433", false),
            ("[::]:7433", false),
            ("192.168.1.5:7433", false),
            ("[::ffff:10.0.0.1]:7433", false),
        ] {
            let addr: std::net::SocketAddr = addr.parse().expect("address");
            assert_eq!(super::is_loopback(addr), loopback, "{addr}");
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact("postgres://h/db"), "postgres://h/db");
    }
}

/// `serve` hosting the engine's runtime, in process: a real SQLite store, real HTTP.
#[cfg(test)]
mod hosting {
    use super::{serve_on, ServeArgs};
    use clap::Parser;
    use hinter_client::{Client, EnqueueRequest, JobState, RunOutcome};
    use hinter_core::JobDefinition;
    use hinter_engine::{HandlerContext, JobError, Registry};
    use serde_json::{json, Value};
    use std::time::Duration;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn definition(name: &str, queue: &str) -> JobDefinition {
        JobDefinition {
            name: name.into(),
            queue: Some(queue.into()),
            max_attempts: None,
            timeout: None,
            singleton: false,
        }
    }

    async fn until<T, F: std::future::Future<Output = Option<T>>>(
        what: &str,
        mut probe: impl FnMut() -> F,
    ) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(value) = probe().await {
                return value;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serve_runs_the_jobs_it_has_handlers_for_and_hands_them_back_on_stop() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let args = Args::try_parse_from([
            "serve",
            "--data-dir",
            data.to_str().expect("utf-8 path"),
            "--stopping-wait-time",
            "200ms",
        ])
        .expect("flags parse")
        .serve;
        let mut handlers = Registry::new();
        handlers.register(
            definition("greet", "hosted"),
            |_ctx: HandlerContext, payload: Value| async move {
                Ok::<_, JobError>(json!({ "hello": payload["name"] }))
            },
        );
        // Runs until told to stop; then fails, which a shutdown turns into a hand-back.
        handlers.register(
            definition("slow", "hosted"),
            |ctx: HandlerContext, _payload: Value| async move {
                ctx.cancelled().await;
                Err::<Value, _>(JobError::retryable("stopped"))
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(listener, args, handlers, async move {
            let _ = stopped.await;
        }));
        let client = Client::new(&url, None).expect("client");

        // The definition's queue applies to an enqueue that names none, and the job runs.
        let greet = client
            .enqueue(&EnqueueRequest::new("greet", json!({ "name": "Ada" })))
            .await
            .expect("enqueue greet")
            .job;
        let done = client
            .wait_for_finish(greet.id, Some(Duration::from_secs(20)))
            .await
            .expect("greet finishes");
        assert_eq!(done.queue, "hosted");
        assert_eq!(done.state, JobState::Succeeded, "{done:?}");
        assert_eq!(done.result, Some(json!({ "hello": "Ada" })));
        assert_eq!(done.runs.len(), 1);

        // A job it has no handler for stays for another worker, even in a queue it serves.
        let foreign = client
            .enqueue(&EnqueueRequest::new("resize", json!(null)).queue("hosted"))
            .await
            .expect("enqueue resize")
            .job;

        // It lists itself with the queues and concurrency it runs.
        let workers: Value = reqwest::get(format!("{url}/api/v1/workers"))
            .await
            .expect("GET workers")
            .json()
            .await
            .expect("workers JSON");
        let me = workers["workers"]
            .as_array()
            .and_then(|all| all.iter().find(|w| w["role"] == "serve"))
            .cloned()
            .unwrap_or_else(|| panic!("serve is listed: {workers}"));
        // Every serve delivers callbacks too.
        assert_eq!(me["queues"], json!(["hinter.callbacks", "hosted"]), "{me}");
        assert_eq!(me["concurrency"], json!(10), "{me}");

        // Stopped mid-job, it hands the job back: queued again, the attempt not counted.
        let slow = client
            .enqueue(&EnqueueRequest::new("slow", json!(null)))
            .await
            .expect("enqueue slow")
            .job;
        until("slow is running", || {
            let client = client.clone();
            async move {
                let job = client.get_job(slow.id, None).await.ok()?;
                (job.state == JobState::Running).then_some(())
            }
        })
        .await;
        stop.send(()).expect("serve is running");
        tokio::time::timeout(Duration::from_secs(20), server)
            .await
            .expect("serve stops")
            .expect("serve task")
            .expect("serve returns Ok");

        let store = super::open_sqlite(&data, hinter_sqlite::Durability::Full)
            .await
            .expect("reopen the store");
        let slow = hinter_core::Store::job_get(&store, slow.id)
            .await
            .expect("read slow")
            .expect("slow exists");
        assert_eq!(slow.state, hinter_core::JobState::Queued, "{slow:?}");
        assert_eq!(slow.attempt, 0, "the handed-back attempt is not counted");
        assert_eq!(slow.runs.len(), 1);
        assert_eq!(slow.runs[0].outcome, RunOutcome::Released);
        let foreign = hinter_core::Store::job_get(&store, foreign.id)
            .await
            .expect("read resize")
            .expect("resize exists");
        assert_eq!(foreign.state, hinter_core::JobState::Queued);
        assert_eq!(foreign.attempt, 0);
    }
}
