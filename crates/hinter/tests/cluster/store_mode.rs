//! `hinter worker` in store mode runs its command like the HTTP mode does (payload, variables,
//! result, exit codes, cancel and timeout with SIGTERM after the shutdown file), through the
//! engine: on SIGTERM it hands a running job back to the queue without counting the attempt,
//! and leaves the process list at once. With `--data-dir` it shares the embedded store of a
//! serve on the same machine (that test needs no PostgreSQL).

use crate::util::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const QUEUE: &str = "store-mode";
const DEADLINE: Duration = Duration::from_secs(60);

/// The job's behaviour depends on its name; it leaves marker files in `$1`.
const SCRIPT: &str = r#"dir="$1"
marker="$dir/$HINTER_JOB_ID"
mark() {
    echo "$2" > "$marker.tmp" && mv "$marker.tmp" "$marker.$1"
}
case "$HINTER_JOB_NAME" in
ok)
    stdin=$(cat)
    file=$(cat "$HINTER_PAYLOAD_FILE")
    echo "a line on stderr" >&2
    printf '::result::{"stdin": %s, "file": %s, "id": "%s", "queue": "%s", "attempt": %s, "max_attempts": %s, "database_url": "%s"}\n' \
        "$stdin" "$file" "$HINTER_JOB_ID" "$HINTER_QUEUE" "$HINTER_ATTEMPT" "$HINTER_MAX_ATTEMPTS" \
        "${HINTER_DATABASE_URL-unset}"
    ;;
permanent)
    echo "cannot parse the input" >&2
    exit 65
    ;;
sleepy)
    trap 'if [ -e "$HINTER_SHUTDOWN_FILE" ]; then mark terminated shutdown-file; else mark terminated no-shutdown-file; fi; exit 143' TERM
    mark started $$
    sleep 60 &
    wait $!
    exit 3
    ;;
*)
    echo "unknown job $HINTER_JOB_NAME" >&2
    exit 2
    ;;
esac
"#;

async fn enqueue(api: &Api, spec: Value) -> String {
    let resp = api.post("/api/v1/jobs", &spec).await.expect_status(201);
    str_of(&resp.body["job"], "id").to_string()
}

async fn get_job(api: &Api, id: &str) -> Value {
    api.get(&format!("/api/v1/jobs/{id}"))
        .await
        .expect_status(200)
        .body
}

async fn wait_state(api: &Api, id: &str, state: &str) -> Value {
    wait_for(DEADLINE, &format!("job {id} to be {state}"), || async {
        let job = get_job(api, id).await;
        (job["state"] == state).then_some(job)
    })
    .await
}

async fn wait_marker(dir: &Path, id: &str, what: &str) -> String {
    let path = dir.join(format!("{id}.{what}"));
    wait_for(DEADLINE, &format!("marker {}", path.display()), || {
        let text = std::fs::read_to_string(&path).ok();
        async move { text }
    })
    .await
    .trim()
    .to_string()
}

