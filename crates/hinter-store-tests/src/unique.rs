//! Rule 13: duplicate detection with `unique_key` and `unique_for`.

use crate::support::*;
use hinter_core::store::JobFilter;
use hinter_core::{JobState, NewJob, Store};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

fn unique(name: &str, key: &str, window: Option<Duration>) -> NewJob {
    job(name).unique(key, window)
}

/// Inserts a job that must be taken for a duplicate of `first`; returns the state of `first`
/// as answered.
async fn insert_duplicate(
    store: &dyn Store,
    new: NewJob,
    first: Uuid,
    now: chrono::DateTime<chrono::Utc>,
) -> JobState {
    let id = new.id;
    let inserted = insert_one(store, new, now).await;
    assert!(
        inserted.duplicate,
        "job {id} should be a duplicate of {first}"
    );
    assert_eq!(inserted.job.id, first, "a duplicate answers the first job");
    assert_eq!(
        store.job_get(id).await.expect("job_get"),
        None,
        "a duplicate is not stored"
    );
    inserted.job.state
}

/// Without `unique_for`, a job with the same name and key is a duplicate while the first one
/// is unfinished (scheduled, queued or running), and not once it finished.
pub async fn unique_key_while_unfinished(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let first = insert(store, unique("mail", "user-1", None), now).await;
    let state = insert_duplicate(
        store,
        unique("mail", "user-1", None),
        first.id,
        now + secs(1),
    )
    .await;
    assert_eq!(state, JobState::Queued);
    assert_eq!(
        get(store, first.id).await,
        first,
        "a duplicate leaves the first unchanged"
    );

    let leased = lease_job(store, "default", first.id, now + secs(2)).await;
    let state = insert_duplicate(
        store,
        unique("mail", "user-1", None),
        first.id,
        now + secs(3600),
    )
    .await;
    assert_eq!(
        state,
        JobState::Running,
        "the answer shows the first job as it is"
    );
    complete_ok(store, &leased, now + secs(3601)).await;

    let second = insert(store, unique("mail", "user-1", None), now + secs(3602)).await;
    assert_ne!(second.id, first.id);
    cancel(store, second.id, now + secs(3603)).await;
    let third = insert(store, unique("mail", "user-1", None), now + secs(3604)).await;
    let l = lease_job(store, "default", third.id, now + secs(3604)).await;
    fail_ok(
        store,
        &l,
        hinter_core::retry::FailOutcome::Dead,
        now + secs(3605),
    )
    .await;
    let fourth = insert(store, unique("mail", "user-1", None), now + secs(3606)).await;

    // A scheduled job is unfinished too.
    let later = now + secs(7200);
    let at = now + secs(3607);
    let scheduled = insert(store, unique("mail", "user-2", None).run_at(later), at).await;
    assert_eq!(scheduled.state, JobState::Scheduled);
    insert_duplicate(store, unique("mail", "user-2", None), scheduled.id, at).await;

    let all = list(
        store,
        JobFilter {
            limit: 100,
            ..JobFilter::default()
        },
    )
    .await;
    assert_eq!(
        ids(&all),
        vec![first.id, second.id, third.id, fourth.id, scheduled.id]
    );
}

/// With `unique_for`, a job with the same name and key is a duplicate inside the window after
/// the first was enqueued, finished or not, and a new job after it, unfinished or not.
pub async fn unique_key_with_window(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let window = Some(Duration::from_secs(600));
    let first = insert(store, unique("report", "daily", window), now).await;
    insert_duplicate(
        store,
        unique("report", "daily", window),
        first.id,
        now + secs(300),
    )
    .await;

    // After the window: a new job, although the first is still queued.
    let second = insert(store, unique("report", "daily", window), now + secs(601)).await;
    assert_eq!(get(store, first.id).await.state, JobState::Queued);
    insert_duplicate(
        store,
        unique("report", "daily", window),
        second.id,
        now + secs(700),
    )
    .await;

    // Inside the window of the second, after it finished: still a duplicate.
    let l = lease(store, &["default"], 10, now + secs(701)).await;
    let l = l
        .iter()
        .find(|l| l.id == second.id)
        .expect("the second job is leased");
    complete_ok(store, l, now + secs(702)).await;
    insert_duplicate(
        store,
        unique("report", "daily", window),
        second.id,
        now + secs(800),
    )
    .await;
    insert(store, unique("report", "daily", window), now + secs(1202)).await;
}

/// Duplicates are per job name: the same key under another name is a new job. Jobs without a
/// key are never duplicates.
pub async fn unique_key_per_job_name(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    insert(store, unique("mail", "k", None), now).await;
    insert(store, unique("sms", "k", None), now).await;
    insert(
        store,
        unique("push", "k", Some(Duration::from_secs(60))),
        now,
    )
    .await;
    insert(store, unique("mail", "other-key", None), now).await;
    insert(store, job("mail"), now).await;
    insert(store, job("mail"), now).await;
}

/// Duplicates inside one batch are recognised: the later item answers the earlier job.
pub async fn unique_key_duplicates_within_batch(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let window = Some(Duration::from_secs(60));
    let batch = vec![
        unique("mail", "k", None),
        unique("mail", "k", None),
        unique("sms", "k", None),
        unique("mail", "k2", None),
        unique("report", "w", window),
        unique("report", "w", window),
    ];
    let ids: Vec<Uuid> = batch.iter().map(|j| j.id).collect();
    let inserted = insert_many(store, batch, now).await;
    let answers: Vec<(Uuid, bool)> = inserted.iter().map(|i| (i.job.id, i.duplicate)).collect();
    assert_eq!(
        answers,
        vec![
            (ids[0], false),
            (ids[0], true),
            (ids[2], false),
            (ids[3], false),
            (ids[4], false),
            (ids[4], true),
        ]
    );
    for id in [ids[1], ids[5]] {
        assert_eq!(store.job_get(id).await.expect("job_get"), None);
    }
    let all = list(
        store,
        JobFilter {
            limit: 100,
            ..JobFilter::default()
        },
    )
    .await;
    assert_eq!(all.len(), 4);
}
