//! One reader of the event log per server, shared by everything that follows it live.
//!
//! `serve` runs one [`hinter_engine::EventFollower`] from the end of the log ([`follow_log`]):
//! it feeds `GET /metrics`, the per-minute counts of `GET /api/v1/stats`, and the
//! [`EventHub`], which hands each batch it read to every open event stream. A stream then
//! costs an in-memory filter per event instead of its own store read per commit, so ten open
//! dashboards read the log no more often than none. A stream that falls behind (the hub
//! keeps [`HUB_BATCHES`] batches) or starts from an older id reads the store until it has
//! caught up, then takes the hub's batches again; nothing is lost or sent twice, since the
//! hub's batches say which stretch of the log they cover. A router whose hub nobody feeds
//! (a test, an embedding application) streams from the store as before.

use crate::Metrics;
use hinter_core::{Clock, EventFilter, Store};
use hinter_engine::{EventBatch, EventFollower};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Batches of up to 500 events the hub keeps for streams that have not taken them yet.
pub const HUB_BATCHES: usize = 64;

/// Hands the batches one follower of the log reads to every stream that subscribes.
#[derive(Clone)]
pub struct EventHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    batches: broadcast::Sender<Arc<EventBatch>>,
    /// Set by the feeder when it starts: from then on the hub's batches are the log.
    fed: AtomicBool,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::with_capacity(HUB_BATCHES)
    }
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub")
            .field("fed", &self.is_fed())
            .field("streams", &self.inner.batches.receiver_count())
            .finish()
    }
}

impl EventHub {
    /// A hub that keeps `batches` batches for slow streams (at least 1).
    pub fn with_capacity(batches: usize) -> Self {
        let (batches, _) = broadcast::channel(batches.max(1));
        Self {
            inner: Arc::new(HubInner {
                batches,
                fed: AtomicBool::new(false),
            }),
        }
    }

    /// Tells streams opened from now on to take their events from the hub: call before the
    /// first [`EventHub::publish`], from the task that will publish every batch.
    pub fn start_feeding(&self) {
        self.inner.fed.store(true, Ordering::Release);
    }

    /// Whether a follower feeds the hub.
    pub fn is_fed(&self) -> bool {
        self.inner.fed.load(Ordering::Acquire)
    }

    /// Hands a batch to every stream subscribed now. Batches must follow on from each other
    /// (each one's `after` the previous one's `next_after`, or less).
    pub fn publish(&self, batch: EventBatch) {
        // No receiver: nobody is following live, and nothing needs the batch.
        let _ = self.inner.batches.send(Arc::new(batch));
    }

    /// The batches published from now on, when the hub is fed.
    pub fn subscribe(&self) -> Option<broadcast::Receiver<Arc<EventBatch>>> {
        self.is_fed().then(|| self.inner.batches.subscribe())
    }
}

/// Follows the log from its end now, as `serve` does: every event once, in log order (also
/// those of other processes sharing the store), counted into `metrics` and its stats and then
/// handed to `hub`. A store error is logged and retried after a pause. Returns the id the
/// follower starts after (the stats backfill reads up to it) and the task.
pub async fn follow_log(
    store: Arc<dyn Store>,
    metrics: Metrics,
    hub: EventHub,
    clock: Arc<dyn Clock>,
) -> hinter_core::store::StoreResult<(i64, tokio::task::JoinHandle<()>)> {
    let last = store.events_last_id().await?;
    let mut follower = EventFollower::new(store, last, EventFilter::default());
    hub.start_feeding();
    let task = tokio::spawn(async move {
        loop {
            match follower.next_batch().await {
                Ok(batch) => {
                    let now = clock.now();
                    for event in &batch.events {
                        metrics.observe(event);
                        metrics.stats().observe(event, now);
                    }
                    hub.publish(batch);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the event log for metrics and streams; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    Ok((last, task))
}
