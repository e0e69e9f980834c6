//! Handing jobs to an idle in-process worker in the transaction that enqueues them.
//!
//! A job enqueued while a worker waits on its queue would otherwise take two transactions
//! before it starts: its insert, then the lease of the worker the insert woke, each a commit
//! (an fsync) and, on PostgreSQL, its round trips. A worker whose lease came back empty
//! therefore parks its next lease request with the store ([`crate::Store::park_lease`]),
//! and the store's next insert of a job ready to run in one of its queues leases for it in
//! the insert's own transaction: one commit, and the jobs go to the worker straight from
//! the commit (docs/performance.md, "Handoff", has the figures).
//!
//! The lease is an ordinary one, with all of [`crate::Store::job_lease`]'s rules (priority,
//! then enqueue order, ordering keys, singletons, paused queues, the worker's job names): a
//! job queued earlier still goes first, and the new one then waits its turn. A request that
//! got nothing wakes its worker to lease and park again. A worker that wakes for another
//! reason withdraws its request ([`Handoff::withdraw`]); if an insert has already taken it,
//! the withdrawal waits for that insert's answer, so jobs leased for the worker always reach
//! it (the insert's commit also wakes the worker, before the jobs arrive). Jobs leased for a
//! worker that is gone are released by the store.
//!
//! Only in-process workers park (other processes learn of jobs through the store's
//! notifications as before); the lot lives in the store value, so one process's workers
//! and inserts meet only when they share it.

use crate::store::{LeaseRequest, Release, StoreEvent, StoreResult};
use crate::{Inserted, JobState, LeasedJob, NewJob};
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;
use uuid::Uuid;

/// Parked lease requests of a store's idle in-process workers.
#[derive(Debug, Default)]
pub struct ParkingLot {
    parked: Shared,
    next: AtomicU64,
}

type Shared = Arc<Mutex<Vec<Parked>>>;

/// A worker's parked lease request, taken out of the lot by an insert.
#[derive(Debug)]
pub struct Parked {
    id: u64,
    /// What the worker would lease; its `now` is set to the insert's.
    pub request: LeaseRequest,
    reply: oneshot::Sender<Vec<LeasedJob>>,
}

/// The worker's end of a parked request: the jobs leased for it arrive here once.
#[derive(Debug)]
pub struct Handoff {
    id: u64,
    lot: Shared,
    /// `None` once answered or withdrawn.
    jobs: Option<oneshot::Receiver<Vec<LeasedJob>>>,
}

fn lock(parked: &Shared) -> MutexGuard<'_, Vec<Parked>> {
    // A panic while holding the lock leaves a plain list behind: still usable.
    parked
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Takes request `id` out of the lot; false when an insert has it (or had it).
fn remove(parked: &Shared, id: u64) -> bool {
    let mut parked = lock(parked);
    match parked.iter().position(|p| p.id == id) {
        Some(at) => {
            parked.swap_remove(at);
            true
        }
        None => false,
    }
}

impl Parked {
    /// The worker's request as the insert at `now` runs it.
    pub fn request_at(&self, now: DateTime<Utc>) -> LeaseRequest {
        LeaseRequest {
            now,
            ..self.request.clone()
        }
    }
}

impl ParkingLot {
    /// Parks `request` until an insert takes it or the worker withdraws it.
    pub fn park(&self, request: LeaseRequest) -> Handoff {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (reply, jobs) = oneshot::channel();
        lock(&self.parked).push(Parked { id, request, reply });
        Handoff {
            id,
            lot: self.parked.clone(),
            jobs: Some(jobs),
        }
    }

