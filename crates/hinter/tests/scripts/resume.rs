//! Checkpoints across attempts (PRODUCT.md section 3): a script saves `::checkpoint::` after
//! each item, reads `$HINTER_CHECKPOINT` at its start, and so resumes where the last attempt
//! stopped, whether that attempt was killed with SIGKILL, timed out, or lost its whole server;
//! and progress and checkpoint directives at the extremes.

use super::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::wait_until;

/// Sums items 1..=`items`, one at a time, saving `{"done", "sum"}` after each, with
/// progress; attempt 1 writes its pid to `<dir>/pid-1` at item `halt_at` and then blocks
/// (until killed or timed out). Its result says where the attempt started.
const SUMMER: &str = r#"import json, os, time
payload = json.load(open(os.environ["HINTER_PAYLOAD_FILE"]))
attempt = int(os.environ["HINTER_ATTEMPT"])
checkpoint = os.environ.get("HINTER_CHECKPOINT")
state = json.loads(checkpoint) if checkpoint else {"done": 0, "sum": 0}
started_at = state["done"]
print(f"attempt {attempt} starts after item {started_at}", flush=True)
items = payload["items"]
while state["done"] < items:
    if attempt == 1 and state["done"] == payload["halt_at"]:
        with open(os.path.join(payload["dir"], f"pid-{attempt}"), "w") as f:
            f.write(str(os.getpid()))
        time.sleep(600)
    item = state["done"] + 1
    state = {"done": item, "sum": state["sum"] + item}
    print(f"item {item}", flush=True)
    print("::checkpoint::" + json.dumps(state), flush=True)
    print(f"::progress::{100 * item / items} item {item} of {items}", flush=True)
print("::result::" + json.dumps({"sum": state["sum"], "started_at": started_at, "attempt": attempt}), flush=True)
"#;

const ITEMS: u64 = 10;
const HALT_AT: u64 = 4;

/// A folder `triggered/<name>/` with [`SUMMER`] and `settings`.
fn summer(jobs: &Path, name: &str, settings: &str) {
    put(jobs, &format!("triggered/{name}/run.py"), SUMMER, false);
    put(
        jobs,
        &format!("triggered/{name}/settings.job"),
        settings,
        false,
    );
}

/// Enqueues the summer `job`; returns its id once attempt 1 has checkpointed item
/// [`HALT_AT`] and written its pid (it now blocks), with that pid.
async fn halted(api: &Api, dir: &TestDir, job: &str) -> (String, i32) {
    let pid_file = dir.path().join("pid-1");
    let payload = json!({"items": ITEMS, "halt_at": HALT_AT, "dir": dir.path()});
    let id = enqueue(api, job, payload).await;
    let url = format!("/api/v1/jobs/{id}");
    wait_until(JOB_DEADLINE, "attempt 1 to checkpoint and block", || {
        let url = url.clone();
        let pid_file = pid_file.clone();
        async move {
            let job = api.get(&url).await.body;
            job["checkpoint"]["done"] == json!(HALT_AT) && pid_file.exists()
        }
    })
    .await;
    let job = api.get(&url).await.body;
    assert_eq!(job["state"], "running", "{job}");
    assert_eq!(job["attempt"], 1);
    assert_eq!(job["checkpoint"], json!({"done": HALT_AT, "sum": 10}));
    assert_eq!(job["progress"]["percent"], json!(40.0), "{job}");
    assert_eq!(job["progress"]["message"], "item 4 of 10");
    let pid = wait_for(JOB_DEADLINE, "the pid written in full", || {
        let pid_file = pid_file.clone();
        async move {
            std::fs::read_to_string(&pid_file)
                .ok()?
                .trim()
                .parse::<i32>()
                .ok()
        }
    })
    .await;
    assert!(alive(pid), "attempt 1 ({pid}) is blocked, not gone");
    (id, pid)
}

