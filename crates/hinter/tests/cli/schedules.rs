//! `hinter schedules add|list|show|pause|resume|history|rm` against a real `hinter serve`,
//! whose scheduler fires an every-second schedule.

use crate::harness::{start_server, CliServer, TestDir};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_add_list_history_pause_rm() {
    let dir = TestDir::new("schedules");
    let server = start_server(&dir).await;
    server
        .cli(&["schedules", "list"])
        .run()
        .await
        .ok()
        .no_stdout()
        .stderr_has("no schedules yet");
    server
        .cli(&[
            "schedules",
            "add",
            "nightly",
            "--cron",
            "30 2 * * *",
            "--time-zone",
            "America/New_York",
            "--job",
            "report",
            r#"{"kind":"daily"}"#,
        ])
        .run()
        .await
        .ok()
        .stdout_has("30 2 * * * (America/New_York)")
        .stdout_has("next          ");
    // A taken name: exit 4; a bad expression: exit 2 naming the field; unknown: exit 3.
    server
        .cli(&[
            "schedules",
            "add",
            "nightly",
            "--cron",
            "@daily",
            "--job",
            "x",
        ])
        .run()
        .await
        .code(4)
        .stderr_has("exists already");
    server
        .cli(&[
            "schedules",
            "add",
            "bad",
            "--cron",
            "61 * * * *",
            "--job",
            "x",
        ])
        .run()
        .await
        .code(2)
        .stderr_has("cron:");
    server
        .cli(&["schedules", "show", "nope"])
        .run()
        .await
        .code(3)
        .stderr_has("no schedule named");

    server
        .cli(&[
            "schedules",
            "add",
            "tick",
            "--cron",
            "* * * * * *",
            "--job",
            "noop",
            "--overlap",
            "allow",
        ])
        .run()
        .await
        .ok();
    let list = server
        .cli(&["schedules", "list", "--json"])
        .run()
        .await
        .ok()
        .json();
    let names: Vec<&str> = list["schedules"]
        .as_array()
        .expect("schedules")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["nightly", "tick"]);

    // The server fires it: the history shows fired occurrences with their jobs.
    let deadline = Instant::now() + Duration::from_secs(30);
    let history = loop {
        let page = server
            .cli(&["schedules", "history", "tick", "--json"])
            .run()
            .await
            .ok()
            .json();
        let n = page["occurrences"].as_array().map_or(0, Vec::len);
        if n >= 2 {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "tick did not fire twice in 30 s: {page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let first = &history["occurrences"][0];
    assert_eq!(first["outcome"], "fired");
    let job_id = first["job_id"].as_str().expect("job id");
    server.cli(&["jobs", "show", job_id]).run().await.ok();
    server
        .cli(&["schedules", "history", "tick"])
        .run()
        .await
        .ok()
        .stdout_has("FIRE TIME")
        .stdout_has(job_id);

    server
        .cli(&["schedules", "pause", "tick"])
        .run()
        .await
        .ok()
        .stdout_has("paused schedule tick");
    let shown = server
        .cli(&["schedules", "show", "tick", "--json"])
        .run()
        .await
        .ok()
        .json();
    assert_eq!(shown["paused"], true);
    server
        .cli(&["schedules", "resume", "tick"])
        .run()
        .await
        .ok()
        .stdout_has("resumed schedule tick, next at");
    server
        .cli(&["schedules", "rm", "tick"])
        .run()
        .await
        .ok()
        .stdout_has("deleted schedule tick");
    server
        .cli(&["schedules", "history", "tick"])
        .run()
        .await
        .code(3);
}
