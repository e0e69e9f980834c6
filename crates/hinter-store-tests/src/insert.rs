//! Rule 1 and 2: inserting and reading jobs.

use crate::support::*;
use hinter_core::{Job, JobState, NewJob, Store, StoreError};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Every field of a job, with every option set and with none, reads back as inserted; a
/// future `run_at` makes it `scheduled`.
pub async fn insert_and_get_round_trip(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let run_at = now + secs(3600);
    let full = NewJob {
        id: Uuid::now_v7(),
        job: "thumbnail".into(),
        queue: "images".into(),
        payload: json!({
            "path": "/tmp/Grüße 🌍.png",
            "sizes": [64, 128, 256],
            "nested": {"ok": true, "none": null, "ratio": 1.5, "big": 9_007_199_254_740_993_i64},
            "quote": "it's \"quoted\"",
        }),
        priority: -7,
        run_at: Some(run_at),
        max_attempts: 3,
        unique_key: Some("img-42".into()),
        unique_for: Some(Duration::from_secs(600)),
        ordering_key: Some("user-7".into()),
        timeout: Some(Duration::from_millis(2500)),
        singleton: true,
        reply_to: Some("replies".into()),
        correlation_id: Some("order-42 ✓".into()),
        callback_url: Some("https://example.com/hooks/done?x=1".into()),
        parent_id: Some(Uuid::now_v7()),
    };
    let inserted = insert_one(store, full.clone(), now).await;
    assert!(!inserted.duplicate);
    let expected = Job {
        id: full.id,
        job: "thumbnail".into(),
        queue: "images".into(),
        payload: full.payload.clone(),
        state: JobState::Scheduled,
        priority: -7,
        attempt: 0,
        max_attempts: 3,
        run_at,
        created_at: now,
        started_at: None,
        finished_at: None,
        unique_key: Some("img-42".into()),
        ordering_key: Some("user-7".into()),
        timeout: Some(Duration::from_millis(2500)),
        singleton: true,
        cancel_requested: false,
        worker_id: None,
        lease_expires_at: None,
        errors: vec![],
        errors_omitted: 0,
        runs: Vec::new(),
        progress: None,
        checkpoint: None,
        reply_to: full.reply_to.clone(),
        correlation_id: full.correlation_id.clone(),
        callback_url: full.callback_url.clone(),
        parent_id: full.parent_id,
        followups: Vec::new(),
        result: None,
        seq: inserted.job.seq,
    };
    assert_eq!(inserted.job, expected, "the answer to the insert");
    assert_eq!(get(store, full.id).await, expected, "job_get after insert");

    let plain = NewJob::new("plain", Value::Null);
    let inserted = insert(store, plain.clone(), now).await;
    let expected = Job {
        id: plain.id,
        job: "plain".into(),
        queue: hinter_core::DEFAULT_QUEUE.into(),
        payload: Value::Null,
        state: JobState::Queued,
        priority: 0,
        attempt: 0,
        max_attempts: hinter_core::retry::DEFAULT_MAX_ATTEMPTS,
        run_at: now,
        created_at: now,
        started_at: None,
        finished_at: None,
        unique_key: None,
        ordering_key: None,
        timeout: None,
        singleton: false,
        cancel_requested: false,
        worker_id: None,
        lease_expires_at: None,
        errors: vec![],
        errors_omitted: 0,
        runs: Vec::new(),
        progress: None,
        checkpoint: None,
        reply_to: None,
        correlation_id: None,
        callback_url: None,
        parent_id: None,
        followups: Vec::new(),
        result: None,
        seq: inserted.seq,
    };
    assert_eq!(inserted, expected, "a job without options runs now");
    assert_eq!(get(store, plain.id).await, expected);
}

/// `job_get` of an id that was never inserted is `None`, not an error.
pub async fn get_unknown_is_none(store: Arc<dyn Store>) {
    insert(&*store, job("a"), base_time()).await;
    let got = store.job_get(Uuid::now_v7()).await.expect("job_get");
    assert_eq!(got, None);
}

