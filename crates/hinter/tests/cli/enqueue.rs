//! `hinter enqueue` without `--wait`: what it prints, and what it leaves on the server.

use crate::harness::{id_in, id_of, start_server, CliApi, CliServer, TestDir};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

fn time(value: &Value) -> DateTime<Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"));
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_prints_the_id_and_the_job_is_on_the_server() {
    let dir = TestDir::new("enqueue-plain");
    let server = start_server(&dir).await;

    let out = server
        .cli(&["enqueue", "thumbnail", r#"{"n":1}"#])
        .run()
        .await
        .ok()
        .no_stderr();
    let lines = out.lines();
    assert_eq!(lines.len(), 1, "{out:?}");
    let id = id_in(lines[0], "enqueued ");
    assert_eq!(lines[0], format!("enqueued {id} (queue default)"));

    let job = server.job(&id).await;
    assert_eq!(job["job"], "thumbnail", "{job}");
    assert_eq!(job["payload"], json!({"n": 1}), "{job}");
    assert_eq!(job["queue"], "default", "{job}");
    assert_eq!(job["state"], "queued", "{job}");
    assert_eq!(job["priority"], 0, "{job}");
    assert_eq!(job["max_attempts"], 10, "{job}");
    assert_eq!(job["attempt"], 0, "{job}");
    assert_eq!(job["ordering_key"], Value::Null, "{job}");
    assert_eq!(job["unique_key"], Value::Null, "{job}");
    assert_eq!(server.ids("").await, vec![id], "exactly one job enqueued");

    // Without a payload the payload is null.
    let out = server.cli(&["enqueue", "bare"]).run().await.ok();
    let id = id_in(out.stdout.trim(), "enqueued ");
    assert_eq!(server.job(&id).await["payload"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_json_reports_the_job_with_every_option_applied() {
    let dir = TestDir::new("enqueue-json");
    let server = start_server(&dir).await;

    let out = server
        .cli(&[
            "enqueue",
            "report",
            r#"{"day": "2026-11-24", "pages": [1, 2]}"#,
            "--json",
            "--queue",
            "media",
            "--priority",
            "-5",
            "--max-attempts",
            "3",
            "--ordering-key",
            "customer-7",
            "--unique-key",
            "report-2026-11-24",
            "--timeout",
            "5m",
        ])
        .run()
        .await
        .ok()
        .no_stderr();
    let answer = out.json();
    assert_eq!(answer["duplicate"], false, "{out:?}");
    let id = id_of(&answer["job"]);
    uuid::Uuid::parse_str(&id).unwrap_or_else(|e| panic!("job.id {id:?} is not a UUID: {e}"));

    let job = server.job(&id).await;
    assert_eq!(job["job"], "report", "{job}");
    assert_eq!(
        job["payload"],
        json!({"day": "2026-11-24", "pages": [1, 2]})
    );
    assert_eq!(job["queue"], "media", "{job}");
    assert_eq!(job["priority"], -5, "{job}");
    assert_eq!(job["max_attempts"], 3, "{job}");
    assert_eq!(job["ordering_key"], "customer-7", "{job}");
    assert_eq!(job["unique_key"], "report-2026-11-24", "{job}");
    assert_ne!(job["timeout"], Value::Null, "{job}");
    assert_eq!(job["state"], "queued", "{job}");
    // `--json` prints the API's own job object.
    assert_eq!(
        answer["job"], job,
        "--json job differs from GET /api/v1/jobs/{id}"
    );

    // Options may stand before the positional arguments too.
    let out = server
        .cli(&[
            "enqueue",
            "--queue",
            "early",
            "--json",
            "early-job",
            "[1,2,3]",
        ])
        .run()
        .await
        .ok();
    let job = server.job(&id_of(&out.json()["job"])).await;
    assert_eq!(
        (&job["job"], &job["queue"], &job["payload"]),
        (&json!("early-job"), &json!("early"), &json!([1, 2, 3]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_delay_and_at_make_the_job_scheduled() {
    let dir = TestDir::new("enqueue-delay");
    let server = start_server(&dir).await;

    let out = server
        .cli(&["enqueue", "later", "--delay", "1h", "--json"])
        .run()
        .await
        .ok();
    let id = id_of(&out.json()["job"]);
    let job = server.job(&id).await;
    assert_eq!(job["state"], "scheduled", "{job}");
    let ahead = time(&job["run_at"]) - time(&job["created_at"]);
    assert!(
        (3590..=3610).contains(&ahead.num_seconds()),
        "--delay 1h ran at {} after creation: {job}",
        ahead
    );

    let out = server
        .cli(&["enqueue", "later", "--at", "2030-01-01T10:00:00+01:00"])
        .run()
        .await
        .ok();
    let id = id_in(out.stdout.trim(), "enqueued ");
    let job = server.job(&id).await;
    assert_eq!(job["state"], "scheduled", "{job}");
    assert_eq!(
        time(&job["run_at"]),
        time(&json!("2030-01-01T09:00:00Z")),
        "{job}"
    );

    // Neither is leasable now.
    assert!(server.lease_from("default", 10, "0").await.is_empty());

    // --delay and --at exclude each other: a usage error, nothing sent.
    server
        .cli(&[
            "enqueue",
            "later",
            "--delay",
            "1h",
            "--at",
            "2030-01-01T10:00:00Z",
        ])
        .run()
        .await
        .code(2)
        .no_stdout();
    assert_eq!(server.ids("").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_reads_the_payload_from_stdin() {
    let dir = TestDir::new("enqueue-stdin");
    let server = start_server(&dir).await;

    let payload = "{\n  \"from\": \"stdin\",\n  \"list\": [1, 2, {\"deep\": null}]\n}\n";
    let out = server
        .cli(&["enqueue", "mail", "-", "--json"])
        .stdin(payload)
        .run()
        .await
        .ok()
        .no_stderr();
    let id = id_of(&out.json()["job"]);
    let job = server.job(&id).await;
    assert_eq!(
        job["payload"],
        json!({"from": "stdin", "list": [1, 2, {"deep": null}]}),
        "{job}"
    );

    // Not JSON on stdin: exit 2, nothing enqueued.
    server
        .cli(&["enqueue", "mail", "-"])
        .stdin("{\"from\": ")
        .run()
        .await
        .code(2)
        .no_stdout()
        .stderr_has("error: payload from standard input is not valid JSON");
    assert_eq!(server.ids("").await, vec![id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_exits_2_and_enqueues_nothing() {
    let dir = TestDir::new("enqueue-invalid");
    let server = start_server(&dir).await;

    // Text that is not JSON: the documented message and hint.
    server
        .cli(&["enqueue", "thumbnail", "hello"])
        .run()
        .await
        .code(2)
        .no_stdout()
        .stderr_has("error: payload is not valid JSON")
        .stderr_has(r#"hint: a text payload must be a quoted JSON string: '"hello"'"#);

    // Broken JSON.
    server
        .cli(&["enqueue", "thumbnail", r#"{"n": 1"#])
        .run()
        .await
        .code(2)
        .no_stdout()
        .stderr_has("error: payload is not valid JSON");

    // Fields the server would refuse are refused before sending.
    for (args, names) in [
        (vec!["--priority", "5000"], "priority"),
        (vec!["--queue", "no spaces"], "queue"),
        (vec!["--max-attempts", "0"], "max_attempts"),
    ] {
        let mut all = vec!["enqueue", "thumbnail", "{}"];
        all.extend(args);
        let out = server.cli(&all).run().await.code(2).no_stdout();
        assert!(out.stderr.starts_with("error: "), "no error line: {out:?}");
        assert!(
            out.stderr.contains(names) || out.stderr.contains(&names.replace('_', "-")),
            "the error does not name {names}: {out:?}"
        );
    }
    // A bad job name.
    server
        .cli(&["enqueue", "bad name!", "{}"])
        .run()
        .await
        .code(2)
        .no_stdout();

    assert_eq!(
        server.ids("").await,
        Vec::<String>::new(),
        "nothing enqueued"
    );

    // A quoted string is a fine payload.
    let out = server
        .cli(&["enqueue", "thumbnail", r#""hello""#])
        .run()
        .await
        .ok();
    let id = id_in(out.stdout.trim(), "enqueued ");
    assert_eq!(server.job(&id).await["payload"], "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_unique_key_shows_the_first_job() {
    let dir = TestDir::new("enqueue-unique");
    let server = start_server(&dir).await;

    let first = server
        .cli(&["enqueue", "report", r#"{"v":1}"#, "--unique-key", "r-1"])
        .run()
        .await
        .ok();
    let first_id = id_in(first.stdout.trim(), "enqueued ");

    // Not an error: exit 0, naming the first job.
    let again = server
        .cli(&["enqueue", "report", r#"{"v":2}"#, "--unique-key", "r-1"])
        .run()
        .await
        .ok()
        .no_stderr();
    assert_eq!(
        again.stdout,
        format!("duplicate of {first_id} (queued, queue default)\n")
    );

    let json_again = server
        .cli(&[
            "enqueue",
            "report",
            r#"{"v":3}"#,
            "--unique-key",
            "r-1",
            "--json",
        ])
        .run()
        .await
        .ok();
    let answer = json_again.json();
    assert_eq!(answer["duplicate"], true, "{json_again:?}");
    assert_eq!(id_of(&answer["job"]), first_id);
    assert_eq!(
        answer["job"]["payload"],
        json!({"v": 1}),
        "the first job's payload"
    );

    // Only the first job exists; another key, or another job name, is a new job.
    assert_eq!(server.ids("").await, vec![first_id.clone()]);
    let other_key = server
        .cli(&["enqueue", "report", "--unique-key", "r-2"])
        .run()
        .await
        .ok();
    let other_name = server
        .cli(&["enqueue", "summary", "--unique-key", "r-1"])
        .run()
        .await
        .ok();
    let ids = vec![
        first_id,
        id_in(other_key.stdout.trim(), "enqueued "),
        id_in(other_name.stdout.trim(), "enqueued "),
    ];
    assert_eq!(server.ids("").await, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_and_refusals_by_the_server_exit_2() {
    let dir = TestDir::new("enqueue-usage");
    let server = start_server(&dir).await;

    for args in [
        // --unique-for needs --unique-key; --wait-timeout and --quiet need --wait.
        vec!["enqueue", "x", "--unique-for", "10m"],
        vec!["enqueue", "x", "--wait-timeout", "1s"],
        vec!["enqueue", "x", "--quiet"],
        // Not a duration, not a time, not a number.
        vec!["enqueue", "x", "--delay", "soon"],
        vec!["enqueue", "x", "--at", "tomorrow"],
        vec!["enqueue", "x", "--priority", "high"],
        // No job name.
        vec!["enqueue"],
        // Client options stand after the command name, not before it.
        vec!["--json", "enqueue", "x"],
    ] {
        server.cli(&args).run().await.code(2).no_stdout();
    }
    // Durations say what is wrong with them, negative ones included (not clap's "-- -1").
    for (args, says) in [
        (
            vec!["enqueue", "x", "--delay", "-1s"],
            "a duration cannot be negative",
        ),
        (
            vec!["enqueue", "x", "--delay", "3651d"],
            "longer than the limit of 3650d",
        ),
        (
            vec!["enqueue", "x", "--timeout", "0.0001s"],
            "fraction of a millisecond",
        ),
    ] {
        server
            .cli(&args)
            .run()
            .await
            .code(2)
            .no_stdout()
            .stderr_has(says);
    }
    // What only the server checks comes back as its 422, naming the field.
    server
        .cli(&["enqueue", "x", "--at", "0000-01-01T00:00:00Z"])
        .run()
        .await
        .code(2)
        .no_stdout()
        .stderr_has("run_at");
    assert_eq!(
        server.ids("").await,
        Vec::<String>::new(),
        "nothing enqueued"
    );
}

/// A payload over the server's limit (1 MiB by default) is refused by the server with 413,
/// which the CLI documents as exit 2. Several tries, since whether the answer gets through
/// can depend on timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_payload_is_refused_with_exit_2() {
    let dir = TestDir::new("enqueue-too-large");
    let server = start_server(&dir).await;

    let big = serde_json::to_string(&"x".repeat(8 * 1024 * 1024)).expect("encoding");
    for _ in 0..5 {
        let out = server
            .cli(&["enqueue", "big", "-"])
            .stdin(&big)
            .run()
            .await
            .code(2)
            .no_stdout()
            .stderr_has("error: ")
            .stderr_has("413");
        assert!(!out.stderr.contains("cannot reach"), "{out:?}");
    }
    assert_eq!(
        server.ids("").await,
        Vec::<String>::new(),
        "nothing enqueued"
    );
    assert_eq!(server.get("/healthz").await.status, 200);
}
