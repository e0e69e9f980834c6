//! Following the event log: a follower on another store instance (another process) sees
//! what a worker does, every event once and in order, resumes from an id, and filters.

use crate::common::*;
use hinter_core::{EventFilter, EventKind, JobEvent, NewJob};
use hinter_engine::{EventFollower, HandlerContext, JobError, Registry};
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

/// The next `n` events of `follower`, each within [`WAIT`].
async fn take(follower: &mut EventFollower, n: usize) -> Vec<JobEvent> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let event = within("the next event", WAIT, follower.next())
            .await
            .expect("reading the event log");
        out.push(event);
    }
    out
}

fn kinds_of(events: &[JobEvent], id: Uuid) -> Vec<EventKind> {
    events
        .iter()
        .filter(|e| e.job_id == id)
        .map(|e| e.kind)
        .collect()
}

async fn a_follower_on_another_instance_sees_a_workers_events_once_in_order(kind: Kind) {
    let data = Data::fresh(kind);
    let writer = data.open().await;
    let reader = data.open().await;
    let mut follower = EventFollower::new(reader.clone(), 0, EventFilter::default())
        .poll_interval(Duration::from_secs(30));
    let mut registry = Registry::new();
    registry.register(def("ok"), |_ctx: HandlerContext, _: Value| async {
        Ok::<_, JobError>(json!("done"))
    });
    registry.register(def("bad"), |_ctx: HandlerContext, _: Value| async {
        Err::<(), _>(JobError::permanent("no"))
    });
    let worker = start_worker(&writer, registry, fast_options(4));
    let ok = enqueue_many(
        &writer,
        (0..10)
            .map(|i| NewJob::new("ok", json!({ "i": i })))
            .collect(),
    )
    .await;
    let bad = enqueue(&writer, NewJob::new("bad", json!({}))).await;

    // The poll interval is 30 s: only the other instance's wake-up hints deliver these in time.
    let events = take(&mut follower, 10 * 3 + 4).await;
    assert!(events.windows(2).all(|w| w[0].id < w[1].id), "{events:?}");
    for id in &ok {
        assert_eq!(
            kinds_of(&events, *id),
            [EventKind::Created, EventKind::Started, EventKind::Succeeded]
        );
    }
    assert_eq!(
        kinds_of(&events, bad),
        [
            EventKind::Created,
            EventKind::Started,
            EventKind::Failed,
            EventKind::Dead
        ]
    );
    let failed = events
        .iter()
        .find(|e| e.job_id == bad && e.kind == EventKind::Failed)
        .expect("the failure");
    assert_eq!(failed.data["error"], "no");
    within("worker shutdown", WAIT, worker.shutdown()).await;

    // Resuming from any event gives exactly what followed it.
    let k = 17;
    let mut resumed = EventFollower::new(reader.clone(), events[k].id, EventFilter::default());
    assert_eq!(
        take(&mut resumed, events.len() - k - 1).await,
        events[k + 1..]
    );

    // A filtered follower sees only its job, from the same log.
    let mut one = EventFollower::new(
        reader.clone(),
        0,
        EventFilter {
            job_id: Some(bad),
            ..EventFilter::default()
        },
    );
    let mine = take(&mut one, 4).await;
    assert!(mine.iter().all(|e| e.job_id == bad));
    // Nothing more arrives for it; a new job elsewhere does not wake it with a wrong event.
    enqueue(&writer, NewJob::new("ok", json!({}))).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), one.next())
            .await
            .is_err(),
        "the filtered follower saw an event of another job"
    );
}

/// Batches hand out what single reads would, and say which stretch of the log each covers:
/// every batch starts where the events taken before it ended, also after single `next`s.
async fn batches_cover_the_log_without_gaps_or_overlaps(kind: Kind) {
    let data = Data::fresh(kind);
    let store = data.open().await;
    let mut follower = EventFollower::new(store.clone(), 0, EventFilter::default());
    let ids = enqueue_many(
        &store,
        (0..1200)
            .map(|i| NewJob::new("ok", json!({ "i": i })))
            .collect(),
    )
    .await;
    let mut seen: Vec<JobEvent> = Vec::new();
    let mut position = 0;
    // A single event first: the rest of its page is still buffered.
    let first = within("the first event", WAIT, follower.next())
        .await
        .expect("reading the event log");
    assert!(first.id > position);
    position = follower.position();
    assert_eq!(position, first.id, "the position ends at the event taken");
    seen.push(first);
    while seen.len() < ids.len() {
        let batch = within("a batch", WAIT, follower.next_batch())
            .await
            .expect("reading the event log");
        assert_eq!(
            batch.after, position,
            "a batch starts where the last one ended"
        );
        assert!(!batch.events.is_empty());
        assert!(batch
            .events
            .iter()
            .all(|e| e.id > batch.after && e.id <= batch.next_after));
        position = batch.next_after;
        assert_eq!(follower.position(), position);
        seen.extend(batch.events);
    }
    assert!(
        seen.windows(2).all(|w| w[0].id < w[1].id),
        "in log order, once"
    );
    let created: Vec<Uuid> = seen.iter().map(|e| e.job_id).collect();
    assert_eq!(created, ids, "every job's `created` event");
}

on_both_backends!(
    a_follower_on_another_instance_sees_a_workers_events_once_in_order,
    batches_cover_the_log_without_gaps_or_overlaps
);

/// PostgreSQL: an entry committed while an older transaction of the database is open becomes
/// readable only when that one ends, and nothing announces that end. A follower whose read
/// after the entry's hint came up empty looks again soon (25 ms, doubling), not after its
/// poll interval (30 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_back_entry_is_read_soon_after_it_shows() {
    if !postgres_ready() {
        return;
    }
    let url = std::env::var(URL_VAR).expect("postgres_ready checked it");
    let data = Data::fresh(Kind::Postgres);
    let store = data.open().await;
    let mut follower = EventFollower::from_now(store.clone(), EventFilter::default())
        .await
        .expect("following")
        .poll_interval(Duration::from_secs(30));
    let (got, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let following = tokio::spawn(async move {
        while let Ok(event) = follower.next().await {
            if got.send(event).is_err() {
                return;
            }
        }
    });
    // An older transaction holding an xid, left open: it holds back what commits after it.
    let blocker = hinter_postgres::connect_session(&url)
        .await
        .expect("a session of its own");
    blocker
        .batch_execute("BEGIN; SELECT pg_current_xact_id();")
        .await
        .expect("an open transaction");
    let id = enqueue(&store, NewJob::new("ok", json!({}))).await;
    // Not a wait for a result: time for the follower's read after the hint to find nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(seen.try_recv().is_err(), "the entry was readable too early");
    blocker.batch_execute("COMMIT").await.expect("commit");
    let event = within("the held-back entry", Duration::from_secs(5), seen.recv())
        .await
        .expect("the follower stopped");
    assert_eq!(event.job_id, id);
    following.abort();
}
