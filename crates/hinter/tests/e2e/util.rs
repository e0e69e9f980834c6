//! The harness: runs the real `hinter serve` on loopback and talks to it over HTTP.
//!
//! * [`TestDir`] is a temporary directory (data dir, logs, scripts) removed at the end.
//! * [`Server`] starts `hinter serve` on a free port, waits for `/readyz`, kills the process
//!   when dropped, and prints its stderr if the test is failing.
//! * [`Api`] is a cheap, cloneable HTTP client for one server.
//! * [`wait_until`] / [`wait_for`] poll a condition with a deadline; tests never sleep to
//!   synchronize.

use reqwest::Method;
use serde_json::{json, Value};
use std::fmt;
use std::fs::File;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The binary under test.
pub const HINTER: &str = env!("CARGO_BIN_EXE_hinter");

/// How long a server may take to become ready (debug build, loaded machine).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest any single HTTP call may take (lease long-polls are far shorter).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often polled conditions are checked.
const POLL: Duration = Duration::from_millis(20);

/// A temporary directory for one test: the data dir, server logs, helper scripts. Removed
/// at the end, unless the test fails: then it is kept for a look and its path printed.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("hinter-e2e-{name}-"))
            .tempdir()
            .expect("creating a temporary directory");
        TestDir { dir: Some(dir) }
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("the directory").path()
    }

    /// The data dir servers of this test share (so a restart finds the same store).
    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data")
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

/// A `hinter serve` child process; killed (SIGKILL) when dropped.
pub struct Server {
    pub api: Api,
    pub addr: SocketAddr,
    child: Option<Child>,
    stderr_path: PathBuf,
}

/// Counts server starts so every start gets its own log file.
static STARTS: AtomicUsize = AtomicUsize::new(0);

impl Server {
    /// Starts `hinter serve --data-dir <dir>/data --listen 127.0.0.1:<free port> <extra>` and
    /// waits until `/readyz` answers 200.
    pub async fn start(dir: &TestDir, extra: &[&str]) -> Server {
        let data_dir = dir.data_dir();
        // A free port can be taken by someone else between our probe and the server's bind:
        // then the server exits with "cannot listen" and we try another port.
        for _ in 0..5 {
            let port = free_port();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let n = STARTS.fetch_add(1, Ordering::Relaxed);
            let stderr_path = dir.path().join(format!("server-{n}.stderr.log"));
            let stderr = File::create(&stderr_path).expect("creating the server log");
            let mut command = hinter_command();
            command
                .arg("serve")
                .arg("--data-dir")
                .arg(&data_dir)
                .arg("--listen")
                .arg(addr.to_string())
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr);
            let child = command.spawn().expect("spawning hinter serve");
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

    /// Polls `/readyz`; `Err` if the process exited first.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait() {
                return Err(format!("exit status {status}"));
            }
            if let Ok(resp) = self.api.try_get("/readyz").await {
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

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGKILL: the process dies at once, with no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (a graceful stop) and waits up to `timeout` for the process to exit.
    pub async fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let pid = self.child.as_ref()?.id();
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:4711`.
    pub fn base(&self) -> &str {
        &self.api.base
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
        self.kill();
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

/// Any child process (e.g. an external worker); killed when dropped, and its stderr printed
/// if the test is failing.
pub struct ChildGuard {
    pub name: String,
    child: Option<Child>,
    stderr_path: PathBuf,
}

impl ChildGuard {
    /// Spawns `command` with stdout and stderr into files `<name>.stdout.log`/`.stderr.log`.
    pub fn spawn(dir: &TestDir, name: &str, command: &mut Command) -> ChildGuard {
        let stdout = File::create(dir.path().join(format!("{name}.stdout.log"))).expect("log");
        let stderr_path = dir.path().join(format!("{name}.stderr.log"));
        let stderr = File::create(&stderr_path).expect("log");
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        ChildGuard {
            name: name.to_string(),
            child: Some(child),
            stderr_path,
        }
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("checking a child process"))
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits (polling) until the process exits; panics with its stderr after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} did not exit within {timeout:?}; stderr:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- stderr of {} -----\n{}\n----- end -----",
                self.name,
                self.stderr()
            );
        }
    }
}

/// Polls `check` until it is true; panics naming `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(timeout, what, || {
        let fut = check();
        async move { fut.await.then_some(()) }
    })
    .await
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
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    /// `error.code` of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or("<no error code>")
    }

    /// `error.message` of an error answer.
    pub fn message(&self) -> &str {
        self.body["error"]["message"]
            .as_str()
            .unwrap_or("<no error message>")
    }

    /// Panics (showing the answer) unless the status is `status`.
    #[track_caller]
    pub fn expect_status(self, status: u16) -> Resp {
        assert_eq!(self.status, status, "unexpected answer: {self:?}");
        self
    }

    /// Panics unless this is an error answer with `status` and `code`.
    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str) -> Resp {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "unexpected answer: {self:?}"
        );
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
        let headers = response.headers().clone();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Resp {
            status,
            headers,
            body,
            text,
        })
    }

    pub async fn try_get(&self, path: &str) -> Result<Resp, reqwest::Error> {
        self.try_send(Method::GET, path, None).await
    }

    pub async fn try_post(&self, path: &str, body: &Value) -> Result<Resp, reqwest::Error> {
        let bytes = serde_json::to_vec(body).expect("serializing a request body");
        self.try_send(Method::POST, path, Some(bytes)).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.try_get(path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: no answer: {e}"))
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.try_post(path, body)
            .await
            .unwrap_or_else(|e| panic!("POST {path}: no answer: {e}"))
    }

    /// POSTs `body` as it is (need not be JSON).
    pub async fn post_raw(&self, path: &str, body: impl Into<Vec<u8>>) -> Resp {
        self.try_send(Method::POST, path, Some(body.into()))
            .await
            .unwrap_or_else(|e| panic!("POST {path}: no answer: {e}"))
    }

    /// Enqueues one job; asserts 201 and returns the job object.
    pub async fn enqueue(&self, spec: Value) -> Value {
        let resp = self.post("/api/v1/jobs", &spec).await.expect_status(201);
        assert_eq!(resp.body["duplicate"], json!(false), "{resp:?}");
        resp.body["job"].clone()
    }

    /// `GET /api/v1/jobs/{id}` (must exist).
    pub async fn job(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/jobs/{id}"))
            .await
            .expect_status(200)
            .body
    }

    /// `POST /api/v1/leases`; asserts 200 and returns the leased jobs.
    pub async fn lease(&self, request: Value) -> Vec<Value> {
        let resp = self
            .post("/api/v1/leases", &request)
            .await
            .expect_status(200);
        resp.body["jobs"]
            .as_array()
            .unwrap_or_else(|| panic!("lease answer without jobs: {resp:?}"))
            .clone()
    }

    /// `POST /api/v1/jobs/{id}/complete` with `token` and `result` (answer not checked).
    pub async fn complete(&self, id: &str, token: &Value, result: Value) -> Resp {
        self.post(
            &format!("/api/v1/jobs/{id}/complete"),
            &json!({"lease_token": token, "result": result}),
        )
        .await
    }

    /// Every job matching `query` (e.g. `state=dead&queue=q`), following cursors.
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

    /// Asserts the server still answers `/healthz` with 200.
    #[track_caller]
    pub fn assert_healthy(&self) -> impl Future<Output = ()> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            let resp = self.get("/healthz").await;
            assert_eq!(
                resp.status, 200,
                "healthz after the request at {caller}: {resp:?}"
            );
        }
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
