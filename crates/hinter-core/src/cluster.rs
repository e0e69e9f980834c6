//! Cluster coordination: which hinter processes are alive, and which one is the leader
//! that runs maintenance. A separate interface from [`crate::Store`] because it is about
//! processes, not jobs; every backend implements both.

use crate::store::StoreResult;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The leadership whose holder runs maintenance (rescue, promotion, retention).
pub const MAINTENANCE_LEADERSHIP: &str = "maintenance";

/// A hinter process as it last reported itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProcessInfo {
    /// Unique per process start (`host:pid:random`); also its workers' `worker_id`.
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// `serve` or `worker`.
    pub role: String,
    /// Queues its in-process workers lease from (empty: none).
    pub queues: Vec<String>,
    pub concurrency: u32,
    pub started_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    /// The machine and pid namespace it runs in ([`this_machine`]); empty when unknown.
    /// Processes with the same non-empty `machine` see each other's pids.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub machine: String,
}

/// This machine and pid namespace: the kernel's boot id and the inode of this process's pid
/// namespace (Linux), e.g. `3f2c…:4026531836`. Two containers with the same host name differ
/// here. Empty where it cannot be read.
pub fn this_machine() -> String {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|b| b.trim().to_string())
            .unwrap_or_default();
        let namespace = std::fs::metadata("/proc/self/ns/pid")
            .map(|m| m.ino())
            .unwrap_or(0);
        if !boot.is_empty() && namespace != 0 {
            return format!("{boot}:{namespace}");
        }
    }
    String::new()
}

/// Whether a process `pid` runs on this machine (and pid namespace). Where that cannot be
/// told, it is taken to run.
pub fn pid_running(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        true
    }
}

/// A held leadership. `term` grows each time the leadership changes hands, so actions can
/// be told apart by who ordered them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Leadership {
    pub name: String,
    pub holder: String,
    pub term: i64,
    pub expires_at: DateTime<Utc>,
}

#[async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// Records that a process is alive (first call inserts it).
    async fn process_heartbeat(&self, process: ProcessInfo) -> StoreResult<()>;

    /// Processes heard from at or after `alive_since`, oldest first.
    async fn process_list(&self, alive_since: DateTime<Utc>) -> StoreResult<Vec<ProcessInfo>>;

    /// Forgets processes not heard from since `before` (crashed); returns how many.
    async fn process_prune(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    /// Forgets a process that stopped cleanly.
    async fn process_remove(&self, id: &str) -> StoreResult<()>;

    /// Takes the leadership `name` for `holder` until `now + ttl` if it is free, expired, or
    /// already `holder`'s (a renewal keeps the term; a take-over increments it). `None`: another
    /// holder has it.
    async fn leader_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Leadership>>;

    /// Gives the leadership up at once, if `holder` has it, so a successor need not wait for
    /// it to expire.
    async fn leader_release(&self, name: &str, holder: &str) -> StoreResult<()>;

    /// The current leadership record, expired or not.
    async fn leader_get(&self, name: &str) -> StoreResult<Option<Leadership>>;
}

/// A complete backend: the job store and cluster coordination on one database.
pub trait Backend: crate::Store + Cluster {}

impl<T: crate::Store + Cluster> Backend for T {}
