//! Integration tests of hinter's engine against a real SQLite store in a temporary directory.
//!
//! One test binary (faster to build and link than one per file); the modules group the tests:
//! - `worker`: typed handlers, failures, panics, timeouts, cancellation, concurrency,
//!   graceful shutdown, singleton and ordered jobs;
//! - `fallback`: the fallback handler, stop reasons and the cleanup grace of stopped
//!   handlers (cancel, timeout, shutdown);
//! - `cluster`: membership and leader election between store instances on one file;
//! - `maintenance`: lease rescue, promotion of due jobs, pruning, heartbeats and lost leases.
//!
//! Every wait is on a condition with a deadline; no test sleeps to synchronise.

mod cluster;
mod common;
mod fallback;
mod maintenance;
mod worker;
