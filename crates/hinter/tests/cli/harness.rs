//! The harness of the CLI tests: a real `hinter serve` on loopback (checked over plain HTTP)
//! and the real `hinter` client commands run against it as child processes.
//!
//! Copied in spirit from `tests/e2e/util.rs` (which this binary may not share):
//! * [`TestDir`]: a temporary directory, kept (and its path printed) if the test fails.
//! * [`Server`]: `hinter serve` on a free port, ready when `/readyz` says so, killed on drop.
//! * [`Api`]: a small HTTP client for checking and arranging server state.
//! * [`Cli`] / [`Running`] / [`Out`]: one run of `hinter <client command>`, with a deadline.
//! * [`wait_for`]: polls a condition with a deadline; no test sleeps to synchronize.

use reqwest::Method;
use serde_json::{json, Value};
use std::fmt;
use std::fs::File;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// The binary under test.
pub const HINTER: &str = env!("CARGO_BIN_EXE_hinter");

/// How long a server may take to become ready (debug build, loaded machine).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest any single HTTP call of the harness may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);
/// Longest one CLI run may take before it is killed and the test fails.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// How often polled conditions are checked.
const POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------------------
// Files and processes

/// A temporary directory for one test. Removed at the end unless the test fails.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("hinter-cli-{name}-"))
            .tempdir()
            .expect("creating a temporary directory");
        TestDir { dir: Some(dir) }
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("the directory").path()
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

/// A `hinter` command with no `HINTER_*` settings inherited from the environment.
fn hinter_command() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(HINTER);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HINTER_") {
            command.env_remove(key);
        }
    }
    command
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    command
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// A `hinter serve` child process; killed when dropped, its stderr shown if the test fails.
pub struct Server {
    pub api: Api,
    pub addr: SocketAddr,
    child: Option<tokio::process::Child>,
    stderr_path: PathBuf,
}

static STARTS: AtomicUsize = AtomicUsize::new(0);

