//! hinter's engine: runs jobs in-process with typed Rust handlers, and keeps the store
//! healthy (lease rescue, promotion of due jobs, retention).
//!
//! A [`Worker`] runs this loop:
//! 1. the fetcher leases as many jobs as there are free slots (one store call, one group
//!    commit), waking on store events or, as a fallback, a poll tick;
//! 2. each job runs in its own task under its timeout and a cancellation token;
//! 3. outcomes go to the completer, which writes them in batches; failures get their
//!    outcome from [`hinter_core::retry::decide_failure`];
//! 4. the heartbeater extends every running lease and stops jobs whose lease was lost;
//! 5. on shutdown nothing new is leased, running jobs get `stopping_wait_time` to finish,
//!    then are told to stop and get `cancel_grace` to return, and whatever is still running
//!    is aborted and released back to the queue.
//!
//! Handlers are registered per job name ([`Registry::register`]); a fallback
//! ([`Registry::register_fallback`]) runs every other job name, which is how `hinter worker
//! --database … -- COMMAND` runs a command for any job of its queues. A handler told to stop
//! learns why from [`HandlerContext::stop_reason`].
//!
//! [`Maintenance`] runs next to the workers of a server. [`EventFollower`] follows the
//! durable event log from an id.

mod cluster;
mod events;
mod handler;
mod maintenance;
pub mod scheduler;
mod source;
mod worker;

pub use cluster::{ClusterOptions, Coordinator, CoordinatorHandle, Leader, MAINTENANCE_LEADERSHIP};
pub use events::{EventBatch, EventFollower, Recheck};
pub use handler::{HandlerContext, JobError, Registry, StopReason};
pub use maintenance::{Maintenance, MaintenanceHandle, MaintenanceOptions, Retention};
pub use scheduler::{Scheduler, SchedulerHandle, SchedulerOptions};
pub use source::{HttpSource, JobSource, StoreSource};
pub use worker::{default_worker_id, hostname, Worker, WorkerControl, WorkerHandle, WorkerOptions};
