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
//! got nothing is parked again. A worker that wakes for another reason withdraws its request
//! ([`Handoff::withdraw`]), taking jobs handed to it meanwhile; jobs leased for a worker
//! that withdrew before they arrived are given back to the store to release.
//!
//! Only in-process workers park (other processes learn of jobs through the store's
//! notifications as before); the lot lives in the store value, so one process's workers
//! and inserts meet only when they share it.

use crate::store::LeaseRequest;
use crate::{LeasedJob, NewJob};
use chrono::{DateTime, Utc};
use std::sync::Mutex;
use tokio::sync::oneshot;

/// Parked lease requests of a store's idle in-process workers.
#[derive(Debug, Default)]
pub struct ParkingLot {
    parked: Mutex<Vec<Parked>>,
}

/// A worker's parked lease request, taken out of the lot by an insert.
#[derive(Debug)]
pub struct Parked {
    /// What the worker would lease; its `now` is set to the insert's.
    pub request: LeaseRequest,
    reply: oneshot::Sender<Vec<LeasedJob>>,
}

/// The worker's end of a parked request: the jobs leased for it arrive here once.
#[derive(Debug)]
pub struct Handoff {
    jobs: oneshot::Receiver<Vec<LeasedJob>>,
}

impl ParkingLot {
    /// Parks `request` until an insert leases for it or the worker withdraws it.
    pub fn park(&self, request: LeaseRequest) -> Handoff {
        let (reply, jobs) = oneshot::channel();
        let mut parked = self.lock();
        // Requests withdrawn since are dropped here, so the lot stays as small as the
        // number of idle workers.
        parked.retain(|p| !p.reply.is_closed());
        parked.push(Parked { request, reply });
        Handoff { jobs }
    }

    /// Takes the oldest request still waiting that serves one of `queues`.
    pub fn take<'a>(&self, queues: impl IntoIterator<Item = &'a str> + Clone) -> Option<Parked> {
        let mut parked = self.lock();
        if parked.is_empty() {
            return None;
        }
        parked.retain(|p| !p.reply.is_closed());
        let at = parked.iter().position(|p| {
            queues
                .clone()
                .into_iter()
                .any(|q| p.request.queues.iter().any(|served| served == q))
        })?;
        Some(parked.remove(at))
    }

    /// Parks again a request that got no job (or whose insert failed), unless withdrawn.
    pub fn put_back(&self, parked: Parked) {
        if !parked.reply.is_closed() {
            self.lock().push(parked);
        }
    }

    /// How many requests are parked (withdrawn ones included until the next park or take).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Nothing parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Parked>> {
        // A panic while holding the lock leaves a plain list behind: still usable.
        self.parked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The queues of `jobs` that an insert at `now` makes ready to run (not scheduled later):
/// those a parked request is taken for.
pub fn ready_queues(jobs: &[NewJob], now: DateTime<Utc>) -> impl Iterator<Item = &str> + Clone {
    jobs.iter()
        .filter(move |j| j.run_at.is_none_or(|at| at <= now))
        .map(|j| j.queue.as_str())
}

/// After the insert's transaction: `leased` (`None`: the transaction failed) goes to the
/// worker, or the request back to the lot when it got nothing. Answers the jobs of a worker
/// that withdrew meanwhile: the store releases them.
pub fn settle(lot: &ParkingLot, parked: Parked, leased: Option<Vec<LeasedJob>>) -> Vec<LeasedJob> {
    match leased {
        Some(jobs) if !jobs.is_empty() => parked.deliver(jobs).err().unwrap_or_default(),
        _ => {
            lot.put_back(parked);
            Vec::new()
        }
    }
}

impl Parked {
    /// Hands `jobs` (leased for this request, committed) to the worker. `Err` gives back
    /// the jobs of a worker that withdrew meanwhile: the caller releases them.
    pub fn deliver(self, jobs: Vec<LeasedJob>) -> Result<(), Vec<LeasedJob>> {
        self.reply.send(jobs)
    }
}

impl Handoff {
    /// Waits for the jobs an insert leased for this request. Never resolves once the lot
    /// was dropped with the request in it (the store is gone): race it against a wake-up.
    pub async fn jobs(&mut self) -> Vec<LeasedJob> {
        match (&mut self.jobs).await {
            Ok(jobs) => jobs,
            Err(_) => std::future::pending().await,
        }
    }

    /// Withdraws the request: no insert leases for it from now on. Answers the jobs handed
    /// over before that, which the worker now holds and must run or release.
    pub fn withdraw(mut self) -> Vec<LeasedJob> {
        self.jobs.close();
        self.jobs.try_recv().unwrap_or_default()
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
        parked.deliver(vec![job.clone()]).expect("delivered");
        assert_eq!(handoff.jobs().await, vec![job]);
        // The other worker's request is still there, and its worker has nothing yet.
        assert!(tokio::time::timeout(Duration::from_millis(20), other.jobs())
            .await
            .is_err());
        assert!(lot.take(["mail"]).is_some());
    }

    #[test]
    fn a_withdrawn_request_is_never_taken_and_jobs_handed_before_are_kept() {
        let lot = ParkingLot::default();
        let handoff = lot.park(request(&["default"]));
        assert!(handoff.withdraw().is_empty());
        assert!(lot.take(["default"]).is_none(), "withdrawn");
        assert!(lot.is_empty());

        // Taken, then withdrawn before the jobs arrive: they come back to be released.
        let handoff = lot.park(request(&["default"]));
        let parked = lot.take(["default"]).expect("parked");
        assert!(handoff.withdraw().is_empty());
        let job = leased("default");
        assert_eq!(parked.deliver(vec![job.clone()]), Err(vec![job]));

        // Handed over, then withdrawn: the worker keeps them.
        let handoff = lot.park(request(&["default"]));
        let job = leased("default");
        lot.take(["default"])
            .expect("parked")
            .deliver(vec![job.clone()])
            .expect("delivered");
        assert_eq!(handoff.withdraw(), vec![job]);
    }

    #[test]
    fn a_request_put_back_waits_again_unless_withdrawn() {
        let lot = ParkingLot::default();
        let handoff = lot.park(request(&["default"]));
        let parked = lot.take(["default"]).expect("parked");
        lot.put_back(parked);
        let parked = lot.take(["default"]).expect("parked again");
        drop(handoff);
        lot.put_back(parked);
        assert!(lot.is_empty());
    }
}
