//! Child processes of a test: [`ChildGuard`] for any of them, [`Server`] for `hinter serve`.

use super::{free_port, hinter_command, Api, TestDir, POLL};
use serde_json::Value;
use std::fs::File;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Counts process starts so every start gets its own log file.
static STARTS: AtomicUsize = AtomicUsize::new(0);

/// Any child process (a server, an external worker); killed (SIGKILL) when dropped, and the
/// end of its log printed if the test is failing.
pub struct ChildGuard {
    pub name: String,
    child: Option<Child>,
    pid: u32,
    log_path: PathBuf,
}

impl ChildGuard {
    /// Spawns `command` with stdout and stderr into files `<name>.stdout.log`/`.stderr.log`;
    /// [`ChildGuard::log`] is the stderr.
    pub fn spawn(dir: &TestDir, name: &str, command: &mut Command) -> ChildGuard {
        let stdout = File::create(dir.path().join(format!("{name}.stdout.log"))).expect("log");
        let log_path = dir.path().join(format!("{name}.stderr.log"));
        let stderr = File::create(&log_path).expect("log");
        command.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        ChildGuard::start(name, command, log_path)
    }

    /// Spawns `command` with stdout and stderr both into `<name>-<n>.log`.
    pub fn spawn_logged(dir: &TestDir, name: &str, command: &mut Command) -> ChildGuard {
        let n = STARTS.fetch_add(1, Ordering::Relaxed);
        let log_path = dir.path().join(format!("{name}-{n}.log"));
        let log = File::create(&log_path).expect("creating a log file");
        let out = log.try_clone().expect("cloning a file handle");
        command.stdin(Stdio::null()).stdout(out).stderr(log);
        ChildGuard::start(name, command, log_path)
    }

    /// Spawns `command` as it is set up; its log is the file `log_path`.
    pub fn start(name: &str, command: &mut Command, log_path: PathBuf) -> ChildGuard {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        ChildGuard {
            name: name.to_string(),
            pid: child.id(),
            child: Some(child),
            log_path,
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

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
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

    /// Whether the process was killed, or seen exiting by [`ChildGuard::wait_exit`].
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

    /// Polls until the process exits, giving up (`None`) after `timeout`.
    pub async fn try_wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
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

    /// Waits (polling) until the process exits; panics with its log after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.try_wait_exit(timeout).await {
            Some(status) => status,
            None => panic!(
                "{} did not exit within {timeout:?}; log:\n{}",
                self.name,
                self.log()
            ),
        }
    }
}

impl Drop for ChildGuard {
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
                self.log_path.display()
            );
        }
    }
}

/// A `hinter serve` on a free port, and its [`Api`]; killed (SIGKILL) when dropped.
pub struct Server {
    pub proc: ChildGuard,
    pub api: Api,
    pub addr: SocketAddr,
}

impl Server {
    /// How long a server started by [`Server::start`] may take to become ready (debug
    /// build, loaded machine).
    pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

    /// Starts `hinter serve --data-dir <dir>/data --listen 127.0.0.1:<free port> <extra>`
    /// (stderr into `server-<n>.stderr.log`) and waits until `/readyz` answers 200.
    pub async fn start(dir: &TestDir, extra: &[&str]) -> Server {
        let data_dir = dir.data_dir();
        Server::launch(
            "hinter serve",
            Server::READY_TIMEOUT,
            super::http::REQUEST_TIMEOUT,
            |addr| {
                let n = STARTS.fetch_add(1, Ordering::Relaxed);
                let log_path = dir.path().join(format!("server-{n}.stderr.log"));
                let stderr = File::create(&log_path).expect("creating the server log");
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
                ChildGuard::start(&format!("hinter serve on {addr}"), &mut command, log_path)
            },
        )
        .await
    }

    /// Starts `hinter --log-format json serve STORE --listen 127.0.0.1:<free port> EXTRA` on
    /// any store (`--database URL --schema S`, `--data-dir DIR`), logging into
    /// `<name>-<n>.log`, and waits (up to a minute) until `/readyz` answers 200.
    pub async fn start_on(dir: &TestDir, store: &[String], name: &str, extra: &[&str]) -> Server {
        let minute = Duration::from_secs(60);
        Server::launch(name, minute, minute, |addr| {
            let mut command = hinter_command();
            command
                .args(["--log-format", "json", "serve"])
                .args(store)
                .arg("--listen")
                .arg(addr.to_string())
                .args(extra);
            ChildGuard::spawn_logged(dir, name, &mut command)
        })
        .await
    }

    /// Spawns a server (`spawn` listening on the address it is given) and waits until it is
    /// ready. A free port can be taken by someone else between our probe and the server's
    /// bind: then the server exits with "cannot listen" and we try another port.
    pub async fn launch(
        what: &str,
        ready_timeout: Duration,
        request_timeout: Duration,
        mut spawn: impl FnMut(SocketAddr) -> ChildGuard,
    ) -> Server {
        for _ in 0..5 {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let mut server = Server {
                proc: spawn(addr),
                api: Api::with_timeout(format!("http://{addr}"), request_timeout),
                addr,
            };
            match server.wait_ready(ready_timeout).await {
                Ok(()) => return server,
                Err(exit) if server.proc.log().contains("cannot listen") => {
                    eprintln!("{addr} was taken ({exit}); trying another port");
                }
                Err(exit) => panic!(
                    "{what} exited before it was ready ({exit}); log:\n{}",
                    server.proc.log()
                ),
            }
        }
        panic!("could not start {what} on a free port after 5 tries");
    }

    /// Polls `/readyz`; `Err` if the process exited first.
    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
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
                    "{} was not ready within {timeout:?}; log:\n{}",
                    self.proc.name,
                    self.proc.log()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Everything the server logged so far.
    pub fn stderr(&self) -> String {
        self.proc.log()
    }

    /// SIGKILL: the process dies at once, with no chance to clean up.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Sends SIGTERM (a graceful stop) and waits up to `timeout` for the process to exit.
    pub async fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.proc.is_killed() {
            return None;
        }
        self.proc.terminate();
        self.proc.try_wait_exit(timeout).await
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
