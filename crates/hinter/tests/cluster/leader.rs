//! Leader election across processes: two `serve` and one `worker --database …` on one
//! database. Exactly one leader is listed; when it is killed (SIGKILL) another process takes
//! over within the leadership lease, never two at once, and the dead one drops off the list.
//! When every `serve` is gone, the worker leads and runs maintenance (it rescues a job whose
//! lease expired).

use crate::util::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Short cluster timings (hidden flags of `serve` and `worker` in store mode).
const LEADER_TTL: Duration = Duration::from_secs(1);
const CLUSTER_FLAGS: [&str; 6] = [
    "--leader-ttl",
    "1s",
    "--heartbeat-interval",
    "200ms",
    "--dead-after",
    "2s",
];
const DEAD_AFTER: Duration = Duration::from_secs(2);
/// Scheduling delays on a loaded machine, on top of what the protocol allows.
const SLACK: Duration = Duration::from_secs(2);

fn cluster_flags(extra: &[&'static str]) -> Vec<&'static str> {
    let mut flags = CLUSTER_FLAGS.to_vec();
    flags.extend_from_slice(extra);
    flags
}

/// The listing, checked: never more than one leader.
async fn listing(api: &Api) -> Vec<Value> {
    let workers = api.workers().await;
    let leaders = leaders(&workers);
    assert!(
        leaders.len() <= 1,
        "two leaders listed at once: {workers:?}"
    );
    workers
}

fn leader_id(workers: &[Value]) -> Option<String> {
    leaders(workers)
        .first()
        .map(|leader| str_of(leader, "id").to_string())
}

fn id_of_pid(workers: &[Value], pid: u32) -> Option<String> {
    workers
        .iter()
        .find(|w| w["pid"] == pid)
        .map(|w| str_of(w, "id").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_its_lease_and_a_worker_leads_when_serves_are_gone() {
    let Some(db) = TestDb::new("a_killed_leader_is_replaced_within_its_lease") else {
        return;
    };
    let dir = TestDir::new("leader");
    let flags = cluster_flags(&[]);
    let worker_flags = cluster_flags(&["--queue", "work", "--concurrency", "3"]);

    // Serve A first, so it leads; then serve B and the worker W.
    let mut a = start_serve(&dir, &db, "serve-a", &flags).await;
    wait_for(Duration::from_secs(30), "serve A to lead", || async {
        let workers = listing(&a.api).await;
        (leader_id(&workers) == id_of_pid(&workers, a.proc.pid())).then_some(())
    })
    .await;
    let mut b = start_serve(&dir, &db, "serve-b", &flags).await;
    let mut w = start_worker(&dir, &db, "worker", &worker_flags, &["/bin/true"]);
    let pids = [a.proc.pid(), b.proc.pid(), w.pid()];
    let workers = wait_for(
        Duration::from_secs(60),
        "both serves and the worker to be listed, with one leader",
        || async {
            let workers = listing(&a.api).await;
            let all = pids.iter().all(|pid| id_of_pid(&workers, *pid).is_some());
            (all && leader_id(&workers).is_some()).then_some(workers)
        },
    )
    .await;
    assert_eq!(workers.len(), 3, "{workers:?}");
    let worker_entry = workers
        .iter()
        .find(|p| p["pid"] == w.pid())
        .expect("the worker is listed");
    assert_eq!(worker_entry["role"], "worker");
    assert_eq!(worker_entry["queues"], json!(["work"]));
    assert_eq!(worker_entry["concurrency"], 3);
    for serve in [&a, &b] {
        let entry = workers
            .iter()
            .find(|p| p["pid"] == serve.proc.pid())
            .expect("the serve is listed");
        assert_eq!(entry["role"], "serve");
    }
    // Both serves see the same single leader.
    let leader = leader_id(&workers).expect("a leader");
    assert_eq!(leader_id(&listing(&b.api).await), Some(leader.clone()));

    // Kill the leader (whichever it is now); watch from a survivor.
    let leader_pid = workers
        .iter()
        .find(|p| p["id"] == leader.as_str())
        .and_then(|p| p["pid"].as_u64())
        .expect("the leader's pid");
    let observer = if u64::from(a.proc.pid()) == leader_pid {
        a.proc.kill();
        b.api.clone()
    } else if u64::from(b.proc.pid()) == leader_pid {
        b.proc.kill();
        a.api.clone()
    } else {
        w.kill();
        a.api.clone()
    };
    let killed = Instant::now();
    let (successor, took) = wait_for(
        LEADER_TTL * 4 + SLACK * 2,
        "another process to take over",
        || async {
            let workers = listing(&observer).await;
            leader_id(&workers)
                .filter(|id| *id != leader)
                .map(|id| (id, killed.elapsed()))
        },
    )
    .await;
    // The old lease runs out at most LEADER_TTL after its last renewal; the others ask
    // every third of it.
    let bound = LEADER_TTL + LEADER_TTL / 3 + SLACK;
    assert!(
        took <= bound,
        "the successor {successor} took over {took:?} after the kill; at most {bound:?} expected"
    );
    let gone = wait_for(
        DEAD_AFTER * 2 + SLACK * 2,
        "the killed leader to drop off the list",
        || async {
            let workers = listing(&observer).await;
            (!workers.iter().any(|p| p["id"] == leader.as_str())).then(|| killed.elapsed())
        },
    )
    .await;
    // Still exactly one leader, and the same.
    let workers = listing(&observer).await;
    assert_eq!(leader_id(&workers), Some(successor.clone()));
    assert_eq!(workers.len(), 2, "{workers:?}");
    eprintln!(
        "leader {leader} killed: {successor} took over after {took:.2?} (lease {LEADER_TTL:?}); \
         the dead one dropped off the list after {gone:.2?} (dead after {DEAD_AFTER:?})"
    );

    // Every serve goes: the worker must lead and keep maintenance going. A job leased by a
    // client that vanishes shows it: only the leader rescues it.
    if w.is_killed() {
        w = start_worker(&dir, &db, "worker-2", &worker_flags, &["/bin/true"]);
        let pid = w.pid();
        wait_for(
            Duration::from_secs(60),
            "the new worker to be listed",
            || async { id_of_pid(&listing(&observer).await, pid) },
        )
        .await;
    }
    let orphan = observer
        .post(
            "/api/v1/jobs",
            &json!({"job": "orphan", "queue": "orphans", "max_attempts": 3}),
        )
        .await
        .expect_status(201);
    let orphan_id = str_of(&orphan.body["job"], "id").to_string();
    let leased = observer
        .post(
            "/api/v1/leases",
            &json!({"queues": ["orphans"], "worker_id": "vanishing-client", "max": 1, "lease": "5s"}),
        )
        .await
        .expect_status(200);
    assert_eq!(
        leased.body["jobs"][0]["id"],
        orphan_id.as_str(),
        "{leased:?}"
    );
    a.proc.kill();
    b.proc.kill();
    let alone = Instant::now();
    let rescue = wait_for(
        Duration::from_secs(30),
        "the worker to lead and rescue the orphaned job",
        || {
            let lines = w.log_lines();
            async move {
                let led = lines.iter().any(|l| {
                    l["fields"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("this process is now the leader"))
                });
                let rescued = lines.iter().any(|l| {
                    l["fields"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("rescued jobs with expired leases"))
                });
                (led && rescued).then(|| alone.elapsed())
            }
        },
    )
    .await;
    w.assert_running();

    // A serve started now finds the worker leading and the job back in the queue.
    let c = start_serve(&dir, &db, "serve-c", &flags).await;
    let workers = listing(&c.api).await;
    assert_eq!(
        leader_id(&workers),
        id_of_pid(&workers, w.pid()),
        "the worker leads: {workers:?}"
    );
    let job = c
        .api
        .get(&format!("/api/v1/jobs/{orphan_id}"))
        .await
        .expect_status(200)
        .body;
    assert_eq!(job["state"], "queued", "{job}");
    assert_eq!(job["attempt"], 1, "{job}");
    assert!(
        job["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("lease expired")),
        "{job}"
    );
    eprintln!("with every serve gone, the worker led and rescued a job after {rescue:.2?}");
}
