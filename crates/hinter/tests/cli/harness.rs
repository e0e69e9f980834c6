//! The harness of the CLI tests: a real `hinter serve` on loopback (checked over plain HTTP,
//! see [`crate::support`]) and the real `hinter` client commands run against it as child
//! processes.
//!
//! * [`Cli`] / [`Running`] / [`Out`]: one run of `hinter <client command>`, with a deadline.
//! * [`CliApi`]: the HTTP helpers only these tests use (simulated workers, dead jobs).

pub use crate::support::{free_port, id_of, wait_for, Api, Server, TestDir};
use serde_json::{json, Value};
use std::fmt;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Longest any single HTTP call of the harness may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);
/// Longest one CLI run may take before it is killed and the test fails.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// A `hinter` command (see [`crate::support::hinter_command`]), killed if dropped.
fn hinter_command() -> tokio::process::Command {
    let mut command = tokio::process::Command::from(crate::support::hinter_command());
    command.kill_on_drop(true);
    command
}

/// Starts `hinter serve --data-dir <dir>/data --listen 127.0.0.1:<free port>` and waits
/// until `/readyz` answers 200.
pub async fn start_server(dir: &TestDir) -> Server {
    let mut server = Server::start(dir, &[]).await;
    server.api = Api::with_timeout(server.api.base.clone(), REQUEST_TIMEOUT);
    server
}

/// `hinter <args…> --server <this server>`.
pub trait CliServer {
    fn cli(&self, args: &[&str]) -> Cli;
}

impl CliServer for Server {
    fn cli(&self, args: &[&str]) -> Cli {
        Cli::new(args).arg("--server").arg(self.base())
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

    /// Takes the read end of the process's stderr (its output is then not collected).
    pub fn take_stderr(&mut self) -> tokio::process::ChildStderr {
        self.child.stderr.take().expect("stderr is piped")
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
// HTTP, to arrange and check server state

/// The worker id the simulated workers use.
pub const WORKER: &str = "cli-test-worker";

/// The HTTP helpers of the CLI tests.
#[allow(async_fn_in_trait)]
pub trait CliApi {
    /// Enqueues one job over HTTP; returns its id.
    async fn enqueue_id(&self, spec: Value) -> String;
    /// Leases up to `max` jobs of `queue`, long-polling up to `wait` (e.g. `"300ms"`).
    async fn lease_from(&self, queue: &str, max: u32, wait: &str) -> Vec<Value>;
    /// Completes a leased job with `result`; asserts it succeeded.
    async fn complete_leased(&self, leased: &Value, result: Value) -> Value;
    /// Fails a leased job; returns the job object.
    async fn fail(&self, leased: &Value, error: &str, retry: bool) -> Value;
    /// Enqueues a job into `queue`, leases it and fails it permanently: it is `dead`.
    /// `queue` must hold no other leasable job.
    async fn make_dead(&self, job: &str, queue: &str, error: &str) -> String;
    /// Enqueues a job into `queue`, leases it and completes it: it is `succeeded`.
    async fn make_succeeded(&self, job: &str, queue: &str) -> String;
    /// Ids of every job matching `query`, in enqueue order.
    async fn ids(&self, query: &str) -> Vec<String>;
    /// `GET /api/v1/queues` → the entry of `name`, if listed.
    async fn queue(&self, name: &str) -> Option<Value>;
}

impl CliApi for Api {
    async fn enqueue_id(&self, spec: Value) -> String {
        let resp = self.post("/api/v1/jobs", &spec).await.expect_status(201);
        id_of(&resp.body["job"])
    }

    async fn lease_from(&self, queue: &str, max: u32, wait: &str) -> Vec<Value> {
        self.lease(
            json!({"queues": [queue], "worker_id": WORKER, "max": max, "lease": "60s",
                          "wait": wait}),
        )
        .await
    }

    async fn complete_leased(&self, leased: &Value, result: Value) -> Value {
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

    async fn fail(&self, leased: &Value, error: &str, retry: bool) -> Value {
        let id = id_of(leased);
        self.post(
            &format!("/api/v1/jobs/{id}/fail"),
            &json!({"lease_token": leased["lease_token"], "error": error, "retry": retry}),
        )
        .await
        .expect_status(200)
        .body
    }

    async fn make_dead(&self, job: &str, queue: &str, error: &str) -> String {
        let id = self.enqueue_id(json!({"job": job, "queue": queue})).await;
        let leased = self.lease_from(queue, 1, "5s").await;
        assert_eq!(
            leased.iter().map(id_of).collect::<Vec<_>>(),
            vec![id.clone()]
        );
        let dead = self.fail(&leased[0], error, false).await;
        assert_eq!(dead["state"], "dead", "{dead}");
        id
    }

    async fn make_succeeded(&self, job: &str, queue: &str) -> String {
        let id = self.enqueue_id(json!({"job": job, "queue": queue})).await;
        let leased = self.lease_from(queue, 1, "5s").await;
        assert_eq!(
            leased.iter().map(id_of).collect::<Vec<_>>(),
            vec![id.clone()]
        );
        self.complete_leased(&leased[0], json!({"ok": true})).await;
        id
    }

    async fn ids(&self, query: &str) -> Vec<String> {
        self.list_jobs(query).await.iter().map(id_of).collect()
    }

    async fn queue(&self, name: &str) -> Option<Value> {
        let resp = self.get("/api/v1/queues").await.expect_status(200);
        resp.body["queues"]
            .as_array()
            .unwrap_or_else(|| panic!("queues answer without queues: {resp:?}"))
            .iter()
            .find(|q| q["name"] == name)
            .cloned()
    }
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