fn first_error(job: &Value) -> &str {
    job["errors"][0]["message"].as_str().unwrap_or("<none>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_mode_worker_runs_commands_and_hands_jobs_back_on_sigterm() {
    let Some(db) = TestDb::new("a_store_mode_worker_runs_commands") else {
        return;
    };
    let dir = TestDir::new("store-mode");
    let script = dir.write("job.sh", SCRIPT);
    let markers = dir.path().join("markers");
    std::fs::create_dir(&markers).expect("creating the marker directory");
    let serve = start_serve(&dir, &db, "serve", &[]).await;
    let api = serve.api.clone();

    // Store mode chosen by the environment: the command must not see the database URL.
    let args: Vec<String> = [
        "--log-format",
        "json",
        "worker",
        "--schema",
        &db.schema,
        "--queue",
        QUEUE,
        "--concurrency",
        "4",
        "--lease",
        "3s",
        "--stopping-wait-time",
        "300ms",
        "--",
        "/bin/sh",
        script.to_str().expect("a UTF-8 path"),
        markers.to_str().expect("a UTF-8 path"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut worker = spawn_proc_with_env(
        &dir,
        "worker",
        &args,
        &[("HINTER_DATABASE_URL", db.url.as_str())],
    );
    let pid = worker.pid();
    wait_for(DEADLINE, "the worker to list itself", || async {
        api.workers()
            .await
            .iter()
            .any(|w| w["pid"] == pid && w["role"] == "worker")
            .then_some(())
    })
    .await;

    // Payload on stdin and in the file, variables, the result.
    let ok = enqueue(
        &api,
        json!({"job": "ok", "queue": QUEUE, "payload": {"src": "cat.png"}, "max_attempts": 4}),
    )
    .await;
    let done = wait_state(&api, &ok, "succeeded").await;
    assert_eq!(
        done["result"],
        json!({
            "stdin": {"src": "cat.png"}, "file": {"src": "cat.png"}, "id": ok, "queue": QUEUE,
            "attempt": 1, "max_attempts": 4, "database_url": "unset",
        })
    );
    assert!(done["worker_id"]
        .as_str()
        .is_some_and(|w| w.contains(&format!(":{pid}:"))));

    // Exit 65: dead at once, with the last stderr line.
    let permanent = enqueue(&api, json!({"job": "permanent", "queue": QUEUE})).await;
    let dead = wait_state(&api, &permanent, "dead").await;
    assert_eq!(dead["attempt"], 1);
    assert_eq!(
        first_error(&dead),
        "exited with code 65 (failed permanently): cannot parse the input"
    );

    // Cancel: the shutdown file, then SIGTERM; the job ends cancelled.
    let cancelled = enqueue(&api, json!({"job": "sleepy", "queue": QUEUE})).await;
    wait_marker(&markers, &cancelled, "started").await;
    api.post(&format!("/api/v1/jobs/{cancelled}/cancel"), &json!({}))
        .await
        .expect_status(200);
    let job = wait_state(&api, &cancelled, "cancelled").await;
    assert_eq!(
        wait_marker(&markers, &cancelled, "terminated").await,
        "shutdown-file"
    );
    assert_eq!(first_error(&job), "cancelled");

    // Timeout: stopped the same way, failed with the engine's message, retried.
    let timed_out = enqueue(
        &api,
        json!({"job": "sleepy", "queue": QUEUE, "timeout": "1s", "max_attempts": 1}),
    )
    .await;
    let job = wait_state(&api, &timed_out, "dead").await;
    assert_eq!(first_error(&job), "timed out after 1s");
    assert_eq!(
        wait_marker(&markers, &timed_out, "terminated").await,
        "shutdown-file"
    );

    // SIGTERM: the running job is stopped and handed back, its attempt not counted; the
    // worker leaves the list at once and exits 0.
    let held = enqueue(&api, json!({"job": "sleepy", "queue": QUEUE})).await;
    wait_marker(&markers, &held, "started").await;
    worker.terminate();
    let status = worker.wait_exit(DEADLINE).await;
    assert!(status.success(), "{status}; log:\n{}", worker.log());
    assert_eq!(
        wait_marker(&markers, &held, "terminated").await,
        "shutdown-file"
    );
    let job = get_job(&api, &held).await;
    assert_eq!(job["state"], "queued", "{job}");
    assert_eq!(job["attempt"], 0, "{job}");
    assert_eq!(job["errors"], json!([]), "{job}");
    let listed = api.workers().await;
    assert!(
        !listed.iter().any(|w| w["pid"] == pid),
        "a stopped worker unlists itself: {listed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_worker_shares_the_embedded_store_of_a_serve() {
    let dir = TestDir::new("data-dir");
    let data_dir = dir.path().join("data");
    let data_dir = data_dir.to_str().expect("a UTF-8 path").to_string();
    let store = ["--data-dir".to_string(), data_dir.clone()];
    let serve = Server::start_on(&dir, &store, "serve", &[]).await;
    let api = serve.api.clone();
    let serve_pid = serve.proc.pid();
    wait_for(DEADLINE, "the serve to lead", || async {
        let workers = api.workers().await;
        leaders(&workers)
            .first()
            .is_some_and(|l| l["pid"] == serve_pid)
            .then_some(())
    })
    .await;
    let script = dir.write(
        "job.sh",
        "read -r payload; echo \"::result::{\\\"got\\\": $payload}\"\n",
    );
    let args: Vec<String> = [
        "--log-format",
        "json",
        "worker",
        "--data-dir",
        &data_dir,
        "--queue",
        QUEUE,
        "--",
        "/bin/sh",
        script.to_str().expect("a UTF-8 path"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut worker = spawn_proc(&dir, "worker", &args);
    let pid = worker.pid();
    let listed = wait_for(DEADLINE, "the worker to list itself", || async {
        api.workers().await.into_iter().find(|w| w["pid"] == pid)
    })
    .await;
    assert_eq!(listed["role"], "worker");
    assert_eq!(listed["queues"], json!([QUEUE]));
    assert_eq!(listed["leader"], false, "the serve started first leads");

    // Jobs enqueued through the serve are found by the worker's poll.
    let id = enqueue(
        &api,
        json!({"job": "echo", "queue": QUEUE, "payload": {"n": 1}}),
    )
    .await;
    let job = wait_state(&api, &id, "succeeded").await;
    assert_eq!(job["result"], json!({"got": {"n": 1}}));
    worker.terminate();
    assert!(worker.wait_exit(DEADLINE).await.success());
}
