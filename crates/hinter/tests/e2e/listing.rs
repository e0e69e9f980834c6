//! `GET /api/v1/jobs` lists job summaries: no payload, result or error history unless asked
//! for with `include`, and a page with them ends early at the byte budget (8 MiB) with a
//! cursor that goes on without skipping or repeating a job.

use crate::support::{id_of, Server, TestDir};
use serde_json::{json, Value};

const JOBS: usize = 12;
/// Each payload is a string this long: twelve hold more than the 8 MiB budget.
const PAYLOAD_CHARS: usize = 800_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_are_summaries_and_pages_with_payloads_keep_to_the_budget() {
    let dir = TestDir::new("listing");
    let server = Server::start(&dir, &[]).await;
    let mut ids = Vec::new();
    for i in 0..JOBS {
        let payload = format!("{i:x}").repeat(PAYLOAD_CHARS);
        let job = server
            .enqueue(json!({"job": "big", "queue": "big", "payload": payload}))
            .await;
        ids.push(id_of(&job));
    }

    // By default: no payload, result or errors, every other field as `jobs show` has it.
    let resp = server
        .get("/api/v1/jobs?queue=big&limit=1000")
        .await
        .expect_status(200);
    assert!(resp.text.len() < 100_000, "{} bytes", resp.text.len());
    assert_eq!(resp.body["next_cursor"], Value::Null);
    let listed = resp.body["jobs"].as_array().expect("jobs").clone();
    assert_eq!(listed.iter().map(id_of).collect::<Vec<_>>(), ids);
    for item in &listed {
        let mut full = server.job(&id_of(item)).await;
        let fields = full.as_object_mut().expect("a job object");
        for gone in ["payload", "result", "errors", "runs"] {
            assert!(item.get(gone).is_none(), "{gone} listed: {item}");
            fields.remove(gone);
        }
        fields.insert("error_count".into(), json!(0));
        fields.insert("last_error".into(), Value::Null);
        assert_eq!(*item, full);
    }

    // With payloads: the first page stops at the budget, the cursor goes on from there.
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..JOBS + 1 {
        let mut path = "/api/v1/jobs?queue=big&limit=1000&include=payload".to_string();
        if let Some(c) = &cursor {
            path += &format!("&cursor={c}");
        }
        let page = server.get(&path).await.expect_status(200).body;
        let jobs = page["jobs"].as_array().expect("jobs");
        pages.push(jobs.len());
        for job in jobs {
            assert_eq!(job["payload"].as_str().map(str::len), Some(PAYLOAD_CHARS));
            assert!(job.get("result").is_none() && job.get("errors").is_none());
            seen.push(id_of(job));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert!(pages[0] < JOBS && pages[0] >= 1, "pages: {pages:?}");
    assert_eq!(seen, ids, "every job once, in order (pages: {pages:?})");

    server
        .get("/api/v1/jobs?include=payload,secrets")
        .await
        .expect_error(400, "bad_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summaries_count_errors_and_cut_the_last_one() {
    let dir = TestDir::new("listing-errors");
    let server = Server::start(&dir, &[]).await;
    let job = server
        .enqueue(json!({"job": "fails", "queue": "f", "max_attempts": 1}))
        .await;
    let id = id_of(&job);
    let leased = server
        .lease(json!({"worker_id": "w", "queues": ["f"]}))
        .await;
    assert_eq!(leased.len(), 1);
    let long = "e".repeat(2_000);
    server
        .post(
            &format!("/api/v1/jobs/{id}/fail"),
            &json!({"lease_token": leased[0]["lease_token"], "error": long}),
        )
        .await
        .expect_status(200);

    let listed = server.list_jobs("queue=f").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["error_count"], 1);
    let message = listed[0]["last_error"]["message"]
        .as_str()
        .expect("message");
    assert_eq!(
        message.chars().count(),
        501,
        "500 characters and an ellipsis"
    );
    assert!(message.ends_with('…'));
    assert_eq!(listed[0]["last_error"]["attempt"], 1);

    let full = server.list_jobs("queue=f&include=errors,result").await;
    assert_eq!(full[0]["errors"][0]["message"], long.as_str());
    assert_eq!(full[0]["result"], Value::Null);
    assert!(full[0].get("payload").is_none());
}
