//! Clocks that disagree: two `serve` processes on one PostgreSQL database, one of them 30 s
//! ahead (the hidden `--clock-offset` stands in for a machine with a wrong clock). Leases and
//! leadership run on the database's clock, so the fast one never takes the leadership from a
//! live leader, and, leading, never rescues a lease the slow one granted before it ends.

use crate::util::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const FLAGS: [&str; 8] = [
    "--leader-ttl",
    "1s",
    "--heartbeat-interval",
    "200ms",
    "--dead-after",
    "2s",
    "--rescue-interval",
    "100ms",
];

/// The log lines of a process in which it says it became the leader.
fn became_leader(proc: &Proc) -> usize {
    proc.log()
        .lines()
        .filter(|line| line.contains("this process is now the leader"))
        .count()
}

fn lost_leadership(proc: &Proc) -> usize {
    proc.log()
        .lines()
        .filter(|line| line.contains("no longer the leader"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_30s_ahead_neither_usurps_the_leader_nor_rescues_live_leases() {
    let Some(db) = TestDb::new("a_clock_30s_ahead_neither_usurps_the_leader") else {
        return;
    };
    let dir = TestDir::new("clock-skew");
    let mut slow = start_serve(&dir, &db, "serve-on-time", &FLAGS).await;
    wait_for(
        Duration::from_secs(30),
        "the on-time serve to lead",
        || async { (became_leader(&slow.proc) == 1).then_some(()) },
    )
    .await;
    let mut fast_flags = FLAGS.to_vec();
    fast_flags.extend(["--clock-offset", "30s"]);
    let fast = start_serve(&dir, &db, "serve-30s-ahead", &fast_flags).await;

    // Several leadership terms (1 s each) pass: the leader keeps renewing, the fast process
    // never sees its lease as run out.
    let watch_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch_until {
        assert_eq!(
            became_leader(&fast.proc),
            0,
            "the fast clock took the leadership"
        );
        assert_eq!(
            lost_leadership(&slow.proc),
            0,
            "the leader lost its leadership"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Leases granted by the on-time process for 20 s.
    let jobs: Vec<Value> = (0..20)
        .map(|i| json!({"job": "skew", "payload": i}))
        .collect();
    slow.api
        .post("/api/v1/jobs/batch", &json!({ "jobs": jobs }))
        .await
        .expect_status(201);
    let leased = slow
        .api
        .lease(json!({"worker_id": "on-time-worker", "max": 20, "lease": "20s"}))
        .await;
    assert_eq!(leased.len(), 20);

    // The fast process leads once the on-time one is gone, and must leave those leases alone
    // until they end: 20 s on the database's clock, not on its own (where they ended already).
    slow.proc.kill();
    wait_for(
        Duration::from_secs(30),
        "the fast serve to lead",
        || async { (became_leader(&fast.proc) == 1).then_some(()) },
    )
    .await;
    let led_at = Instant::now();
    while led_at.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for job in &leased {
        let id = job["id"].as_str().expect("id");
        let now = fast.api.job(id).await;
        assert_eq!(now["state"], "running", "{now}");
        assert_eq!(now["attempt"], 1, "{now}");
        fast.api
            .complete(id, &job["lease_token"], json!(null))
            .await
            .expect_status(200);
    }
}
