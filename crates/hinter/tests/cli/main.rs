//! End-to-end tests of the client commands (`enqueue`, `jobs`, `queues`, `dead`, `schedules`): the real
//! `hinter` binary run against a real `hinter serve`, with the server's state checked over HTTP.
//!
//! Every test has its own temporary directory and server (see [`harness`] and [`support`]).

#[path = "../support/mod.rs"]
mod support;

mod harness;

mod dead;
mod enqueue;
mod fake;
mod idempotency;
mod jobs;
mod queues;
mod schedules;
mod server_url;
mod tls;
mod wait;
