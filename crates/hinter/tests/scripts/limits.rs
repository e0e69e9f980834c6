//! `concurrency`, `max_memory`, `max_processes` and `max_output` of settings.job, with real
//! scripts: never more than N at once (counted by the scripts), and a memory hog, a fork
//! bomb and a chatty script stopped with the limit named while the server keeps serving.

use super::support::{wait_until, TestDir};
use super::*;

/// With `concurrency: 2` and a server running 6 jobs at once, 8 jobs of the definition
/// never run more than 2 at a time: each counts the runs it sees in a shared folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_concurrency_jobs_of_a_definition_run_at_once() {
    let dir = TestDir::new("concurrency");
    let jobs = jobs_dir(&dir);
    let running = dir.path().join("running");
    std::fs::create_dir_all(&running).expect("mkdir");
    let d = dir.path().display();
    put(
        &jobs,
        "triggered/pair/run.sh",
        &format!(
            "touch {d}/running/$$\nls {d}/running | wc -l >> {d}/counts\nsleep 0.3\nrm {d}/running/$$\n"
        ),
        false,
    );
    put(
        &jobs,
        "triggered/pair/settings.job",
        r#"{"concurrency": 2}"#,
        false,
    );
    let server = Server::start(
        &dir,
        &[
            "--jobs-dir",
            jobs.to_str().expect("UTF-8"),
            "--concurrency",
            "6",
        ],
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(enqueue(&server.api, "pair", json!(null)).await);
    }
    for id in &ids {
        let job = finished(&server.api, id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    let counts: Vec<u32> = std::fs::read_to_string(dir.path().join("counts"))
        .expect("counts")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(counts.len(), 8, "{counts:?}");
    assert_eq!(
        counts.iter().max(),
        Some(&2),
        "never more than 2: {counts:?}"
    );
}

/// The first error message of a finished job.
fn error_of(job: &Value) -> String {
    job["errors"][0]["message"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// A memory hog over `max_memory`, a (bounded) fork bomb over `max_processes` and a script
/// printing past `max_output` are each killed with their group; each attempt fails naming
/// its limit; none of their processes is left; the server goes on running other jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_a_fork_bomb_and_a_chatty_script_are_stopped_at_their_limits() {
    let dir = TestDir::new("limits");
    let jobs = jobs_dir(&dir);
    let d = dir.path().display();
    // Doubles a string up to 256 MiB, slowly enough to be measured on the way.
    put(
        &jobs,
        "triggered/hog/run.sh",
        "s=x\nfor i in $(seq 1 28); do s=\"$s$s\"; sleep 0.02; done\necho \"survived ${#s}\"\n",
        false,
    );
    put(
        &jobs,
        "triggered/hog/settings.job",
        r#"{"max_memory": "32MiB", "max_attempts": 1}"#,
        false,
    );
    // Each process starts two more down to depth 7 (255 at most, so a failure cannot take
    // the machine down); the leaves wait.
    put(
        &jobs,
        "triggered/bomb/run.sh",
        &format!(
            "echo $$ > {d}/bomb.pgid\nbomb() {{ if [ \"$1\" -gt 0 ]; then bomb $(($1-1)) & bomb $(($1-1)) & wait; else sleep 60; fi; }}\nbomb 7\n"
        ),
        false,
    );
    put(
        &jobs,
        "triggered/bomb/settings.job",
        r#"{"max_processes": 10, "max_attempts": 1}"#,
        false,
    );
    put(
        &jobs,
        "triggered/chatty/run.sh",
        "i=0\nwhile [ $i -lt 200000 ]; do echo \"line $i of a lot of output\"; i=$((i+1)); done\n",
        false,
    );
    put(
        &jobs,
        "triggered/chatty/settings.job",
        r#"{"max_output": "10KiB", "max_attempts": 1}"#,
        false,
    );
    put(&jobs, "triggered/fine/run.sh", "echo fine\n", false);
    let server = serve(&dir, &jobs).await;
    let api = &server.api;

    let hog = enqueue(api, "hog", json!(null)).await;
    let bomb = enqueue(api, "bomb", json!(null)).await;
    let chatty = enqueue(api, "chatty", json!(null)).await;

    let job = finished(api, &hog).await;
    assert_eq!(job["state"], "dead", "{job}");
    assert!(
        error_of(&job).starts_with("stopped: over max_memory (32 MiB)"),
        "{job}"
    );

    let job = finished(api, &bomb).await;
    assert_eq!(job["state"], "dead", "{job}");
    assert!(
        error_of(&job).starts_with("stopped: over max_processes (10)"),
        "{job}"
    );
    let pgid: i32 = std::fs::read_to_string(dir.path().join("bomb.pgid"))
        .expect("the bomb's pid")
        .trim()
        .parse()
        .expect("a pid");
    wait_until(
        Duration::from_secs(10),
        "every process of the bomb to be gone",
        || async { group_members(pgid) == 0 },
    )
    .await;

    let job = finished(api, &chatty).await;
    assert_eq!(job["state"], "dead", "{job}");
    assert_eq!(
        error_of(&job),
        "stopped: its output went over max_output (10 KiB)",
        "{job}"
    );

    // The server is unaffected.
    let fine = enqueue(api, "fine", json!(null)).await;
    let job = finished(api, &fine).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    api.get("/readyz").await.expect_status(200);
}

/// Processes (not zombies) whose process group is `pgid`.
fn group_members(pgid: i32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat.rsplit_once(')')?.1.to_string();
                    let fields: Vec<&str> = rest.split_whitespace().collect();
                    Some(
                        fields.first() != Some(&"Z") && fields.get(2)?.parse::<i32>().ok()? == pgid,
                    )
                })
                .unwrap_or(false)
        })
        .count()
}
