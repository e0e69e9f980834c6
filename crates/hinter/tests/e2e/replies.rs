//! Reply queues: a job enqueued with `reply_to` and `correlation_id` puts one reply message on
//! that queue when it finishes, in the commit of its outcome; a worker leases the replies
//! like any job.

use crate::support::pg::TestDb;
use crate::support::{id_of, Server, TestDir};
use serde_json::{json, Value};
use std::collections::HashMap;

const JOBS: usize = 1000;

/// 1,000 jobs with correlation ids: a worker over HTTP completes most and fails every tenth
/// permanently; a second worker leases the reply queue while the first one works. Every reply
/// arrives exactly once with its job's correlation id, job id, state and result or error.
async fn scenario(dir: &TestDir, store: &[String]) {
    let server = Server::start_on(dir, store, "serve", &[]).await;
    let api = &server.api;

    let specs: Vec<Value> = (0..JOBS)
        .map(|i| {
            json!({"job": "square", "queue": "work", "payload": {"i": i},
                   "reply_to": "replies", "correlation_id": format!("corr-{i}")})
        })
        .collect();
    let resp = api
        .post("/api/v1/jobs/batch", &json!({ "jobs": specs }))
        .await
        .expect_status(201);
    let mut job_of_correlation: HashMap<String, String> = HashMap::new();
    for (i, entry) in resp.body["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .enumerate()
    {
        assert_eq!(entry["job"]["reply_to"], "replies");
        job_of_correlation.insert(format!("corr-{i}"), id_of(&entry["job"]));
    }

    let worker = async {
        let mut done = 0;
        while done < JOBS {
            let leased = api
                .lease(
                    json!({"queues": ["work"], "worker_id": "squarer", "max": 200,
                              "wait": "5s"}),
                )
                .await;
            for job in leased {
                let id = id_of(&job);
                let i = job["payload"]["i"].as_u64().expect("i");
                let token = &job["lease_token"];
                if i.is_multiple_of(10) {
                    api.post(
                        &format!("/api/v1/jobs/{id}/fail"),
                        &json!({"lease_token": token, "error": format!("no square for {i}"),
                                "retry": false}),
                    )
                    .await
                    .expect_status(200);
                } else {
                    api.complete(&id, token, json!({"square": i * i}))
                        .await
                        .expect_status(200);
                }
                done += 1;
            }
        }
    };
    let consumer = async {
        let mut replies: Vec<Value> = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
        while replies.len() < JOBS {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {JOBS} replies arrived",
                replies.len()
            );
            let leased = api
                .lease(
                    json!({"queues": ["replies"], "worker_id": "reader", "max": 500,
                              "wait": "5s"}),
                )
                .await;
            for reply in leased {
                api.complete(&id_of(&reply), &reply["lease_token"], Value::Null)
                    .await
                    .expect_status(200);
                replies.push(reply);
            }
        }
        replies
    };
    let ((), replies) = tokio::join!(worker, consumer);

    let mut seen: HashMap<String, Value> = HashMap::new();
    for reply in &replies {
        assert_eq!(reply["job"], "hinter.reply");
        let payload = &reply["payload"];
        let correlation = payload["correlation_id"]
            .as_str()
            .expect("a correlation id")
            .to_string();
        assert!(
            seen.insert(correlation.clone(), payload.clone()).is_none(),
            "{correlation} replied twice"
        );
        assert_eq!(
            payload["job_id"].as_str(),
            job_of_correlation.get(&correlation).map(String::as_str),
            "{correlation}: the reply names its own job"
        );
        let i: u64 = correlation["corr-".len()..].parse().expect("a number");
        if i.is_multiple_of(10) {
            assert_eq!(payload["state"], "dead", "{payload}");
            assert_eq!(payload["error"], format!("no square for {i}"));
            assert_eq!(payload["result"], Value::Null);
        } else {
            assert_eq!(payload["state"], "succeeded", "{payload}");
            assert_eq!(payload["result"], json!({"square": i * i}));
            assert_eq!(payload["error"], Value::Null);
        }
    }
    assert_eq!(seen.len(), JOBS);
    let more = api
        .lease(json!({"queues": ["replies"], "worker_id": "reader", "max": 10}))
        .await;
    assert!(more.is_empty(), "no reply beyond one per job: {more:?}");

    // The job's record lists its reply.
    let first = &job_of_correlation["corr-1"];
    let job = api.job(first).await;
    let followups = job["followups"].as_array().expect("followups");
    assert_eq!(followups.len(), 1, "{job}");
    assert_eq!(followups[0]["job"], "hinter.reply");
    assert_eq!(followups[0]["parent_id"], json!(first));
    assert_eq!(followups[0]["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reply_arrives_once_with_its_correlation_id_on_sqlite() {
    let dir = TestDir::new("replies-sqlite");
    let store = vec![
        "--data-dir".to_string(),
        dir.data_dir().display().to_string(),
    ];
    scenario(&dir, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reply_arrives_once_with_its_correlation_id_on_postgres() {
    let Some(db) = TestDb::new("every_reply_arrives_once_with_its_correlation_id_on_postgres")
    else {
        return;
    };
    let dir = TestDir::new("replies-pg");
    scenario(&dir, &db.args()).await;
}

/// What `reply_to`, `correlation_id` and `callback_url` refuse, each with 422 naming the
/// field, and the names hinter keeps for itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reply_and_callback_fields_are_refused_naming_the_field() {
    let dir = TestDir::new("replies-bad");
    let server = Server::start(&dir, &[]).await;
    let long_url = format!("https://example.com/{}", "a".repeat(3000));
    let cases = [
        (json!({"job": "a", "reply_to": "two words"}), "reply_to"),
        (json!({"job": "a", "reply_to": ""}), "reply_to"),
        (json!({"job": "a", "reply_to": 7}), "reply_to"),
        (json!({"job": "a", "correlation_id": ""}), "correlation_id"),
        (
            json!({"job": "a", "correlation_id": "a\u{0}b"}),
            "correlation_id",
        ),
        (
            json!({"job": "a", "correlation_id": "x".repeat(1001)}),
            "correlation_id",
        ),
        (
            json!({"job": "a", "callback_url": "ftp://example.com/"}),
            "callback_url",
        ),
        (
            json!({"job": "a", "callback_url": "not a url"}),
            "callback_url",
        ),
        (
            json!({"job": "a", "callback_url": long_url}),
            "callback_url",
        ),
        (json!({"job": "hinter.reply"}), "job"),
        (json!({"job": "hinter.callback"}), "job"),
    ];
    for (spec, field) in cases {
        let resp = server.api.post("/api/v1/jobs", &spec).await;
        assert!(
            resp.status == 422 || resp.status == 400,
            "{spec}: expected 400/422, got {resp:?}"
        );
        assert!(
            resp.message().contains(field),
            "{spec}: the error names {field}: {resp:?}"
        );
    }
    // Nothing was enqueued.
    assert!(server.api.list_jobs("").await.is_empty());
    // A correlation id with odd characters is kept exactly.
    let job = server
        .api
        .enqueue(json!({"job": "a", "reply_to": "r", "correlation_id": "Grüße 🌍 \"q\" \\ /"}))
        .await;
    let read = server.api.job(&id_of(&job)).await;
    assert_eq!(read["correlation_id"], "Grüße 🌍 \"q\" \\ /");
}
