//! Multi-process tests on one PostgreSQL database: the real `hinter serve` and
//! `hinter worker --database …` binaries, each test in a fresh random schema of the database
//! named by `HINTER_TEST_DATABASE_URL` (dropped at the end). Without that variable the
//! PostgreSQL tests explain themselves and pass, except under CI=true, where they fail: CI
//! never skips them.
//!
//! - `clock_skew`: a serve whose clock is 30 s ahead neither takes the leadership from a live
//!   leader nor, leading, rescues leases before they end on the database's clock.
//! - `drain`: one serve and three workers drain 20,000 jobs while a worker is killed
//!   (SIGKILL) midway: nothing lost, only the killed worker's jobs run twice.
//! - `leader`: leader election across processes: a killed leader is replaced within its
//!   lease, never two leaders, the dead drop off the list, and a worker leads (and runs
//!   maintenance) when every serve is gone.
//! - `singleton`: a singleton continuous script job runs on one of two serves, and on the
//!   other once its holder is killed.
//! - `schedules`: three serves fire an every-second schedule exactly once per tick, also
//!   after the one that fired last is killed.
//! - `store_mode`: a store-mode worker runs its command as the HTTP mode does (payload,
//!   variables, result, exit codes, cancel, timeout) and hands jobs back on SIGTERM; with
//!   `--data-dir` it shares a serve's embedded store (no PostgreSQL needed).

#[path = "../support/mod.rs"]
mod support;

mod clock_skew;
mod drain;
mod leader;
mod schedules;
mod singleton;
mod store_mode;
mod util;
