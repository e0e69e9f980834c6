//! `GET /metrics` after a known workload: the counters (from the event log) and the gauges
//! (from the store) have the values the workload implies.

use crate::support::pg::TestDb;
use crate::support::{id_of, Server, TestDir};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// The samples of a scrape: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(server: &Server) -> (String, BTreeMap<String, f64>) {
    let resp = reqwest::get(format!("{}/metrics", server.api.base))
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"]
        .to_str()
        .expect("text")
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = resp.text().await.expect("body");
    assert!(text.ends_with("# EOF\n"), "{text}");
    let parsed = samples(&text);
    (text, parsed)
}

async fn scenario(dir: &TestDir, store: &[String]) {
    let server = Server::start_on(dir, store, "serve", &["--rescue-interval", "100ms"]).await;
    let api = &server.api;
    for _ in 0..10 {
        api.enqueue(json!({"job": "work", "queue": "m"})).await;
    }
    for _ in 0..2 {
        api.enqueue(json!({"job": "work", "queue": "m", "delay": "1h"}))
            .await;
    }
    api.post("/api/v1/queues/p/pause", &json!({}))
        .await
        .expect_status(200);
    let leased = api
        .lease(json!({"queues": ["m"], "worker_id": "w", "max": 10, "lease": "30s"}))
        .await;
    assert_eq!(leased.len(), 10);
    for (i, job) in leased.iter().enumerate() {
        let (id, token) = (id_of(job), &job["lease_token"]);
        let fail_path = format!("/api/v1/jobs/{id}/fail");
        let fail = |retry: bool| {
            let body = json!({"lease_token": token, "error": "no", "retry": retry});
            let path = fail_path.clone();
            async move { api.post(&path, &body).await }
        };
        match i {
            0..=5 => {
                api.complete(&id, token, json!({"i": i}))
                    .await
                    .expect_status(200);
            }
            6 | 7 => {
                fail(false).await.expect_status(200);
            }
            8 => {
                fail(true).await.expect_status(200);
            }
            _ => {
                // Left to expire: a lease of 1 s, renewed once to shorten it.
                api.post(
                    &format!("/api/v1/jobs/{id}/heartbeat"),
                    &json!({"lease_token": token, "lease": "1s"}),
                )
                .await
                .expect_status(200);
            }
        }
    }

    let expected = [
        ("hinter_jobs_enqueued_total{queue=\"m\",job=\"work\"}", 12.0),
        ("hinter_jobs_started_total{queue=\"m\",job=\"work\"}", 10.0),
        ("hinter_jobs_succeeded_total{queue=\"m\",job=\"work\"}", 6.0),
        // Two permanent failures, one retried, one rescued lease.
        ("hinter_jobs_failed_total{queue=\"m\",job=\"work\"}", 4.0),
        ("hinter_jobs_dead_total{queue=\"m\",job=\"work\"}", 2.0),
        (
            "hinter_jobs_rescued_total{queue=\"m\",reason=\"lease_expired\"}",
            1.0,
        ),
        ("hinter_job_run_duration_seconds_count{job=\"work\"}", 10.0),
        ("hinter_jobs{queue=\"m\",state=\"succeeded\"}", 6.0),
        ("hinter_jobs{queue=\"m\",state=\"dead\"}", 2.0),
        ("hinter_jobs{queue=\"m\",state=\"running\"}", 0.0),
        ("hinter_queue_paused{queue=\"p\"}", 1.0),
        ("hinter_queue_paused{queue=\"m\"}", 0.0),
        ("hinter_leader", 1.0),
        ("hinter_processes{role=\"serve\"}", 1.0),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (text, got) = loop {
        let (text, got) = scrape(&server).await;
        let wrong: Vec<String> = expected
            .iter()
            .filter(|(name, value)| got.get(*name) != Some(value))
            .map(|(name, value)| format!("{name}: {:?}, expected {value}", got.get(*name)))
            .collect();
        if wrong.is_empty() {
            break (text, got);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the metrics do not show the workload: {wrong:#?}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Waiting: the two delayed jobs (scheduled), the rescued one (queued) and the retried one
    // (scheduled for its backoff of about a second, then queued).
    let waiting = got["hinter_jobs{queue=\"m\",state=\"scheduled\"}"]
        + got["hinter_jobs{queue=\"m\",state=\"queued\"}"];
    assert_eq!(waiting, 4.0, "{text}");
    assert!(
        got["hinter_jobs{queue=\"m\",state=\"scheduled\"}"] >= 2.0,
        "{text}"
    );
    // Every write of this server is timed, with its group size.
    assert!(
        got["hinter_store_commit_duration_seconds_count"] >= 10.0,
        "{text}"
    );
    assert!(
        got["hinter_store_commit_group_size_count"] >= 10.0,
        "{text}"
    );
    assert!(
        got["hinter_store_commit_group_size_sum"] >= got["hinter_store_commit_group_size_count"],
        "{text}"
    );
    // The rescued job waits in the queue: its age grows from when it became due again.
    let age = got["hinter_queue_oldest_queued_age_seconds{queue=\"m\"}"];
    assert!((0.0..60.0).contains(&age), "{age}\n{text}");
    assert!(
        got["hinter_job_run_duration_seconds_sum{job=\"work\"}"] >= 1.0,
        "the expired attempt ran at least its 1 s lease:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_known_workload_on_sqlite() {
    let dir = TestDir::new("metrics-sqlite");
    let store = vec![
        "--data-dir".to_string(),
        dir.data_dir().display().to_string(),
    ];
    scenario(&dir, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_known_workload_on_postgres() {
    let Some(db) = TestDb::new("metrics_after_a_known_workload_on_postgres") else {
        return;
    };
    let dir = TestDir::new("metrics-pg");
    scenario(&dir, &db.args()).await;
}