/// The job ended succeeded on attempt 2, which started after item [`HALT_AT`]: its result
/// and its log say so, and it summed every item once.
async fn assert_resumed(api: &Api, id: &str, first_error: &str) {
    let job = finished(api, id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        job["result"],
        json!({"sum": 55, "started_at": HALT_AT, "attempt": 2}),
        "{job}"
    );
    assert_eq!(job["attempt"], 2);
    assert_eq!(job["checkpoint"], json!({"done": ITEMS, "sum": 55}));
    assert_eq!(job["progress"]["percent"], json!(100.0));
    let runs = job["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "{job}");
    assert_eq!(runs[0]["outcome"], "failed", "{job}");
    assert_eq!(runs[1]["outcome"], "succeeded", "{job}");
    let error = job["errors"][0]["message"].as_str().unwrap_or("");
    assert!(error.contains(first_error), "{error}");

    // The attempt's own lines; its directive lines are kept in the log too.
    let lines = |attempt: u32| {
        let id = id.to_string();
        async move {
            texts(&logs(api, &id, &format!("attempt={attempt}")).await)
                .into_iter()
                .filter(|(level, line)| level == "info" && !line.starts_with("::"))
                .map(|(_, line)| line)
                .collect::<Vec<_>>()
        }
    };
    let mut first = vec!["attempt 1 starts after item 0".to_string()];
    first.extend((1..=HALT_AT).map(|i| format!("item {i}")));
    assert_eq!(lines(1).await, first);
    let mut second = vec![format!("attempt 2 starts after item {HALT_AT}")];
    second.extend((HALT_AT + 1..=ITEMS).map(|i| format!("item {i}")));
    assert_eq!(lines(2).await, second, "attempt 2 skipped the items done");
}

/// Attempt 1 is killed with SIGKILL halfway: the attempt fails, is retried after its
/// backoff, and attempt 2 resumes from the checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_killed_halfway_resumes_from_its_checkpoint() {
    if !installed("python3") {
        eprintln!("note: python3 is not installed; skipped");
        return;
    }
    let dir = TestDir::new("resume-kill");
    let jobs = jobs_dir(&dir);
    summer(&jobs, "summer", r#"{"max_attempts": 3}"#);
    let server = serve(&dir, &jobs).await;
    let api = &server.api;

    let (id, pid) = halted(api, &dir, "summer").await;
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill -9 the script");
    assert_resumed(api, &id, "killed by signal SIGKILL").await;
}

/// Attempt 1 checkpoints and then hangs past its `timeout`: it is stopped and retried, and
/// attempt 2 resumes from the checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_timed_out_halfway_resumes_from_its_checkpoint() {
    if !installed("python3") {
        eprintln!("note: python3 is not installed; skipped");
        return;
    }
    let dir = TestDir::new("resume-timeout");
    let jobs = jobs_dir(&dir);
    summer(
        &jobs,
        "slow-summer",
        r#"{"max_attempts": 3, "timeout": "4s", "stopping_wait_time": 1}"#,
    );
    let server = serve(&dir, &jobs).await;
    let api = &server.api;

    let (id, pid) = halted(api, &dir, "slow-summer").await;
    wait_until(
        JOB_DEADLINE,
        "the timed-out script to be stopped",
        || async move { !alive(pid) },
    )
    .await;
    assert_resumed(api, &id, "timed out").await;
}

/// The whole server is killed with SIGKILL while attempt 1 blocks (its script killed too, as
/// in a lost machine). Restarted, the server rescues the job once its deadline has passed
/// (the `timeout`), and attempt 2 resumes from the checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_resumes_from_its_checkpoint_after_its_server_is_killed() {
    if !installed("python3") {
        eprintln!("note: python3 is not installed; skipped");
        return;
    }
    let dir = TestDir::new("resume-crash");
    let jobs = jobs_dir(&dir);
    summer(&jobs, "summer", r#"{"max_attempts": 3, "timeout": "5s"}"#);
    let mut server = serve(&dir, &jobs).await;

    let (id, pid) = halted(&server.api, &dir, "summer").await;
    server.kill();
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill -9 the orphaned script");
    let server = serve(&dir, &jobs).await;
    assert_resumed(&server.api, &id, "timed out").await;
}

/// Progress and checkpoint directives at the extremes: a percent out of range or not a
/// number, a checkpoint nested too deep or not JSON, each ignored with a note in the log; an
/// overlong message cut, a NUL mended; the job succeeds with the last valid ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directives_at_the_extremes_are_noted_or_mended_never_fatal() {
    let dir = TestDir::new("directive-extremes");
    let jobs = jobs_dir(&dir);
    let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
    let long = "m".repeat(3000);
    let bad_progress = ["1e400", "-1", "101", "\"50\"", "NaN", "inf", "50%"];
    let mut script = String::new();
    for bad in bad_progress {
        script.push_str(&format!("echo '::progress::{bad} bad'\n"));
    }
    script.push_str(&format!("echo '::checkpoint::{deep}'\n"));
    script.push_str("echo '::checkpoint::{\"open\": '\n");
    script.push_str("echo '::checkpoint::{\"kept\": [1, {\"a\": null}]}'\n");
    script.push_str(&format!("echo '::progress::33.5 {long}'\n"));
    script.push_str("printf '::progress::75 a\\000b\\n'\n");
    put(&jobs, "triggered/extremes/run.sh", &script, false);
    let server = serve(&dir, &jobs).await;
    let api = &server.api;

    let id = enqueue(api, "extremes", json!(null)).await;
    let job = finished(api, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["checkpoint"], json!({"kept": [1, {"a": null}]}));
    assert_eq!(job["progress"]["percent"], json!(75.0));
    assert_eq!(job["progress"]["message"], "a\u{FFFD}b");
    let notes: Vec<String> = texts(&logs(api, &id, "").await)
        .into_iter()
        .filter(|(level, _)| level == "warn")
        .map(|(_, line)| line)
        .collect();
    assert_eq!(notes.len(), bad_progress.len() + 2, "{notes:#?}");
    for (note, bad) in notes.iter().zip(bad_progress) {
        assert!(
            note.starts_with("ignoring") && note.contains("not a percentage from 0 to 100"),
            "{bad}: {note}"
        );
    }
    assert!(
        notes[bad_progress.len()].contains("nests 65 levels deep"),
        "{notes:#?}"
    );
    assert!(
        notes[bad_progress.len() + 1].contains("not valid JSON"),
        "{notes:#?}"
    );
}
