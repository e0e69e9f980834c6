//! The harness shared by the integration-test binaries (`e2e`, `cli`, `cluster`,
//! `pg_faults`): each includes it with `#[path = "../support/mod.rs"] mod support;`.
//!
//! * [`TestDir`] is a temporary directory (data dir, logs, scripts), kept if the test fails.
//! * [`ChildGuard`] is a child process killed when dropped; its log is printed if the test
//!   is failing.
//! * [`Server`] starts `hinter serve` on a free port, waits for `/readyz`, and kills the
//!   process when dropped.
//! * [`Api`] is a cheap, cloneable HTTP client for one server.
//! * [`wait_until`] / [`wait_for`] poll a condition with a deadline; tests never sleep to
//!   synchronize.
//! * [`pg`]: the PostgreSQL test database and a fresh schema per test.
//! * [`lossy_proxy::LossyProxy`]: a loopback TCP proxy that loses replies.
//!
//! Every binary compiles this module on its own and uses only part of it.
#![allow(dead_code, unused_imports)]

mod http;
pub mod lossy_proxy;
pub mod pg;
mod process;

pub use http::{id_of, Api, Resp};
pub use process::{ChildGuard, Server};

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The binary under test.
pub const HINTER: &str = env!("CARGO_BIN_EXE_hinter");

/// How often polled conditions are checked.
pub const POLL: Duration = Duration::from_millis(20);

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

/// A temporary directory for one test: the data dir, logs, helper scripts. Removed at the
/// end, unless the test fails: then it is kept for a look and its path printed.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
}

impl TestDir {
    /// `hinter-<test binary>-<name>-XXXX` in the system's temporary directory.
    pub fn new(name: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("hinter-{}-{name}-", env!("CARGO_CRATE_NAME")))
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
