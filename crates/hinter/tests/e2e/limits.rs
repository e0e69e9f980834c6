//! Hostile and extreme input through the real binary, on SQLite and on PostgreSQL: what the
//! server accepts is stored, leased and read back unchanged by hinter's own CLI; what it
//! cannot keep is refused with 422 naming the field, and nothing is changed.

use crate::support::pg::TestDb;
use crate::support::{hinter_command, id_of, Server, TestDir};
use serde_json::{json, Value};
use std::process::Output;

/// A value nested `levels` arrays and objects deep.
fn nested(levels: usize) -> Value {
    let mut value = json!(1);
    for i in 0..levels {
        value = if i % 2 == 0 {
            json!([value])
        } else {
            json!({ "k": value })
        };
    }
    value
}

/// Numbers no 64-bit type holds: they must come back digit for digit.
const EXACT_NUMBERS: &str = r#"{"big": 123456789012345678901234567890,
    "neg": -98765432109876543210, "pi": 3.14159265358979323846264338327950288}"#;

async fn cli(server: &Server, args: &[&str]) -> Output {
    let mut command = hinter_command();
    command.args(args).arg("--server").arg(server.base());
    tokio::task::spawn_blocking(move || command.output().expect("running hinter"))
        .await
        .expect("the CLI task")
}

