//! End-to-end tests: the real `hinter serve` binary, driven over real HTTP on loopback.
//!
//! Every test has its own temporary directory and server (see [`support`]).

#[path = "../support/mod.rs"]
mod support;

mod shutdown;
mod storage;
mod tokens;
mod workers;

mod bad_input;
mod batch;
mod callbacks;
mod connections;
mod crash;
mod events;
mod external_worker;
mod leases;
mod limits;
mod listing;
mod metrics;
mod older_server;
mod ordering;
mod queues;
mod replies;
mod sse;
mod stats;
mod unique;
