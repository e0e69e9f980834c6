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
/// After a hint whose read found nothing new, the first look again (see [`Recheck`]).
const RECHECK: Duration = Duration::from_millis(25);

/// How long a reader of the event log waits after a read that found nothing new. Normally
/// until a hint or its poll interval; but after a hint whose read found nothing, it looks
/// again at 25 ms, then twice as long each time up to the poll interval: on PostgreSQL a
/// committed entry can stay unreadable for a moment (until every older transaction of the
/// database has ended), and no second hint comes for it. Shared by every reader that waits
/// on hints ([`EventFollower`], the server's event streams).
#[derive(Debug, Clone, Copy, Default)]
pub struct Recheck {
    soon: Option<Duration>,
}

impl Recheck {
    /// The longest wait after an empty read, given the reader's poll interval. `advanced`:
    /// the read passed log entries (none matched its filter), so a hint's entries arrived.
    pub fn wait_for(&mut self, advanced: bool, poll: Duration) -> Duration {
        if advanced {
            self.soon = None;
        }
        self.soon.map_or(poll, |soon| soon.min(poll))
    }

    /// Notes how the wait ended: by a hint (`true`) or by its time.
    pub fn waited(&mut self, hinted: bool, poll: Duration) {
        self.soon = if hinted {
            Some(RECHECK)
        } else {
            self.soon.map(|d| d * 2).filter(|d| *d < poll)
        };
    }

    /// A read found events: the next empty read waits normally.
    pub fn found(&mut self) {
        self.soon = None;
    }
}

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
    /// How long the next wait after an empty read lasts.
    recheck: Recheck,
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
            recheck: Recheck::default(),
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
            self.recheck.found();
            return Ok(());
        }
        self.delivered = self.after;
        let limit = self.recheck.wait_for(advanced, self.poll);
        let hinted = self.wait(limit).await;
        self.recheck.waited(hinted, self.poll);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// After a hint, looks come at 25, 50, 100 … ms up to the poll interval; a read that
    /// passed entries or found events ends that; without hints the poll interval holds.
    #[test]
    fn rechecks_double_after_a_hint_up_to_the_poll() {
        let poll = Duration::from_millis(300);
        let mut r = Recheck::default();
        assert_eq!(r.wait_for(false, poll), poll);
        r.waited(false, poll);
        assert_eq!(r.wait_for(false, poll), poll, "no hint: the poll interval");
        r.waited(true, poll);
        let waits: Vec<u64> = (0..5)
            .map(|_| {
                let w = r.wait_for(false, poll);
                r.waited(false, poll);
                w.as_millis() as u64
            })
            .collect();
        assert_eq!(waits, [25, 50, 100, 200, 300]);
        r.waited(true, poll);
        assert_eq!(
            r.wait_for(true, poll),
            poll,
            "entries were passed: they arrived"
        );
        r.waited(true, poll);
        r.found();
        assert_eq!(r.wait_for(false, poll), poll);
    }
}
