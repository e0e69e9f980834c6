//! A worker in another process, in another language, using only the HTTP worker protocol.

use crate::support::{id_of, wait_until, ChildGuard, Server, TestDir};
use serde_json::json;
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

/// Leases from a queue with a long-poll, heartbeats once per job, completes it with
/// `{"doubled": n * 2}`, and exits 0 after `expected` jobs. Only Python's standard library.
const PY_WORKER: &str = r#"
import json, sys, time, urllib.error, urllib.request

base, queue, expected, worker_id = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

def call(path, body):
    request = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()

done = 0
deadline = time.monotonic() + 120  # never outlive a broken test
while done < expected:
    if time.monotonic() > deadline:
        sys.exit("worker: gave up after 120s with %d of %d jobs done" % (done, expected))
    status, answer = call("/api/v1/leases", {
        "queues": [queue], "worker_id": worker_id, "max": 3, "lease": "30s", "wait": "2s"})
    if status != 200:
        sys.exit("worker: lease answered %s: %s" % (status, answer))
    for job in answer["jobs"]:
        jid, token = job["id"], job["lease_token"]
        status, beat = call("/api/v1/jobs/%s/heartbeat" % jid, {"lease_token": token, "lease": "30s"})
        if status != 200 or beat.get("cancel_requested") is not False:
            sys.exit("worker: heartbeat of %s answered %s: %s" % (jid, status, beat))
        result = {"doubled": job["payload"]["n"] * 2, "attempt": job["attempt"]}
        status, finished = call("/api/v1/jobs/%s/complete" % jid, {"lease_token": token, "result": result})
        if status != 200 or finished.get("state") != "succeeded":
            sys.exit("worker: complete of %s answered %s: %s" % (jid, status, finished))
        done += 1
        print("completed", jid, flush=True)
print("worker: done", done, flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_worker_in_another_process_completes_jobs_over_http() {
    const N: i64 = 20;
    let dir = TestDir::new("pyworker");
    let server = Server::start(&dir, &[]).await;
    let script = dir.write("worker.py", PY_WORKER);

    // The worker starts first and long-polls an empty queue: the jobs enqueued later must
    // reach it.
    let mut worker = ChildGuard::spawn(
        &dir,
        "python-worker",
        Command::new("python3")
            .arg(&script)
            .arg(server.base())
            .arg("py")
            .arg(N.to_string())
            .arg("py-worker-1"),
    );

    let mut expected = HashMap::new();
    for n in 0..N {
        let job = server
            .enqueue(json!({"job": "double", "queue": "py", "payload": {"n": n}}))
            .await;
        expected.insert(id_of(&job), n);
    }
    // A job in another queue must not be taken by this worker.
    let other = id_of(
        &server
            .enqueue(json!({"job": "double", "queue": "elsewhere", "payload": {"n": 1}}))
            .await,
    );

    wait_until(Duration::from_secs(60), "all jobs succeeded", || async {
        let jobs = server.list_jobs("queue=py&state=succeeded").await;
        jobs.len() == N as usize
    })
    .await;
    let status = worker.wait_exit(Duration::from_secs(30)).await;
    assert!(
        status.success(),
        "python worker failed ({status}); stderr:\n{}",
        worker.log()
    );

    for (id, n) in &expected {
        let job = server.job(id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["attempt"], 1, "{job}");
        assert_eq!(
            job["result"],
            json!({"doubled": n * 2, "attempt": 1}),
            "{job}"
        );
        assert!(job["finished_at"].is_string(), "{job}");
    }
    let other = server.job(&other).await;
    assert_eq!(other["state"], "queued", "{other}");
    assert_eq!(other["attempt"], 0, "{other}");
}
