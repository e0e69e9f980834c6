//! What only the cluster tests use, on top of [`crate::support`]: real `hinter serve` and
//! `hinter worker --database …` processes on one PostgreSQL database, each test in a schema
//! of its own ([`TestDb`]).

pub use crate::support::pg::TestDb;
pub use crate::support::{wait_for, Api, ChildGuard, Server, TestDir};
use serde_json::{json, Value};

/// A `hinter` child process (serve or worker); killed (SIGKILL) when dropped.
pub type Proc = ChildGuard;

/// Spawns `hinter ARGS` with stdout and stderr (JSON logs) into `<name>-<n>.log`.
pub fn spawn_proc(dir: &TestDir, name: &str, args: &[String]) -> Proc {
    spawn_proc_with_env(dir, name, args, &[])
}

/// [`spawn_proc`] with extra environment variables.
pub fn spawn_proc_with_env(
    dir: &TestDir,
    name: &str,
    args: &[String],
    env: &[(&str, &str)],
) -> Proc {
    let mut command = crate::support::hinter_command();
    command.envs(env.iter().copied()).args(args);
    ChildGuard::spawn_logged(dir, name, &mut command)
}

/// Starts `hinter serve --database … --schema … --listen 127.0.0.1:<free port> EXTRA` and
/// waits until `/readyz` answers 200.
pub async fn start_serve(dir: &TestDir, db: &TestDb, name: &str, extra: &[&str]) -> Server {
    Server::start_on(dir, &db.args(), name, extra).await
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
    spawn_proc(dir, name, &args)
}

/// The HTTP helpers of the cluster tests.
#[allow(async_fn_in_trait)]
pub trait ClusterApi {
    /// `GET /api/v1/workers`: the live processes.
    async fn workers(&self) -> Vec<Value>;
    /// The counts of `queue` from `GET /api/v1/queues` (zeros if it is not listed yet).
    async fn queue_counts(&self, queue: &str) -> Value;
}

impl ClusterApi for Api {
    async fn workers(&self) -> Vec<Value> {
        let resp = self.get("/api/v1/workers").await.expect_status(200);
        resp.body["workers"]
            .as_array()
            .unwrap_or_else(|| panic!("worker list without workers: {resp:?}"))
            .clone()
    }

    async fn queue_counts(&self, queue: &str) -> Value {
        let resp = self.get("/api/v1/queues").await.expect_status(200);
        resp.body["queues"]
            .as_array()
            .and_then(|queues| queues.iter().find(|q| q["name"] == queue).cloned())
            .unwrap_or_else(|| json!({"name": queue, "queued": 0, "running": 0, "succeeded": 0}))
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
