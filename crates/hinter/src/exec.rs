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
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
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
}

/// What the command is told about the attempt it runs.
#[derive(Debug, Clone, Copy)]
pub struct JobInfo<'a> {
    pub id: Uuid,
    pub job: &'a str,
    pub queue: &'a str,
    pub attempt: u32,
    pub max_attempts: u32,
    pub payload: &'a Value,
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
        })
    }

    /// The program, for messages.
    pub fn program_name(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }

    /// Runs the command for one attempt of `job`, stopping it when `stop` completes first.
    pub async fn run<R>(&self, job: &JobInfo<'_>, stop: impl Future<Output = R>) -> Outcome<R> {
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

        let mut command = Command::new(&self.program);
        command.args(&self.args);
        for name in SECRET_VARIABLES {
            command.env_remove(name);
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

        let ended: Result<WaitResult, R> = tokio::select! {
            status = child.wait() => Ok(status),
            reason = stop => Err(reason),
        };
        let (status, stopped) = match ended {
            Ok(status) => (status, None),
            Err(reason) => {
                let status = terminate(&mut child, group, &shutdown_file, id).await;
                (status, Some(reason))
            }
        };
        // Whatever the command left running in its group goes with it.
        signal_group(group, Signal::SIGKILL, id);
        group_guard.group = None;
        drop(stdin);
        let result = collect(stdout, id).await.flatten();
        let last_stderr = collect(stderr, id).await.flatten();
        let status_text = match &status {
            Ok(status) => describe_status(*status),
            Err(e) => format!("cannot wait for the command: {e}"),
        };
        if let Some(reason) = stopped {
            tracing::info!(job_id = %id, "the command stopped: {status_text}");
            return Outcome::Stopped(reason);
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

    #[tokio::test]
    async fn reads_lines_and_the_last_valid_result() {
        let out: &[u8] =
            b"hello\n::result::{\"n\": 1}\r\n::result::{\"n\": 2}\n::result::{oops\n\xffbad\nno newline";
        let result = read_stdout(out, Uuid::nil()).await;
        assert_eq!(result, Some(json!({"n": 2})));
        let err: &[u8] = b"first\nlast problem\n\n  \n";
        assert_eq!(
            read_stderr(err, Uuid::nil()).await.as_deref(),
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
