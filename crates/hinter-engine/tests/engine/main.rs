//! Integration tests of hinter's engine against real stores, every case on both backends:
//! SQLite (a file in a temporary directory) and PostgreSQL (a schema of its own in the
//! database of `HINTER_TEST_DATABASE_URL`, dropped after the test). Each case is written once
//! as an `async fn(Kind)` and instantiated per backend by `common::on_both_backends!`, so the
//! test names show the backend: `worker::sqlite::…`, `worker::postgres::…`. Without
//! `HINTER_TEST_DATABASE_URL` the PostgreSQL cases say so and pass, except under CI=true, where
//! they fail: CI must never skip them.
//!
//! One test binary (faster to build and link than one per file); the modules group the tests:
//! - `worker`: typed handlers, failures, panics, timeouts, cancellation, concurrency,
//!   graceful shutdown, singleton and ordered jobs;
//! - `fallback`: the fallback handler, stop reasons and the cleanup grace of stopped
//!   handlers (cancel, timeout, shutdown);
//! - `cluster`: membership and leader election between store instances on one database
//!   (several SQLite stores on one file, or several PostgreSQL stores on one schema);
//! - `maintenance`: lease rescue, promotion of due jobs, pruning, heartbeats and lost leases;
//! - `reload`: a running worker given a new registry, and handlers' reports (logs, progress,
//!   checkpoints);
//! - `schedules`: the scheduler: overlap, misfire, several schedulers on one store, its loop.
//!
//! Every wait is on a condition with a deadline; no test sleeps to synchronise.

mod cluster;
mod common;
mod events;
mod fallback;
mod maintenance;
mod reload;
mod schedules;
mod worker;
