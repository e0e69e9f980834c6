//! Duplicate detection with `unique_key`.

use crate::support::{id_of, Server, TestDir};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_enqueue_returns_the_first_job() {
    let dir = TestDir::new("unique");
    let server = Server::start(&dir, &[]).await;

    // With a window.
    let spec = json!({"job": "email", "unique_key": "order-42", "unique_for": "10m",
                      "payload": {"to": "a@example.com"}});
    let first = server.post("/api/v1/jobs", &spec).await.expect_status(201);
    assert_eq!(first.body["duplicate"], false);
    let first_id = id_of(&first.body["job"]);
    assert_eq!(
        first
            .headers
            .get("location")
            .map(|v| v.to_str().expect("ascii")),
        Some(format!("/api/v1/jobs/{first_id}").as_str())
    );
    assert_eq!(first.body["job"]["unique_key"], "order-42");

    let again = json!({"job": "email", "unique_key": "order-42", "unique_for": "10m",
                       "payload": {"to": "someone-else@example.com"}});
    let second = server.post("/api/v1/jobs", &again).await.expect_status(200);
    assert_eq!(second.body["duplicate"], true, "{second:?}");
    assert_eq!(id_of(&second.body["job"]), first_id);
    assert_eq!(
        second.body["job"]["payload"]["to"], "a@example.com",
        "the first job"
    );
    assert!(
        second.headers.get("location").is_none(),
        "{:?}",
        second.headers
    );

    // Another job name with the same key is another job.
    let other = server
        .post(
            "/api/v1/jobs",
            &json!({"job": "sms", "unique_key": "order-42", "unique_for": "10m"}),
        )
        .await
        .expect_status(201);
    assert_eq!(other.body["duplicate"], false);
    let other_id = id_of(&other.body["job"]);
    assert_ne!(other_id, first_id);

    // Another key is another job.
    let third = server
        .post(
            "/api/v1/jobs",
            &json!({"job": "email", "unique_key": "order-43", "unique_for": "10m"}),
        )
        .await
        .expect_status(201);
    assert_ne!(id_of(&third.body["job"]), first_id);

    // The window outlives the job: still a duplicate after the first job finished.
    let leased = server.lease(json!({"worker_id": "w", "max": 10})).await;
    for job in &leased {
        server
            .complete(&id_of(job), &job["lease_token"], Value::Null)
            .await
            .expect_status(200);
    }
    assert_eq!(server.job(&first_id).await["state"], "succeeded");
    let after = server.post("/api/v1/jobs", &again).await.expect_status(200);
    assert_eq!(after.body["duplicate"], true, "{after:?}");
    assert_eq!(id_of(&after.body["job"]), first_id);

    // Without a window: a duplicate only while the first is not finished.
    let plain = json!({"job": "report", "unique_key": "daily"});
    let p1 = server.post("/api/v1/jobs", &plain).await.expect_status(201);
    let p1_id = id_of(&p1.body["job"]);
    let p2 = server.post("/api/v1/jobs", &plain).await.expect_status(200);
    assert_eq!(p2.body["duplicate"], true);
    assert_eq!(id_of(&p2.body["job"]), p1_id);
    let leased = server.lease(json!({"worker_id": "w"})).await;
    assert_eq!(leased.len(), 1);
    assert_eq!(id_of(&leased[0]), p1_id);
    // Running is not finished: still a duplicate.
    let p3 = server.post("/api/v1/jobs", &plain).await.expect_status(200);
    assert_eq!(id_of(&p3.body["job"]), p1_id);
    server
        .complete(&p1_id, &leased[0]["lease_token"], Value::Null)
        .await
        .expect_status(200);
    let p4 = server.post("/api/v1/jobs", &plain).await.expect_status(201);
    assert_eq!(p4.body["duplicate"], false);
    assert_ne!(id_of(&p4.body["job"]), p1_id);

    // Exactly the jobs created above exist.
    assert_eq!(server.list_jobs("").await.len(), 5);
}
