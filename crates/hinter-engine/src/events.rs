//! Following the durable event log from an id: every matching event once, in order, waiting
//! for new ones. What SSE, callbacks and dashboards build on, and the library's way to react
//! to what happens to jobs.

use futures_util::Stream;
use hinter_core::store::StoreResult;
use hinter_core::{EventFilter, JobEvent, Store};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Events read per store call.
const PAGE: u32 = 500;
/// Longest wait without a wake-up hint before looking again: hints are best effort.
const POLL: Duration = Duration::from_secs(1);
/// After a hint whose read found nothing new, the first look again; then twice as long each
/// time up to the poll interval. On PostgreSQL a committed entry can stay unreadable for a
/// moment (until every older transaction of the database has ended), and no second hint
/// comes for it.
const RECHECK: Duration = Duration::from_millis(25);

/// Events read together, and the log positions around them: every event after `after` up
/// to `next_after` (those matching the follower's filter) is in `events`, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventBatch {
    pub after: i64,
    pub events: Vec<JobEvent>,
    pub next_after: i64,
}

/// Reads the event log after an id and waits for more.
///
/// Persist the id of the last event you handled and start the next follower from it: every
/// later event still retained arrives exactly once. Cancel-safe: dropping a pending
/// [`EventFollower::next`] loses nothing.
pub struct EventFollower {
    store: Arc<dyn Store>,
    filter: EventFilter,
    /// Where the next read starts.
    after: i64,
    /// Where what the caller has taken ends: before the buffer's first event.
    delivered: i64,
    buffer: VecDeque<JobEvent>,
    hints: broadcast::Receiver<hinter_core::StoreEvent>,
    poll: Duration,
    /// How long the next wait after an empty read lasts, while a hint's entries may still be
    /// on their way (see [`RECHECK`]); `None`: the poll interval.
    recheck: Option<Duration>,
}

impl EventFollower {
    /// Follows events after `after` (0: from the oldest retained) that match `filter`.
    pub fn new(store: Arc<dyn Store>, after: i64, filter: EventFilter) -> Self {
        // Subscribed before the first read, so no hint between the two is missed.
        let hints = store.subscribe();
        Self {
            store,
            filter,
            after,
            delivered: after,
            buffer: VecDeque::new(),
            hints,
            poll: POLL,
            recheck: None,
        }
    }

    /// Follows only what is logged from now on.
    pub async fn from_now(store: Arc<dyn Store>, filter: EventFilter) -> StoreResult<Self> {
        let mut follower = Self::new(store, 0, filter);
        follower.after = follower.store.events_last_id().await?;
        follower.delivered = follower.after;
        Ok(follower)
    }

    /// Sets the longest wait between reads when no hint arrives (default 1 s).
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// The next event, waiting as long as it takes. A store error is returned as is; calling
    /// again tries again from the same place.
    pub async fn next(&mut self) -> StoreResult<JobEvent> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.delivered = if self.buffer.is_empty() {
                    self.after
                } else {
                    event.id
                };
                return Ok(event);
            }
            self.read().await?;
        }
    }

    /// Everything read but not yet taken, or else the next events, waiting as long as it
    /// takes: at least one event. Cancel-safe as [`EventFollower::next`].
    pub async fn next_batch(&mut self) -> StoreResult<EventBatch> {
        loop {
            if !self.buffer.is_empty() {
                let batch = EventBatch {
                    after: self.delivered,
                    events: self.buffer.drain(..).collect(),
                    next_after: self.after,
                };
                self.delivered = self.after;
                return Ok(batch);
            }
            self.read().await?;
        }
    }

    /// Where the events taken so far end: every matching event up to this id was handed out.
    pub fn position(&self) -> i64 {
        self.delivered
    }

    /// One page into the buffer, or, when there is nothing new, a wait for a hint.
    async fn read(&mut self) -> StoreResult<()> {
        let page = self
            .store
            .events_read(self.after, &self.filter, PAGE)
            .await?;
        let advanced = page.next_after != self.after;
        self.after = page.next_after;
        if !page.events.is_empty() {
            self.buffer.extend(page.events);
            self.recheck = None;
            return Ok(());
        }
        self.delivered = self.after;
        if advanced {
            // Entries were read (none matched): the hint's changes have arrived.
            self.recheck = None;
        }
        let hinted = self.wait(self.recheck.unwrap_or(self.poll)).await;
        self.recheck = if hinted {
            Some(RECHECK)
        } else {
            self.recheck.map(|d| d * 2).filter(|d| *d < self.poll)
        };
        Ok(())
    }

    /// Waits for any hint that the store changed, or `limit`; true when a hint came.
    async fn wait(&mut self, limit: Duration) -> bool {
        let hint = async {
            loop {
                match self.hints.recv().await {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => return,
                    // The store is gone: only polling is left.
                    Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                }
            }
        };
        tokio::time::timeout(limit, hint).await.is_ok()
    }

    /// The follower as a stream of events (errors included; the stream goes on after one).
    pub fn into_stream(self) -> impl Stream<Item = StoreResult<JobEvent>> + Send {
        futures_util::stream::unfold(self, |mut follower| async move {
            let item = follower.next().await;
            if item.is_err() {
                // Not in a tight loop against a failing store.
                tokio::time::sleep(follower.poll).await;
            }
            Some((item, follower))
        })
    }
}
