//! hinter adapter (the project under test), same workload as every peer.
//! Usage: hinter-bench [sqlite|postgres ...]   (default: both)
//! sqlite: embedded store in DATA_DIR, durability full (fsync per group commit).
//! postgres: PostgresStore at PG_URL (default unix socket, db peers_bench), fresh schema.
use std::{
    io::Write,
    sync::{
        atomic::{AtomicU32, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use hinter_core::{JobDefinition, NewJob, Store, SystemClock};
use hinter_engine::{HandlerContext, JobError, Registry, Worker, WorkerOptions};
use serde::{Deserialize, Serialize};
use serde_json::json;

fn env_num(k: &str, d: usize) -> usize {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}
fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

#[derive(Serialize, Deserialize)]
struct P {
    n: usize,
    t: u64,
}

struct Tally {
    c: Vec<AtomicU32>,
    handled: AtomicUsize,
    lat: Mutex<Vec<f64>>,
    record_latency: bool,
}
impl Tally {
    fn new(n: usize, record_latency: bool) -> Arc<Self> {
        Arc::new(Tally {
            c: (0..n).map(|_| AtomicU32::new(0)).collect(),
            handled: AtomicUsize::new(0),
            lat: Mutex::new(Vec::new()),
            record_latency,
        })
    }
    fn hit(&self, p: &P) {
        let start = now_ns();
        if p.n < self.c.len() {
            self.c[p.n].fetch_add(1, Ordering::Relaxed);
        }
        if self.record_latency {
            self.lat.lock().unwrap().push((start as f64 - p.t as f64) / 1e6);
        }
        self.handled.fetch_add(1, Ordering::Release);
    }
    fn handled(&self) -> usize {
        self.handled.load(Ordering::Acquire)
    }
    fn lost_dup(&self, up_to: usize) -> (usize, u64) {
        let (mut lost, mut dup) = (0, 0u64);
        for x in &self.c[..up_to] {
            let v = x.load(Ordering::Relaxed);
            if v == 0 { lost += 1 } else { dup += (v - 1) as u64 }
        }
        (lost, dup)
    }
}

fn pct(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some((sorted[idx] * 1000.0).round() / 1000.0)
}

async fn wait_for(mut pred: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if pred() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

fn start_worker(store: Arc<dyn Store>, conc: usize, tally: Arc<Tally>) -> hinter_engine::WorkerHandle {
    let mut registry = Registry::new();
    registry.register(
        JobDefinition { name: "bench".into(), ..JobDefinition::default() },
        move |_ctx: HandlerContext, p: P| {
            tally.hit(&p);
            async { Ok::<(), JobError>(()) }
        },
    );
    Worker::start(store, Arc::new(SystemClock), registry, WorkerOptions { concurrency: conc, ..WorkerOptions::default() })
        .expect("start the worker")
}

/// Backend-side completion: no job queued, scheduled or running.
async fn settled(store: &dyn Store) -> bool {
    for state in [hinter_core::JobState::Queued, hinter_core::JobState::Running, hinter_core::JobState::Scheduled] {
        let f = hinter_core::store::JobFilter { state: Some(state), limit: 1, ..Default::default() };
        if !store.job_list(f).await.map(|v| v.is_empty()).unwrap_or(false) {
            return false;
        }
    }
    true
}

async fn fresh_store(backend: &str, tag: &str) -> Arc<dyn Store> {
    match backend {
        "sqlite" => {
            let dir = std::env::var("DATA_DIR").unwrap_or_else(|_| "/tmp/peers-bench".into());
            let path = std::path::PathBuf::from(format!("{dir}/hinter-{tag}"));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Arc::new(hinter_sqlite::SqliteStore::open(&path.join("hinter.db"), Default::default()).await.expect("open sqlite"))
        }
        _ => {
            let url = std::env::var("PG_URL").unwrap_or_else(|_| "host=/var/run/postgresql dbname=peers_bench".into());
            let schema = format!("hinter_peers_{tag}");
            let (client, conn) = hinter_postgres::tokio_postgres::connect(&url, hinter_postgres::tokio_postgres::NoTls).await.expect("pg connect");
            tokio::spawn(conn);
            client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await.expect("drop schema");
            let options = hinter_postgres::PostgresOptions { schema: Some(schema), ..Default::default() };
            Arc::new(hinter_postgres::PostgresStore::connect(&url, options).await.expect("open postgres"))
        }
    }
}

async fn run_variant(backend: &str) -> serde_json::Value {
    let n = env_num("N", 20000);
    let batch = env_num("BATCH", 1000);
    let conc = env_num("CONC", 16);
    let rate = env_num("RATE", 200);
    let dur = env_num("DUR", 15);
    let drain_timeout = env_num("DRAIN_TIMEOUT_S", 60) as u64;
    let grace = env_num("LAT_GRACE_S", 10) as u64;

    // A: bulk enqueue
    let store = fresh_store(backend, "ab").await;
    let t0 = Instant::now();
    for i in (0..n).step_by(batch) {
        let jobs: Vec<NewJob> = (i..(i + batch).min(n))
            .map(|k| NewJob::new("bench", json!(P { n: k, t: now_ns() })))
            .collect();
        store.job_insert_many(jobs, chrono::Utc::now()).await.expect("insert");
    }
    let enqueue_per_s = n as f64 / t0.elapsed().as_secs_f64();

    // B: drain (worker start-up included)
    let tally = Tally::new(n, false);
    let t0 = Instant::now();
    let worker = start_worker(store.clone(), conc, tally.clone());
    let ok = wait_for(|| tally.handled() >= n, Duration::from_secs(drain_timeout)).await;
    if ok {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !settled(store.as_ref()).await && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let drain_s = t0.elapsed().as_secs_f64();
    let handled = tally.handled();
    let (not_run, dup) = tally.lost_dup(n);
    worker.shutdown().await;
    drop(store);

    // C: latency, open loop, single enqueues
    let store = fresh_store(backend, "c").await;
    let total = rate * dur;
    let tally = Tally::new(total, true);
    let worker = start_worker(store.clone(), conc, tally.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let errors = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut i = 0;
    while i < total {
        let due = total.min((t0.elapsed().as_secs_f64() * rate as f64) as usize + 1);
        while i < due {
            let (store, errors, k) = (store.clone(), errors.clone(), i);
            tokio::spawn(async move {
                let t = now_ns();
                let job = NewJob::new("bench", json!(P { n: k, t }));
                if let Err(e) = store.job_insert_many(vec![job], chrono::Utc::now()).await {
                    if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("enqueue error: {e}");
                    }
                }
            });
            i += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let send_s = t0.elapsed().as_secs_f64();
    wait_for(|| tally.handled() >= total, Duration::from_secs(grace)).await;
    let mut lat = tally.lat.lock().unwrap().clone();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (lat_lost, lat_dup) = tally.lost_dup(total);
    let lat_achieved = tally.handled();
    worker.shutdown().await;

    json!({
        "peer": "hinter", "version": "main", "backend": if backend == "sqlite" { "sqlite (embedded)" } else { "postgres" },
        "variant": backend,
        "enqueue_mode": format!("bulk: Store::job_insert_many x{batch}/call"),
        "drain_settings": format!("{{\"concurrency\":{conc}}}"),
        "durability": if backend == "sqlite" { "synchronous=FULL, WAL, group commit (default)" } else { "synchronous_commit=on (server default)" },
        "enqueue_per_s": (enqueue_per_s * 10.0).round() / 10.0,
        "drain_per_s": (((if ok { n } else { handled }) as f64 / drain_s) * 10.0).round() / 10.0,
        "drain_seconds": (drain_s * 100.0).round() / 100.0,
        "drain_complete": ok, "drain_handled": handled,
        "lost": if ok { Some(not_run) } else { None }, "duplicated": dup, "not_run": not_run,
        "lat_p50_ms": pct(&lat, 50.0), "lat_p99_ms": pct(&lat, 99.0), "lat_max_ms": pct(&lat, 100.0),
        "lat_achieved": lat_achieved, "lat_target": total,
        "lat_send_rate": ((total as f64 / send_s) * 10.0).round() / 10.0,
        "lat_enqueue_errors": errors.load(Ordering::Relaxed),
        "lat_lost": lat_lost, "lat_duplicated": lat_dup,
    })
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    for backend in ["sqlite", "postgres"] {
        if !(args.is_empty() || args.iter().any(|a| a == backend || a == "default")) {
            continue;
        }
        let row = run_variant(backend).await;
        let line = row.to_string();
        println!("{line}");
        if let Ok(out) = std::env::var("OUT") {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(out).unwrap();
            writeln!(f, "{line}").unwrap();
        }
    }
}
