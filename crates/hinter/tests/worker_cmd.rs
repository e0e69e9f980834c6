//! End-to-end tests of `hinter worker`: the real binary leases jobs from a real `hinter serve`
//! on a temporary store and runs a shell script for each (as `/bin/sh job.sh DIR`, a file,
//! never `sh -c`). The script's behaviour depends on the job name; it leaves marker files in
//! DIR so the tests can wait on what it did.

use hinter_client::{Client, EnqueueRequest, Job, JobState};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_hinter");
const STARTUP: Duration = Duration::from_secs(30);
const JOB_DEADLINE: Duration = Duration::from_secs(60);

const SCRIPT: &str = r#"# A test job for `hinter worker`; what it does depends on $HINTER_JOB_NAME.
dir="$1"
marker="$dir/$HINTER_JOB_ID"
mark() {
    echo "$2" > "$marker.tmp" && mv "$marker.tmp" "$marker.$1"
}
case "$HINTER_JOB_NAME" in
ok)
    stdin=$(cat)
    file=$(cat "$HINTER_PAYLOAD_FILE")
    echo "hello from stdout"
    echo "a line on stderr" >&2
    if [ "$HINTER_SHUTDOWN_FILE" = "$WEBJOBS_SHUTDOWN_FILE" ]; then same=true; else same=false; fi
    if [ -e "$HINTER_SHUTDOWN_FILE" ]; then exists=true; else exists=false; fi
    printf '::result::{"stdin": %s, "file": %s, "id": "%s", "job": "%s", "queue": "%s", "attempt": "%s", "max_attempts": "%s", "shutdown_file": "%s", "same_shutdown_file": %s, "shutdown_file_exists": %s, "token": "%s", "args": %s}\n' \
        "$stdin" "$file" "$HINTER_JOB_ID" "$HINTER_JOB_NAME" "$HINTER_QUEUE" "$HINTER_ATTEMPT" \
        "$HINTER_MAX_ATTEMPTS" "$HINTER_SHUTDOWN_FILE" "$same" "$exists" "${HINTER_TOKEN-unset}" "$#"
    ;;
results)
    echo '::result::{"n": 1}'
    echo '::result::{"n": 2}'
    echo '::result::{not json'
    ;;
large)
    big=x; i=0
    while [ $i -lt 11 ]; do big="$big$big"; i=$((i + 1)); done
    echo "::result::\"$big\""
    ;;
permanent)
    echo "cannot parse the input" >&2
    exit 65
    ;;
flaky)
    if [ "$HINTER_ATTEMPT" -lt 2 ]; then
        echo "boom on attempt $HINTER_ATTEMPT" >&2
        exit 1
    fi
    echo "::result::{\"attempt\": $HINTER_ATTEMPT}"
    ;;
resume)
    echo "::progress::50 half way"
    if [ -z "${HINTER_CHECKPOINT-}" ]; then
        echo '::checkpoint::{"done": 5}'
        echo "crashed after item 5" >&2
        exit 1
    fi
    printf '::result::{"resumed_from": %s, "attempt": %s}\n' "$HINTER_CHECKPOINT" "$HINTER_ATTEMPT"
    ;;
sleepy)
    if [ -e "$marker.started" ]; then
        echo "::result::\"second run, attempt $HINTER_ATTEMPT\""
        exit 0
    fi
    trap 'if [ -e "$HINTER_SHUTDOWN_FILE" ]; then mark terminated shutdown-file; else mark terminated no-shutdown-file; fi; exit 143' TERM
    mark started $$
    sleep 60 &
    wait $!
    echo "the sleep ended without SIGTERM" >&2
    exit 3
    ;;
hold)
    mark started $$
    while [ ! -e "$dir/release" ]; do sleep 0.1; done
    ;;
stubborn)
    trap '' TERM
    mark started $$
    while :; do sleep 1; done
    ;;
*)
    echo "unknown job $HINTER_JOB_NAME" >&2
    exit 2
    ;;
esac
"#;

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped; its output goes to
/// a log file.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, args: &[OsString], log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone a file handle: {e}"));
        let child = Command::new(BIN)
            .args(args)
            .env_remove("HINTER_SERVER")
            .env_remove("HINTER_DATA_DIR")
            .env("RUST_LOG", "info")
            .env("HINTER_LOG_FORMAT", "json")
            // Given to the worker; the job's command must not see it.
            .env("HINTER_TOKEN", "test-token")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        Proc { name, child, log }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits i32"))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .unwrap_or_else(|e| panic!("cannot check on the {}: {e}", self.name))
    }

    fn check_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!(
                "the {} ended ({status}); its log:\n{}",
                self.name,
                self.log_text()
            );
        }
    }

    /// Waits for the process to end by itself.
    async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the {} did not exit within {within:?}; its log:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its JSON log lines.
    fn log_lines(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = kill(self.pid(), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("cannot find a free port: {e}"))
}

