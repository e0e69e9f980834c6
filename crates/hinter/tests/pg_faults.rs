//! PostgreSQL faults, with the real `hinter serve --database …`:
//!
//! - an unreachable database at start is a clear error exit, not a panic;
//! - PostgreSQL restarting mid-run (stopped and started again while HTTP enqueuers and an
//!   HTTP worker loop run): `/readyz` says not ready during the outage and ready again after,
//!   the server never exits, every job acknowledged with a 2xx ends `succeeded`, and none is
//!   left `running`.
//!
//! The restart test needs `HINTER_TEST_DATABASE_URL` naming a database of a PostgreSQL
//! cluster on this machine that `pg_ctlcluster` controls (it restarts that cluster: run it as
//! root, with nothing else using the cluster). Without the variable it explains itself and
//! passes, except under CI=true, where it fails: CI must never skip it.

#[path = "support/mod.rs"]
mod support;

use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::pg::{connect, database_url, TestDb, URL_VAR};
use support::{free_port, hinter_command, ChildGuard, POLL};

/// Lease of the test's worker: short, so jobs whose completion was lost come back soon.
const LEASE: &str = "2s";
const QUEUE: &str = "faults";
/// Jobs leased before the outage by a worker that then goes silent: only its lease expiry
/// and the rescue after the restart bring them back. The test's workers take this queue
/// once the database is back.
const HELD_QUEUE: &str = "faults-held";
/// Their lease: long enough to still run when PostgreSQL stops.
const HELD_LEASE: &str = "5s";

/// Skips (with a note) or, under CI, fails.
fn cannot_run(why: &str) {
    support::pg::cannot_run(RESTART_TEST, why);
}

/// What [`cannot_run`] calls the restart test.
const RESTART_TEST: &str = "the PostgreSQL restart test";

