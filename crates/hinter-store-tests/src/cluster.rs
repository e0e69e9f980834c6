//! Conformance of [`hinter_core::Cluster`]: live processes and leadership.

use crate::support::{base_time, secs};
use hinter_core::{Cluster, ProcessInfo};
use std::sync::Arc;
use std::time::Duration;

fn process(id: &str, at: chrono::DateTime<chrono::Utc>) -> ProcessInfo {
    ProcessInfo {
        id: id.to_string(),
        host: "host-a".into(),
        pid: 4711,
        role: "worker".into(),
        queues: vec!["default".into(), "mail".into()],
        concurrency: 8,
        started_at: at,
        last_heartbeat_at: at,
        machine: "boot-1:4026531836".into(),
    }
}

/// A process is listed with every field after its heartbeat; a later heartbeat updates it.
pub async fn process_heartbeat_and_list(cluster: Arc<dyn Cluster>) {
    let t0 = base_time();
    let p = process("p1", t0);
    cluster
        .process_heartbeat(p.clone())
        .await
        .expect("heartbeat");
    assert_eq!(
        cluster.process_list(t0).await.expect("list"),
        vec![p.clone()]
    );
    let later = ProcessInfo {
        last_heartbeat_at: t0 + secs(5),
        concurrency: 4,
        ..p.clone()
    };
    cluster
        .process_heartbeat(later.clone())
        .await
        .expect("heartbeat");
    assert_eq!(cluster.process_list(t0).await.expect("list"), vec![later]);
}

/// A process silent since before `alive_since` is not listed, and pruning forgets it;
/// a clean stop removes a process at once.
pub async fn silent_processes_drop_off(cluster: Arc<dyn Cluster>) {
    let t0 = base_time();
    cluster
        .process_heartbeat(process("old", t0))
        .await
        .expect("heartbeat");
    cluster
        .process_heartbeat(process("new", t0 + secs(30)))
        .await
        .expect("heartbeat");
    cluster
        .process_heartbeat(process("leaving", t0 + secs(30)))
        .await
        .expect("heartbeat");
    let ids = |list: Vec<ProcessInfo>| list.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(
        ids(cluster.process_list(t0 + secs(10)).await.expect("list")),
        vec!["leaving".to_string(), "new".to_string()],
        "listed by start time, then id"
    );
    assert_eq!(
        cluster.process_prune(t0 + secs(10)).await.expect("prune"),
        1
    );
    cluster.process_remove("leaving").await.expect("remove");
    assert_eq!(
        ids(cluster.process_list(t0).await.expect("list")),
        vec!["new".to_string()]
    );
}

/// One holder at a time: others are refused while the lease runs; renewal keeps the term;
/// a take-over after expiry gets a higher term and the old holder can no longer renew.
pub async fn leadership_is_exclusive_and_fenced(cluster: Arc<dyn Cluster>) {
    let t0 = base_time();
    let ttl = Duration::from_secs(15);
    let a = cluster
        .leader_acquire("maintenance", "a", ttl, t0)
        .await
        .expect("acquire")
        .expect("a free leadership is granted");
    assert_eq!((a.holder.as_str(), a.expires_at), ("a", t0 + secs(15)));
    assert_eq!(
        cluster
            .leader_acquire("maintenance", "b", ttl, t0 + secs(5))
            .await
            .expect("acquire"),
        None,
        "b must not lead while a's lease runs"
    );
    let renewed = cluster
        .leader_acquire("maintenance", "a", ttl, t0 + secs(10))
        .await
        .expect("renew")
        .expect("a renews");
    assert_eq!(renewed.term, a.term, "a renewal keeps the term");
    assert_eq!(renewed.expires_at, t0 + secs(25));
    // a stops renewing; after expiry b takes over with a new term.
    assert_eq!(
        cluster
            .leader_acquire("maintenance", "b", ttl, t0 + secs(24))
            .await
            .expect("acquire"),
        None
    );
    let b = cluster
        .leader_acquire("maintenance", "b", ttl, t0 + secs(26))
        .await
        .expect("acquire")
        .expect("b takes over an expired leadership");
    assert!(b.term > a.term, "a take-over increments the term");
    assert_eq!(
        cluster
            .leader_acquire("maintenance", "a", ttl, t0 + secs(27))
            .await
            .expect("acquire"),
        None,
        "the old leader cannot renew once replaced"
    );
    let current = cluster
        .leader_get("maintenance")
        .await
        .expect("get")
        .expect("a record");
    assert_eq!((current.holder.as_str(), current.term), ("b", b.term));
    // Other names are independent.
    assert!(cluster
        .leader_acquire("other", "a", ttl, t0 + secs(27))
        .await
        .expect("acquire")
        .is_some());
}

/// Releasing hands the leadership over at once, with a new term.
pub async fn leadership_release_hands_over(cluster: Arc<dyn Cluster>) {
    let t0 = base_time();
    let ttl = Duration::from_secs(60);
    let a = cluster
        .leader_acquire("maintenance", "a", ttl, t0)
        .await
        .expect("acquire")
        .expect("granted");
    cluster
        .leader_release("maintenance", "b")
        .await
        .expect("release by a non-holder is a no-op");
    assert_eq!(
        cluster
            .leader_acquire("maintenance", "b", ttl, t0 + secs(1))
            .await
            .expect("acquire"),
        None
    );
    cluster
        .leader_release("maintenance", "a")
        .await
        .expect("release");
    let b = cluster
        .leader_acquire("maintenance", "b", ttl, t0 + secs(1))
        .await
        .expect("acquire")
        .expect("released leadership is free at once");
    assert!(b.term > a.term);
}

/// Concurrent candidates: exactly one wins.
pub async fn leadership_one_winner_under_contention(cluster: Arc<dyn Cluster>) {
    let t0 = base_time();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let cluster = cluster.clone();
        tasks.push(tokio::spawn(async move {
            cluster
                .leader_acquire("maintenance", &format!("c{i}"), Duration::from_secs(30), t0)
                .await
                .expect("acquire")
        }));
    }
    let mut winners = 0;
    for task in tasks {
        if task.await.expect("task").is_some() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one candidate leads");
}
