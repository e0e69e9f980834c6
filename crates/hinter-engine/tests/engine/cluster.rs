//! Membership and leader election between "processes": separate store instances (separate
//! connections, and writer threads or pools) on one database.

use crate::common::{on_both_backends, open_store, Data, Kind, SOON};
use hinter_core::{Backend, ProcessInfo, SystemClock};
use hinter_engine::{ClusterOptions, Coordinator, CoordinatorHandle};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Scheduling delay allowed on a loaded machine on top of the protocol's own bounds.
const SLACK: Duration = Duration::from_millis(1000);

fn fast() -> ClusterOptions {
    ClusterOptions {
        heartbeat_interval: Duration::from_millis(100),
        dead_after: Duration::from_millis(600),
        leader_ttl: Duration::from_millis(600),
    }
}

/// A "process": a store instance of its own on `data`, and its coordinator.
async fn process(data: &Data, id: &str) -> (Arc<dyn Backend>, CoordinatorHandle) {
    let store = data.open().await;
    let now = chrono::Utc::now();
    let info = ProcessInfo {
        id: id.into(),
        host: "test-host".into(),
        pid: 1,
        role: "worker".into(),
        queues: vec!["default".into()],
        concurrency: 4,
        started_at: now,
        last_heartbeat_at: now,
        machine: String::new(),
    };
    let handle = Coordinator::start(store.clone(), Arc::new(SystemClock), info, fast());
    (store, handle)
}

