//! Stopping a script: a timeout or a cancel stops its whole process group, children of
//! children included, with SIGTERM and the shutdown file first and SIGKILL after the
//! job's `stopping_wait_time`.

use super::support::{wait_for, wait_until, TestDir};
use super::*;

/// Starts a grandchild (`sleep`) in the background, writes both pids to `<dir>/pids`, and
/// waits. With `ignore_term` it ignores SIGTERM (and so does its grandchild, which inherits
/// that), so only SIGKILL ends them; else it notes whether the shutdown file existed when
/// SIGTERM came.
fn script(dir: &Path, ignore_term: bool) -> String {
    let dir = dir.display();
    let trap = if ignore_term {
        "trap '' TERM".to_string()
    } else {
        format!(
            "trap 'if [ -e \"$HINTER_SHUTDOWN_FILE\" ] && [ -e \"$WEBJOBS_SHUTDOWN_FILE\" ]; then touch {dir}/saw-shutdown-file; fi; exit 143' TERM"
        )
    };
    format!(
        "{trap}\nsleep 1000 &\necho \"$$ $!\" > {dir}/pids.tmp && mv {dir}/pids.tmp {dir}/pids\nwhile :; do wait; done\n"
    )
}

async fn pids(dir: &Path) -> (i32, i32) {
    let file = dir.join("pids");
    wait_for(JOB_DEADLINE, "the script to write its pids", || {
        let file = file.clone();
        async move {
            let text = std::fs::read_to_string(&file).ok()?;
            let mut parts = text.split_whitespace().map(|p| p.parse::<i32>());
            match (parts.next(), parts.next()) {
                (Some(Ok(script)), Some(Ok(grandchild))) => Some((script, grandchild)),
                _ => None,
            }
        }
    })
    .await
}

/// A timed-out script that ignores SIGTERM is killed with its grandchild after its
/// `stopping_wait_time`; the attempt fails "timed out" and, out of attempts, the job is dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_whole_group() {
    let dir = TestDir::new("timeout");
    let jobs = jobs_dir(&dir);
    put(
        &jobs,
        "triggered/stuck/run.sh",
        &script(dir.path(), true),
        false,
    );
    put(
        &jobs,
        "triggered/stuck/settings.job",
        r#"{"timeout": "1s", "stopping_wait_time": 1, "max_attempts": 1}"#,
        false,
    );
    let server = serve(&dir, &jobs).await;
    let api = &server.api;
    let id = enqueue(api, "stuck", json!(null)).await;
    let (script_pid, grandchild) = pids(dir.path()).await;
    assert!(alive(script_pid) && alive(grandchild));
    let job = finished(api, &id).await;
    assert_eq!(job["state"], "dead", "{job}");
    let error = job["errors"][0]["message"].as_str().unwrap_or("");
    assert_eq!(error, "timed out after 1s", "{job}");
    wait_until(
        Duration::from_secs(10),
        "the script and its grandchild to be gone",
        || async { !alive(script_pid) && !alive(grandchild) },
    )
    .await;
    let log = server.stderr();
    assert!(
        log.contains("did not stop within 1s of SIGTERM: sending SIGKILL"),
        "{log}"
    );
}

/// A cancelled script gets the shutdown file, then SIGTERM; it and its grandchild are gone,
/// and the job ends `cancelled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_the_whole_group() {
    let dir = TestDir::new("cancel");
    let jobs = jobs_dir(&dir);
    put(
        &jobs,
        "triggered/long/run.sh",
        &script(dir.path(), false),
        false,
    );
    let server = serve(&dir, &jobs).await;
    let api = &server.api;
    let id = enqueue(api, "long", json!(null)).await;
    let (script_pid, grandchild) = pids(dir.path()).await;
    api.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({}))
        .await
        .expect_status(200);
    let job = finished(api, &id).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    wait_until(
        Duration::from_secs(10),
        "the script and its grandchild to be gone",
        || async { !alive(script_pid) && !alive(grandchild) },
    )
    .await;
    assert!(
        dir.path().join("saw-shutdown-file").exists(),
        "the shutdown file was there when SIGTERM came"
    );
}