/// A temporary directory with the job script, a marker directory, and (once started) a server.
struct Setup {
    // Dropped first: the server stops before its directory goes.
    server: Option<Proc>,
    dir: TempDir,
    port: u16,
    url: String,
    client: Client,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("hinter-worker-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        std::fs::write(dir.path().join("job.sh"), SCRIPT)
            .unwrap_or_else(|e| panic!("cannot write the job script: {e}"));
        std::fs::create_dir(dir.path().join("markers"))
            .unwrap_or_else(|e| panic!("cannot create the marker dir: {e}"));
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let client = Client::new(&url, None).expect("a valid URL");
        Setup {
            server: None,
            dir,
            port,
            url,
            client,
        }
    }

    /// Starts `hinter serve` and waits until `/readyz` answers.
    async fn start_server(&mut self) {
        self.start_server_with(&[]).await;
    }

    /// [`Setup::start_server`] with more `serve` flags.
    async fn start_server_with(&mut self, more: &[&str]) {
        let mut args: Vec<OsString> = vec![
            "serve".into(),
            "--data-dir".into(),
            self.dir.path().join("data").into(),
            "--listen".into(),
            format!("127.0.0.1:{}", self.port).into(),
        ];
        args.extend(more.iter().map(OsString::from));
        let mut server = Proc::spawn("server", &args, self.dir.path().join("server.log"));
        let deadline = Instant::now() + STARTUP;
        while self.client.readyz().await.is_err() {
            server.check_running();
            assert!(
                Instant::now() < deadline,
                "the server was not ready within {STARTUP:?}; its log:\n{}",
                server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.server = Some(server);
    }

    fn markers(&self) -> PathBuf {
        self.dir.path().join("markers")
    }

    /// `hinter worker --server … --lease 3s --stopping-wait-time 1s EXTRA -- /bin/sh job.sh DIR`.
    fn start_worker(&self, name: &str, extra: &[&str]) -> Proc {
        let command = vec![
            OsString::from("/bin/sh"),
            self.dir.path().join("job.sh").into(),
            self.markers().into(),
        ];
        self.start_worker_with(name, extra, command)
    }

    fn start_worker_with(&self, name: &str, extra: &[&str], command: Vec<OsString>) -> Proc {
        let mode = [OsString::from("--server"), self.url.clone().into()];
        self.start_worker_in(name, &mode, extra, command)
    }

    /// `hinter worker MODE --lease 3s --stopping-wait-time 1s EXTRA -- COMMAND`.
    fn start_worker_in(
        &self,
        name: &str,
        mode: &[OsString],
        extra: &[&str],
        command: Vec<OsString>,
    ) -> Proc {
        let mut args: Vec<OsString> = vec!["worker".into()];
        args.extend(mode.iter().cloned());
        args.extend([
            "--lease".into(),
            "3s".into(),
            "--stopping-wait-time".into(),
            "1s".into(),
        ]);
        args.extend(extra.iter().map(OsString::from));
        args.push("--".into());
        args.extend(command);
        Proc::spawn("worker", &args, self.dir.path().join(format!("{name}.log")))
    }

    async fn enqueue(&self, request: EnqueueRequest) -> Uuid {
        self.client
            .enqueue(&request)
            .await
            .unwrap_or_else(|e| panic!("cannot enqueue: {e}"))
            .job
            .id
    }

    /// Waits until the job is finished; on a deadline, fails with the worker's log.
    async fn finished(&self, id: Uuid, worker: &Proc) -> Job {
        let job = self
            .client
            .wait_for_finish(id, Some(JOB_DEADLINE))
            .await
            .unwrap_or_else(|e| panic!("cannot get job {id}: {e}"));
        assert!(
            job.state.is_finished(),
            "job {id} did not finish within {JOB_DEADLINE:?} ({:?}); the worker's log:\n{}",
            job.state,
            worker.log_text()
        );
        job
    }

    /// Waits for the marker file `<job id>.<what>` and answers its content.
    async fn marker(&self, id: Uuid, what: &str, worker: &Proc) -> String {
        let path = self.markers().join(format!("{id}.{what}"));
        let deadline = Instant::now() + JOB_DEADLINE;
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                return text.trim().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no {} within {JOB_DEADLINE:?}; the worker's log:\n{}",
                path.display(),
                worker.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn pid_of(marker: &str) -> Pid {
    Pid::from_raw(
        marker
            .parse()
            .unwrap_or_else(|e| panic!("not a pid: {marker:?}: {e}")),
    )
}

/// Waits until no process has this pid (the worker reaps its child).
async fn wait_gone(pid: Pid) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while kill(pid, None) != Err(Errno::ESRCH) {
        assert!(Instant::now() < deadline, "process {pid} is still there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn error_messages(job: &Job) -> Vec<&str> {
    job.errors.iter().map(|e| e.message.as_str()).collect()
}

#[tokio::test]
async fn runs_jobs_with_payload_env_and_result() {
    let mut setup = Setup::new();
    setup.start_server().await;
    let worker = setup.start_worker("worker", &["--queue", "media", "--queue", "default"]);

    // Payload data that a shell would choke on: it must arrive byte for byte.
    let payload = json!({"text": "it's \"quoted\"; $(touch pwned) `id` % ümlaut", "n": [1, 2]});
    let id = setup
        .enqueue(
            EnqueueRequest::new("ok", payload.clone())
                .queue("media")
                .max_attempts(7),
        )
        .await;
    let job = setup.finished(id, &worker).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    assert_eq!(job.attempt, 1);
    let result = job.result.expect("the ::result:: line sets the result");
    assert_eq!(result["stdin"], payload);
    assert_eq!(result["file"], payload);
    assert_eq!(result["id"], id.to_string());
    assert_eq!(result["job"], "ok");
    assert_eq!(result["queue"], "media");
    assert_eq!(result["attempt"], "1");
    assert_eq!(result["max_attempts"], "7");
    assert_eq!(result["same_shutdown_file"], true);
    assert_eq!(result["shutdown_file_exists"], false);
    assert_eq!(
        result["token"], "unset",
        "the worker's token leaked to the job"
    );
    assert_eq!(result["args"], 1, "the command gets its own arguments only");
    assert!(!setup.dir.path().join("pwned").exists());
    // The per-job temp dir (payload and shutdown file) is gone after the job.
    let shutdown_file = PathBuf::from(result["shutdown_file"].as_str().unwrap_or_default());
    let job_dir = shutdown_file.parent().expect("the shutdown file has a dir");
    assert!(!job_dir.exists(), "{} was left behind", job_dir.display());

    // stdout is logged at INFO and stderr at ERROR, with the job id.
    let logged = |level: &str, message: &str| {
        worker.log_lines().iter().any(|line| {
            line["level"] == level
                && line["fields"]["message"] == message
                && line["fields"]["job_id"] == id.to_string()
        })
    };
    assert!(logged("INFO", "hello from stdout"), "{}", worker.log_text());
    assert!(logged("ERROR", "a line on stderr"), "{}", worker.log_text());

    // The last valid `::result::` wins; an invalid one is ignored.
    let id = setup
        .enqueue(EnqueueRequest::new("results", Value::Null))
        .await;
    let job = setup.finished(id, &worker).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    assert_eq!(job.result, Some(json!({"n": 2})));
}

/// The server refuses a result larger than its `--max-job-bytes` (413 for that job in the
/// batch of outcomes): the attempt fails for good instead of being sent again and again.
#[tokio::test]
async fn a_result_the_server_refuses_fails_the_job_for_good() {
    let mut setup = Setup::new();
    setup.start_server_with(&["--max-job-bytes", "1024"]).await;
    let worker = setup.start_worker("worker", &[]);
    let large = setup
        .enqueue(EnqueueRequest::new("large", Value::Null).max_attempts(5))
        .await;
    let fine = setup
        .enqueue(EnqueueRequest::new("results", Value::Null))
        .await;
    let job = setup.finished(large, &worker).await;
    assert_eq!((job.state, job.attempt), (JobState::Dead, 1), "{job:?}");
    let errors = error_messages(&job);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("refused the job's result") && e.contains("result")),
        "{errors:?}"
    );
    let job = setup.finished(fine, &worker).await;
    assert_eq!(job.result, Some(json!({"n": 2})), "{job:?}");
}

#[tokio::test]
async fn exit_codes_decide_retries() {
    let mut setup = Setup::new();
    setup.start_server().await;
    let worker = setup.start_worker("worker", &[]);

    let permanent = setup
        .enqueue(EnqueueRequest::new("permanent", Value::Null).max_attempts(5))
        .await;
    let flaky = setup
        .enqueue(EnqueueRequest::new("flaky", Value::Null).max_attempts(3))
        .await;

    let job = setup.finished(permanent, &worker).await;
    assert_eq!(job.state, JobState::Dead, "{job:?}");
    assert_eq!(job.attempt, 1, "exit 65 is not retried");
    assert_eq!(
        error_messages(&job),
        ["exited with code 65 (failed permanently): cannot parse the input"]
    );

    let job = setup.finished(flaky, &worker).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    assert_eq!(job.attempt, 2, "exit 1 is retried");
    assert_eq!(job.result, Some(json!({"attempt": 2})));
    assert_eq!(
        error_messages(&job),
        ["exited with code 1: boom on attempt 1"]
    );
    // The exit codes are in the attempt records, as in store mode.
    let job = setup
        .client
        .get_job(permanent, None)
        .await
        .unwrap_or_else(|e| panic!("cannot read the job: {e}"));
    let codes: Vec<Option<i32>> = job.runs.iter().map(|r| r.exit_code).collect();
    assert_eq!(codes, [Some(65)]);
    let job = setup
        .client
        .get_job(flaky, None)
        .await
        .unwrap_or_else(|e| panic!("cannot read the job: {e}"));
    let codes: Vec<Option<i32>> = job.runs.iter().map(|r| r.exit_code).collect();
    assert_eq!(codes, [Some(1), None], "a failed attempt keeps its code");
}

/// A command's `::progress::` and `::checkpoint::` lines are stored through the server (its
/// other lines are not: they go to the worker's own log); after a failure the next attempt
/// gets the checkpoint in `HINTER_CHECKPOINT` and resumes.
#[tokio::test]
async fn a_command_saves_a_checkpoint_and_the_next_attempt_resumes() {
    let mut setup = Setup::new();
    setup.start_server().await;
    let worker = setup.start_worker("worker", &[]);
    let id = setup
        .enqueue(EnqueueRequest::new("resume", Value::Null).max_attempts(3))
        .await;
    let job = setup.finished(id, &worker).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    assert_eq!(job.attempt, 2);
    assert_eq!(
        job.result,
        Some(json!({"resumed_from": {"done": 5}, "attempt": 2}))
    );
    assert_eq!(job.checkpoint, Some(json!({"done": 5})));
    let progress = job
        .progress
        .clone()
        .expect("the ::progress:: line is stored");
    assert_eq!(
        (progress.percent, progress.message.as_deref()),
        (50.0, Some("half way"))
    );
    assert_eq!(
        error_messages(&job),
        ["exited with code 1: crashed after item 5"]
    );
    let logs = setup
        .client
        .job_logs(id, None, 0, Some(100))
        .await
        .unwrap_or_else(|e| panic!("cannot read the logs: {e}"));
    assert_eq!(
        logs.lines,
        [],
        "a worker command's lines stay in the worker's log"
    );
}

#[tokio::test]
async fn cancelling_a_running_job_stops_its_command() {
    let mut setup = Setup::new();
    setup.start_server().await;
    let mut worker = setup.start_worker("worker", &[]);

    let id = setup
        .enqueue(EnqueueRequest::new("sleepy", Value::Null))
        .await;
    let pid = pid_of(&setup.marker(id, "started", &worker).await);
    let job = setup
        .client
        .cancel(id)
        .await
        .unwrap_or_else(|e| panic!("cannot cancel: {e}"));
    assert_eq!(job.state, JobState::Running);
    assert!(job.cancel_requested);

    let job = setup.finished(id, &worker).await;
    assert_eq!(job.state, JobState::Cancelled, "{job:?}");
    assert_eq!(error_messages(&job), ["cancelled"]);
    // The command got SIGTERM, with the shutdown file already there.
    assert_eq!(
        setup.marker(id, "terminated", &worker).await,
        "shutdown-file"
    );
    wait_gone(pid).await;
    worker.check_running();
}

#[tokio::test]
async fn a_timed_out_job_is_killed_and_fails() {
    let mut setup = Setup::new();
    setup.start_server().await;
    let mut worker = setup.start_worker("worker", &[]);

    // `stubborn` ignores SIGTERM: it takes the SIGKILL after the grace time.
    let id = setup
        .enqueue(
            EnqueueRequest::new("stubborn", Value::Null)
                .timeout(Duration::from_secs(1))
                .max_attempts(1),
        )
        .await;
    let pid = pid_of(&setup.marker(id, "started", &worker).await);
    let job = setup.finished(id, &worker).await;
    assert_eq!(job.state, JobState::Dead, "{job:?}");
    assert_eq!(error_messages(&job), ["timed out after 1s"]);
    wait_gone(pid).await;
    worker.check_running();
}

#[tokio::test]
async fn sigterm_hands_running_jobs_back_to_the_queue() {
    let mut setup = Setup::new();
    setup.start_server().await;
    let mut worker = setup.start_worker("worker", &[]);

    let id = setup
        .enqueue(EnqueueRequest::new("sleepy", Value::Null).max_attempts(3))
        .await;
    let pid = pid_of(&setup.marker(id, "started", &worker).await);
    // A job that finished while the worker waited for more is not counted as running.
    let quick = setup.enqueue(EnqueueRequest::new("ok", json!(1))).await;
    let done = setup.finished(quick, &worker).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    kill(worker.pid(), Signal::SIGTERM).unwrap_or_else(|e| panic!("cannot signal: {e}"));
    let status = worker.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "the worker's log:\n{}",
        worker.log_text()
    );
    let stopping = worker
        .log_lines()
        .into_iter()
        .find(|line| {
            line["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("taking no more jobs"))
        })
        .unwrap_or_else(|| panic!("no stop message: {}", worker.log_text()));
    assert_eq!(stopping["fields"]["running"], json!(1), "{stopping}");
    assert_eq!(
        setup.marker(id, "terminated", &worker).await,
        "shutdown-file"
    );
    wait_gone(pid).await;

    // Not lost: handed back (`release`), queued at once, the attempt not counted — as the
    // store-mode worker does.
    let job = setup
        .client
        .get_job(id, None)
        .await
        .unwrap_or_else(|e| panic!("cannot get job {id}: {e}"));
    assert_eq!(job.state, JobState::Queued, "{job:?}");
    assert_eq!(job.attempt, 0, "{job:?}");
    assert!(error_messages(&job).is_empty(), "{job:?}");

    // Another worker picks it up, as its first counted attempt.
    let next = setup.start_worker("worker2", &[]);
    let job = setup.finished(id, &next).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    assert_eq!(job.attempt, 1);
    assert_eq!(job.result, Some(json!("second run, attempt 1")));
}

/// An HTTP-mode worker lists itself in `GET /api/v1/workers` (role `worker`, its queues and
/// concurrency) while it runs, and leaves the list when it stops.
#[tokio::test]
async fn the_worker_is_listed_while_it_runs() {
    let mut setup = Setup::new();
    setup.start_server().await;
    let mut worker = setup.start_worker("worker", &["--queue", "q1", "--concurrency", "3"]);
    let pid = worker.child.id();
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/workers", setup.url);
    let listed = |http: reqwest::Client, url: String| async move {
        let body: Value = http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        body["workers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .find(|w| w["pid"] == json!(pid))
    };
    let deadline = Instant::now() + STARTUP;
    let me = loop {
        if let Some(me) = listed(http.clone(), url.clone()).await {
            break me;
        }
        worker.check_running();
        assert!(
            Instant::now() < deadline,
            "never listed: {}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(me["role"], "worker", "{me}");
    assert_eq!(me["queues"], json!(["q1"]), "{me}");
    assert_eq!(me["concurrency"], 3, "{me}");

    kill(worker.pid(), Signal::SIGTERM).unwrap_or_else(|e| panic!("cannot signal: {e}"));
    let status = worker.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "{}", worker.log_text());
    assert!(
        listed(http, url).await.is_none(),
        "a stopped worker leaves the list at once"
    );
}

#[tokio::test]
async fn waits_for_a_server_that_is_not_there_yet() {
    let mut setup = Setup::new();
    let mut worker = setup.start_worker("worker", &[]);
    // It keeps trying, saying where it tries.
    let deadline = Instant::now() + STARTUP;
    while !worker
        .log_lines()
        .iter()
        .any(|line| line["level"] == "WARN" && line.to_string().contains(&setup.url))
    {
        worker.check_running();
        assert!(
            Instant::now() < deadline,
            "no warning naming {}; the worker's log:\n{}",
            setup.url,
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    setup.start_server().await;
    let id = setup
        .enqueue(EnqueueRequest::new("results", Value::Null))
        .await;
    let job = setup.finished(id, &worker).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    worker.check_running();
}

#[tokio::test]
async fn a_missing_command_fails_for_good() {
    let mut setup = Setup::new();
    setup.start_server().await;
    let missing = setup.dir.path().join("no-such-program");
    let mut worker = setup.start_worker_with("worker", &[], vec![missing.clone().into()]);

    let id = setup
        .enqueue(EnqueueRequest::new("ok", Value::Null).max_attempts(5))
        .await;
    let job = setup.finished(id, &worker).await;
    assert_eq!(job.state, JobState::Dead, "{job:?}");
    assert_eq!(job.attempt, 1);
    assert_eq!(
        error_messages(&job),
        [format!(
            "cannot run {}: No such file or directory",
            missing.display()
        )]
    );
    worker.check_running();
}

#[tokio::test]
async fn runs_at_most_concurrency_jobs_at_once() {
    let mut setup = Setup::new();
    setup.start_server().await;
    let worker = setup.start_worker("worker", &["--concurrency", "2"]);

    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            setup
                .enqueue(EnqueueRequest::new("hold", Value::Null))
                .await,
        );
    }
    let started = |setup: &Setup| {
        ids.iter()
            .filter(|id| setup.markers().join(format!("{id}.started")).exists())
            .count()
    };
    let deadline = Instant::now() + JOB_DEADLINE;
    while started(&setup) < 2 {
        assert!(
            Instant::now() < deadline,
            "two jobs did not start; the worker's log:\n{}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Two run; the third was not even leased.
    let queues = setup
        .client
        .queues()
        .await
        .unwrap_or_else(|e| panic!("cannot list queues: {e}"));
    let default = queues
        .iter()
        .find(|q| q.name == "default")
        .expect("the default queue");
    assert_eq!((default.running, default.queued), (2, 1), "{default:?}");
    assert_eq!(started(&setup), 2);

    std::fs::write(setup.markers().join("release"), b"")
        .unwrap_or_else(|e| panic!("cannot write the release file: {e}"));
    for id in ids {
        let job = setup.finished(id, &worker).await;
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    }
}

#[tokio::test]
async fn a_queue_name_no_lease_could_use_stops_the_worker_at_once() {
    let mut setup = Setup::new();
    setup.start_server().await;
    let mut worker = setup.start_worker("worker", &["--queue", "not a queue name!"]);
    let status = worker.wait_exit(STARTUP).await;
    assert_eq!(status.code(), Some(1), "{}", worker.log_text());
    let log = worker.log_text();
    assert!(
        log.contains("--queue[0]") && log.contains("not a queue name!"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

/// A server that refuses the lease request (4xx) stops the worker with an error naming the
/// refusal, instead of asking again for ever.
#[tokio::test]
async fn a_refused_lease_stops_the_worker_with_an_error() {
    use axum::routing::post;
    let setup = Setup::new();
    let app = axum::Router::new().route(
        "/api/v1/leases",
        post(|| async {
            (
                axum::http::StatusCode::FORBIDDEN,
                [("content-type", "application/json")],
                r#"{"error": {"code": "forbidden", "message": "this token may not lease"}}"#,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", setup.port))
        .await
        .unwrap_or_else(|e| panic!("cannot bind the stand-in server: {e}"));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let mut worker = setup.start_worker("worker", &[]);
    let status = worker.wait_exit(STARTUP).await;
    assert_eq!(status.code(), Some(1), "{}", worker.log_text());
    let log = worker.log_text();
    assert!(log.contains("refused to lease jobs"), "{log}");
    assert!(log.contains("this token may not lease"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    server.abort();
}

#[test]
fn the_script_is_plain_sh() {
    // Guards the test itself: the script must parse in /bin/sh.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
    let script = dir.path().join("job.sh");
    std::fs::write(&script, SCRIPT).unwrap_or_else(|e| panic!("cannot write: {e}"));
    let status = Command::new("/bin/sh")
        .arg("-n")
        .arg(Path::new(&script))
        .status()
        .unwrap_or_else(|e| panic!("cannot run /bin/sh: {e}"));
    assert!(status.success());
}

/// A leased job the worker cannot read (a payload deeper than its JSON parser allows; a
/// hinter server refuses such payloads, another implementation might not) is failed at once,
/// for good, naming the cause; the readable job of the same lease answer runs as usual.
#[tokio::test]
async fn an_unreadable_leased_job_is_failed_at_once() {
    use axum::extract::{Path as UrlPath, State};
    use axum::routing::post;
    use std::sync::{Arc, Mutex};

    type Calls = Arc<Mutex<Vec<(String, Value)>>>;
    const UNREADABLE: &str = "0192f1c2-0000-7000-8000-0000000000aa";
    const READABLE: &str = "0192f1c2-0000-7000-8000-0000000000bb";
    fn job_json(id: &str, state: &str) -> Value {
        json!({
            "id": id, "job": "ok", "queue": "default", "payload": null, "state": state,
            "priority": 0, "attempt": 1, "max_attempts": 10,
            "run_at": "2026-11-24T10:00:00Z", "created_at": "2026-11-24T10:00:00Z",
            "started_at": null, "finished_at": null, "unique_key": null, "ordering_key": null,
            "timeout": null, "singleton": false, "cancel_requested": false, "worker_id": null,
            "lease_expires_at": null, "errors": [], "result": null
        })
    }

    let setup = Setup::new();
    let calls: Calls = Arc::default();
    let leases = Arc::new(Mutex::new(0u32));
    let app = axum::Router::new()
        .route(
            "/api/v1/leases",
            post(move || {
                let leases = leases.clone();
                async move {
                    let first = {
                        let mut n = leases.lock().unwrap_or_else(|e| e.into_inner());
                        *n += 1;
                        *n == 1
                    };
                    if !first {
                        // A long-poll that finds nothing.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        return (
                            [("content-type", "application/json")],
                            "{\"jobs\": []}".into(),
                        );
                    }
                    let leased = |id: &str, token: u32, payload: &str| {
                        format!(
                            "{{\"id\": \"{id}\", \"job\": \"ok\", \"queue\": \"default\", \
                             \"payload\": {payload}, \"attempt\": 1, \"max_attempts\": 10, \
                             \"priority\": 0, \"created_at\": \"2026-11-24T10:00:00Z\", \
                             \"lease_token\": {token}, \
                             \"lease_expires_at\": \"2026-11-24T10:01:00Z\", \"timeout\": null}}"
                        )
                    };
                    let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
                    let body = format!(
                        "{{\"jobs\": [{}, {}]}}",
                        leased(UNREADABLE, 7, &deep),
                        leased(READABLE, 8, "{\"n\": 1}")
                    );
                    ([("content-type", "application/json")], body)
                }
            }),
        )
        .route(
            "/api/v1/jobs/{id}/{action}",
            post(
                |State(calls): State<Calls>,
                 UrlPath((id, action)): UrlPath<(String, String)>,
                 axum::Json(body): axum::Json<Value>| async move {
                    calls
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((format!("{action} {id}"), body));
                    let state = if action == "fail" {
                        "dead"
                    } else {
                        "succeeded"
                    };
                    if action == "heartbeat" {
                        return axum::Json(json!({
                            "lease_expires_at": "2026-11-24T10:01:00Z", "cancel_requested": false
                        }));
                    }
                    axum::Json(job_json(&id, state))
                },
            ),
        )
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", setup.port))
        .await
        .unwrap_or_else(|e| panic!("cannot bind the stand-in server: {e}"));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let worker = setup.start_worker("worker", &["--concurrency", "2"]);
    let deadline = Instant::now() + JOB_DEADLINE;
    let seen = loop {
        let seen = calls.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let failed = seen
            .iter()
            .any(|(call, _)| call == &format!("fail {UNREADABLE}"));
        let completed = seen
            .iter()
            .any(|(call, _)| call == &format!("complete {READABLE}"));
        if failed && completed {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not report both jobs: {seen:?}\n{}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (_, fail) = seen
        .iter()
        .find(|(call, _)| call == &format!("fail {UNREADABLE}"))
        .expect("the fail call");
    assert_eq!(fail["lease_token"], json!(7));
    assert_eq!(fail["retry"], json!(false), "{fail}");
    let message = fail["error"].as_str().unwrap_or_default();
    assert!(message.contains("could not read"), "{message}");
    assert!(
        !seen
            .iter()
            .any(|(call, _)| call.ends_with(READABLE) && call.starts_with("fail")),
        "the readable job must not fail: {seen:?}"
    );
    drop(worker);
    server.abort();
}

/// The Python example of docs/worker.md works as written: a payload without `src` (or no
/// payload at all) is a permanent failure (65), one with `src` succeeds with a result.
#[test]
fn the_python_example_in_the_docs_works() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/worker.md"))
        .unwrap_or_else(|e| panic!("cannot read docs/worker.md: {e}"));
    let section = doc
        .split("## Example job in Python")
        .nth(1)
        .expect("docs/worker.md has the Python example");
    let code = section
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a python code block");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
    let script = dir.path().join("run.py");
    std::fs::write(&script, code).unwrap_or_else(|e| panic!("cannot write: {e}"));
    let run = |payload: &str| {
        let mut child = Command::new("python3")
            .arg(&script)
            .env("HINTER_SHUTDOWN_FILE", dir.path().join("shutdown"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3: {e}"));
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(payload.as_bytes())
            .unwrap_or_else(|e| panic!("cannot write stdin: {e}"));
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("python3 did not finish: {e}"))
    };
    for payload in ["null", "{}", "{\"src\": null}", "[1]", "\"a.png\""] {
        let out = run(payload);
        assert_eq!(out.status.code(), Some(65), "{payload}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no src"),
            "{out:?}"
        );
    }
    let out = run("{\"src\": \"a.png\"}");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("resizing a.png"), "{stdout}");
    assert!(stdout.contains("::result::{\"thumb\""), "{stdout}");
}

/// Runs one scenario with a worker in the given mode and returns, per case, the job's final
/// state, its attempt count and its runs' outcomes: succeed, fail for good, fail then
/// succeed, time out, be cancelled, and be running at SIGTERM (handed back, uncounted).
async fn same_scenario(mode_args: &[&str]) -> Vec<(&'static str, JobState, u32, Vec<String>)> {
    let mut setup = Setup::new();
    setup.start_server().await;
    let data_dir = setup.dir.path().join("data");
    let mode: Vec<OsString> = mode_args
        .iter()
        .map(|arg| match *arg {
            "DATA_DIR" => data_dir.clone().into(),
            "SERVER" => setup.url.clone().into(),
            other => other.into(),
        })
        .collect();
    let command = vec![
        OsString::from("/bin/sh"),
        setup.dir.path().join("job.sh").into(),
        setup.markers().into(),
    ];
    let mut worker = setup.start_worker_in("worker", &mode, &["--concurrency", "4"], command);

    let ok = setup
        .enqueue(EnqueueRequest::new("ok", json!({"n": 1})))
        .await;
    let permanent = setup
        .enqueue(EnqueueRequest::new("permanent", Value::Null).max_attempts(5))
        .await;
    let flaky = setup
        .enqueue(EnqueueRequest::new("flaky", Value::Null).max_attempts(3))
        .await;
    let timed_out = setup
        .enqueue(
            EnqueueRequest::new("stubborn", Value::Null)
                .timeout(Duration::from_secs(1))
                .max_attempts(1),
        )
        .await;
    let mut results = Vec::new();
    for (name, id) in [
        ("ok", ok),
        ("permanent", permanent),
        ("flaky", flaky),
        ("timed out", timed_out),
    ] {
        let job = setup.finished(id, &worker).await;
        results.push((name, job));
    }
    // Cancelled while running.
    let cancelled = setup
        .enqueue(EnqueueRequest::new("sleepy", Value::Null))
        .await;
    setup.marker(cancelled, "started", &worker).await;
    setup
        .client
        .cancel(cancelled)
        .await
        .unwrap_or_else(|e| panic!("cannot cancel: {e}"));
    results.push(("cancelled", setup.finished(cancelled, &worker).await));
    // Running at SIGTERM: handed back, the attempt not counted.
    let stopped = setup
        .enqueue(EnqueueRequest::new("sleepy", Value::Null))
        .await;
    setup.marker(stopped, "started", &worker).await;
    kill(worker.pid(), Signal::SIGTERM).unwrap_or_else(|e| panic!("cannot signal: {e}"));
    let status = worker.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "{}", worker.log_text());
    let job = setup
        .client
        .get_job(stopped, None)
        .await
        .unwrap_or_else(|e| panic!("cannot get job {stopped}: {e}"));
    results.push(("stopped", job));
    results
        .into_iter()
        .map(|(name, job)| {
            let runs = job
                .runs
                .iter()
                .map(|run| format!("{:?}", run.outcome).to_lowercase())
                .collect();
            (name, job.state, job.attempt, runs)
        })
        .collect()
}

/// Both worker modes are one runtime: the same scenario ends the same way, attempt for attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_modes_end_every_case_the_same_way() {
    let http = same_scenario(&["--server", "SERVER"]).await;
    let store = same_scenario(&["--data-dir", "DATA_DIR"]).await;
    let states: Vec<_> = http
        .iter()
        .map(|(name, state, attempt, _)| (*name, *state, *attempt))
        .collect();
    assert_eq!(
        states,
        vec![
            ("ok", JobState::Succeeded, 1),
            ("permanent", JobState::Dead, 1),
            ("flaky", JobState::Succeeded, 2),
            ("timed out", JobState::Dead, 1),
            ("cancelled", JobState::Cancelled, 1),
            ("stopped", JobState::Queued, 0),
        ],
        "HTTP mode: {http:?}"
    );
    assert_eq!(http, store, "HTTP mode and store mode differ");
}