/// Samples every candidate's leader flag until `until`; fails if two lead at once.
async fn watch_leaders(handles: &[&CoordinatorHandle], until: Instant) -> Vec<usize> {
    let mut seen = Vec::new();
    while Instant::now() < until {
        let leading: Vec<usize> = handles
            .iter()
            .enumerate()
            .filter(|(_, h)| h.leader().is_leader())
            .map(|(i, _)| i)
            .collect();
        assert!(leading.len() <= 1, "two leaders at once: {leading:?}");
        if let Some(&i) = leading.first() {
            if seen.last() != Some(&i) {
                seen.push(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    seen
}

async fn one_leader_and_a_crashed_leader_is_replaced_within_its_lease(kind: Kind) {
    let data = Data::fresh(kind);
    let (_s1, a) = process(&data, "a").await;
    let (_s2, b) = process(&data, "b").await;
    let (store3, c) = process(&data, "c").await;

    // Exactly one of the three leads, and it stays the same while all are healthy.
    let first = watch_leaders(&[&a, &b, &c], Instant::now() + Duration::from_millis(1500)).await;
    assert_eq!(first.len(), 1, "one stable leader, saw {first:?}");
    let handles = [a, b, c];
    let leader_index = first[0];
    let leader_id = ["a", "b", "c"][leader_index];
    let record = store3
        .leader_get(hinter_core::cluster::MAINTENANCE_LEADERSHIP)
        .await
        .expect("read")
        .expect("a leadership record");
    assert_eq!(record.holder, leader_id);

    // The leader crashes (no release): another takes over once the lease runs out, and
    // never while the old one could still act.
    let mut handles: Vec<Option<CoordinatorHandle>> = handles.into_iter().map(Some).collect();
    let crashed_at = Instant::now();
    drop(handles[leader_index].take());
    let rest: Vec<&CoordinatorHandle> = handles.iter().flatten().collect();
    let deadline = crashed_at + SOON;
    loop {
        if rest.iter().any(|h| h.leader().is_leader()) {
            break;
        }
        assert!(Instant::now() < deadline, "nobody took over");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let after = crashed_at.elapsed();
    assert!(
        after
            <= Duration::from_millis(600) + Duration::from_millis(200) + Duration::from_millis(400),
        "take-over took {after:?}, more than a lease plus a renewal period"
    );
    let record2 = store3
        .leader_get(hinter_core::cluster::MAINTENANCE_LEADERSHIP)
        .await
        .expect("read")
        .expect("a record");
    assert!(record2.term > record.term, "a take-over starts a new term");
    assert_ne!(record2.holder, leader_id);
    watch_leaders(&rest, Instant::now() + Duration::from_millis(500)).await;

    // The crashed process drops off the listing; the others stay.
    let listed = |store: Arc<dyn Backend>| async move {
        let alive_since = chrono::Utc::now() - chrono::Duration::milliseconds(600);
        let mut ids: Vec<String> = store
            .process_list(alive_since)
            .await
            .expect("list")
            .into_iter()
            .map(|p| p.id)
            .collect();
        ids.sort();
        ids
    };
    let mut expected: Vec<String> = ["a", "b", "c"]
        .iter()
        .filter(|id| **id != leader_id)
        .map(|s| s.to_string())
        .collect();
    expected.sort();
    let deadline = Instant::now() + SOON;
    while listed(store3.clone()).await != expected {
        assert!(
            Instant::now() < deadline,
            "the crashed process is still listed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A clean stop releases at once: the last one takes over without waiting for expiry.
    let mut survivors: Vec<CoordinatorHandle> = handles.into_iter().flatten().collect();
    let current = survivors
        .iter()
        .position(|h| h.leader().is_leader())
        .expect("a leader");
    let stopping = survivors.remove(current);
    let stopped_at = Instant::now();
    stopping.shutdown().await;
    let last = survivors.pop().expect("one left");
    let deadline = Instant::now() + SOON;
    while !last.leader().is_leader() {
        assert!(Instant::now() < deadline, "no take-over after a clean stop");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        stopped_at.elapsed() < Duration::from_millis(200) + SLACK,
        "a released leadership is taken over within one renewal period"
    );
    last.shutdown().await;
}

/// A process that restarts after a crash takes over at once from a leader that ran on its
/// machine and is gone (its pid no longer runs), instead of waiting out the dead leader's
/// lease (here a minute).
async fn a_restarted_process_takes_over_from_its_dead_predecessor_at_once(kind: Kind) {
    use hinter_core::cluster::{this_machine, MAINTENANCE_LEADERSHIP};
    let machine = this_machine();
    if machine.is_empty() {
        eprintln!("note: no boot id or pid namespace here; nothing to test");
        return;
    }
    let (_data, store) = open_store(kind).await;
    // A pid that ran a moment ago and is gone now.
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn `true`");
    let dead_pid = child.id();
    child.wait().expect("wait for `true`");
    let now = chrono::Utc::now();
    let old = ProcessInfo {
        id: "old".into(),
        host: "test-host".into(),
        pid: dead_pid,
        role: "serve".into(),
        queues: vec![],
        concurrency: 0,
        started_at: now,
        last_heartbeat_at: now,
        machine: machine.clone(),
    };
    store.process_heartbeat(old).await.expect("heartbeat");
    let minute = Duration::from_secs(60);
    assert!(store
        .leader_acquire(MAINTENANCE_LEADERSHIP, "old", minute, now)
        .await
        .expect("acquire")
        .is_some());
    let info = ProcessInfo {
        id: "new".into(),
        host: "test-host".into(),
        pid: std::process::id(),
        role: "serve".into(),
        queues: vec![],
        concurrency: 0,
        started_at: now,
        last_heartbeat_at: now,
        machine,
    };
    let handle = Coordinator::start(
        store.clone(),
        Arc::new(SystemClock),
        info,
        ClusterOptions {
            leader_ttl: minute,
            ..fast()
        },
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !handle.leader().is_leader() {
        assert!(
            Instant::now() < deadline,
            "the restarted process did not take over from its dead predecessor"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let held = store
        .leader_get(MAINTENANCE_LEADERSHIP)
        .await
        .expect("leader_get")
        .expect("a leader");
    assert_eq!(held.holder, "new");
    handle.shutdown().await;
}

on_both_backends!(
    one_leader_and_a_crashed_leader_is_replaced_within_its_lease,
    a_restarted_process_takes_over_from_its_dead_predecessor_at_once,
);
