//! `hinter enqueue --wait`: the test plays the worker over HTTP while the command waits.

use crate::harness::{id_in, id_of, start_server, Api, CliApi, CliServer, Running, TestDir};
use serde_json::{json, Value};
use std::time::Duration;

/// Leases the one job the running `enqueue --wait` put into `queue`; fails the test with the
/// command's output if nothing comes.
async fn lease_the_job(server: &Api, queue: &str, running: Running) -> (Value, Running) {
    let leased = server.lease_from(queue, 10, "30s").await;
    if leased.len() != 1 {
        let out = running.finish().await;
        panic!("expected to lease the one job the command enqueued, got {leased:?}; {out:?}");
    }
    let job = leased.into_iter().next().expect("one job");
    (job, running)
}

/// The id in the `enqueued <id> (queue …)` line on stderr.
fn enqueued_id(stderr: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("enqueued "))
        .unwrap_or_else(|| panic!("no `enqueued` line on stderr:\n{stderr}"));
    id_in(line, "enqueued ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_prints_the_result_when_the_job_succeeds() {
    let dir = TestDir::new("wait-ok");
    let server = start_server(&dir).await;

    let running = server
        .cli(&[
            "enqueue",
            "double",
            r#"{"n":21}"#,
            "--queue",
            "wq",
            "--wait",
        ])
        .spawn();
    let (leased, mut running) = lease_the_job(&server, "wq", running).await;
    assert_eq!(leased["payload"], json!({"n": 21}));
    assert!(
        !running.has_exited(),
        "the command did not wait for the job"
    );
    server
        .complete_leased(&leased, json!({"doubled": 42, "note": "done"}))
        .await;

    let out = running.finish().await.ok();
    // stdout is exactly the result, as JSON.
    assert_eq!(
        out.json(),
        json!({"doubled": 42, "note": "done"}),
        "{out:?}"
    );
    // stderr has the progress: the enqueued line, then the states it saw.
    let id = enqueued_id(&out.stderr);
    assert_eq!(id, id_of(&leased));
    assert!(
        out.stderr.contains(&format!("enqueued {id} (queue wq)")),
        "{out:?}"
    );
    assert!(out.stderr.contains("succeeded (attempt 1/10)"), "{out:?}");
    assert!(!out.stderr.contains("error:"), "{out:?}");
    assert_eq!(server.job(&id).await["state"], "succeeded");
}

