//! The bounds of `hinter_core::limits`: everything inside them is stored and computed with on
//! every backend; everything outside is refused before anything is written.

use crate::support::*;
use chrono::{DateTime, Utc};
use hinter_core::limits::{MAX_DURATION, MAX_JSON_DEPTH};
use hinter_core::store::JobFilter;
use hinter_core::{JobState, NewJob, Store, StoreError};
use serde_json::{json, Value};
use std::sync::Arc;

fn nested(levels: usize) -> Value {
    let mut value = json!("bottom");
    for i in 0..levels {
        value = if i % 2 == 0 {
            json!([value])
        } else {
            json!({ "k": value })
        };
    }
    value
}

/// The largest duration and latest time accepted are stored, leased, heartbeaten and
/// completed (PostgreSQL once failed to add a huge `timeout` to `now` and blocked the queue);
/// payloads and results at the nesting bound, with numbers beyond 64 bits and NUL characters
/// inside strings, read back exactly.
pub async fn limits_extreme_values_are_stored_and_computed(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let latest: DateTime<Utc> = "9999-12-31T23:59:59.999Z".parse().expect("a time");
    let far = insert(store, job_in("far", "pq").run_at(latest), now).await;
    assert_eq!((far.state, far.run_at), (JobState::Scheduled, latest));
    let payload: Value = serde_json::from_str(
        r#"{"big": 123456789012345678901234567890, "neg": -98765432109876543210,
            "pi": 3.14159265358979323846264338327950288, "nul": "a\u0000b", "deep": []}"#,
    )
    .expect("payload");
    let mut payload = payload;
    payload["deep"] = nested(MAX_JSON_DEPTH - 1);
    let long = insert(
        store,
        NewJob {
            timeout: Some(MAX_DURATION),
            unique_key: Some("k".into()),
            unique_for: Some(MAX_DURATION),
            ordering_key: Some("o".into()),
            payload: payload.clone(),
            ..job_in("long", "pq")
        },
        now,
    )
    .await;
    assert_eq!(long.timeout, Some(MAX_DURATION));
    assert_eq!(long.payload.to_string(), payload.to_string());
    let leased = lease_one(store, "pq", now).await;
    assert_eq!(
        leased.id, long.id,
        "the long job is leased, the far one is not due"
    );
    assert_eq!(leased.payload.to_string(), payload.to_string());
    heartbeat(store, leased.id, leased.lease_token, LEASE, now + secs(1))
        .await
        .expect("heartbeat");
    let result = json!({"echo": payload});
    let done = complete(
        store,
        leased.id,
        leased.lease_token,
        Some(result.clone()),
        now + secs(2),
    )
    .await
    .expect("completed");
    assert_eq!(done.state, JobState::Succeeded);
    let listed = list(
        store,
        JobFilter {
            limit: 10,
            ..JobFilter::default()
        }
        .complete(),
    )
    .await;
    let listed = listed.iter().find(|j| j.id == long.id).expect("listed");
    assert_eq!(listed.payload.to_string(), payload.to_string());
    assert_eq!(
        get(store, long.id).await.result.map(|r| r.to_string()),
        Some(result.to_string())
    );
    assert_eq!(
        store.job_next_scheduled_at().await.expect("next scheduled"),
        Some(latest)
    );

    // An error message with NUL characters (PostgreSQL text cannot hold them) reads back the
    // same on every backend.
    let nul = insert(store, job_in("nul", "nq"), now).await;
    let leased = lease_job(store, "nq", nul.id, now).await;
    let failed = fail(
        store,
        leased.id,
        leased.lease_token,
        "bad\0byte",
        hinter_core::retry::FailOutcome::Dead,
        now,
    )
    .await
    .expect("fail with a NUL in the error");
    assert_eq!(failed.errors[0].message, "bad\u{fffd}byte");
}

/// A job that could not be stored or computed with is refused as invalid, naming the field
/// (and its index in a batch), and nothing of its insert is written.
pub async fn limits_unstorable_jobs_are_refused(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let too_long = MAX_DURATION + std::time::Duration::from_millis(1);
    let beyond: DateTime<Utc> = "+10000-01-01T00:00:00Z".parse().expect("a time");
    let cases: Vec<(NewJob, &str)> = vec![
        (job("a").timeout(too_long), "timeout"),
        (job("a").timeout(std::time::Duration::MAX), "timeout"),
        (job("a").unique("k", Some(too_long)), "unique_for"),
        (job("a").run_at(beyond), "run_at"),
        (job("a").unique("a\0b", None), "unique_key"),
        (job("a").ordering_key("\0"), "ordering_key"),
        (job("a").queue("q\0"), "queue"),
        (job("a\0"), "job"),
        (NewJob::new("a", nested(MAX_JSON_DEPTH + 1)), "payload"),
    ];
    for (bad, field) in cases {
        let answer = store.job_insert_many(vec![bad.clone()], now).await;
        match answer {
            Err(StoreError::Invalid(e)) => assert_eq!(e.field, field, "{bad:?}"),
            other => panic!("{bad:?} must be refused as invalid, got {other:?}"),
        }
        let batch = vec![job("fine"), bad];
        match store.job_insert_many(batch, now).await {
            Err(StoreError::Invalid(e)) => assert_eq!(e.field, format!("jobs[1].{field}")),
            other => panic!("a batch holding a bad job must be refused, got {other:?}"),
        }
    }
    let all = list(
        store,
        JobFilter {
            limit: 100,
            ..JobFilter::default()
        },
    )
    .await;
    assert!(all.is_empty(), "nothing was inserted: {all:?}");
}
