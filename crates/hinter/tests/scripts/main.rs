//! End-to-end tests of script jobs (docs/scripts.md): the real `hinter serve --jobs-dir`
//! and `hinter worker --jobs-dir` binaries run real scripts through their interpreters,
//! driven over real HTTP on loopback.

#[path = "../support/mod.rs"]
mod support;

mod continuous;
mod folders;
mod limits;
mod resume;
mod run;
mod stop;
mod worker;

use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{wait_for, Api, Server, TestDir};

/// How long a script job may take to finish in these tests (debug build, loaded machine).
pub const JOB_DEADLINE: Duration = Duration::from_secs(60);

/// Writes a file of a job folder under `jobs` (`triggered/NAME/run.sh`), executable if asked.
pub fn put(jobs: &Path, relative: &str, contents: &str, executable: bool) -> PathBuf {
    let path = jobs.join(relative);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("creating the folder");
    std::fs::write(&path, contents).expect("writing the file");
    let mode = if executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

/// `<dir>/jobs`, created.
pub fn jobs_dir(dir: &TestDir) -> PathBuf {
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(jobs.join("triggered")).expect("creating the jobs folder");
    jobs
}

/// `hinter serve --jobs-dir <jobs>` on the test's data dir.
pub async fn serve(dir: &TestDir, jobs: &Path) -> Server {
    Server::start(dir, &["--jobs-dir", jobs.to_str().expect("a UTF-8 path")]).await
}

/// Enqueues `job` with `payload`; returns its id.
pub async fn enqueue(api: &Api, job: &str, payload: Value) -> String {
    let job = api.enqueue(json!({"job": job, "payload": payload})).await;
    support::id_of(&job)
}

/// Waits until the job has finished; returns it.
pub async fn finished(api: &Api, id: &str) -> Value {
    wait_for(
        JOB_DEADLINE,
        &format!("job {id} to finish"),
        || async move {
            let resp = api.get(&format!("/api/v1/jobs/{id}?wait=5s")).await;
            let state = resp.body["state"].as_str().unwrap_or("").to_string();
            matches!(state.as_str(), "succeeded" | "dead" | "cancelled").then_some(resp.body)
        },
    )
    .await
}

/// Every log line of the job (following `next_after` page by page).
pub async fn logs(api: &Api, id: &str, query: &str) -> Vec<Value> {
    let mut lines = Vec::new();
    let mut after = 0;
    loop {
        let resp = api
            .get(&format!("/api/v1/jobs/{id}/logs?after={after}&{query}"))
            .await
            .expect_status(200);
        let page = resp.body["lines"].as_array().cloned().unwrap_or_default();
        if page.is_empty() {
            return lines;
        }
        after = resp.body["next_after"].as_i64().expect("next_after");
        lines.extend(page);
    }
}

/// `(level, line)` of each log line.
pub fn texts(lines: &[Value]) -> Vec<(String, String)> {
    lines
        .iter()
        .map(|l| {
            (
                l["level"].as_str().unwrap_or("").to_string(),
                l["line"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// `GET /api/v1/definitions`: each definition by name.
pub async fn definitions(api: &Api) -> Vec<Value> {
    api.get("/api/v1/definitions").await.expect_status(200).body["definitions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The definition named `name` of `kind`, if listed.
pub fn definition<'a>(all: &'a [Value], name: &str) -> Option<&'a Value> {
    all.iter().find(|d| d["name"] == name)
}

/// True while a process with this pid exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The program's absolute path, if installed.
pub fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