impl Server {
    /// Starts `hinter serve --data-dir <dir>/data --listen 127.0.0.1:<free port>` and waits
    /// until `/readyz` answers 200.
    pub async fn start(dir: &TestDir) -> Server {
        let data_dir = dir.path().join("data");
        // The free port can be taken between the probe and the bind: then try another.
        for _ in 0..5 {
            let port = free_port();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let n = STARTS.fetch_add(1, Ordering::Relaxed);
            let stderr_path = dir.path().join(format!("server-{n}.stderr.log"));
            let stderr = File::create(&stderr_path).expect("creating the server log");
            let child = hinter_command()
                .arg("serve")
                .arg("--data-dir")
                .arg(&data_dir)
                .arg("--listen")
                .arg(addr.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("spawning hinter serve");
            let mut server = Server {
                api: Api::new(format!("http://{addr}")),
                addr,
                child: Some(child),
                stderr_path,
            };
            match server.wait_ready().await {
                Ok(()) => return server,
                Err(exit) => {
                    let log = server.stderr();
                    if log.contains("cannot listen") {
                        eprintln!("port {port} was taken ({exit}); trying another one");
                        continue;
                    }
                    panic!("hinter serve exited before it was ready ({exit}); stderr:\n{log}");
                }
            }
        }
        panic!("could not start hinter serve on a free port after 5 tries");
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait() {
                return Err(format!("exit status {status}"));
            }
            if let Ok(resp) = self.api.try_send(Method::GET, "/readyz", None).await {
                if resp.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "hinter serve on {} was not ready within {READY_TIMEOUT:?}; stderr:\n{}",
                    self.addr,
                    self.stderr()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("checking the server process"))
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Base URL, e.g. `http://127.0.0.1:4711`.
    pub fn base(&self) -> &str {
        &self.api.base
    }

    /// `hinter <args…> --server <this server>`.
    pub fn cli(&self, args: &[&str]) -> Cli {
        Cli::new(args).arg("--server").arg(self.base())
    }
}

impl Deref for Server {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL; tokio reaps the process in the background.
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- stderr of hinter serve on {} ({}) -----\n{}\n----- end -----",
                self.addr,
                self.stderr_path.display(),
                self.stderr()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The CLI under test

/// One run of the `hinter` binary, being set up.
pub struct Cli {
    args: Vec<String>,
    envs: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
}

impl Cli {
    pub fn new(args: &[&str]) -> Cli {
        Cli {
            args: args.iter().map(|a| a.to_string()).collect(),
            envs: Vec::new(),
            stdin: None,
        }
    }

    pub fn arg(mut self, arg: &str) -> Cli {
        self.args.push(arg.to_string());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Cli {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// Standard input (otherwise it is `/dev/null`).
    pub fn stdin(mut self, text: &str) -> Cli {
        self.stdin = Some(text.as_bytes().to_vec());
        self
    }

    /// Starts the process; [`Running::finish`] collects its outcome.
    pub fn spawn(self) -> Running {
        let mut command = hinter_command();
        command
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        for (key, value) in &self.envs {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawning hinter {:?}: {e}", self.args));
        if let (Some(bytes), Some(mut pipe)) = (self.stdin, child.stdin.take()) {
            tokio::spawn(async move {
                // The command may not read it all (it may fail first): ignore a broken pipe.
                let _ = pipe.write_all(&bytes).await;
                drop(pipe);
            });
        }
        Running {
            args: self.args,
            child,
            started: Instant::now(),
        }
    }

    /// Runs the command to its end.
    pub async fn run(self) -> Out {
        self.spawn().finish().await
    }
}

/// A running `hinter` process; killed if dropped before it ends.
pub struct Running {
    args: Vec<String>,
    child: tokio::process::Child,
    started: Instant,
}

impl Running {
    /// Whether the process has ended already.
    pub fn has_exited(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("checking the hinter process")
            .is_some()
    }

    /// Takes the read end of the process's stdout (its output is then not collected).
    pub fn take_stdout(&mut self) -> tokio::process::ChildStdout {
        self.child.stdout.take().expect("stdout is piped")
    }

    /// Waits for the process to end (at most [`CLI_TIMEOUT`]) and collects its outcome.
    pub async fn finish(self) -> Out {
        let Running {
            args,
            child,
            started,
        } = self;
        let output = tokio::time::timeout(CLI_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("hinter {args:?} did not end within {CLI_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("waiting for hinter {args:?}: {e}"));
        Out {
            args,
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            took: started.elapsed(),
        }
    }
}

/// What one run of `hinter` did.
pub struct Out {
    pub args: Vec<String>,
    /// `None` if killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl fmt::Debug for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "hinter {:?}\n  exit code: {:?} (after {:?})\n----- stdout -----\n{}----- stderr -----\n{}------------------",
            self.args, self.code, self.took, self.stdout, self.stderr
        )
    }
}

impl Out {
    /// Panics (showing the whole run) unless the exit code is `code`.
    #[track_caller]
    pub fn code(self, code: i32) -> Out {
        assert_eq!(self.code, Some(code), "unexpected exit code: {self:?}");
        self
    }

    /// Exit code 0.
    #[track_caller]
    pub fn ok(self) -> Out {
        self.code(0)
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Panics unless stdout contains `text`.
    #[track_caller]
    pub fn stdout_has(self, text: &str) -> Out {
        assert!(
            self.stdout.contains(text),
            "stdout lacks {text:?}: {self:?}"
        );
        self
    }

    /// Panics unless stderr contains `text`.
    #[track_caller]
    pub fn stderr_has(self, text: &str) -> Out {
        assert!(
            self.stderr.contains(text),
            "stderr lacks {text:?}: {self:?}"
        );
        self
    }

    /// Panics unless stdout is empty.
    #[track_caller]
    pub fn no_stdout(self) -> Out {
        assert!(self.stdout.is_empty(), "stdout is not empty: {self:?}");
        self
    }

    /// Panics unless stderr is empty.
    #[track_caller]
    pub fn no_stderr(self) -> Out {
        assert!(self.stderr.is_empty(), "stderr is not empty: {self:?}");
        self
    }

    /// The lines of stdout.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Waiting

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

// ---------------------------------------------------------------------------------------------
// HTTP, to arrange and check server state

/// An HTTP answer: status and body (JSON if it parses, else `Value::Null`; `text` always).
#[derive(Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

impl Resp {
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

/// The worker id the simulated workers use.
pub const WORKER: &str = "cli-test-worker";

impl Api {
    pub fn new(base: String) -> Api {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("building the HTTP client");
        Api { base, client }
    }

    async fn try_send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Resp, reqwest::Error> {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Resp { status, body, text })
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.try_send(Method::GET, path, None)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: no answer: {e}"))
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        let bytes = serde_json::to_vec(body).expect("serializing a request body");
        self.try_send(Method::POST, path, Some(bytes))
            .await
            .unwrap_or_else(|e| panic!("POST {path}: no answer: {e}"))
    }

    /// Enqueues one job over HTTP; returns its id.
    pub async fn enqueue(&self, spec: Value) -> String {
        let resp = self.post("/api/v1/jobs", &spec).await.expect_status(201);
        id_of(&resp.body["job"])
    }

    /// `GET /api/v1/jobs/{id}` (must exist).
    pub async fn job(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/jobs/{id}"))
            .await
            .expect_status(200)
            .body
    }

    /// Leases up to `max` jobs of `queue`, long-polling up to `wait` (e.g. `"300ms"`).
    pub async fn lease(&self, queue: &str, max: u32, wait: &str) -> Vec<Value> {
        let resp = self
            .post(
                "/api/v1/leases",
                &json!({"queues": [queue], "worker_id": WORKER, "max": max, "lease": "60s",
                        "wait": wait}),
            )
            .await
            .expect_status(200);
        resp.body["jobs"]
            .as_array()
            .unwrap_or_else(|| panic!("lease answer without jobs: {resp:?}"))
            .clone()
    }

    /// Completes a leased job with `result`; asserts it succeeded.
    pub async fn complete(&self, leased: &Value, result: Value) -> Value {
        let id = id_of(leased);
        let resp = self
            .post(
                &format!("/api/v1/jobs/{id}/complete"),
                &json!({"lease_token": leased["lease_token"], "result": result}),
            )
            .await
            .expect_status(200);
        assert_eq!(resp.body["state"], "succeeded", "{resp:?}");
        resp.body
    }

    /// Fails a leased job; returns the job object.
    pub async fn fail(&self, leased: &Value, error: &str, retry: bool) -> Value {
        let id = id_of(leased);
        self.post(
            &format!("/api/v1/jobs/{id}/fail"),
            &json!({"lease_token": leased["lease_token"], "error": error, "retry": retry}),
        )
        .await
        .expect_status(200)
        .body
    }

    /// Enqueues a job into `queue`, leases it and fails it permanently: it is `dead`.
    /// `queue` must hold no other leasable job.
    pub async fn make_dead(&self, job: &str, queue: &str, error: &str) -> String {
        let id = self.enqueue(json!({"job": job, "queue": queue})).await;
        let leased = self.lease(queue, 1, "5s").await;
        assert_eq!(
            leased.iter().map(id_of).collect::<Vec<_>>(),
            vec![id.clone()]
        );
        let dead = self.fail(&leased[0], error, false).await;
        assert_eq!(dead["state"], "dead", "{dead}");
        id
    }

    /// Enqueues a job into `queue`, leases it and completes it: it is `succeeded`.
    pub async fn make_succeeded(&self, job: &str, queue: &str) -> String {
        let id = self.enqueue(json!({"job": job, "queue": queue})).await;
        let leased = self.lease(queue, 1, "5s").await;
        assert_eq!(
            leased.iter().map(id_of).collect::<Vec<_>>(),
            vec![id.clone()]
        );
        self.complete(&leased[0], json!({"ok": true})).await;
        id
    }

    /// Every job matching `query` (e.g. `state=dead`), following cursors.
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

    /// Ids of every job matching `query`, in enqueue order.
    pub async fn ids(&self, query: &str) -> Vec<String> {
        self.list_jobs(query).await.iter().map(id_of).collect()
    }

    /// `GET /api/v1/queues` → the entry of `name`, if listed.
    pub async fn queue(&self, name: &str) -> Option<Value> {
        let resp = self.get("/api/v1/queues").await.expect_status(200);
        resp.body["queues"]
            .as_array()
            .unwrap_or_else(|| panic!("queues answer without queues: {resp:?}"))
            .iter()
            .find(|q| q["name"] == name)
            .cloned()
    }
}

/// `id` of a job object as a string.
#[track_caller]
pub fn id_of(job: &Value) -> String {
    job["id"]
        .as_str()
        .unwrap_or_else(|| panic!("job without id: {job}"))
        .to_string()
}

/// The job id in a line such as `enqueued <id> (queue default)`.
#[track_caller]
pub fn id_in(line: &str, prefix: &str) -> String {
    let rest = line
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{line:?} does not start with {prefix:?}"));
    let id = rest.split_whitespace().next().unwrap_or_default();
    uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("no job id in {line:?}: {e}"));
    id.to_string()
}

/// Waits until exactly one job matches `query` (e.g. `queue=q`) and returns its id.
pub async fn wait_for_job(api: &Api, query: &str) -> String {
    let what = format!("a job matching {query:?}");
    wait_for(Duration::from_secs(30), &what, || {
        let api = api.clone();
        let query = query.to_string();
        async move {
            let ids = api.ids(&query).await;
            assert!(
                ids.len() <= 1,
                "more than one job matches {query:?}: {ids:?}"
            );
            ids.into_iter().next()
        }
    })
    .await
}
