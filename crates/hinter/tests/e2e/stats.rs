//! `GET /api/v1/stats` after a known workload: the current minutes show the jobs that
//! succeeded, the failed attempts and the dead jobs, per queue and in total; a restarted
//! server reads them back from the event log; bad parameters are 400 naming them.

use crate::support::pg::TestDb;
use crate::support::{id_of, Server, TestDir};
use serde_json::{json, Value};
use std::time::Duration;

const SUCCEEDED: u64 = 5;
const DEAD: u64 = 3;

/// The sum of the last `n` buckets of a series: the workload's minutes (the minute may turn
/// while the test runs).
fn recent(series: &Value, n: usize) -> u64 {
    let values = series.as_array().expect("a series");
    values
        .iter()
        .rev()
        .take(n)
        .map(|v| v.as_u64().expect("a count"))
        .sum()
}

fn queue<'a>(stats: &'a Value, name: &str) -> Option<&'a Value> {
    stats["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["name"] == name)
}

/// Whether `stats` (1h) shows exactly the workload.
fn shows_the_workload(stats: &Value) -> bool {
    let total = &stats["total"];
    recent(&total["succeeded"], 3) == SUCCEEDED
        && recent(&total["failed"], 3) == DEAD
        && recent(&total["dead"], 3) == DEAD
        && queue(stats, "stats-ok").is_some_and(|q| recent(&q["succeeded"], 3) == SUCCEEDED)
        && queue(stats, "stats-dead")
            .is_some_and(|q| recent(&q["dead"], 3) == DEAD && recent(&q["succeeded"], 3) == 0)
}

async fn wait_for_workload(server: &Server, window: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stats = server
            .api
            .get(&format!("/api/v1/stats?window={window}"))
            .await
            .expect_status(200)
            .body;
        if shows_the_workload(&stats) {
            return stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stats ({window}) do not show {SUCCEEDED} succeeded and {DEAD} dead: {stats:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn scenario(dir: &TestDir, store: &[String]) {
    let mut server = Server::start_on(dir, store, "serve", &[]).await;
    let api = &server.api;
    for _ in 0..SUCCEEDED {
        api.enqueue(json!({"job": "work", "queue": "stats-ok"}))
            .await;
    }
    for _ in 0..DEAD {
        api.enqueue(json!({"job": "work", "queue": "stats-dead"}))
            .await;
    }
    let leased = api
        .lease(json!({"queues": ["stats-ok", "stats-dead"], "worker_id": "w", "max": 20}))
        .await;
    assert_eq!(leased.len() as u64, SUCCEEDED + DEAD);
    for job in &leased {
        let (id, token) = (id_of(job), &job["lease_token"]);
        if job["queue"] == "stats-ok" {
            api.complete(&id, token, json!(null))
                .await
                .expect_status(200);
        } else {
            api.post(
                &format!("/api/v1/jobs/{id}/fail"),
                &json!({"lease_token": token, "error": "no", "retry": false}),
            )
            .await
            .expect_status(200);
        }
    }

    let hour = wait_for_workload(&server, "1h").await;
    assert_eq!(hour["window"], "1h");
    assert_eq!(hour["step_seconds"], 60);
    assert_eq!(
        hour["total"]["succeeded"].as_array().expect("series").len(),
        60
    );
    let day = wait_for_workload(&server, "1d").await;
    assert_eq!(day["step_seconds"], 600);
    assert_eq!(
        day["total"]["succeeded"].as_array().expect("series").len(),
        144
    );
    // The default window is the hour.
    let default = api.get("/api/v1/stats").await.expect_status(200).body;
    assert_eq!(default["window"], "1h");

    // Bad parameters: 400 naming them.
    let bad = api
        .get("/api/v1/stats?window=2h")
        .await
        .expect_error(400, "bad_request");
    assert!(bad.message().starts_with("window:"), "{bad:?}");
    let unknown = api
        .get("/api/v1/stats?windows=1h")
        .await
        .expect_error(400, "bad_request");
    assert!(unknown.message().contains("windows"), "{unknown:?}");

    // A restarted server reads the last day back from the event log.
    server.terminate(Duration::from_secs(20)).await;
    let server = Server::start_on(dir, store, "serve-again", &[]).await;
    let hour = wait_for_workload(&server, "1h").await;
    // The log of this store begins with the workload: counts are complete from its start.
    let data_from = hour["data_from"]
        .as_str()
        .expect("data_from: the log's start");
    let first = chrono::DateTime::parse_from_rfc3339(data_from).expect("a time");
    assert!(
        (chrono::Utc::now() - first.with_timezone(&chrono::Utc)).num_minutes() < 10,
        "{hour:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_after_a_known_workload_and_a_restart_on_sqlite() {
    let dir = TestDir::new("stats-sqlite");
    let store = vec![
        "--data-dir".to_string(),
        dir.data_dir().display().to_string(),
    ];
    scenario(&dir, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_after_a_known_workload_and_a_restart_on_postgres() {
    let Some(db) = TestDb::new("stats_after_a_known_workload_on_postgres") else {
        return;
    };
    let dir = TestDir::new("stats-pg");
    scenario(&dir, &db.args()).await;
}
