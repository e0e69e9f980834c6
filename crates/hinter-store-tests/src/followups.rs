//! Rules of [`hinter_core::followup`]: a finished job's reply message and callback delivery are
//! inserted with its outcome, once, and only by an outcome that was actually written.

use crate::support::*;
use hinter_core::followup::{
    CallbackPayload, CALLBACK_JOB, CALLBACK_MAX_ATTEMPTS, CALLBACK_QUEUE, REPLY_JOB,
};
use hinter_core::retry::FailOutcome;
use hinter_core::store::Completion;
use hinter_core::{EventFilter, EventKind, JobState, NewJob, Store};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

fn asking(name: &str, correlation_id: &str) -> NewJob {
    job_in(name, "work").reply_to("replies", Some(correlation_id.to_string()))
}

/// A job with `reply_to` that succeeds puts one `hinter.reply` job on that queue, carrying
/// the outcome; it is leasable like any job and listed as the job's follow-up.
pub async fn followups_reply_on_success(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let job = insert(store, asking("resize", "order-1"), now).await;
    assert!(lease(store, &["replies"], 10, now).await.is_empty());
    let leased = lease_one(store, "work", now).await;
    complete(
        store,
        leased.id,
        leased.lease_token,
        Some(json!({"w": 64})),
        now,
    )
    .await
    .expect("complete");

    let replies = lease(store, &["replies"], 10, now).await;
    assert_eq!(replies.len(), 1, "exactly one reply");
    let reply = &replies[0];
    assert_eq!(reply.job, REPLY_JOB);
    assert_eq!(reply.payload["correlation_id"], "order-1");
    assert_eq!(reply.payload["job_id"], json!(job.id));
    assert_eq!(reply.payload["job"], "resize");
    assert_eq!(reply.payload["state"], "succeeded");
    assert_eq!(reply.payload["result"], json!({"w": 64}));
    assert_eq!(reply.payload["error"], Value::Null);

    let followups = store.job_followups(job.id).await.expect("job_followups");
    assert_eq!(followups.len(), 1);
    assert_eq!(followups[0].id, reply.id);
    assert_eq!(followups[0].parent_id, Some(job.id));
    assert_eq!(followups[0].correlation_id.as_deref(), Some("order-1"));
    assert_eq!(followups[0].runs.len(), 1, "its runs are read with it");
    let stored = get(store, job.id).await;
    assert_eq!(stored.reply_to.as_deref(), Some("replies"));
    assert_eq!(stored.correlation_id.as_deref(), Some("order-1"));

    // The reply is a job like any other: its creation is in the event log. (PostgreSQL shows
    // an entry once every transaction begun before its own has ended, other tests' too.)
    let filter = EventFilter {
        job_id: Some(reply.id),
        ..EventFilter::default()
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let events = loop {
        let page = store
            .events_read(0, &filter, 100)
            .await
            .expect("events_read");
        if !page.events.is_empty() || tokio::time::Instant::now() >= deadline {
            break page.events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    assert_eq!(
        events.first().map(|e| e.kind),
        Some(EventKind::Created),
        "{events:?}"
    );
}

/// Dead (attempts used up) and cancelled (waiting, or running and then stopped) outcomes
/// reply too, with the last error; a retry scheduled after a failure does not.
pub async fn followups_reply_on_dead_and_cancelled(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let dies = insert(store, asking("a", "dies").max_attempts(2), now).await;
    let leased = lease_one(store, "work", now).await;
    fail(
        store,
        leased.id,
        leased.lease_token,
        "first",
        FailOutcome::Retry { run_at: now },
        now,
    )
    .await
    .expect("fail");
    assert!(
        lease(store, &["replies"], 10, now).await.is_empty(),
        "no reply while retries remain"
    );
    let leased = lease_one(store, "work", now).await;
    fail(
        store,
        leased.id,
        leased.lease_token,
        "second",
        FailOutcome::Dead,
        now,
    )
    .await
    .expect("fail");
    let replies = lease(store, &["replies"], 10, now).await;
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].payload["job_id"], json!(dies.id));
    assert_eq!(replies[0].payload["state"], "dead");
    assert_eq!(replies[0].payload["error"], "second");
    assert_eq!(replies[0].payload["attempt"], 2);

    let waiting = insert(store, asking("b", "waiting"), now).await;
    cancel(store, waiting.id, now).await;
    let running = insert(store, asking("c", "running"), now).await;
    let leased = lease_one(store, "work", now).await;
    assert_eq!(leased.id, running.id);
    let requested = cancel(store, running.id, now).await;
    assert_eq!(requested.state, JobState::Running);
    assert!(
        store
            .job_followups(running.id)
            .await
            .expect("job_followups")
            .is_empty(),
        "a cancel request is not an outcome"
    );
    fail(
        store,
        leased.id,
        leased.lease_token,
        "stopped",
        FailOutcome::Retry { run_at: now },
        now,
    )
    .await
    .expect("fail");
    let replies = lease(store, &["replies"], 10, now).await;
    let by_correlation: BTreeMap<String, String> = replies
        .iter()
        .map(|r| {
            (
                r.payload["correlation_id"]
                    .as_str()
                    .expect("a string")
                    .to_string(),
                r.payload["state"].as_str().expect("a string").to_string(),
            )
        })
        .collect();
    assert_eq!(
        by_correlation,
        BTreeMap::from([
            ("running".to_string(), "cancelled".to_string()),
            ("waiting".to_string(), "cancelled".to_string()),
        ])
    );
}

/// An outcome refused for a stale lease token writes no reply; a retried dead job that
/// finishes again replies again, with its new outcome.
pub async fn followups_only_with_a_written_outcome(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let job = insert(store, asking("a", "x").max_attempts(1), now).await;
    let leased = lease_one(store, "work", now).await;
    assert_stale(
        complete(store, leased.id, leased.lease_token + 1, None, now).await,
        job.id,
        "complete with a wrong token",
    );
    assert_stale(
        fail(
            store,
            leased.id,
            leased.lease_token + 1,
            "no",
            FailOutcome::Dead,
            now,
        )
        .await,
        job.id,
        "fail with a wrong token",
    );
    assert!(lease(store, &["replies"], 10, now).await.is_empty());
    fail_ok(store, &leased, FailOutcome::Dead, now).await;
    assert_eq!(lease(store, &["replies"], 10, now).await.len(), 1);

    store.job_retry(job.id, now).await.expect("retry");
    let leased = lease_one(store, "work", now).await;
    complete_ok(store, &leased, now).await;
    let replies = lease(store, &["replies"], 10, now).await;
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].payload["state"], "succeeded");
    assert_eq!(
        store
            .job_followups(job.id)
            .await
            .expect("job_followups")
            .len(),
        2
    );
}

