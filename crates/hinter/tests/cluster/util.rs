//! The harness: real `hinter serve` and `hinter worker --database …` processes on one
//! PostgreSQL database, each test in a schema of its own.
//!
//! * [`TestDb`] names the database (`HINTER_TEST_DATABASE_URL`) and a fresh random schema,
//!   dropped at the end through a tokio-postgres connection.
//! * [`TestDir`] is a temporary directory (logs, scripts), kept if the test fails.
//! * [`Proc`] is a child process (serve or worker) killed when dropped; its stderr is
//!   printed if the test is failing.
//! * [`Api`] is a small HTTP client for one server.
//! * [`wait_for`] polls a condition with a deadline; tests never sleep to synchronise.
//!
//! Adapted from `tests/e2e/util.rs`.

use reqwest::Method;
use serde_json::{json, Value};
use std::fmt;
use std::fs::File;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The binary under test.
pub const HINTER: &str = env!("CARGO_BIN_EXE_hinter");
pub const URL_VAR: &str = "HINTER_TEST_DATABASE_URL";
/// How long a server may take to become ready (debug build, loaded machine).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest any single HTTP call may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How often polled conditions are checked.
pub const POLL: Duration = Duration::from_millis(20);

/// The test database and a schema of this test's own, dropped (with everything in it) when
/// this is dropped. Declare it before the processes using it, so they are killed first.
pub struct TestDb {
    pub url: String,
    pub schema: String,
}

impl TestDb {
    /// `None` (after a note) when `HINTER_TEST_DATABASE_URL` is not set, unless CI=true:
    /// CI must never skip these tests.
    pub fn new(test: &str) -> Option<TestDb> {
        let Ok(url) = std::env::var(URL_VAR) else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "{URL_VAR} is not set, and CI=true: the cluster tests must run in CI. \
                     Set it to a PostgreSQL database, e.g. \
                     postgres://postgres@127.0.0.1:5432/test"
                );
            }
            eprintln!(
                "note: {test} skipped: set {URL_VAR} (e.g. postgres://postgres@127.0.0.1:5432/test) \
                 to run the multi-process PostgreSQL tests"
            );
            return None;
        };
        Some(TestDb {
            url,
            schema: format!("hinter_t{:016x}", rand::random::<u64>()),
        })
    }

    /// `--database URL --schema S`.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--database".into(),
            self.url.clone(),
            "--schema".into(),
            self.schema.clone(),
        ]
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop may run inside a runtime: do the work on a thread with a runtime of its own.
        let (url, schema) = (self.url.clone(), self.schema.clone());
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                let connection = tokio::spawn(connection);
                let dropped = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .await
                    .map_err(|e| e.to_string());
                drop(client);
                let _ = connection.await;
                dropped
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop the test schema {}: {e}", self.schema),
            Err(_) => eprintln!("could not drop the test schema {}", self.schema),
        }
    }
}

/// A temporary directory for one test: logs and scripts. Removed at the end, unless the
/// test fails: then it is kept for a look and its path printed.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("hinter-cluster-{name}-"))
            .tempdir()
            .expect("creating a temporary directory");
        TestDir { dir: Some(dir) }
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("the directory").path()
    }

    /// Writes `contents` to `name` in the directory and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("test files kept in {}", dir.keep().display());
            }
        }
    }
}

/// Counts process starts so every start gets its own log file.
static STARTS: AtomicUsize = AtomicUsize::new(0);

/// A `hinter` child process; killed (SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pid: u32,
    stderr_path: PathBuf,
}

impl Proc {
    /// Spawns `hinter ARGS` with stdout and stderr (JSON logs) into `<name>-<n>.log`.
    pub fn spawn(dir: &TestDir, name: &str, args: &[String]) -> Proc {
        Self::spawn_with_env(dir, name, args, &[])
    }

    /// [`Proc::spawn`] with extra environment variables.
    pub fn spawn_with_env(
        dir: &TestDir,
        name: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Proc {
        let n = STARTS.fetch_add(1, Ordering::Relaxed);
        let stderr_path = dir.path().join(format!("{name}-{n}.log"));
        let log = File::create(&stderr_path).expect("creating a log file");
        let out = log.try_clone().expect("cloning a file handle");
        let child = hinter_command()
            .envs(env.iter().copied())
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Proc {
            name: name.to_string(),
            pid: child.id(),
            child: Some(child),
            stderr_path,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("checking a child process"))
    }

    /// Panics (with its log) if the process has exited.
    #[track_caller]
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_wait() {
            panic!(
                "{} exited unexpectedly ({status}); log:\n{}",
                self.name,
                self.log()
            );
        }
    }

    /// Everything the process wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The JSON log lines (`--log-format json`) written so far.
    pub fn log_lines(&self) -> Vec<Value> {
        self.log()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// SIGKILL: the process dies at once, with no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_killed(&self) -> bool {
        self.child.is_none()
    }

    /// Sends SIGTERM (a graceful stop).
    pub fn terminate(&self) {
        let pid = i32::try_from(self.pid).expect("a pid fits i32");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap_or_else(|e| panic!("kill -TERM {pid}: {e}"));
    }

    /// Waits (polling) until the process exits; panics with its log after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} did not exit within {timeout:?}; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            // The end of a long log is what matters.
            let tail: String = {
                let lines: Vec<&str> = log.lines().collect();
                let from = lines.len().saturating_sub(200);
                lines[from..].join("\n")
            };
            eprintln!(
                "----- last lines of {} ({}) -----\n{tail}\n----- end -----",
                self.name,
                self.stderr_path.display()
            );
        }
    }
}