/// Reads `stderr` line by line until one contains `text` (within 30 s); returns the lines.
async fn stderr_until(
    stderr: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    text: &str,
) -> Vec<String> {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = stderr.next_line().await.expect("reading stderr") {
            let hit = line.contains(text);
            seen.push(line);
            if hit {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        found == Ok(true),
        "no stderr line with {text:?}; saw {seen:#?}"
    );
    seen
}

/// A worker reports progress in its heartbeats; `enqueue --wait` shows each change on stderr
/// while the job runs, then prints the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_shows_the_progress_a_worker_reports() {
    use tokio::io::AsyncBufReadExt;
    let dir = TestDir::new("wait-progress");
    let server = start_server(&dir).await;

    let running = server
        .cli(&["enqueue", "import", "{}", "--queue", "wp", "--wait"])
        .spawn();
    let (leased, mut running) = lease_the_job(&server, "wp", running).await;
    let mut stderr = tokio::io::BufReader::new(running.take_stderr()).lines();
    let beat = format!("/api/v1/jobs/{}/heartbeat", id_of(&leased));
    for (percent, message) in [(40.0, "4 of 10"), (92.5, "nearly there")] {
        server
            .post(
                &beat,
                &json!({"lease_token": leased["lease_token"],
                        "progress": {"percent": percent, "message": message}}),
            )
            .await
            .expect_status(200);
        let shown = format!("{}% {message}", if percent == 40.0 { "40" } else { "92.5" });
        let lines = stderr_until(&mut stderr, &shown).await;
        assert!(
            lines
                .last()
                .is_some_and(|l| l.contains("running (attempt 1/10")),
            "{lines:#?}"
        );
    }
    server
        .complete_leased(&leased, json!({"imported": 10}))
        .await;
    stderr_until(&mut stderr, "succeeded (attempt 1/10)").await;
    let out = running.finish().await.ok();
    assert_eq!(out.json(), json!({"imported": 10}), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_json_prints_the_final_job_and_quiet_shows_no_progress() {
    let dir = TestDir::new("wait-json");
    let server = start_server(&dir).await;

    let running = server
        .cli(&[
            "enqueue",
            "double",
            r#"{"n":2}"#,
            "--queue",
            "wj",
            "--wait",
            "--quiet",
            "--json",
        ])
        .spawn();
    let (leased, running) = lease_the_job(&server, "wj", running).await;
    server.complete_leased(&leased, json!(4)).await;

    let out = running.finish().await.ok().no_stderr();
    let job = out.json();
    assert_eq!(id_of(&job), id_of(&leased), "{out:?}");
    assert_eq!(job["state"], "succeeded", "{out:?}");
    assert_eq!(job["result"], 4, "{out:?}");
    assert_eq!(job, server.job(&id_of(&leased)).await);

    // A job that succeeds without a result prints `null`.
    let running = server
        .cli(&["enqueue", "nothing", "--queue", "wj", "--wait", "-q"])
        .spawn();
    let (leased, running) = lease_the_job(&server, "wj", running).await;
    let resp = server
        .post(
            &format!("/api/v1/jobs/{}/complete", id_of(&leased)),
            &json!({"lease_token": leased["lease_token"]}),
        )
        .await
        .expect_status(200);
    assert_eq!(resp.body["result"], Value::Null, "{resp:?}");
    let out = running.finish().await.ok().no_stderr();
    assert_eq!(out.stdout.trim(), "null", "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_1_when_the_job_dies() {
    let dir = TestDir::new("wait-dead");
    let server = start_server(&dir).await;

    let running = server
        .cli(&["enqueue", "import", "{}", "--queue", "wd", "--wait"])
        .spawn();
    let (leased, running) = lease_the_job(&server, "wd", running).await;
    let failed = server
        .fail(&leased, "permanent: the file is gone", false)
        .await;
    assert_eq!(failed["state"], "dead", "{failed}");

    let out = running.finish().await.code(1).no_stdout();
    let id = id_of(&leased);
    assert!(
        out.stderr.contains(&format!(
            "error: job {id} dead after 1 attempt(s); last error: permanent: the file is gone"
        )),
        "{out:?}"
    );
    // The failed attempt's error shows as it appears.
    assert!(
        out.stderr
            .contains("attempt 1 failed: permanent: the file is gone"),
        "{out:?}"
    );
    assert_eq!(server.job(&id).await["state"], "dead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_1_when_the_job_is_cancelled() {
    let dir = TestDir::new("wait-cancel");
    let server = start_server(&dir).await;

    // Nobody works queue `wc`: the job stays queued until the test cancels it.
    let mut running = server
        .cli(&["enqueue", "slow", "--queue", "wc", "--wait"])
        .spawn();
    let id = crate::harness::wait_for_job(&server, "queue=wc").await;
    assert!(!running.has_exited(), "the command did not wait");
    let cancelled = server
        .post(&format!("/api/v1/jobs/{id}/cancel"), &json!({}))
        .await
        .expect_status(200)
        .body;
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");

    let out = running.finish().await.code(1).no_stdout();
    assert!(
        out.stderr.contains(&format!("error: job {id} cancelled")),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_timeout_exits_5_and_the_job_goes_on() {
    let dir = TestDir::new("wait-timeout");
    let server = start_server(&dir).await;

    let out = server
        .cli(&[
            "enqueue",
            "resize",
            "--queue",
            "nobody",
            "--wait",
            "--wait-timeout",
            "1s",
        ])
        .run()
        .await
        .code(5)
        .no_stdout();
    let id = enqueued_id(&out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "error: gave up waiting after 1s: job {id} is queued"
        )),
        "{out:?}"
    );
    assert!(
        out.stderr.contains(&format!(
            "hint: it goes on; follow it with `hinter jobs show {id}`"
        )),
        "{out:?}"
    );
    assert!(
        out.took >= Duration::from_secs(1),
        "gave up before the timeout: {out:?}"
    );
    assert!(
        out.took < Duration::from_secs(20),
        "took far longer than the timeout: {out:?}"
    );
    // The job is untouched and still leasable.
    assert_eq!(server.job(&id).await["state"], "queued");
    let leased = server.lease_from("nobody", 10, "0").await;
    assert_eq!(leased.iter().map(id_of).collect::<Vec<_>>(), vec![id]);
}

/// Failed attempts show as they happen; the job retries (backoff ~1 s) and the command follows
/// it to its end: success after a retry (exit 0), or dead once the attempts are used up (exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_follows_retries_to_the_end() {
    let dir = TestDir::new("wait-retry");
    let server = start_server(&dir).await;

    let running = server
        .cli(&[
            "enqueue",
            "flaky",
            r#"{"n":1}"#,
            "--queue",
            "wr",
            "--max-attempts",
            "3",
            "--wait",
        ])
        .spawn();
    let (first, running) = lease_the_job(&server, "wr", running).await;
    let failed = server.fail(&first, "connection reset by peer", true).await;
    assert_eq!(failed["state"], "scheduled", "{failed}");
    // The retry becomes leasable after its backoff.
    let (second, mut running) = lease_the_job(&server, "wr", running).await;
    assert_eq!(
        (id_of(&second), &second["attempt"]),
        (id_of(&first), &json!(2))
    );
    assert!(
        !running.has_exited(),
        "the command stopped at a failed attempt"
    );
    server.complete_leased(&second, json!({"ok": true})).await;

    let out = running.finish().await.ok();
    assert_eq!(out.json(), json!({"ok": true}), "{out:?}");
    // (Intermediate states such as `scheduled: retry at …` show only if a poll happens to
    // see them; the failed attempt's error and the end always show.)
    for text in [
        "attempt 1 failed: connection reset by peer",
        "succeeded (attempt 2/3)",
    ] {
        assert!(out.stderr.contains(text), "stderr lacks {text:?}: {out:?}");
    }

    // Attempts used up: dead, exit 1, naming the last error. Failed attempts show even with
    // --quiet, so a quiet wait through retries does not look like a hang.
    let running = server
        .cli(&[
            "enqueue",
            "doomed",
            "--queue",
            "wr",
            "--max-attempts",
            "2",
            "--wait",
            "--quiet",
        ])
        .spawn();
    let (first, running) = lease_the_job(&server, "wr", running).await;
    server.fail(&first, "first", true).await;
    let (second, running) = lease_the_job(&server, "wr", running).await;
    let dead = server.fail(&second, "second", true).await;
    assert_eq!(dead["state"], "dead", "{dead}");
    let out = running.finish().await.code(1).no_stdout();
    let id = id_of(&first);
    assert!(
        out.stderr.contains(&format!(
            "error: job {id} dead after 2 attempt(s); last error: second"
        )),
        "{out:?}"
    );
    assert!(out.stderr.contains("attempt 1 failed: first"), "{out:?}");
    assert!(out.stderr.contains("attempt 2 failed: second"), "{out:?}");
}
