//! Rule 19: change events.

use crate::support::*;
use hinter_core::retry::FailOutcome;
use hinter_core::{JobState, Store, StoreEvent};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::{error::RecvError, Receiver};

/// How long an event may take to arrive.
const EVENT_WAIT: Duration = Duration::from_secs(5);

/// Waits for an event equal to `wanted`, skipping others.
async fn expect_event(events: &mut Receiver<StoreEvent>, wanted: StoreEvent) {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(event) if event == wanted => return,
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => panic!("the event channel closed waiting for {wanted:?}"),
            }
        }
    };
    if tokio::time::timeout(EVENT_WAIT, wait).await.is_err() {
        panic!("no {wanted:?} within {EVENT_WAIT:?}");
    }
}

/// Inserting a ready job announces `JobsAvailable` for its queue; finishing a job announces
/// `JobFinished` with its final state; cancelling a running job announces `CancelRequested`.
pub async fn subscribe_jobs_available_and_finished(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let mut events = store.subscribe();

    let a = insert(store, job_in("a", "mail"), now).await.id;
    expect_event(
        &mut events,
        StoreEvent::JobsAvailable {
            queue: "mail".into(),
        },
    )
    .await;
    let l = lease_job(store, "mail", a, now).await;
    complete_ok(store, &l, now + secs(1)).await;
    expect_event(
        &mut events,
        StoreEvent::JobFinished {
            id: a,
            state: JobState::Succeeded,
        },
    )
    .await;

    let b = insert(store, job_in("b", "mail"), now).await.id;
    let l = lease_job(store, "mail", b, now).await;
    fail_ok(store, &l, FailOutcome::Dead, now + secs(1)).await;
    expect_event(
        &mut events,
        StoreEvent::JobFinished {
            id: b,
            state: JobState::Dead,
        },
    )
    .await;

    let e = insert(store, job_in("e", "mail"), now).await.id;
    lease_job(store, "mail", e, now).await;
    cancel(store, e, now + secs(1)).await;
    expect_event(&mut events, StoreEvent::CancelRequested { id: e }).await;

    let c = insert(store, job_in("c", "mail"), now).await.id;
    cancel(store, c, now + secs(1)).await;
    expect_event(
        &mut events,
        StoreEvent::JobFinished {
            id: c,
            state: JobState::Cancelled,
        },
    )
    .await;

    // A second subscriber hears the same.
    let mut late = store.subscribe();
    insert(store, job_in("d", "other"), now).await;
    for events in [&mut events, &mut late] {
        expect_event(
            events,
            StoreEvent::JobsAvailable {
                queue: "other".into(),
            },
        )
        .await;
    }
}