/// A `hinter serve` on a free port; its [`Api`].
pub struct Serve {
    pub proc: Proc,
    pub api: Api,
}

impl Serve {
    /// Starts `hinter serve --database … --schema … --listen 127.0.0.1:<free port> EXTRA`
    /// and waits until `/readyz` answers 200.
    pub async fn start(dir: &TestDir, db: &TestDb, name: &str, extra: &[&str]) -> Serve {
        Self::start_on(dir, &db.args(), name, extra).await
    }

    /// Starts `hinter serve STORE --listen 127.0.0.1:<free port> EXTRA` on any store
    /// (`--data-dir DIR`, say).
    pub async fn start_on(dir: &TestDir, store: &[String], name: &str, extra: &[&str]) -> Serve {
        // A free port can be taken by someone else between our probe and the server's bind:
        // then the server exits with "cannot listen" and we try another port.
        for _ in 0..5 {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let mut args = vec!["--log-format".to_string(), "json".into(), "serve".into()];
            args.extend(store.iter().cloned());
            args.extend(["--listen".into(), addr.to_string()]);
            args.extend(extra.iter().map(|s| s.to_string()));
            let mut serve = Serve {
                proc: Proc::spawn(dir, name, &args),
                api: Api::new(format!("http://{addr}")),
            };
            match serve.wait_ready().await {
                Ok(()) => return serve,
                Err(exit) if serve.proc.log().contains("cannot listen") => {
                    eprintln!("{addr} was taken ({exit}); trying another port");
                }
                Err(exit) => panic!(
                    "{name} exited before it was ready ({exit}); log:\n{}",
                    serve.proc.log()
                ),
            }
        }
        panic!("could not start {name} on a free port after 5 tries");
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.proc.try_wait() {
                return Err(format!("exit status {status}"));
            }
            if let Ok(resp) = self.api.try_get("/readyz").await {
                if resp.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} was not ready within {READY_TIMEOUT:?}; log:\n{}",
                    self.proc.name,
                    self.proc.log()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Starts `hinter worker --database … --schema … EXTRA -- COMMAND…` (store mode).
pub fn start_worker(
    dir: &TestDir,
    db: &TestDb,
    name: &str,
    extra: &[&str],
    command: &[&str],
) -> Proc {
    let mut args = vec!["--log-format".to_string(), "json".into(), "worker".into()];
    args.extend(db.args());
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("--".into());
    args.extend(command.iter().map(|s| s.to_string()));
    Proc::spawn(dir, name, &args)
}

/// A `hinter` command with no `HINTER_*` settings inherited from the environment.
pub fn hinter_command() -> Command {
    let mut command = Command::new(HINTER);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HINTER_") {
            command.env_remove(key);
        }
    }
    command.env("RUST_LOG", "info").env("NO_COLOR", "1");
    command
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Polls `check` until it gives `Some`; panics naming `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// An HTTP answer: status and body (JSON if it parses, else `Value::Null`; `text` always).
#[derive(Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

impl Resp {
    /// Panics (showing the answer) unless the status is `status`.
    #[track_caller]
    pub fn expect_status(self, status: u16) -> Resp {
        assert_eq!(self.status, status, "unexpected answer: {self:?}");
        self
    }
}

impl fmt::Debug for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {} {}", self.status, self.text)
    }
}

/// A client for one server.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    client: reqwest::Client,
}

impl Api {
    pub fn new(base: String) -> Api {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("building the HTTP client");
        Api { base, client }
    }

    /// Sends a request; `Err` only if no answer came (connection refused, reset, timeout).
    pub async fn try_send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Resp, reqwest::Error> {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Resp { status, body, text })
    }

    pub async fn try_get(&self, path: &str) -> Result<Resp, reqwest::Error> {
        self.try_send(Method::GET, path, None).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.try_get(path)
            .await
            .unwrap_or_else(|e| panic!("GET {}{path}: no answer: {e}", self.base))
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.try_send(Method::POST, path, Some(body))
            .await
            .unwrap_or_else(|e| panic!("POST {}{path}: no answer: {e}", self.base))
    }

    /// `GET /api/v1/workers`: the live processes.
    pub async fn workers(&self) -> Vec<Value> {
        let resp = self.get("/api/v1/workers").await.expect_status(200);
        resp.body["workers"]
            .as_array()
            .unwrap_or_else(|| panic!("worker list without workers: {resp:?}"))
            .clone()
    }

    /// The counts of `queue` from `GET /api/v1/queues` (zeros if it is not listed yet).
    pub async fn queue_counts(&self, queue: &str) -> Value {
        let resp = self.get("/api/v1/queues").await.expect_status(200);
        resp.body["queues"]
            .as_array()
            .and_then(|queues| queues.iter().find(|q| q["name"] == queue).cloned())
            .unwrap_or_else(|| json!({"name": queue, "queued": 0, "running": 0, "succeeded": 0}))
    }

    /// Every job matching `query` (e.g. `state=running&queue=q`), following cursors.
    pub async fn list_jobs(&self, query: &str) -> Vec<Value> {
        let mut jobs = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/jobs?limit=1000&{query}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let resp = self.get(&path).await.expect_status(200);
            let page = resp.body["jobs"]
                .as_array()
                .unwrap_or_else(|| panic!("job list without jobs: {resp:?}"));
            jobs.extend(page.iter().cloned());
            match resp.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return jobs,
            }
        }
    }
}

/// `field` of a JSON object as a string.
#[track_caller]
pub fn str_of<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string {field} in {value}"))
}

/// The leaders in a worker listing.
pub fn leaders(workers: &[Value]) -> Vec<&Value> {
    workers.iter().filter(|w| w["leader"] == true).collect()
}
