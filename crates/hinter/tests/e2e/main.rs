//! End-to-end tests: the real `hinter serve` binary, driven over real HTTP on loopback.
//!
//! Every test has its own temporary directory and server (see [`util`]).

mod shutdown;
mod util;
mod workers;

mod bad_input;
mod batch;
mod crash;
mod external_worker;
mod leases;
mod ordering;
mod queues;
mod unique;
