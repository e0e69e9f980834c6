//! Leases that expire: fencing of the old worker, and poison jobs that end dead.

use crate::support::{id_of, wait_for, Server, TestDir};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::time::{Duration, Instant};

/// The lease of a worker that stops heartbeating is rescued; afterwards the old worker's
/// token is refused (409 `stale_lease`) and changes nothing, while the new one works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_lease_is_refused_after_rescue() {
    let dir = TestDir::new("stale");
    let server = Server::start(&dir, &["--rescue-interval", "100ms"]).await;
    let id = id_of(
        &server
            .enqueue(json!({"job": "slow", "queue": "stale", "payload": {"n": 1}}))
            .await,
    );

    let leased_at = Instant::now();
    let first = server
        .lease(json!({"queues": ["stale"], "worker_id": "old-worker", "lease": "1s"}))
        .await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(id_of(&first[0]), id);
    assert_eq!(first[0]["attempt"], 1);
    let old_token = first[0]["lease_token"].clone();

    // The old worker never heartbeats; the rescuer hands the job back and a second worker
    // gets it as attempt 2 — but not while the first lease is valid.
    let second: Value = wait_for(
        Duration::from_secs(20),
        "the expired lease to be rescued and leased again",
        || async {
            let jobs = server
                .lease(json!({"queues": ["stale"], "worker_id": "new-worker",
                              "lease": "30s", "wait": "500ms"}))
                .await;
            if !jobs.is_empty() {
                assert!(
                    leased_at.elapsed() >= Duration::from_secs(1),
                    "the job was handed out again while its 1s lease was valid: {jobs:?}"
                );
            }
            jobs.into_iter().next()
        },
    )
    .await;
    assert_eq!(id_of(&second), id);
    assert_eq!(second["attempt"], 2, "{second}");
    let new_token = second["lease_token"].clone();
    assert_ne!(
        new_token, old_token,
        "a new lease must get a new fencing token"
    );

    // The old worker wakes up: every call with its token is refused and changes nothing.
    let before = server.job(&id).await;
    server
        .complete(&id, &old_token, json!({"by": "old-worker"}))
        .await
        .expect_error(409, "stale_lease");
    server
        .post(
            &format!("/api/v1/jobs/{id}/heartbeat"),
            &json!({"lease_token": old_token}),
        )
        .await
        .expect_error(409, "stale_lease");
    server
        .post(
            &format!("/api/v1/jobs/{id}/fail"),
            &json!({"lease_token": old_token, "error": "late failure", "retry": false}),
        )
        .await
        .expect_error(409, "stale_lease");
    let after = server.job(&id).await;
    assert_eq!(
        after, before,
        "a refused call with a stale token changed the job"
    );
    assert_eq!(after["state"], "running");
    assert_eq!(after["attempt"], 2);
    assert_eq!(after["worker_id"], "new-worker");
    assert_eq!(after["result"], Value::Null);
    let errors = after["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{after}");
    assert_eq!(errors[0]["attempt"], 1);

    // The current worker completes.
    let done = server
        .complete(&id, &new_token, json!({"by": "new-worker"}))
        .await
        .expect_status(200);
    assert_eq!(done.body["state"], "succeeded", "{done:?}");
    assert_eq!(done.body["result"], json!({"by": "new-worker"}));
    // And the old worker still cannot overwrite it.
    server
        .complete(&id, &old_token, json!({"by": "old-worker"}))
        .await
        .expect_error(409, "stale_lease");
    let finished = server.job(&id).await;
    assert_eq!(finished["state"], "succeeded");
    assert_eq!(finished["result"], json!({"by": "new-worker"}));
    assert_eq!(finished["attempt"], 2);
}

/// A job that kills its worker every time (lease taken, never completed) uses up its
/// attempts — counted when leased — and ends dead instead of looping forever; it can then be
/// retried by hand with its history kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_job_ends_dead_after_max_attempts_and_can_be_retried() {
    let dir = TestDir::new("poison");
    let server = Server::start(&dir, &["--rescue-interval", "100ms"]).await;
    let id = id_of(
        &server
            .enqueue(json!({"job": "poison", "queue": "poison", "max_attempts": 3}))
            .await,
    );
    let healthy = id_of(
        &server
            .enqueue(json!({"job": "fine", "queue": "poison", "priority": -1}))
            .await,
    );

    // The "worker" leases and dies (never heartbeats, never completes), again and again.
    let attempts_seen = RefCell::new(Vec::new());
    let dead: Value = wait_for(Duration::from_secs(30), "the poison job to be dead", || {
        let (server, id, attempts_seen) = (&server, &id, &attempts_seen);
        async move {
            let jobs = server
                .lease(json!({"queues": ["poison"], "worker_id": "doomed",
                              "lease": "1s", "wait": "500ms"}))
                .await;
            for job in &jobs {
                if id_of(job) == *id {
                    attempts_seen
                        .borrow_mut()
                        .push(job["attempt"].as_i64().expect("attempt"));
                }
            }
            let job = server.job(id).await;
            (job["state"] == "dead").then_some(job)
        }
    })
    .await;
    assert_eq!(
        attempts_seen.into_inner(),
        vec![1, 2, 3],
        "attempts handed to workers"
    );
    assert_eq!(dead["state"], "dead");
    assert_eq!(dead["attempt"], 3);
    assert_eq!(dead["max_attempts"], 3);
    assert!(dead["finished_at"].is_string(), "{dead}");
    let errors = dead["errors"].as_array().expect("errors").clone();
    assert_eq!(errors.len(), 3, "one error per attempt: {dead}");
    for (i, error) in errors.iter().enumerate() {
        assert_eq!(error["attempt"], i as i64 + 1, "{error}");
        let message = error["message"].as_str().expect("message");
        assert!(message.contains("lease expired"), "{message}");
    }

    // It is in the dead-letter set, and only it.
    let dead_ids: Vec<String> = server
        .list_jobs("state=dead")
        .await
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(dead_ids, vec![id.clone()]);
    assert!(!dead_ids.contains(&healthy));

    // Retry by hand: back to queued, history kept, one more attempt granted.
    let retried = server
        .post(&format!("/api/v1/jobs/{id}/retry"), &json!({}))
        .await
        .expect_status(200)
        .body;
    assert_eq!(retried["state"], "queued", "{retried}");
    assert_eq!(retried["errors"].as_array().expect("errors"), &errors);
    assert_eq!(retried["attempt"], 3);
    assert!(
        retried["max_attempts"].as_i64().expect("max") >= 4,
        "{retried}"
    );
    assert!(server.list_jobs("state=dead").await.is_empty());

    // This time the worker survives.
    let leased = server
        .lease(json!({"queues": ["poison"], "worker_id": "healer", "max": 10}))
        .await;
    let job = leased
        .iter()
        .find(|j| id_of(j) == id)
        .unwrap_or_else(|| panic!("the retried job was not leased: {leased:?}"));
    assert_eq!(job["attempt"], 4);
    let done = server
        .complete(&id, &job["lease_token"], json!("cured"))
        .await
        .expect_status(200)
        .body;
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["errors"].as_array().expect("errors").len(), 3);
}
