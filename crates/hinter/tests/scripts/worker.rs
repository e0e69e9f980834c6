//! `hinter worker --jobs-dir`: script jobs run by a worker process of their own, leasing
//! from a server over HTTP or straight from the store; their output is stored either way.

use super::support::{hinter_command, wait_until, ChildGuard, TestDir};
use super::*;

const REPORT: &str = "read -r payload\necho \"worker got $payload\"\necho \"::progress::75 nearly\"\necho '::checkpoint::{\"at\": 3}'\necho \"::result::{\\\"from\\\": \\\"$HINTER_JOB_NAME\\\", \\\"payload\\\": $payload}\"\n";

async fn runs_a_script_job(mode: &[String], name: &str) {
    let dir = TestDir::new(name);
    let jobs = jobs_dir(&dir);
    put(&jobs, "triggered/remote/run.sh", REPORT, false);
    // Its timeout holds where it runs, though the server that enqueued it does not know it.
    put(
        &jobs,
        "triggered/hang/run.sh",
        "echo hanging\nexec sleep 1000\n",
        false,
    );
    put(
        &jobs,
        "triggered/hang/settings.job",
        r#"{"timeout": "1s", "stopping_wait_time": 1}"#,
        false,
    );
    // The server has no jobs folder of its own (an empty one): only the worker runs scripts.
    let server_jobs = dir.path().join("server-jobs");
    std::fs::create_dir_all(&server_jobs).expect("server jobs folder");
    let server = serve(&dir, &server_jobs).await;
    let api = &server.api;
    let mut command = hinter_command();
    command
        .arg("worker")
        .args(mode.iter().map(|arg| arg.replace("{server}", &api.base)))
        .arg("--jobs-dir")
        .arg(&jobs);
    let mut worker = ChildGuard::spawn_logged(&dir, "worker", &mut command);
    let id = enqueue(api, "remote", json!({"n": 7})).await;
    let job = finished(api, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{}", worker.log());
    assert_eq!(
        job["result"],
        json!({"from": "remote", "payload": {"n": 7}})
    );
    assert_eq!(job["progress"]["percent"], 75.0, "{job}");
    assert_eq!(job["checkpoint"], json!({"at": 3}));
    assert!(job["runs"][0]["worker_id"] != json!(null));
    let lines = texts(&logs(api, &id, "").await);
    assert_eq!(
        lines[0],
        ("info".into(), "worker got {\"n\":7}".into()),
        "{lines:?}"
    );
    assert!(
        definition(&definitions(api).await, "remote").is_none(),
        "the server does not run it"
    );

    let hang = api.enqueue(json!({"job": "hang", "max_attempts": 1})).await;
    let hang = finished(api, &support::id_of(&hang)).await;
    assert_eq!(hang["state"], "dead", "{hang}");
    assert_eq!(
        hang["timeout"],
        Value::Null,
        "the job itself has no timeout"
    );
    assert_eq!(hang["errors"][0]["message"], "timed out after 1s", "{hang}");
    worker.terminate();
    let status = worker.wait_exit(JOB_DEADLINE).await;
    assert!(status.success(), "{status:?}\n{}", worker.log());
}

/// A worker leasing over HTTP (`--server`) runs the script; its log reaches the server
/// through `POST /api/v1/jobs/{id}/report`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_over_http_runs_script_jobs() {
    runs_a_script_job(&["--server".into(), "{server}".into()], "worker-http").await;
}

/// A worker on the store itself (`--data-dir`, the server's SQLite file) runs the script and
/// writes its log into the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_on_the_store_runs_script_jobs() {
    let dir = TestDir::new("worker-store-dir");
    // Both processes use this data dir.
    let data = dir.path().join("shared-data");
    let jobs = jobs_dir(&dir);
    put(&jobs, "triggered/remote/run.sh", REPORT, false);
    let server_jobs = dir.path().join("server-jobs");
    std::fs::create_dir_all(&server_jobs).expect("server jobs folder");
    let server = Server::launch(
        "hinter serve",
        Server::READY_TIMEOUT,
        Duration::from_secs(30),
        |addr| {
            let mut command = hinter_command();
            command
                .arg("serve")
                .arg("--data-dir")
                .arg(&data)
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--jobs-dir")
                .arg(&server_jobs);
            ChildGuard::spawn_logged(&dir, "serve", &mut command)
        },
    )
    .await;
    let api = &server.api;
    let mut command = hinter_command();
    command
        .arg("worker")
        .arg("--data-dir")
        .arg(&data)
        .arg("--jobs-dir")
        .arg(&jobs);
    let mut worker = ChildGuard::spawn_logged(&dir, "worker", &mut command);
    wait_until(
        JOB_DEADLINE,
        "the store-mode worker to list itself",
        || async {
            let workers = api.get("/api/v1/workers").await.body;
            workers["workers"]
                .as_array()
                .is_some_and(|all| all.iter().any(|w| w["role"] == "worker"))
        },
    )
    .await;
    let id = enqueue(api, "remote", json!({"n": 7})).await;
    let job = finished(api, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{}", worker.log());
    assert_eq!(
        job["result"],
        json!({"from": "remote", "payload": {"n": 7}})
    );
    assert_eq!(job["checkpoint"], json!({"at": 3}));
    let lines = texts(&logs(api, &id, "").await);
    assert_eq!(
        lines[0],
        ("info".into(), "worker got {\"n\":7}".into()),
        "{lines:?}"
    );
    worker.terminate();
    let status = worker.wait_exit(JOB_DEADLINE).await;
    assert!(status.success(), "{status:?}\n{}", worker.log());
}