/// A job with `callback_url` gets a `hinter.callback` delivery job on the callbacks queue,
/// with the URL and the outcome, many attempts and a timeout; with both asked for, a reply
/// and a callback, in that order.
pub async fn followups_callback_delivery_job(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let job = insert(
        store,
        asking("a", "both").callback_url("https://example.com/done"),
        now,
    )
    .await;
    assert_eq!(
        get(store, job.id).await.callback_url.as_deref(),
        Some("https://example.com/done")
    );
    let leased = lease_one(store, "work", now).await;
    complete_ok(store, &leased, now).await;
    let followups = store.job_followups(job.id).await.expect("job_followups");
    let names: Vec<&str> = followups.iter().map(|f| f.job.as_str()).collect();
    assert_eq!(names, [REPLY_JOB, CALLBACK_JOB]);
    let callback = &followups[1];
    assert_eq!(callback.queue, CALLBACK_QUEUE);
    assert_eq!(callback.state, JobState::Queued);
    assert_eq!(callback.max_attempts, CALLBACK_MAX_ATTEMPTS);
    assert!(callback.timeout.is_some());
    let payload: CallbackPayload =
        serde_json::from_value(callback.payload.clone()).expect("a callback payload");
    assert_eq!(payload.url, "https://example.com/done");
    assert_eq!(payload.outcome.job_id, job.id);
    assert_eq!(payload.outcome.correlation_id.as_deref(), Some("both"));
    assert_eq!(payload.outcome.state, JobState::Succeeded);
}

