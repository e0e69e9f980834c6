//! `hinter jobs list|show|cancel|retry`.

use crate::harness::{id_of, start_server, CliApi, CliServer, Out, TestDir};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

const HEADER: [&str; 9] = [
    "ID", "JOB", "QUEUE", "STATE", "ATTEMPT", "PRIO", "RUN", "AT", "CREATED",
];

/// The rows of a `jobs list` table, each split at whitespace; checks the header.
#[track_caller]
fn table_rows(out: &Out) -> Vec<Vec<String>> {
    let mut lines = out.stdout.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_else(|| panic!("no table: {out:?}"))
        .split_whitespace()
        .collect();
    assert_eq!(header, HEADER, "table header: {out:?}");
    lines
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// The ids (first column) of a `jobs list` table.
#[track_caller]
fn table_ids(out: &Out) -> Vec<String> {
    table_rows(out).into_iter().map(|r| r[0].clone()).collect()
}

fn ids_of(list: &Value) -> Vec<String> {
    list["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no jobs array: {list}"))
        .iter()
        .map(id_of)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_list_shows_a_table_of_every_job() {
    let dir = TestDir::new("jobs-list");
    let server = start_server(&dir).await;

    // Empty: nothing on stdout, a note on stderr.
    server
        .cli(&["jobs", "list"])
        .run()
        .await
        .ok()
        .no_stdout()
        .stderr_has("no jobs found");

    let a = server
        .enqueue_id(json!({"job": "thumbnail", "queue": "media", "priority": 7}))
        .await;
    let b = server
        .enqueue_id(json!({"job": "mail", "max_attempts": 3, "priority": -5}))
        .await;
    let c = server
        .enqueue_id(json!({"job": "report", "delay": "1h"}))
        .await;

    let out = server.cli(&["jobs", "list"]).run().await.ok().no_stderr();
    let rows = table_rows(&out);
    assert_eq!(rows.len(), 3, "{out:?}");
    let expect = [
        (&a, "thumbnail", "media", "queued", "0/10", "7"),
        (&b, "mail", "default", "queued", "0/3", "-5"),
        (&c, "report", "default", "scheduled", "0/10", "0"),
    ];
    for (row, (id, job, queue, state, attempt, prio)) in rows.iter().zip(expect) {
        assert_eq!(row.len(), 8, "{row:?} in {out:?}");
        assert_eq!(
            &row[..6],
            &[
                id.to_string(),
                job.into(),
                queue.into(),
                state.into(),
                attempt.into(),
                prio.into()
            ],
            "{out:?}"
        );
    }
    // Times are RFC 3339 UTC, to the second.
    let job_c = server.job(&c).await;
    let run_at = job_c["run_at"].as_str().expect("run_at");
    let run_at = chrono::DateTime::parse_from_rfc3339(run_at).expect("an RFC 3339 run_at");
    assert_eq!(
        rows[2][6],
        run_at
            .with_timezone(&chrono::Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "{out:?}"
    );

    // Filters by queue and job name.
    let out = server
        .cli(&["jobs", "list", "--queue", "media"])
        .run()
        .await
        .ok();
    assert_eq!(table_ids(&out), vec![a.clone()]);
    let out = server
        .cli(&["jobs", "list", "--job", "mail"])
        .run()
        .await
        .ok();
    assert_eq!(table_ids(&out), vec![b.clone()]);

    // The global options may stand before the subcommand.
    let out = server.cli(&["jobs", "--json", "list"]).run().await.ok();
    assert_eq!(ids_of(&out.json()), vec![a, b, c]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_list_state_json_filters() {
    let dir = TestDir::new("jobs-state");
    let server = start_server(&dir).await;

    let q1 = server.enqueue_id(json!({"job": "a"})).await;
    let scheduled = server.enqueue_id(json!({"job": "a", "delay": "1h"})).await;
    let q2 = server
        .enqueue_id(json!({"job": "b", "queue": "other"}))
        .await;
    let cancelled = server.enqueue_id(json!({"job": "c"})).await;
    server
        .post(&format!("/api/v1/jobs/{cancelled}/cancel"), &json!({}))
        .await
        .expect_status(200);
    let dead = server.make_dead("d", "dq", "boom").await;

    let out = server
        .cli(&["jobs", "list", "--state", "queued", "--json"])
        .run()
        .await
        .ok()
        .no_stderr();
    let list = out.json();
    assert_eq!(ids_of(&list), vec![q1.clone(), q2], "{out:?}");
    assert_eq!(list["next_cursor"], Value::Null, "{out:?}");
    for job in list["jobs"].as_array().into_iter().flatten() {
        assert_eq!(job["state"], "queued", "{job}");
    }

    for (state, ids) in [
        ("scheduled", vec![scheduled]),
        ("cancelled", vec![cancelled]),
        ("dead", vec![dead]),
        ("running", vec![]),
        ("succeeded", vec![]),
    ] {
        let out = server
            .cli(&["jobs", "list", "--json", "--state", state])
            .run()
            .await
            .ok();
        assert_eq!(ids_of(&out.json()), ids, "--state {state}: {out:?}");
    }
    // State and queue together.
    let out = server
        .cli(&[
            "jobs", "list", "--json", "--state", "queued", "--queue", "default",
        ])
        .run()
        .await
        .ok();
    assert_eq!(ids_of(&out.json()), vec![q1]);

    // An unknown state is a usage error.
    server
        .cli(&["jobs", "list", "--state", "sleeping"])
        .run()
        .await
        .code(2)
        .no_stdout();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_list_pages_and_all_lists_every_job_once() {
    let dir = TestDir::new("jobs-paging");
    let server = start_server(&dir).await;

    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(server.enqueue_id(json!({"job": "p", "payload": n})).await);
    }

    // One page of 2, with a hint on stderr naming the next cursor.
    let first = server
        .cli(&["jobs", "list", "--limit", "2"])
        .run()
        .await
        .ok();
    assert_eq!(table_ids(&first), ids[..2].to_vec(), "{first:?}");
    let cursor = cursor_in(&first);

    // Following the cursors gives every job once, in order.
    let mut paged = table_ids(&first);
    let mut cursor = Some(cursor);
    let mut pages = 1;
    while let Some(c) = cursor.take() {
        let page = server
            .cli(&["jobs", "list", "--limit", "2", "--cursor", &c])
            .run()
            .await
            .ok();
        pages += 1;
        assert!(pages <= 3, "too many pages: {page:?}");
        paged.extend(table_ids(&page));
        if page.stderr.contains("more:") {
            cursor = Some(cursor_in(&page));
        }
    }
    assert_eq!(paged, ids);

    // --all: every job exactly once, one table, no hint.
    let all = server
        .cli(&["jobs", "list", "--limit", "2", "--all"])
        .run()
        .await
        .ok()
        .no_stderr();
    assert_eq!(table_ids(&all), ids, "{all:?}");

    let all_json = server
        .cli(&["jobs", "list", "--limit", "2", "--all", "--json"])
        .run()
        .await
        .ok()
        .no_stderr();
    let list = all_json.json();
    assert_eq!(ids_of(&list), ids, "{all_json:?}");
    assert_eq!(list["next_cursor"], Value::Null, "{all_json:?}");

    // One page with --json carries the cursor.
    let page_json = server
        .cli(&["jobs", "list", "--limit", "2", "--json"])
        .run()
        .await
        .ok();
    assert!(page_json.json()["next_cursor"].is_string(), "{page_json:?}");

    // A limit out of range is a usage error.
    server
        .cli(&["jobs", "list", "--limit", "0"])
        .run()
        .await
        .code(2);
}

/// The cursor in the `more: repeat with --cursor C …` hint.
#[track_caller]
fn cursor_in(out: &Out) -> String {
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("more: repeat with --cursor "))
        .unwrap_or_else(|| panic!("no `more:` hint on stderr: {out:?}"));
    line["more: repeat with --cursor ".len()..]
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no cursor in {line:?}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_show_prints_the_job_and_unknown_ids_exit_3() {
    let dir = TestDir::new("jobs-show");
    let server = start_server(&dir).await;

    let id = server
        .enqueue_id(json!({"job": "work", "queue": "w", "payload": {"n": 1}, "ordering_key": "k7"}))
        .await;
    let out = server
        .cli(&["jobs", "show", &id])
        .run()
        .await
        .ok()
        .no_stderr();
    let field = |name: &str| -> String {
        let prefix = format!("{name}:");
        out.stdout
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {name:?} line: {out:?}"))[prefix.len()..]
            .trim()
            .to_string()
    };
    assert_eq!(field("id"), id);
    assert_eq!(field("job"), "work");
    assert_eq!(field("queue"), "w");
    assert_eq!(field("state"), "queued");
    assert_eq!(field("attempt"), "0/10");
    assert_eq!(field("ordering key"), "k7");
    assert_eq!(field("result"), "-");
    assert!(out.stdout.contains("\"n\": 1"), "pretty payload: {out:?}");

    // After a failed attempt: scheduled for a retry, with the error listed.
    let leased = server.lease_from("w", 1, "5s").await;
    assert_eq!(leased.len(), 1);
    let failed = server.fail(&leased[0], "boom: disk full", true).await;
    assert_eq!(failed["state"], "scheduled", "{failed}");
    let out = server.cli(&["jobs", "show", &id]).run().await.ok();
    assert!(
        out.stdout.lines().any(|l| l == "state:        scheduled"),
        "{out:?}"
    );
    assert!(out.stdout.contains("attempt:      1/10"), "{out:?}");
    // The last attempt's start and worker, marked as such: the job is not running.
    let worker_line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("worker:"))
        .unwrap_or_else(|| panic!("no worker line: {out:?}"));
    assert!(worker_line.ends_with(" (last attempt)"), "{worker_line}");
    let started_line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("started at:"))
        .unwrap_or_else(|| panic!("no started line: {out:?}"));
    assert!(started_line.ends_with(" (last attempt)"), "{started_line}");
    assert!(out.stdout.contains("errors:\n  attempt 1 at "), "{out:?}");
    assert!(out.stdout.contains(": boom: disk full"), "{out:?}");

    // --json: the API's job object.
    let out = server
        .cli(&["jobs", "show", &id, "--json"])
        .run()
        .await
        .ok();
    assert_eq!(out.json(), server.job(&id).await);

    // Unknown id: exit 3 and an error naming it.
    let unknown = uuid::Uuid::now_v7().to_string();
    let out = server
        .cli(&["jobs", "show", &unknown])
        .run()
        .await
        .code(3)
        .no_stdout()
        .stderr_has("error: ");
    assert!(out.stderr.contains("404"), "{out:?}");
    // Malformed id: a usage error.
    server
        .cli(&["jobs", "show", "not-a-uuid"])
        .run()
        .await
        .code(2)
        .no_stdout();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_cancel_then_again_is_a_conflict() {
    let dir = TestDir::new("jobs-cancel");
    let server = start_server(&dir).await;

    let id = server.enqueue_id(json!({"job": "c"})).await;
    server
        .cli(&["jobs", "cancel", &id])
        .run()
        .await
        .ok()
        .no_stderr()
        .stdout_has(&format!("cancelled {id}\n"));
    assert_eq!(server.job(&id).await["state"], "cancelled");

    // Cancelling a finished job: exit 4, state unchanged.
    let out = server
        .cli(&["jobs", "cancel", &id])
        .run()
        .await
        .code(4)
        .no_stdout()
        .stderr_has("error: ");
    assert!(out.stderr.contains("409"), "{out:?}");
    assert_eq!(server.job(&id).await["state"], "cancelled");

    // A running job gets a cancel request.
    let running = server.enqueue_id(json!({"job": "r", "queue": "rq"})).await;
    let leased = server.lease_from("rq", 1, "5s").await;
    assert_eq!(
        leased.iter().map(id_of).collect::<Vec<_>>(),
        vec![running.clone()]
    );
    server
        .cli(&["jobs", "cancel", &running])
        .run()
        .await
        .ok()
        .stdout_has(&format!("cancel requested for {running} (running"));
    let job = server.job(&running).await;
    assert_eq!(
        (&job["state"], &job["cancel_requested"]),
        (&json!("running"), &json!(true)),
        "{job}"
    );
    let out = server.cli(&["jobs", "list"]).run().await.ok();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with(&running) && l.contains("running (cancelling)")),
        "{out:?}"
    );

    // Unknown: exit 3.
    server
        .cli(&["jobs", "cancel", &uuid::Uuid::now_v7().to_string()])
        .run()
        .await
        .code(3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_retry_puts_a_dead_job_back() {
    let dir = TestDir::new("jobs-retry");
    let server = start_server(&dir).await;

    let dead = server.make_dead("d", "dq", "permanent").await;
    let out = server
        .cli(&["jobs", "retry", &dead])
        .run()
        .await
        .ok()
        .no_stderr();
    assert_eq!(out.stdout, format!("retried {dead} (queued)\n"));
    let job = server.job(&dead).await;
    assert_eq!(job["state"], "queued", "{job}");
    assert_eq!(
        job["errors"][0]["message"], "permanent",
        "errors are kept: {job}"
    );

    // Retrying a queued job: exit 4.
    server
        .cli(&["jobs", "retry", &dead])
        .run()
        .await
        .code(4)
        .no_stdout()
        .stderr_has("error: ");
    // A cancelled job can be retried too; --json prints the job.
    let cancelled = server.enqueue_id(json!({"job": "c", "queue": "cq"})).await;
    server.cli(&["jobs", "cancel", &cancelled]).run().await.ok();
    let out = server
        .cli(&["jobs", "retry", &cancelled, "--json"])
        .run()
        .await
        .ok();
    assert_eq!(out.json()["state"], "queued", "{out:?}");
    assert_eq!(id_of(&out.json()), cancelled);
    assert_eq!(server.job(&cancelled).await["state"], "queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_list_edge_cases() {
    let dir = TestDir::new("jobs-edges");
    let server = start_server(&dir).await;

    // An empty listing with --json is still JSON.
    let out = server
        .cli(&["jobs", "list", "--json"])
        .run()
        .await
        .ok()
        .no_stderr();
    assert_eq!(out.json(), json!({"jobs": [], "next_cursor": null}));

    // A cursor the server never handed out: refused as invalid (HTTP 400), exit 2.
    server
        .cli(&["jobs", "list", "--cursor", "not-a-cursor"])
        .run()
        .await
        .code(2)
        .no_stdout()
        .stderr_has("error: ");
    // --cursor and --all exclude each other.
    server
        .cli(&["jobs", "list", "--cursor", "1", "--all"])
        .run()
        .await
        .code(2)
        .no_stdout();

    // Retrying a succeeded job is a conflict.
    let done = server.make_succeeded("s", "sq").await;
    server
        .cli(&["jobs", "retry", &done])
        .run()
        .await
        .code(4)
        .no_stdout();
    assert_eq!(server.job(&done).await["state"], "succeeded");
}

/// `hinter jobs list | head -1`: the reader goes away early; that is not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_list_into_a_closed_pipe_is_not_an_error() {
    let dir = TestDir::new("jobs-pipe");
    let server = start_server(&dir).await;

    // Far more output than a pipe buffers (1000 rows of ~120 bytes).
    let jobs: Vec<Value> = (0..1000)
        .map(|n| json!({"job": "many", "payload": n}))
        .collect();
    server
        .post("/api/v1/jobs/batch", &json!({"jobs": jobs}))
        .await
        .expect_status(201);

    let mut running = server.cli(&["jobs", "list", "--limit", "1000"]).spawn();
    let mut stdout = BufReader::new(running.take_stdout());
    let mut first = String::new();
    stdout
        .read_line(&mut first)
        .await
        .expect("reading the first line");
    assert!(first.starts_with("ID "), "first line: {first:?}");
    drop(stdout);
    let out = running.finish().await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(!out.stderr.contains("error"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_list_json_is_summaries_unless_include_asks() {
    let dir = TestDir::new("jobs-include");
    let server = start_server(&dir).await;
    let id = server
        .enqueue_id(json!({"job": "a", "payload": {"big": "x"}}))
        .await;
    let dead = server.make_dead("d", "dq", "boom").await;

    let out = server.cli(&["jobs", "list", "--json"]).run().await.ok();
    let list = out.json();
    assert_eq!(ids_of(&list), vec![id.clone(), dead.clone()], "{out:?}");
    for job in list["jobs"].as_array().into_iter().flatten() {
        for gone in ["payload", "result", "errors"] {
            assert!(job.get(gone).is_none(), "{gone} in {job}");
        }
        assert!(job.get("error_count").is_some(), "{job}");
    }

    let out = server
        .cli(&["jobs", "list", "--json", "--include", "payload,errors"])
        .run()
        .await
        .ok();
    let list = out.json();
    assert_eq!(list["jobs"][0]["payload"], json!({"big": "x"}), "{out:?}");
    assert_eq!(list["jobs"][1]["errors"][0]["message"], "boom", "{out:?}");
    assert!(list["jobs"][0].get("result").is_none(), "{out:?}");

    let out = server.cli(&["dead", "list", "--json"]).run().await.ok();
    let list = out.json();
    assert_eq!(list["jobs"][0]["error_count"], 1, "{out:?}");
    assert_eq!(list["jobs"][0]["last_error"]["message"], "boom", "{out:?}");

    server
        .cli(&["jobs", "list", "--include", "secrets"])
        .run()
        .await
        .code(2);
}
