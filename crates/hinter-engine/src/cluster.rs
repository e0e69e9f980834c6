//! Membership and leadership: each process reports itself alive, and one elected leader at a
//! time runs maintenance.
//!
//! Leadership is a lease in the store with a term. The holder renews it every third of its
//! time to live; it considers itself leader only until two thirds of the lease have passed
//! since the renewal it started (measured on its own monotonic clock), so a process that
//! stalls (GC pause, suspended VM, lost database) stops acting before anyone else can take
//! over. Maintenance work is itself guarded by lease tokens, so even a late action by a
//! deposed leader cannot corrupt a job.

use hinter_core::{Clock, Cluster, ProcessInfo};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use hinter_core::cluster::MAINTENANCE_LEADERSHIP;

/// Whether this process may act as leader right now.
#[derive(Debug, Clone)]
pub struct Leader(Arc<Mutex<LeaderState>>);

#[derive(Debug)]
enum LeaderState {
    Always,
    Until(Option<Instant>),
}

impl Leader {
    /// Always leader: a process alone on its store.
    pub fn always() -> Self {
        Leader(Arc::new(Mutex::new(LeaderState::Always)))
    }

    fn elected() -> Self {
        Leader(Arc::new(Mutex::new(LeaderState::Until(None))))
    }

    pub fn is_leader(&self) -> bool {
        match &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            LeaderState::Always => true,
            LeaderState::Until(until) => until.is_some_and(|u| Instant::now() < u),
        }
    }

    fn set_until(&self, until: Option<Instant>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = LeaderState::Until(until);
    }
}

/// Settings of a [`Coordinator`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// How often the process reports itself alive.
    pub heartbeat_interval: Duration,
    /// A process not heard from for this long is gone: unlisted, then forgotten.
    pub dead_after: Duration,
    /// Time to live of the leadership lease; renewed every third of it.
    pub leader_ttl: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(5),
            dead_after: Duration::from_secs(30),
            leader_ttl: Duration::from_secs(15),
        }
    }
}

/// Reports this process alive and campaigns for leadership.
pub struct Coordinator;

/// Stops a [`Coordinator`]: leadership is released and the process unlisted at once.
pub struct CoordinatorHandle {
    leader: Leader,
    cluster: Arc<dyn Cluster>,
    id: String,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Coordinator {
    pub fn start(
        cluster: Arc<dyn Cluster>,
        clock: Arc<dyn Clock>,
        process: ProcessInfo,
        options: ClusterOptions,
    ) -> CoordinatorHandle {
        let leader = Leader::elected();
        let shutdown = CancellationToken::new();
        let id = process.id.clone();
        let machine = process.machine.clone();
        let tasks = vec![
            tokio::spawn(membership(
                cluster.clone(),
                clock.clone(),
                process,
                options.clone(),
                leader.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(campaign(
                cluster.clone(),
                clock,
                id.clone(),
                machine,
                options,
                leader.clone(),
                shutdown.clone(),
            )),
        ];
        CoordinatorHandle {
            leader,
            cluster,
            id,
            shutdown,
            tasks,
        }
    }
}

/// Dropping the handle without [`CoordinatorHandle::shutdown`] stops campaigning and
/// heartbeating at once without releasing anything, like a crash: the leadership lapses
/// when its lease expires and the process drops off the listing.
impl Drop for CoordinatorHandle {
    fn drop(&mut self) {
        self.leader.set_until(None);
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl CoordinatorHandle {
    /// The leadership flag for [`crate::Maintenance`].
    pub fn leader(&self) -> Leader {
        self.leader.clone()
    }

    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        self.leader.set_until(None);
        if let Err(e) = self
            .cluster
            .leader_release(MAINTENANCE_LEADERSHIP, &self.id)
            .await
        {
            tracing::warn!(error = %e, "could not release leadership; it expires by itself");
        }
        if let Err(e) = self.cluster.process_remove(&self.id).await {
            tracing::warn!(error = %e, "could not unlist this process; it drops off by itself");
        }
    }
}

async fn membership(
    cluster: Arc<dyn Cluster>,
    clock: Arc<dyn Clock>,
    mut process: ProcessInfo,
    options: ClusterOptions,
    leader: Leader,
    shutdown: CancellationToken,
) {
    let dead_after =
        chrono::Duration::from_std(options.dead_after).unwrap_or(chrono::Duration::seconds(30));
    loop {
        process.last_heartbeat_at = clock.now();
        if let Err(e) = cluster.process_heartbeat(process.clone()).await {
            tracing::warn!(error = %e, "process heartbeat failed");
        }
        if leader.is_leader() {
            match cluster.process_prune(clock.now() - dead_after).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(gone = n, "forgot processes that stopped heartbeating"),
                Err(e) => tracing::warn!(error = %e, "pruning processes failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(options.heartbeat_interval) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// The holder of the maintenance leadership, if it ran on this machine (same `machine`,
/// another pid) and its process is gone: a crash then a restart need not wait for the
/// dead holder's lease to run out.
async fn gone_holder(
    cluster: &dyn Cluster,
    clock: &dyn Clock,
    id: &str,
    machine: &str,
) -> Option<String> {
    if machine.is_empty() {
        return None;
    }
    let held = cluster
        .leader_get(MAINTENANCE_LEADERSHIP)
        .await
        .ok()
        .flatten()?;
    if held.holder == id {
        return None;
    }
    let processes = cluster
        .process_list(clock.now() - chrono::Duration::days(1))
        .await
        .ok()?;
    let holder = processes.into_iter().find(|p| p.id == held.holder)?;
    let gone = holder.machine == machine
        && holder.pid != std::process::id()
        && !hinter_core::cluster::pid_running(holder.pid);
    gone.then_some(held.holder)
}

#[allow(clippy::too_many_arguments)]
async fn campaign(
    cluster: Arc<dyn Cluster>,
    clock: Arc<dyn Clock>,
    id: String,
    machine: String,
    options: ClusterOptions,
    leader: Leader,
    shutdown: CancellationToken,
) {
    let ttl = options.leader_ttl;
    let mut was_leader = false;
    loop {
        let asked = Instant::now();
        let result = cluster
            .leader_acquire(MAINTENANCE_LEADERSHIP, &id, ttl, clock.now())
            .await;
        let is_leader = match result {
            Ok(Some(lease)) => {
                leader.set_until(Some(asked + ttl * 2 / 3));
                if !was_leader {
                    tracing::info!(term = lease.term, "this process is now the leader");
                }
                true
            }
            Ok(None) => {
                leader.set_until(None);
                if let Some(gone) = gone_holder(&*cluster, &*clock, &id, &machine).await {
                    tracing::info!(
                        holder = %gone,
                        "the leader ran on this machine and its process is gone; taking over"
                    );
                    // Guarded by the holder's id: a live holder that renewed meanwhile keeps it.
                    if cluster
                        .leader_release(MAINTENANCE_LEADERSHIP, &gone)
                        .await
                        .is_ok()
                    {
                        continue;
                    }
                }
                false
            }
            Err(e) => {
                // Cannot confirm: stop acting at once rather than risk two leaders.
                leader.set_until(None);
                tracing::warn!(error = %e, "leadership renewal failed");
                false
            }
        };
        if was_leader && !is_leader {
            tracing::warn!("this process is no longer the leader");
        }
        was_leader = is_leader;
        tokio::select! {
            _ = tokio::time::sleep(ttl / 3) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