    /// Takes the oldest parked request that serves one of `queues`.
    pub fn take<'a>(&self, queues: impl IntoIterator<Item = &'a str> + Clone) -> Option<Parked> {
        let mut parked = lock(&self.parked);
        if parked.is_empty() {
            return None;
        }
        let at = parked.iter().position(|p| {
            !p.reply.is_closed()
                && queues
                    .clone()
                    .into_iter()
                    .any(|q| p.request.queues.iter().any(|served| served == q))
        })?;
        Some(parked.remove(at))
    }

    /// How many requests are parked.
    pub fn len(&self) -> usize {
        lock(&self.parked).len()
    }

    /// Nothing parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The queues of `jobs` that an insert at `now` makes ready to run (not scheduled later):
/// those a parked request is taken for.
pub fn ready_queues(jobs: &[NewJob], now: DateTime<Utc>) -> impl Iterator<Item = &str> + Clone {
    jobs.iter()
        .filter(move |j| j.run_at.is_none_or(|at| at <= now))
        .map(|j| j.queue.as_str())
}

/// After the insert's transaction (`written`: the insert's answer and the jobs leased for
/// `parked`): the jobs go to the worker. A request that got nothing, or whose transaction
/// failed, is dropped, which wakes its worker to lease (and park) again. Answers the
/// insert's answer, and the releases of jobs leased for a worker that is gone (it dropped
/// its [`Handoff`] without withdrawing), which the store makes.
pub fn settle<T>(
    parked: Parked,
    written: StoreResult<(T, Vec<LeasedJob>)>,
) -> (StoreResult<T>, Vec<Release>) {
    match written {
        Ok((answer, jobs)) if !jobs.is_empty() => {
            let unwanted = parked.reply.send(jobs).err().unwrap_or_default();
            (Ok(answer), unwanted.iter().map(Release::from).collect())
        }
        written => (written.map(|(answer, _)| answer), Vec::new()),
    }
}

/// Takes out of an insert's `events`, when its transaction also leased `leased` for a
/// parked worker, the `JobsAvailable` of each queue where that lease took every job the
/// insert made ready: nothing new waits there, so other workers (in this process or
/// another) are not woken to lease nothing. Where a job it made ready is left (an older job
/// went first, the lease was full, the job is not the worker's), the queue is announced as
/// usual.
pub fn unannounce_taken(events: &mut Vec<StoreEvent>, inserted: &[Inserted], leased: &[LeasedJob]) {
    let taken: HashSet<Uuid> = leased.iter().map(|job| job.id).collect();
    let waiting: HashSet<&str> = inserted
        .iter()
        .filter(|i| !i.duplicate && i.job.state == JobState::Queued && !taken.contains(&i.job.id))
        .map(|i| i.job.queue.as_str())
        .collect();
    events.retain(|event| match event {
        StoreEvent::JobsAvailable { queue } => waiting.contains(queue.as_str()),
        _ => true,
    });
}

impl Handoff {
    /// Waits until an insert has taken the request: the jobs it leased, or none when it
    /// found nothing for this worker (lease again, then park again). Never resolves a second
    /// time.
    pub async fn jobs(&mut self) -> Vec<LeasedJob> {
        let Some(jobs) = self.jobs.as_mut() else {
            return std::future::pending().await;
        };
        let answer = jobs.await.unwrap_or_default();
        self.jobs = None;
        answer
    }

    /// Withdraws the request: no insert takes it from now on. When an insert already has
    /// it, waits for that insert's answer (its transaction ends either way): the jobs it
    /// leased are the worker's, to run or release.
    pub async fn withdraw(mut self) -> Vec<LeasedJob> {
        let Some(jobs) = self.jobs.take() else {
            return Vec::new();
        };
        if remove(&self.lot, self.id) {
            return Vec::new();
        }
        jobs.await.unwrap_or_default()
    }
}

