//! A singleton continuous script job on PostgreSQL: two `serve` processes with the same
//! jobs folder run it once between them, and when its holder is killed (SIGKILL) the other
//! starts it within the leadership lease.

use crate::util::*;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// Lines of the file the script appends `SERVER_PID SCRIPT_PID` to at each start.
fn starts(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

async fn status(api: &Api, name: &str) -> Value {
    let all = api.get("/api/v1/definitions").await.expect_status(200).body;
    all["definitions"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == name))
        .map(|d| d["status"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_singleton_continuous_job_runs_once_on_postgres_and_moves_when_its_holder_dies() {
    let Some(db) = TestDb::new("a_singleton_continuous_job_runs_once_on_postgres") else {
        return;
    };
    let dir = TestDir::new("singleton");
    let jobs = dir.path().join("jobs");
    let folder = jobs.join("continuous/only-one");
    std::fs::create_dir_all(&folder).expect("mkdir");
    let log = dir.path().join("starts");
    // Runs while the server that started it lives.
    std::fs::write(
        folder.join("run.sh"),
        format!(
            "parent=$PPID\necho \"$parent $$\" >> {}\nwhile kill -0 $parent 2>/dev/null; do sleep 0.1; done\n",
            log.display()
        ),
    )
    .expect("run.sh");
    std::fs::write(folder.join("settings.job"), r#"{"is_singleton": true}"#).expect("settings");
    let flags = [
        "--jobs-dir",
        jobs.to_str().expect("UTF-8"),
        "--leader-ttl",
        "1s",
        "--heartbeat-interval",
        "200ms",
    ];
    let mut servers = [
        start_serve(&dir, &db, "serve-a", &flags).await,
        start_serve(&dir, &db, "serve-b", &flags).await,
    ];
    let holder_pid: u32 = wait_for(Duration::from_secs(60), "the singleton to start", || {
        let log = log.clone();
        async move { starts(&log).first()?.split(' ').next()?.parse().ok() }
    })
    .await;
    let holder = servers
        .iter()
        .position(|s| s.proc.pid() == holder_pid)
        .expect("started by one of the servers");
    let other = 1 - holder;
    wait_for(
        Duration::from_secs(60),
        "the other server to wait",
        || async {
            (status(&servers[other].api, "only-one").await["state"] == "waiting-for-singleton")
                .then_some(())
        },
    )
    .await;
    assert_eq!(starts(&log).len(), 1, "{:?}", starts(&log));

    servers[holder].kill();
    let killed = Instant::now();
    let other_pid = servers[other].proc.pid();
    wait_for(
        Duration::from_secs(20),
        "the other server to take over",
        || async {
            starts(&log)
                .iter()
                .any(|l| l.starts_with(&format!("{other_pid} ")))
                .then_some(())
        },
    )
    .await;
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "{:?}",
        killed.elapsed()
    );
    assert_eq!(starts(&log).len(), 2, "{:?}", starts(&log));
    assert_eq!(
        status(&servers[other].api, "only-one").await["state"],
        "running"
    );
}