/// A job whose `run_at` is in the future is `scheduled`; now, in the past or unset: `queued`.
pub async fn insert_state_depends_on_run_at(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let cases = [
        ("future", Some(now + secs(1)), JobState::Scheduled),
        (
            "far-future",
            Some(now + secs(86_400 * 365)),
            JobState::Scheduled,
        ),
        ("past", Some(now - secs(60)), JobState::Queued),
        ("now", Some(now), JobState::Queued),
        ("unset", None, JobState::Queued),
    ];
    for (name, run_at, state) in cases {
        let mut new = job(name);
        new.run_at = run_at;
        let inserted = insert(store, new, now).await;
        assert_eq!(inserted.state, state, "run_at {name}: state of the answer");
        assert_eq!(get(store, inserted.id).await.state, state, "run_at {name}");
    }
}

/// A batch answers one result per job, in request order, and its jobs are enqueued in that
/// order.
pub async fn insert_batch_returns_results_in_order(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let empty = store
        .job_insert_many(vec![], now)
        .await
        .expect("an empty batch is fine");
    assert!(empty.is_empty());

    let batch = vec![
        job("first"),
        job_in("second", "other"),
        job("third"),
        job("fourth").run_at(now + secs(60)),
        job("fifth"),
        job_in("sixth", "other").priority(3),
    ];
    let wanted: Vec<(Uuid, String, String)> = batch
        .iter()
        .map(|j| (j.id, j.job.clone(), j.queue.clone()))
        .collect();
    let inserted = insert_many(store, batch, now).await;
    for (answer, (id, name, queue)) in inserted.iter().zip(&wanted) {
        assert!(!answer.duplicate);
        assert_eq!(
            (&answer.job.id, &answer.job.job, &answer.job.queue),
            (id, name, queue),
            "answers come in request order"
        );
        assert_eq!(get(store, *id).await, answer.job);
    }
    for pair in inserted.windows(2) {
        assert!(
            pair[0].job.seq < pair[1].job.seq,
            "seq grows in request order: {} then {}",
            pair[0].job.seq,
            pair[1].job.seq
        );
    }
    assert_eq!(inserted[3].job.state, JobState::Scheduled);

    // Equal priority: leased in the order of the batch.
    for i in [0, 2, 4] {
        lease_job(store, "default", wanted[i].0, now).await;
    }
    assert!(lease(store, &["default"], 10, now).await.is_empty());
}

/// A batch is inserted all or nothing: when one job cannot be inserted (its id is taken),
/// none of the batch is, and the existing job is unchanged.
pub async fn insert_batch_is_atomic(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let existing = insert(store, job("existing"), now).await;
    let a = job("a");
    let mut clash = job("clash");
    clash.id = existing.id;
    let b = job("b");
    let (a_id, b_id) = (a.id, b.id);
    let answer = store.job_insert_many(vec![a, clash, b], now).await;
    match &answer {
        Err(StoreError::Conflict(m)) => assert!(
            m.contains(&existing.id.to_string()),
            "the conflict names the taken id: {m}"
        ),
        other => panic!("inserting a second job with a taken id must conflict: {other:?}"),
    }
    for id in [a_id, b_id] {
        assert_eq!(
            store.job_get(id).await.expect("job_get"),
            None,
            "nothing of a failed batch is stored"
        );
    }
    assert_eq!(get(store, existing.id).await, existing);
    let again = insert(store, job("a"), now).await;
    assert_eq!(get(store, again.id).await, again, "the store still works");

    // One new id given twice in a batch: refused the same way.
    let first = job("twice");
    let mut second = job("twice-again");
    second.id = first.id;
    let twice = first.id;
    match store
        .job_insert_many(vec![job("c"), first, second], now)
        .await
    {
        Err(StoreError::Conflict(m)) => assert!(
            m.contains(&twice.to_string()),
            "the conflict names the repeated id: {m}"
        ),
        other => panic!("an id given twice in a batch must conflict: {other:?}"),
    }
    assert_eq!(store.job_get(twice).await.expect("job_get"), None);
}

/// `ping` succeeds on a working store.
pub async fn ping_succeeds(store: Arc<dyn Store>) {
    store.ping().await.expect("ping");
}