impl Drop for Handoff {
    /// Dropped without [`Handoff::withdraw`] (the worker's task ended): out of the lot, and
    /// jobs an insert leases for it meanwhile are released by that insert.
    fn drop(&mut self) {
        if self.jobs.is_some() {
            remove(&self.lot, self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn request(queues: &[&str]) -> LeaseRequest {
        LeaseRequest {
            queues: queues.iter().map(|q| q.to_string()).collect(),
            jobs: Vec::new(),
            worker_id: "w".into(),
            max: 4,
            lease_for: Duration::from_secs(30),
            now: chrono::Utc::now(),
        }
    }

    fn leased(queue: &str) -> LeasedJob {
        LeasedJob {
            id: uuid::Uuid::now_v7(),
            job: "j".into(),
            queue: queue.into(),
            payload: serde_json::Value::Null,
            attempt: 1,
            max_attempts: 3,
            priority: 0,
            created_at: chrono::Utc::now(),
            timeout: None,
            lease_token: 1,
            lease_expires_at: chrono::Utc::now(),
            checkpoint: None,
        }
    }

    #[tokio::test]
    async fn an_insert_takes_a_request_of_its_queue_and_the_worker_gets_the_jobs() {
        let lot = ParkingLot::default();
        let mut other = lot.park(request(&["mail"]));
        let mut handoff = lot.park(request(&["default", "images"]));
        assert!(lot.take(["reports"]).is_none());
        let parked = lot.take(["images"]).expect("a request serving images");
        assert_eq!(parked.request.queues, ["default", "images"]);
        assert_eq!(lot.len(), 1, "taken out of the lot");
        let job = leased("images");
        assert!(settle(parked, Ok(((), vec![job.clone()]))).1.is_empty());
        assert_eq!(handoff.jobs().await, vec![job]);
        // The other worker's request is still there, and its worker has nothing yet.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), other.jobs())
                .await
                .is_err()
        );
        assert!(lot.take(["mail"]).is_some());
    }

    #[tokio::test]
    async fn a_request_that_got_nothing_wakes_its_worker_empty_handed() {
        let lot = ParkingLot::default();
        let mut handoff = lot.park(request(&["default"]));
        let parked = lot.take(["default"]).expect("parked");
        assert!(settle(parked, Ok(((), Vec::new()))).1.is_empty());
        assert!(handoff.jobs().await.is_empty());
        assert!(lot.is_empty());
    }

    #[tokio::test]
    async fn withdrawing_waits_for_an_insert_that_took_the_request() {
        let lot = ParkingLot::default();
        let handoff = lot.park(request(&["default"]));
        assert!(handoff.withdraw().await.is_empty());
        assert!(lot.take(["default"]).is_none(), "withdrawn");

        // Taken by an insert still in its transaction: the withdrawal gets its jobs.
        let handoff = lot.park(request(&["default"]));
        let parked = lot.take(["default"]).expect("parked");
        let job = leased("default");
        let withdrawn = tokio::spawn(handoff.withdraw());
        tokio::task::yield_now().await;
        assert!(settle(parked, Ok(((), vec![job.clone()]))).1.is_empty());
        assert_eq!(withdrawn.await.expect("withdrawn"), vec![job]);

        // Taken, and the insert failed: nothing.
        let handoff = lot.park(request(&["default"]));
        let parked = lot.take(["default"]).expect("parked");
        let failed: StoreResult<((), Vec<LeasedJob>)> =
            Err(crate::StoreError::Unavailable("down".into()));
        let (answer, releases) = settle(parked, failed);
        assert!(answer.is_err() && releases.is_empty());
        assert!(handoff.withdraw().await.is_empty());
    }

    #[test]
    fn a_worker_gone_gives_its_jobs_back_to_be_released() {
        let lot = ParkingLot::default();
        drop(lot.park(request(&["default"])));
        assert!(lot.is_empty(), "a dropped request leaves the lot");

        let handoff = lot.park(request(&["default"]));
        let parked = lot.take(["default"]).expect("parked");
        drop(handoff);
        let job = leased("default");
        let (_, releases) = settle(parked, Ok(((), vec![job.clone()])));
        assert_eq!(
            releases,
            vec![Release {
                id: job.id,
                lease_token: job.lease_token
            }]
        );
    }
}