async fn probe(server: &Server) {
    // Durations and times beyond what every backend can compute with: 422, naming the field
    // (PostgreSQL used to store them, then refuse every lease on the queue).
    let refused = [
        (
            r#"{"job":"t","queue":"pq","timeout":"9223372036854775807ms"}"#,
            "timeout",
        ),
        (
            r#"{"job":"t","queue":"pq","timeout":"18446744073709551615ms"}"#,
            "timeout",
        ),
        (r#"{"job":"t","queue":"pq","timeout":1e19}"#, "timeout"),
        (r#"{"job":"t","queue":"pq","timeout":9e15}"#, "timeout"),
        (r#"{"job":"t","queue":"pq","timeout":"0.0001s"}"#, "timeout"),
        (r#"{"job":"t","queue":"pq","delay":"-1s"}"#, "delay"),
        (r#"{"job":"t","queue":"pq","delay":-1}"#, "delay"),
        (
            r#"{"job":"t","queue":"pq","unique_key":"k","unique_for":"3651d"}"#,
            "unique_for",
        ),
        (
            r#"{"job":"t","queue":"pq","run_at":"+10000-01-01T00:00:00Z"}"#,
            "run_at",
        ),
        (
            r#"{"job":"t","queue":"pq","unique_key":"a\u0000b"}"#,
            "unique_key",
        ),
        (
            r#"{"job":"t","queue":"pq","ordering_key":"\u0000"}"#,
            "ordering_key",
        ),
        (r#"{"job":"t","queue":".."}"#, "queue"),
        (r#"{"job":"."}"#, "job"),
    ];
    for (body, field) in refused {
        let resp = server
            .post_raw("/api/v1/jobs", body)
            .await
            .expect_error(422, "invalid_field");
        assert!(
            resp.message().starts_with(field),
            "{body}: the message must name {field}: {resp:?}"
        );
    }
    let deep = json!({"job": "t", "queue": "pq", "payload": nested(65)});
    let resp = server
        .post("/api/v1/jobs", &deep)
        .await
        .expect_error(422, "invalid_field");
    assert!(resp.message().starts_with("payload"), "{resp:?}");
    let resp = server
        .post(
            "/api/v1/leases",
            &json!({"worker_id": "w\u{0}", "queues": ["pq"]}),
        )
        .await
        .expect_error(422, "invalid_field");
    assert!(resp.message().starts_with("worker_id"), "{resp:?}");
    // A cursor of the form of `next_cursor` that no page gave names no page (404).
    server
        .get("/api/v1/jobs?cursor=0")
        .await
        .expect_error(404, "not_found");
    for query in [
        "cursor=-1",
        "queue=%00",
        "job=a%00b",
        "queue=..",
        "job=a%20b",
    ] {
        server
            .get(&format!("/api/v1/jobs?{query}"))
            .await
            .expect_error(400, "bad_request");
    }
    assert!(
        server.list_jobs("queue=pq").await.is_empty(),
        "nothing refused was stored"
    );

    // The largest of everything is accepted, leased, and read back exactly.
    let payload: Value = {
        let mut p: Value = serde_json::from_str(EXACT_NUMBERS).expect("payload");
        p["deep"] = nested(63); // 64 levels with the object around it
        p["nul"] = json!("a\u{0}b");
        p
    };
    let far = server
        .enqueue(json!({"job": "far", "queue": "pq", "run_at": "9999-12-31T23:59:59Z"}))
        .await;
    assert_eq!(far["run_at"], json!("9999-12-31T23:59:59Z"));
    let long = server
        .enqueue(json!({
            "job": "long", "queue": "pq", "payload": payload, "timeout": "3650d",
            "unique_key": "k", "unique_for": "3650d", "priority": -1,
        }))
        .await;
    assert_eq!(long["timeout"], json!("3650d"));
    assert_eq!(long["payload"].to_string(), payload.to_string());
    let leased = server
        .lease(json!({"worker_id": "w", "queues": ["pq"], "max": 10}))
        .await;
    assert_eq!(leased.len(), 1, "the far job is not due: {leased:?}");
    assert_eq!(leased[0]["payload"].to_string(), payload.to_string());
    let token = leased[0]["lease_token"].clone();
    let id = id_of(&long);
    server
        .post(
            &format!("/api/v1/jobs/{id}/heartbeat"),
            &json!({"lease_token": token, "lease": "1h"}),
        )
        .await
        .expect_status(200);
    let resp = server
        .complete(&id, &token, json!({"deep": nested(65)}))
        .await
        .expect_error(422, "invalid_field");
    assert!(resp.message().starts_with("result"), "{resp:?}");
    let result: Value = serde_json::from_str(EXACT_NUMBERS).expect("result");
    server
        .complete(&id, &token, result.clone())
        .await
        .expect_status(200);
    let job = server.job(&id).await;
    assert_eq!(job["state"], json!("succeeded"));
    assert_eq!(job["result"].to_string(), result.to_string());

    // hinter's own CLI reads it all back, digit for digit.
    let show = cli(server, &["jobs", "show", &id, "--json"]).await;
    assert!(show.status.success(), "{show:?}");
    let shown: Value = serde_json::from_slice(&show.stdout).expect("jobs show --json is JSON");
    assert_eq!(shown["payload"].to_string(), payload.to_string());
    assert_eq!(shown["result"].to_string(), result.to_string());
    let listed = cli(server, &["jobs", "list", "--queue", "pq", "--json"]).await;
    assert!(listed.status.success(), "{listed:?}");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains(&id_of(&far)) && text.contains(&id), "{text}");
    let table = cli(server, &["jobs", "list", "--queue", "pq"]).await;
    assert!(table.status.success(), "{table:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_input_on_sqlite() {
    let dir = TestDir::new("limits-sqlite");
    let server = Server::start(&dir, &[]).await;
    probe(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_input_on_postgres() {
    let Some(db) = TestDb::new("extreme_input_on_postgres") else {
        return;
    };
    let dir = TestDir::new("limits-pg");
    let server = Server::start_on(&dir, &db.args(), "serve", &[]).await;
    probe(&server).await;
    // A second server on the migrated schema logs no PostgreSQL NOTICEs ("schema … already
    // exists, skipping") at INFO.
    let second = Server::start_on(&dir, &db.args(), "second", &[]).await;
    let log = second.proc.log();
    assert!(!log.contains("already exists"), "{log}");
    // It names its store, not a data dir it does not use.
    assert!(!log.contains("hinter-data"), "{log}");
    assert!(log.contains(&format!("schema {}", db.schema)), "{log}");
}
