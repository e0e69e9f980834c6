//! `hinter dead list|retry`: the dead-letter set.

use crate::harness::{id_of, start_server, CliApi, CliServer, Out, TestDir};
use serde_json::json;

const HEADER: [&str; 7] = ["ID", "JOB", "QUEUE", "ATTEMPTS", "DIED", "LAST", "ERROR"];

/// The lines of a `dead list` table after the (checked) header.
#[track_caller]
fn dead_rows(out: &Out) -> Vec<String> {
    let mut lines = out.stdout.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_else(|| panic!("no table: {out:?}"))
        .split_whitespace()
        .collect();
    assert_eq!(header, HEADER, "table header: {out:?}");
    lines.map(str::to_string).collect()
}

fn first_column(rows: &[String]) -> Vec<String> {
    rows.iter()
        .map(|r| r.split_whitespace().next().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_list_shows_only_dead_jobs() {
    let dir = TestDir::new("dead-list");
    let server = start_server(&dir).await;

    server
        .cli(&["dead", "list"])
        .run()
        .await
        .ok()
        .no_stdout()
        .stderr_has("no dead jobs");

    let long = format!("disk full on node 1: {}\nsecond line", "x".repeat(80));
    let d1 = server.make_dead("resize", "dq", "permanent").await;
    server.make_succeeded("fine", "dq").await;
    server
        .enqueue_id(json!({"job": "waiting", "queue": "dq"}))
        .await;
    let cancelled = server.enqueue_id(json!({"job": "c"})).await;
    server
        .post(&format!("/api/v1/jobs/{cancelled}/cancel"), &json!({}))
        .await
        .expect_status(200);
    let d2 = server.make_dead("die", "dq2", &long).await;

    let out = server.cli(&["dead", "list"]).run().await.ok().no_stderr();
    let rows = dead_rows(&out);
    assert_eq!(first_column(&rows), vec![d1.clone(), d2.clone()], "{out:?}");
    let r1: Vec<&str> = rows[0].split_whitespace().collect();
    assert_eq!(&r1[1..4], &["resize", "dq", "1/10"], "{out:?}");
    assert!(r1[4].ends_with('Z'), "DIED is a UTC time: {out:?}");
    assert_eq!(r1[5..].join(" "), "permanent", "{out:?}");
    // The last error: its first line, cut at 60 characters.
    assert!(rows[1].contains("disk full on node 1: xxx"), "{out:?}");
    assert!(!rows[1].contains("second line"), "{out:?}");
    let error_col = rows[1]
        .find("disk full")
        .map(|at| &rows[1][at..])
        .unwrap_or_default();
    assert!(
        error_col.chars().count() <= 61,
        "the last error is not cut: {error_col:?}"
    );

    // --json: only dead jobs; --queue narrows.
    let out = server.cli(&["dead", "list", "--json"]).run().await.ok();
    let list = out.json();
    let jobs = list["jobs"].as_array().expect("jobs");
    assert_eq!(
        jobs.iter().map(id_of).collect::<Vec<_>>(),
        vec![d1.clone(), d2.clone()]
    );
    assert!(jobs.iter().all(|j| j["state"] == "dead"), "{list}");
    let out = server
        .cli(&["dead", "list", "--queue", "dq2"])
        .run()
        .await
        .ok();
    assert_eq!(first_column(&dead_rows(&out)), vec![d2]);
    let out = server
        .cli(&["dead", "list", "--job", "resize", "--json"])
        .run()
        .await
        .ok();
    let list = out.json();
    assert_eq!(
        list["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .map(id_of)
            .collect::<Vec<_>>(),
        vec![d1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_retry_by_id_and_all_bring_jobs_back() {
    let dir = TestDir::new("dead-retry");
    let server = start_server(&dir).await;

    let a = server.make_dead("a", "q1", "e1").await;
    let b = server.make_dead("b", "q2", "e2").await;
    let c = server.make_dead("c", "q2", "e3").await;
    let d = server.make_dead("d", "q3", "e4").await;

    // One by id.
    let out = server
        .cli(&["dead", "retry", &a])
        .run()
        .await
        .ok()
        .no_stderr();
    assert_eq!(out.stdout, format!("retried {a} (queued)\n"));
    assert_eq!(server.job(&a).await["state"], "queued");
    assert_eq!(
        server.ids("state=dead").await,
        vec![b.clone(), c.clone(), d.clone()]
    );

    // --all --queue: only that queue's dead jobs.
    let out = server
        .cli(&["dead", "retry", "--all", "--queue", "q2"])
        .run()
        .await
        .ok()
        .stderr_has("retried 2 of 2 jobs");
    assert_eq!(
        out.stdout,
        format!("retried {b} (queued)\nretried {c} (queued)\n")
    );
    assert_eq!(server.ids("state=dead").await, vec![d.clone()]);

    // --all: the rest.
    let out = server
        .cli(&["dead", "retry", "--all", "--json"])
        .run()
        .await
        .ok();
    let report = out.json();
    assert_eq!(
        report["retried"]
            .as_array()
            .expect("retried")
            .iter()
            .map(id_of)
            .collect::<Vec<_>>(),
        vec![d.clone()],
        "{out:?}"
    );
    assert_eq!(report["failed"], json!([]), "{out:?}");
    assert_eq!(server.ids("state=dead").await, Vec::<String>::new());
    assert_eq!(server.ids("state=queued").await, vec![a.clone(), b, c, d]);

    // Nothing left: a note, exit 0.
    server
        .cli(&["dead", "retry", "--all"])
        .run()
        .await
        .ok()
        .no_stdout()
        .stderr_has("no dead jobs to retry");
    server
        .cli(&["dead", "list"])
        .run()
        .await
        .ok()
        .no_stdout()
        .stderr_has("no dead jobs");

    // A failure does not stop the rest; the exit code is the first failure's.
    let e = server.make_dead("e", "q4", "e5").await;
    let unknown = uuid::Uuid::now_v7().to_string();
    let out = server
        .cli(&["dead", "retry", &a, &unknown, &e])
        .run()
        .await
        .code(4)
        .stderr_has(&format!("error: job {a}: "))
        .stderr_has(&format!("error: job {unknown}: "))
        .stderr_has("retried 1 of 3 jobs");
    assert_eq!(out.stdout, format!("retried {e} (queued)\n"));
    assert_eq!(server.job(&e).await["state"], "queued");

    // Neither ids nor --all: a usage error.
    server.cli(&["dead", "retry"]).run().await.code(2);
}

/// `hinter jobs delete` removes finished jobs (a waiting one is refused, exit 1 naming the
/// conflict); `hinter queues purge --state dead` empties a queue's dead-letter set only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_delete_and_queues_purge_remove_finished_jobs() {
    let dir = TestDir::new("dead-purge");
    let server = start_server(&dir).await;
    let d1 = server.make_dead("a", "pq", "boom").await;
    let d2 = server.make_dead("b", "pq", "boom").await;
    let ok = server.make_succeeded("c", "pq").await;
    let waiting = server.enqueue_id(json!({"job": "w", "queue": "pq"})).await;

    let out = server.cli(&["jobs", "delete", &d1]).run().await.ok();
    assert!(
        out.stdout.contains(&format!("deleted {d1} (dead)")),
        "{out:?}"
    );
    server
        .get(&format!("/api/v1/jobs/{d1}"))
        .await
        .expect_status(404);
    let refused = server.cli(&["jobs", "delete", &waiting]).run().await;
    assert_ne!(refused.code, Some(0), "{refused:?}");
    assert!(
        refused.stderr.contains("conflict") || refused.stderr.contains("cannot be deleted"),
        "{refused:?}"
    );

    let out = server
        .cli(&["queues", "purge", "pq", "--state", "dead", "--json"])
        .run()
        .await
        .ok();
    let answer: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(answer["deleted"], 1, "{out:?}");
    server
        .get(&format!("/api/v1/jobs/{d2}"))
        .await
        .expect_status(404);
    server
        .get(&format!("/api/v1/jobs/{ok}"))
        .await
        .expect_status(200);
    server
        .get(&format!("/api/v1/jobs/{waiting}"))
        .await
        .expect_status(200);
    let bad = server
        .cli(&["queues", "purge", "pq", "--state", "queued"])
        .run()
        .await;
    assert_ne!(bad.code, Some(0), "{bad:?}");
    assert!(bad.stderr.contains("states"), "{bad:?}");
}