/// Many jobs finishing in one batch each reply once, with their own correlation id and
/// job id.
pub async fn followups_batch_each_replies_once(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let n = 300;
    let jobs: Vec<NewJob> = (0..n).map(|i| asking("many", &format!("c-{i}"))).collect();
    let inserted = insert_many(store, jobs, now).await;
    let mut leased = lease(store, &["work"], n, now).await;
    assert_eq!(leased.len(), n as usize);
    leased.reverse();
    let answers = store
        .job_complete_many(
            leased
                .iter()
                .map(|l| Completion {
                    id: l.id,
                    lease_token: l.lease_token,
                    result: Some(json!(l.payload)),
                })
                .collect(),
            now,
        )
        .await
        .expect("complete many");
    assert!(answers.iter().all(|a| a.is_ok()));
    let replies = lease(store, &["replies"], 1000, now).await;
    assert_eq!(replies.len(), n as usize, "one reply each");
    let got: BTreeMap<String, Value> = replies
        .iter()
        .map(|r| {
            (
                r.payload["correlation_id"]
                    .as_str()
                    .expect("a string")
                    .to_string(),
                r.payload["job_id"].clone(),
            )
        })
        .collect();
    let expected: BTreeMap<String, Value> = inserted
        .iter()
        .enumerate()
        .map(|(i, job)| (format!("c-{i}"), json!(job.job.id)))
        .collect();
    assert_eq!(got, expected, "each reply carries its own job's id");
}

/// The longest accepted `reply_to`, `correlation_id` (odd characters) and `callback_url` are
/// kept exactly, and the reply and the callback delivery carry them exactly.
pub async fn followups_extreme_fields_round_trip(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let queue = "q".repeat(hinter_core::definition::MAX_NAME_LEN);
    let correlation: String = "ü\"\\/🌍\t'x".chars().cycle().take(1000).collect();
    let base = "https://example.com/";
    let url = format!(
        "{base}{}",
        "a".repeat(hinter_core::followup::MAX_CALLBACK_URL_LEN - base.len())
    );
    let job = insert(
        store,
        job_in("edge", "work")
            .reply_to(queue.clone(), Some(correlation.clone()))
            .callback_url(url.clone()),
        now,
    )
    .await;
    let read = get(store, job.id).await;
    assert_eq!(read.reply_to.as_deref(), Some(queue.as_str()));
    assert_eq!(read.correlation_id.as_deref(), Some(correlation.as_str()));
    assert_eq!(read.callback_url.as_deref(), Some(url.as_str()));
    let leased = lease_one(store, "work", now).await;
    complete_ok(store, &leased, now).await;
    let reply = lease_one(store, &queue, now).await;
    assert_eq!(reply.payload["correlation_id"], json!(correlation));
    let callback = lease_one(store, CALLBACK_QUEUE, now).await;
    assert_eq!(callback.payload["url"], json!(url));
    assert_eq!(
        callback.payload["outcome"]["correlation_id"],
        json!(correlation)
    );
    // One over each bound is refused by the store itself, whoever built the job.
    for bad in [
        job_in("edge", "work")
            .reply_to("q".repeat(hinter_core::definition::MAX_NAME_LEN + 1), None),
        job_in("edge", "work").callback_url(format!("{url}a")),
        job_in("edge", "work").callback_url("file:///etc/passwd"),
        job_in("edge", "work").reply_to("r", Some("a\0b".into())),
    ] {
        let answer = store.job_insert_many(vec![bad.clone()], now).await;
        assert!(answer.is_err(), "{bad:?} was stored: {answer:?}");
    }
}