#[tokio::test]
async fn an_unreachable_database_at_start_is_a_clear_error() {
    let port = free_port();
    let url = "postgres://postgres:s3cretpw@127.0.0.1:1/test";
    let started = Instant::now();
    let mut command = tokio::process::Command::from({
        let mut c = hinter_command();
        c.args(["serve", "--database", url, "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null());
        c
    });
    command.kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("hinter serve exits when the database is unreachable")
        .expect("running hinter serve");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "exit status {}", output.status);
    assert_eq!(output.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains("127.0.0.1:1"),
        "the message names the host: {stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("connection refused"),
        "the message says why: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "a panic: {stderr}");
    assert!(!stderr.contains("s3cretpw"), "the password shows: {stderr}");
    assert!(
        took < Duration::from_secs(20),
        "took {took:?} to give up on a refused connection"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens"
    );
}

/// A local PostgreSQL cluster, as `pg_ctlcluster` names it.
#[derive(Debug, Clone)]
struct Cluster {
    version: String,
    name: String,
}

impl Cluster {
    /// The cluster serving `url`, when it runs on this machine under `pg_ctlcluster`.
    fn find(url: &str) -> Result<Cluster, String> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("{URL_VAR} is not a valid URL: {e}"))?;
        let local = config.get_hosts().iter().all(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => {
                matches!(name.as_str(), "127.0.0.1" | "localhost" | "::1")
            }
            tokio_postgres::config::Host::Unix(_) => true,
        });
        if !local {
            return Err(format!("{URL_VAR} names a database on another machine"));
        }
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let out = Command::new("pg_lsclusters")
            .arg("--no-header")
            .output()
            .map_err(|e| format!("pg_lsclusters: {e} (is PostgreSQL installed here?)"))?;
        let listing = String::from_utf8_lossy(&out.stdout);
        listing
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cols| cols.len() >= 4 && cols[2] == port.to_string())
            .map(|cols| Cluster {
                version: cols[0].to_string(),
                name: cols[1].to_string(),
            })
            .ok_or_else(|| format!("no cluster of pg_lsclusters listens on port {port}"))
    }

    fn ctl(&self, action: &str) -> Result<(), String> {
        let out = Command::new("pg_ctlcluster")
            .args([
                "--skip-systemctl-redirect",
                &self.version,
                &self.name,
                action,
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("pg_ctlcluster {action}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctlcluster {} {} {action}: {}\n{}{}",
                self.version,
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

/// A stopped cluster, started again when dropped whatever happens to the test: other test
/// binaries (and other people) use it.
struct Outage {
    cluster: Cluster,
    stopped: bool,
}

impl Outage {
    fn begin(cluster: &Cluster) -> Outage {
        // Marked stopped first: if stopping fails half-way, the drop starts it again.
        let outage = Outage {
            cluster: cluster.clone(),
            stopped: true,
        };
        if let Err(e) = cluster.ctl("stop") {
            panic!("cannot stop PostgreSQL: {e}");
        }
        outage
    }

    fn end(&mut self) {
        if self.stopped {
            self.cluster
                .ctl("start")
                .unwrap_or_else(|e| panic!("cannot start PostgreSQL again: {e}"));
            self.stopped = false;
        }
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if self.stopped {
            self.stopped = false;
            if let Err(e) = self.cluster.ctl("start") {
                eprintln!("PostgreSQL could not be started again: {e}");
            }
        }
    }
}

/// Every job of the schema with its state and attempt, read straight from the database.
async fn job_states(url: &str, schema: &str) -> HashMap<String, (String, i64)> {
    let client = connect(url).await.expect("connect to read the jobs");
    client
        .query(
            &format!("SELECT id::text, state, attempt::int8 FROM \"{schema}\".jobs"),
            &[],
        )
        .await
        .expect("read the jobs")
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect()
}

/// `hinter serve` on a fresh port; killed when dropped, its log printed if the test fails.
struct Server {
    base: String,
    proc: ChildGuard,
}

impl Server {
    fn start(url: &str, schema: &str, dir: &Path) -> Server {
        let port = free_port();
        let log = dir.join("serve.stderr.log");
        let mut command = hinter_command();
        command
            .args(["serve", "--database", url, "--schema", schema])
            .args(["--rescue-interval", "200ms", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the server log"));
        Server {
            base: format!("http://127.0.0.1:{port}"),
            proc: ChildGuard::start("hinter serve", &mut command, log),
        }
    }

    fn log(&self) -> String {
        self.proc.log()
    }

    /// Panics if the server exited.
    fn assert_alive(&mut self) {
        if let Some(status) = self.proc.try_wait() {
            panic!("hinter serve exited ({status}); log:\n{}", self.log());
        }
    }
}

/// When a job was acknowledged, relative to the outage.
const BEFORE: u8 = 0;
const DURING: u8 = 1;
const AFTER: u8 = 2;

/// What the test's clients saw.
#[derive(Default)]
struct Seen {
    /// Jobs acknowledged with a 2xx, by phase.
    acked: [Vec<String>; 3],
    /// Enqueue attempts answered otherwise (or not at all), by phase.
    refused: [usize; 3],
    /// `/readyz` answers: not ready during the outage, ready after it.
    not_ready: usize,
    ready_after: usize,
    completions: usize,
}

struct Shared {
    base: String,
    http: reqwest::Client,
    phase: AtomicU8,
    stop_enqueuing: AtomicBool,
    stop_working: AtomicBool,
    seen: Mutex<Seen>,
    /// Total acknowledged, for cheap polling.
    acked: AtomicUsize,
}

impl Shared {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn phase(&self) -> usize {
        usize::from(self.phase.load(Ordering::SeqCst))
    }
}

/// Enqueues one job; its id if the server acknowledged it with a 2xx.
async fn enqueue(shared: &Shared, queue: &str, payload: Value) -> Option<String> {
    let answer = shared
        .http
        .post(format!("{}/api/v1/jobs", shared.base))
        .json(&json!({
            "job": "noop",
            "queue": queue,
            "payload": payload,
            "max_attempts": 1000,
        }))
        .send()
        .await;
    match answer {
        Ok(resp) if resp.status().is_success() => resp
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v["job"]["id"].as_str().map(str::to_string)),
        _ => None,
    }
}

/// Leases up to `max` jobs of `queues`; `None` when the server refused.
async fn lease(
    shared: &Shared,
    worker_id: &str,
    queues: &[&str],
    max: u32,
    lease: &str,
) -> Option<Vec<(String, i64)>> {
    let answer = shared
        .http
        .post(format!("{}/api/v1/leases", shared.base))
        .json(&json!({
            "worker_id": worker_id,
            "queues": queues,
            "max": max,
            "lease": lease,
            "wait": "500ms",
        }))
        .send()
        .await;
    let body = match answer {
        Ok(resp) if resp.status().is_success() => resp.json::<Value>().await.ok()?,
        _ => return None,
    };
    let jobs = body["jobs"].as_array()?;
    Some(
        jobs.iter()
            .filter_map(|j| Some((j["id"].as_str()?.to_string(), j["lease_token"].as_i64()?)))
            .collect(),
    )
}

/// Completes a leased job; true on a 2xx.
async fn complete(shared: &Shared, id: &str, token: i64) -> bool {
    let done = shared
        .http
        .post(format!("{}/api/v1/jobs/{id}/complete", shared.base))
        .json(&json!({"lease_token": token}))
        .send()
        .await;
    matches!(done, Ok(resp) if resp.status().is_success())
}

/// Posts jobs one after the other until told to stop; a failed attempt is retried as a new
/// job (as a client that got no acknowledgement would).
async fn enqueuer(shared: Arc<Shared>, n: usize) {
    let mut i = 0u64;
    while !shared.stop_enqueuing.load(Ordering::SeqCst) {
        i += 1;
        let phase = shared.phase();
        match enqueue(&shared, QUEUE, json!({"enqueuer": n, "i": i})).await {
            Some(id) => {
                // Counted in the latest phase the request overlapped.
                let phase = phase.max(shared.phase());
                shared.seen().acked[phase].push(id);
                shared.acked.fetch_add(1, Ordering::SeqCst);
            }
            None => {
                shared.seen().refused[phase] += 1;
                // A client's pause before trying again, not a synchronization.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Leases and completes jobs over HTTP until told to stop; errors are retried after a pause.
async fn worker(shared: Arc<Shared>, n: usize) {
    let worker_id = format!("faults-worker-{n}");
    while !shared.stop_working.load(Ordering::SeqCst) {
        let queues: &[&str] = if shared.phase.load(Ordering::SeqCst) == AFTER {
            &[QUEUE, HELD_QUEUE]
        } else {
            &[QUEUE]
        };
        let Some(jobs) = lease(&shared, &worker_id, queues, 20, LEASE).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        for (id, token) in jobs {
            // A lost completion leaves the job running until its lease expires and it is
            // rescued; then it is leased again.
            if complete(&shared, &id, token).await {
                shared.seen().completions += 1;
            }
        }
    }
}

/// Polls `/readyz` and counts not-ready answers during the outage and ready ones after it.
async fn readiness(shared: Arc<Shared>) {
    while !shared.stop_working.load(Ordering::SeqCst) {
        let phase = shared.phase.load(Ordering::SeqCst);
        let status = shared
            .http
            .get(format!("{}/readyz", shared.base))
            .send()
            .await
            .map(|r| r.status().as_u16());
        match (phase, status) {
            (DURING, Ok(503)) => shared.seen().not_ready += 1,
            (AFTER, Ok(200)) => shared.seen().ready_after += 1,
            _ => {}
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `check` until it holds; panics naming `what` after `timeout`.
async fn wait_until(server: &mut Server, timeout: Duration, what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        server.assert_alive();
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_mid_run_loses_no_acknowledged_job() {
    let Some(url) = database_url(RESTART_TEST) else {
        return;
    };
    let cluster = match Cluster::find(&url) {
        Ok(cluster) => cluster,
        Err(why) => {
            cannot_run(&why);
            return;
        }
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let schema = TestDb::fresh(&url, "hinter_faults_");
    let mut server = Server::start(&url, &schema.schema, dir.path());
    let shared = Arc::new(Shared {
        base: server.base.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("an HTTP client"),
        phase: AtomicU8::new(BEFORE),
        stop_enqueuing: AtomicBool::new(false),
        stop_working: AtomicBool::new(false),
        seen: Mutex::new(Seen::default()),
        acked: AtomicUsize::new(0),
    });
    let ready = |shared: Arc<Shared>| async move {
        matches!(
            shared.http.get(format!("{}/readyz", shared.base)).send().await,
            Ok(r) if r.status() == 200
        )
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready(shared.clone()).await {
        server.assert_alive();
        assert!(Instant::now() < deadline, "hinter serve never became ready");
        tokio::time::sleep(POLL).await;
    }

    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..2 {
        tasks.spawn(enqueuer(shared.clone(), n));
        tasks.spawn(worker(shared.clone(), n));
    }
    tasks.spawn(readiness(shared.clone()));

    // Before: traffic flows.
    let acked = |at_least: usize| {
        let shared = shared.clone();
        move || shared.acked.load(Ordering::SeqCst) >= at_least
    };
    wait_until(
        &mut server,
        Duration::from_secs(60),
        "200 jobs acknowledged",
        acked(200),
    )
    .await;

    // A worker leases jobs and goes silent: they are running when PostgreSQL stops.
    let mut held = Vec::new();
    for i in 0..10 {
        let id = enqueue(&shared, HELD_QUEUE, json!({"held": i}))
            .await
            .expect("enqueue a held job");
        shared.seen().acked[usize::from(BEFORE)].push(id.clone());
        held.push(id);
    }
    let mut held_leases = Vec::new();
    while held_leases.len() < held.len() {
        let got = lease(&shared, "faults-holder", &[HELD_QUEUE], 10, HELD_LEASE)
            .await
            .expect("lease the held jobs");
        held_leases.extend(got);
    }

    // The outage: stopped, then started again once the server has noticed (and clients have
    // been refused) — a restart whose down time the test can observe.
    shared.phase.store(DURING, Ordering::SeqCst);
    let down_at = Instant::now();
    let mut outage = tokio::task::spawn_blocking({
        let cluster = cluster.clone();
        move || Outage::begin(&cluster)
    })
    .await
    .expect("stopping PostgreSQL");
    let noticed = {
        let shared = shared.clone();
        move || {
            let seen = shared.seen();
            seen.not_ready >= 2 && seen.refused[usize::from(DURING)] >= 2
        }
    };
    let outage_seen = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if noticed() {
                break true;
            }
            if Instant::now() >= deadline || server.proc.try_wait().is_some() {
                break false;
            }
            tokio::time::sleep(POLL).await;
        }
    };
    // The holder's completion, sent while the database is down, is lost.
    let (id, token) = &held_leases[0];
    assert!(
        !complete(&shared, id, *token).await,
        "a completion succeeded while PostgreSQL was down"
    );
    let outage = tokio::task::spawn_blocking(move || {
        outage.end();
    });
    outage.await.expect("starting PostgreSQL again");
    let down_for = down_at.elapsed();
    server.assert_alive();
    assert!(
        outage_seen,
        "/readyz never said not ready (or enqueues were never refused) while PostgreSQL \
         was down"
    );

    // After: ready again, and traffic flows again.
    shared.phase.store(AFTER, Ordering::SeqCst);
    let recovered_at = Instant::now();
    {
        let shared = shared.clone();
        wait_until(
            &mut server,
            Duration::from_secs(60),
            "/readyz ready again",
            move || shared.seen().ready_after >= 1,
        )
        .await;
    }
    let ready_in = recovered_at.elapsed();
    let log_path = server.proc.log_path().to_path_buf();
    wait_until(
        &mut server,
        Duration::from_secs(60),
        "the event listener listening again",
        move || {
            std::fs::read_to_string(&log_path)
                .unwrap_or_default()
                .contains("listening for events again")
        },
    )
    .await;
    let total = shared.acked.load(Ordering::SeqCst);
    wait_until(
        &mut server,
        Duration::from_secs(60),
        "200 more jobs acknowledged after the restart",
        acked(total + 200),
    )
    .await;
    shared.stop_enqueuing.store(true, Ordering::SeqCst);

    // Every acknowledged job ends succeeded; none stays running (lost completions come
    // back after their lease, leases granted before the restart too).
    let acked: Vec<(u8, String)> = {
        let seen = shared.seen();
        [BEFORE, DURING, AFTER]
            .into_iter()
            .flat_map(|p| {
                seen.acked[usize::from(p)]
                    .iter()
                    .map(move |id| (p, id.clone()))
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let states = loop {
        server.assert_alive();
        let states = job_states(&url, &schema.schema).await;
        if states.values().all(|(s, _)| s == "succeeded")
            && acked.iter().all(|(_, id)| states.contains_key(id))
        {
            break states;
        }
        if Instant::now() >= deadline {
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for (s, _) in states.values() {
                *counts.entry(s.as_str()).or_default() += 1;
            }
            let missing: Vec<_> = acked
                .iter()
                .filter(|(_, id)| !states.contains_key(id))
                .collect();
            panic!("jobs did not all succeed: {counts:?}; acknowledged but missing: {missing:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    shared.stop_working.store(true, Ordering::SeqCst);
    while let Some(done) = tasks.join_next().await {
        done.expect("a client task");
    }
    server.assert_alive();
    let log = server.log();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");

    for id in &held {
        let attempt = states[id].1;
        assert!(
            attempt >= 2,
            "held job {id} succeeded on attempt {attempt}: it was never rescued"
        );
    }
    let ids: HashSet<&String> = acked.iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), acked.len(), "an id acknowledged twice");
    let seen = shared.seen();
    eprintln!(
        "restart test: {} jobs acknowledged (before {}, during {}, after {}), {} stored, \
         {} refused enqueues during the outage, {} completions; PostgreSQL down {:?}, \
         ready again {:?} after its start; {:?} in all",
        acked.len(),
        seen.acked[0].len(),
        seen.acked[1].len(),
        seen.acked[2].len(),
        states.len(),
        seen.refused[usize::from(DURING)],
        seen.completions,
        down_for,
        ready_in,
        started.elapsed()
    );
}
