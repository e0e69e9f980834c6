//! `hinter bench`: self-contained throughput and latency figures on a temporary data dir.
//!
//! Every phase starts on a fresh store so one does not slow the next. The HTTP phases talk to
//! a real server on loopback, started in this process.

use crate::serve::open_sqlite;
use anyhow::{bail, Context};
use hinter_core::{Clock, Definitions, JobDefinition, NewJob, Store, SystemClock};
use hinter_engine::{
    HandlerContext, JobError, Leader, Maintenance, MaintenanceOptions, Registry, Worker,
    WorkerOptions,
};
use hinter_server::{AppState, ServerConfig};
use hinter_sqlite::Durability;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Jobs enqueued and drained by the enqueue and drain phases (20,000: the peer workload of
    /// `../shared/peers`).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub jobs: u64,
    /// In-process handler concurrency of the drain phase.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// `full` (fsync every commit) or `relaxed`.
    #[arg(long, default_value = "full", value_parser = ["full", "relaxed"])]
    pub durability: String,
    /// Offered load of the latency phases, jobs per second.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub rate: u64,
    /// Length of the latency phases.
    #[arg(long, default_value = "15s", value_parser = crate::serve::parse_duration)]
    pub latency_duration: Duration,
    /// Jobs queued in the large setting of the `backlog` phase (it drains the first 20,000,
    /// and compares with 30,000 queued).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(30_000..=100_000_000))]
    pub backlog: u64,
    /// Script jobs run at once in the `scripts` phase.
    #[arg(long, default_value_t = 16)]
    pub script_concurrency: usize,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
    /// Benchmark PostgreSQL at this URL instead of the embedded store, each phase in a fresh
    /// schema, dropped afterwards (the phases it has: see --only).
    #[arg(long, env = "HINTER_BENCH_DATABASE_URL")]
    pub database: Option<String>,
    /// Run only these phases (default: all but `reads`). Both stores: `enqueue`, `drain`,
    /// `latency` and `backlog` (the peer workload: bulk enqueue through the
    /// Rust API in calls of 1,000; their drain with in-process handlers, worker start-up
    /// included, and its CPU per 1,000 jobs; open-loop single enqueues at --rate; the drain of
    /// 20,000 with 30,000 and with 1,000,000 queued, medians of 3 rounds, and the peak
    /// memory), `events` (an event
    /// seen by another store instance), `live` (the drain next to a serve-like HTTP server with
    /// 0, 1 and 5 dashboards following the event stream as the page does and with one stream
    /// of every event: overhead and CPU per 1,000 jobs, 8 rounds) and `reads` (only when named:
    /// the dashboard's reads over HTTP with 1,000,000 finished and 100,000 queued jobs).
    /// Embedded store only: `batch` and `single` (enqueue over HTTP), `http-drain` (the HTTP
    /// lease protocol), `http-latency` (enqueue over HTTP at --rate), `scripts` (trivial `.sh`
    /// script jobs, a twentieth of --jobs, at least 1000, --script-concurrency at once) and
    /// `schedules` (how late an every-second schedule fires; the CPU of 10,000 schedules).
    /// PostgreSQL only: `wakeup` (idle enqueue-to-start across connections, NOTIFY).
    #[arg(long, value_delimiter = ',', value_parser = ["enqueue", "batch", "single", "drain", "http-drain", "latency", "http-latency", "wakeup", "events", "backlog", "scripts", "schedules", "live", "reads"])]
    pub only: Vec<String>,
}

struct Server {
    base: String,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
    stop: tokio::task::JoinHandle<()>,
}

async fn start_server(durability: Durability) -> anyhow::Result<Server> {
    let dir = tempfile::tempdir().context("creating a temp dir")?;
    let sqlite = Arc::new(open_sqlite(dir.path(), durability).await?);
    let store: Arc<dyn Store> = sqlite.clone();
    let cluster: Arc<dyn hinter_core::Cluster> = sqlite;
    let state = AppState {
        store: store.clone(),
        cluster: cluster.clone(),
        clock: Arc::new(SystemClock),
        definitions: Definitions::new(),
        config: Arc::new(ServerConfig::default()),
        ready: Arc::new(AtomicBool::new(true)),
        metrics: hinter_server::Metrics::new(),
        hub: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = hinter_server::router(state);
    let stop = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Server {
        base,
        store,
        _dir: dir,
        stop,
    })
}

fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .context("building the HTTP client")
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<Value> {
    let response = client.post(url).json(body).send().await?;
    let status = response.status();
    let value: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{url}: {status} {value}");
    }
    Ok(value)
}

/// Enqueues `jobs` no-op jobs straight into the store in batches of 1000.
pub(crate) async fn fill(store: &dyn Store, jobs: u64) -> anyhow::Result<()> {
    let mut left = jobs;
    while left > 0 {
        let n = left.min(1000);
        let batch = (0..n)
            .map(|i| NewJob::new("noop", json!({ "i": i })))
            .collect();
        store.job_insert_many(batch, chrono::Utc::now()).await?;
        left -= n;
    }
    Ok(())
}

async fn batch_enqueue(durability: Durability, jobs: u64) -> anyhow::Result<f64> {
    let server = start_server(durability).await?;
    let client = client()?;
    let url = format!("{}/api/v1/jobs/batch", server.base);
    let batch: Vec<Value> = (0..1000)
        .map(|i| json!({ "job": "noop", "payload": { "i": i } }))
        .collect();
    let body = json!({ "jobs": batch });
    let batches = (jobs / 1000).max(1);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (client, url, body, next) = (client.clone(), url.clone(), body.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < batches {
                post(&client, &url, &body).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let rate = (batches * 1000) as f64 / start.elapsed().as_secs_f64();
    server.stop.abort();
    Ok(rate)
}

async fn single_enqueue(durability: Durability, requests: u64) -> anyhow::Result<f64> {
    let server = start_server(durability).await?;
    let client = client()?;
    let url = format!("{}/api/v1/jobs", server.base);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                post(
                    &client,
                    &url,
                    &json!({ "job": "noop", "payload": { "n": 1 } }),
                )
                .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let rate = requests as f64 / start.elapsed().as_secs_f64();
    server.stop.abort();
    Ok(rate)
}

/// Runs `jobs` trivial `.sh` script jobs (`exit 0`) end to end through the runtime `serve`
/// uses for its jobs folder (script handler, clean environment, payload file, output
/// stored, process group), `concurrency` at once; returns jobs per second.
async fn drain_scripts(
    durability: Durability,
    jobs: u64,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let folder = dir.path().join("jobs/triggered/noop");
    std::fs::create_dir_all(&folder)?;
    std::fs::write(folder.join("run.sh"), "exit 0\n")?;
    let host = crate::scripts::ScriptHost::new(dir.path().join("jobs"));
    let loaded = host.load();
    if let Some(error) = loaded.iter().find_map(|j| j.error.clone()) {
        bail!("the benchmark's script job does not load: {error}");
    }
    let registry = host.registry(&Registry::new(), &loaded);
    let store: Arc<dyn Store> = Arc::new(open_sqlite(dir.path(), durability).await?);
    fill(store.as_ref(), jobs).await?;
    let start = Instant::now();
    let worker = Worker::start(
        store.clone(),
        Arc::new(SystemClock),
        registry,
        WorkerOptions {
            concurrency,
            prefetch: concurrency,
            ..WorkerOptions::default()
        },
    )?;
    wait_settled(store.as_ref(), Instant::now() + Duration::from_secs(600)).await?;
    let rate = jobs as f64 / start.elapsed().as_secs_f64();
    worker.shutdown().await;
    // A failed script would be retried later (scheduled) or dead: then the figure is wrong.
    for state in [
        hinter_core::JobState::Scheduled,
        hinter_core::JobState::Dead,
    ] {
        let filter = hinter_core::store::JobFilter {
            state: Some(state),
            limit: 1,
            ..Default::default()
        };
        if let Some(job) = store.job_list(filter).await?.first() {
            bail!("a benchmark script job failed: {:?}", job.errors.first());
        }
    }
    Ok(rate)
}

/// Runs a worker with a no-op handler until `jobs` handlers ran (and, with `settle`, every
/// outcome is stored); returns jobs per second.
pub(crate) async fn run_noop_worker(
    store: Arc<dyn Store>,
    jobs: u64,
    concurrency: usize,
    settle: bool,
) -> anyhow::Result<f64> {
    let ran = Arc::new(AtomicU64::new(0));
    let counter = ran.clone();
    let registry = one_handler("noop", move |_ctx: HandlerContext, _payload: Value| {
        counter.fetch_add(1, Ordering::Relaxed);
        async { Ok::<(), JobError>(()) }
    });
    let start = Instant::now();
    let worker = Worker::start(
        store.clone(),
        Arc::new(SystemClock),
        registry,
        WorkerOptions {
            concurrency,
            ..WorkerOptions::default()
        },
    )?;
    // Watch the handler counter (cheap) until every job ran, then the store until every
    // outcome is written, so measuring does not slow the drain.
    let deadline = Instant::now() + Duration::from_secs(600);
    while ran.load(Ordering::Relaxed) < jobs {
        if Instant::now() > deadline {
            bail!("only {} of {jobs} jobs ran", ran.load(Ordering::Relaxed));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if settle {
        wait_settled(store.as_ref(), deadline).await?;
    }
    let rate = jobs as f64 / start.elapsed().as_secs_f64();
    worker.shutdown().await;
    Ok(rate)
}

/// Waits until no job is queued or running: every outcome is stored. Two indexed one-row
/// reads per check, cheap on any backend whatever the table's size.
async fn wait_settled(store: &dyn Store, deadline: Instant) -> anyhow::Result<()> {
    loop {
        let mut busy = false;
        for state in [
            hinter_core::JobState::Queued,
            hinter_core::JobState::Running,
        ] {
            let filter = hinter_core::store::JobFilter {
                state: Some(state),
                limit: 1,
                ..Default::default()
            };
            busy |= !store.job_list(filter).await?.is_empty();
        }
        if !busy {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the drain did not settle");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// How an HTTP drain's workers report outcomes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Report {
    /// One `POST /api/v1/jobs/{id}/complete` per job.
    PerJob,
    /// One `POST /api/v1/outcomes` per lease.
    Batched,
    /// With the next lease request (`outcomes` in `POST /api/v1/leases`).
    WithLease,
}

/// The outcomes (all `complete`) of leased `jobs`.
fn completions(jobs: &[Value]) -> Vec<Value> {
    jobs.iter()
        .map(|job| json!({ "id": job["id"], "lease_token": job["lease_token"], "outcome": "complete" }))
        .collect()
}

/// Fails unless every outcome of `answer` (a list of outcome answers) was applied.
fn check_applied(answer: &Value, asked: usize) -> anyhow::Result<()> {
    let done = answer
        .as_array()
        .map_or(0, |a| a.iter().filter(|o| o["status"] == 200).count());
    if done != asked {
        bail!("{done} of {asked} outcomes applied: {answer}");
    }
    Ok(())
}

/// Drains `jobs` over the HTTP worker protocol with 4 workers leasing 100 at a time, each
/// reporting outcomes as `report` says.
async fn drain_http(durability: Durability, jobs: u64, report: Report) -> anyhow::Result<f64> {
    let server = start_server(durability).await?;
    fill(server.store.as_ref(), jobs).await?;
    let client = client()?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (client, base) = (client.clone(), server.base.clone());
        tasks.push(tokio::spawn(async move {
            let mut pending: Vec<Value> = Vec::new();
            loop {
                let reported = pending.len();
                let leased = post(
                    &client,
                    &format!("{base}/api/v1/leases"),
                    &json!({
                        "queues": ["default"], "worker_id": format!("bench-{w}"), "max": 100,
                        "outcomes": std::mem::take(&mut pending),
                    }),
                )
                .await?;
                if reported > 0 {
                    check_applied(&leased["outcomes"], reported)?;
                }
                let jobs = leased["jobs"].as_array().cloned().unwrap_or_default();
                if jobs.is_empty() {
                    if reported > 0 {
                        continue;
                    }
                    return anyhow::Ok(());
                }
                match report {
                    Report::WithLease => pending = completions(&jobs),
                    Report::Batched => {
                        let answer = post(
                            &client,
                            &format!("{base}/api/v1/outcomes"),
                            &json!({ "outcomes": completions(&jobs) }),
                        )
                        .await?;
                        check_applied(&answer["outcomes"], jobs.len())?;
                    }
                    Report::PerJob => {
                        let completes = jobs.iter().map(|job| {
                            let url = format!(
                                "{base}/api/v1/jobs/{}/complete",
                                job["id"].as_str().unwrap_or("")
                            );
                            let body = json!({ "lease_token": job["lease_token"] });
                            let client = client.clone();
                            async move { post(&client, &url, &body).await }
                        });
                        for r in join_local(completes.collect()).await {
                            r?;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    wait_settled(
        server.store.as_ref(),
        Instant::now() + Duration::from_secs(600),
    )
    .await?;
    let rate = jobs as f64 / start.elapsed().as_secs_f64();
    server.stop.abort();
    Ok(rate)
}

/// Runs futures concurrently on this task and returns their outputs in order.
async fn join_local<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    use std::pin::Pin;
    use std::task::Poll;
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futures.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => results[i] = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

struct Latency {
    p50: Duration,
    p99: Duration,
    samples: usize,
}

async fn latency(durability: Durability, rate: u64, length: Duration) -> anyhow::Result<Latency> {
    crate::bench_workload::check_probes(rate, length)?;
    let server = start_server(durability).await?;
    let origin = Instant::now();
    let (worker, samples) =
        crate::bench_workload::start_probe_worker(server.store.clone(), origin, 16)?;
    let maintenance = Maintenance::start(
        server.store.clone(),
        Arc::new(SystemClock) as Arc<dyn Clock>,
        MaintenanceOptions::default(),
        Leader::always(),
    );
    let client = client()?;
    let url = format!("{}/api/v1/jobs", server.base);
    let total = (rate as f64 * length.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..total {
        tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
        let (client, url) = (client.clone(), url.clone());
        sends.spawn(async move {
            let sent = origin.elapsed().as_nanos() as u64;
            post(&client, &url, &json!({ "job": "probe", "payload": sent })).await
        });
    }
    while let Some(r) = sends.join_next().await {
        r??;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while samples.lock().unwrap_or_else(|e| e.into_inner()).len() < total as usize {
        if Instant::now() > deadline {
            bail!("latency probes did not all start");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.shutdown().await;
    maintenance.shutdown().await;
    server.stop.abort();
    let mut all = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    all.sort();
    let pick = |q: f64| all[((all.len() as f64 - 1.0) * q) as usize];
    Ok(Latency {
        p50: pick(0.50),
        p99: pick(0.99),
        samples: all.len(),
    })
}

/// How long an event takes to reach a reader on another store instance (another process on
/// the same store): from the moment the writing insert returned (the event is committed) to
/// the moment the reader's [`hinter_engine::EventFollower`] hands it out. The reader polls
/// only every 30 s, so the figures measure the wake-up path (SQLite: `PRAGMA data_version`;
/// PostgreSQL: NOTIFY). One probe at a time, with idle gaps.
pub(crate) async fn event_visibility(
    writer: Arc<dyn Store>,
    reader: Arc<dyn Store>,
    probes: usize,
) -> anyhow::Result<(Duration, Duration, usize)> {
    let mut follower = hinter_engine::EventFollower::from_now(reader, Default::default())
        .await?
        .poll_interval(Duration::from_secs(30));
    // The reader waits in its own task, as a reader in another process would.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let reading = tokio::spawn(async move {
        while let Ok(event) = follower.next().await {
            if seen_tx.send((event.job_id, Instant::now())).is_err() {
                return;
            }
        }
    });
    let mut all = Vec::with_capacity(probes);
    for _ in 0..probes {
        // Idle gap first, so the reader is waiting when the probe commits.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let job = NewJob::new("probe", json!(null));
        let id = job.id;
        writer
            .job_insert_many(vec![job], chrono::Utc::now())
            .await?;
        let committed = Instant::now();
        loop {
            let (job_id, seen) = tokio::time::timeout(Duration::from_secs(10), seen_rx.recv())
                .await
                .context("an event did not reach the other reader within 10 s")?
                .context("the reader stopped")?;
            if job_id == id {
                all.push(seen.saturating_duration_since(committed));
                break;
            }
        }
    }
    reading.abort();
    all.sort();
    let pick = |q: f64| all[((all.len() as f64 - 1.0) * q) as usize];
    Ok((pick(0.5), pick(0.99), all.len()))
}

async fn events_sqlite(durability: Durability) -> anyhow::Result<(Duration, Duration, usize)> {
    let dir = tempfile::tempdir().context("creating a temp dir")?;
    let writer = Arc::new(open_sqlite(dir.path(), durability).await?);
    let reader = Arc::new(open_sqlite(dir.path(), durability).await?);
    event_visibility(writer, reader, 300).await
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    if args.only.iter().any(|p| p == "reads") {
        crate::bench_reads::run(&args).await?;
        if args.only.iter().all(|p| p == "reads") {
            return Ok(());
        }
    }
    // A phase the chosen store does not have is a mistake, not an empty run.
    let (store, foreign): (&str, &[&str]) = match &args.database {
        Some(_) => (
            "PostgreSQL",
            &[
                "batch",
                "single",
                "http-drain",
                "http-latency",
                "scripts",
                "schedules",
            ],
        ),
        None => ("the embedded store", &["wakeup"]),
    };
    if let Some(phase) = args.only.iter().find(|p| foreign.contains(&p.as_str())) {
        bail!("the {phase} phase does not run on {store}");
    }
    if let Some(url) = &args.database {
        return crate::bench_pg::run(url, &args).await;
    }
    let durability = if args.durability == "relaxed" {
        Durability::Relaxed
    } else {
        Durability::Full
    };
    let say = |line: String| {
        if !args.json {
            println!("{line}");
        }
    };
    say(format!(
        "hinter bench — embedded SQLite, durability {}, {} jobs per drain, {} cores",
        args.durability,
        args.jobs,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    ));
    let run = |phase: &str| args.only.is_empty() || args.only.iter().any(|p| p == phase);
    let mut figures = serde_json::Map::new();
    figures.insert("durability".into(), json!(args.durability));
    if run("batch") {
        let batch = batch_enqueue(durability, args.jobs).await?;
        say(format!(
            "batch enqueue (HTTP, 1000 per batch, 4 clients):  {batch:>10.0} jobs/s"
        ));
        figures.insert("batch_enqueue_jobs_per_s".into(), json!(batch.round()));
    }
    if run("single") {
        let single = single_enqueue(durability, (args.jobs / 5).max(1000)).await?;
        say(format!(
            "single enqueue (HTTP, 32 clients):                {single:>10.0} jobs/s"
        ));
        figures.insert("single_enqueue_jobs_per_s".into(), json!(single.round()));
    }
    let backend = crate::bench_live::Backend::Sqlite(durability);
    crate::bench_workload::run_phases(&backend, &args, run, say, &mut figures).await?;
    if run("http-drain") {
        for (report, how, key) in [
            (
                Report::WithLease,
                "outcomes with the next lease",
                "drain_http_jobs_per_s",
            ),
            (
                Report::Batched,
                "POST /outcomes per lease    ",
                "drain_http_batched_jobs_per_s",
            ),
            (
                Report::PerJob,
                "POST /complete per job      ",
                "drain_http_per_job_jobs_per_s",
            ),
        ] {
            let rate = drain_http(durability, args.jobs / 2, report).await?;
            say(format!(
                "drain, HTTP lease protocol (max 100, 4 workers, {how}): {rate:>10.0} jobs/s"
            ));
            figures.insert(key.into(), json!(rate.round()));
        }
    }
    if run("http-latency") {
        let lat = latency(durability, args.rate, args.latency_duration).await?;
        say(format!(
            "enqueue-to-start latency, HTTP enqueue at {} jobs/s ({} jobs):  p50 {:.2} ms, p99 {:.2} ms",
            args.rate,
            lat.samples,
            lat.p50.as_secs_f64() * 1000.0,
            lat.p99.as_secs_f64() * 1000.0
        ));
        figures.insert(
            "http_latency_p50_ms".into(),
            json!(lat.p50.as_secs_f64() * 1000.0),
        );
        figures.insert(
            "http_latency_p99_ms".into(),
            json!(lat.p99.as_secs_f64() * 1000.0),
        );
    }
    if run("scripts") {
        let jobs = (args.jobs / 20).max(1000);
        let rate = drain_scripts(durability, jobs, args.script_concurrency).await?;
        say(format!(
            "script jobs (.sh, {jobs}, concurrency {:<3}):        {rate:>10.0} jobs/s",
            args.script_concurrency
        ));
        figures.insert("scripts_jobs_per_s".into(), json!(rate.round()));
    }
    if run("events") {
        let (p50, p99, n) = events_sqlite(durability).await?;
        say(format!(
            "event seen by another store instance ({n} probes):  p50 {:.2} ms, p99 {:.2} ms",
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0
        ));
        figures.insert(
            "event_visible_p50_ms".into(),
            json!(p50.as_secs_f64() * 1000.0),
        );
        figures.insert(
            "event_visible_p99_ms".into(),
            json!(p99.as_secs_f64() * 1000.0),
        );
    }
    if run("schedules") {
        let figures_of = schedules_bench(durability).await?;
        say(format!(
            "schedule firing, idle server ({} ticks):        p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms late",
            figures_of.ticks, figures_of.late_p50_ms, figures_of.late_p99_ms, figures_of.late_max_ms
        ));
        say(format!(
            "10,000 schedules, each hourly (~2.8 fires/s):     {:>6.1} % of one core",
            figures_of.hourly_cpu_percent
        ));
        say(format!(
            "10,000 schedules, each every minute (~167 fires/s): {:>4.1} % of one core",
            figures_of.minutely_cpu_percent
        ));
        figures.insert("schedule_late_p50_ms".into(), json!(figures_of.late_p50_ms));
        figures.insert("schedule_late_p99_ms".into(), json!(figures_of.late_p99_ms));
        figures.insert("schedule_late_max_ms".into(), json!(figures_of.late_max_ms));
        figures.insert(
            "schedules_10k_hourly_cpu_percent".into(),
            json!(figures_of.hourly_cpu_percent),
        );
        figures.insert(
            "schedules_10k_minutely_cpu_percent".into(),
            json!(figures_of.minutely_cpu_percent),
        );
    }
    if run("live") {
        let live = crate::bench_live::run(
            crate::bench_live::Backend::Sqlite(durability),
            args.jobs,
            args.concurrency,
        )
        .await?;
        crate::bench_live::report(&live, args.concurrency, args.json, &mut figures);
    }
    if args.json {
        println!("{}", Value::Object(figures));
    }
    Ok(())
}

struct ScheduleFigures {
    ticks: usize,
    late_p50_ms: f64,
    late_p99_ms: f64,
    late_max_ms: f64,
    hourly_cpu_percent: f64,
    minutely_cpu_percent: f64,
}

/// This process's CPU time (user + system) so far.
pub(crate) fn cpu_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(usage) => {
            let tv = |t: nix::sys::time::TimeVal| {
                Duration::from_secs(t.tv_sec().max(0) as u64)
                    + Duration::from_micros(t.tv_usec().max(0) as u64)
            };
            tv(usage.user_time()) + tv(usage.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

async fn save_schedules(store: &dyn Store, specs: Vec<Value>) -> anyhow::Result<()> {
    use hinter_core::schedule::{NewSchedule, ScheduleSpec, SOURCE_API};
    use hinter_core::store::WriteOp;
    let now = chrono::Utc::now();
    for chunk in specs.chunks(500) {
        let mut ops = Vec::with_capacity(chunk.len());
        for spec in chunk {
            let spec: ScheduleSpec = serde_json::from_value(spec.clone())?;
            let new = NewSchedule::from_spec(spec, SOURCE_API, now, true)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            ops.push(WriteOp::ScheduleSave(new));
        }
        store.write_unit(ops, now).await?;
    }
    Ok(())
}

/// Firing lateness on an idle server (one every-second schedule, 20 ticks, as the recorded
/// time of each occurrence minus its due time), then the CPU share of the whole process
/// (scheduler, store, job inserts) with 10,000 schedules, over 15 s each.
async fn schedules_bench(durability: Durability) -> anyhow::Result<ScheduleFigures> {
    use hinter_engine::{Scheduler, SchedulerOptions};
    let start = |store: Arc<dyn Store>| {
        Scheduler::new(store, Arc::new(SystemClock), SchedulerOptions::default()).start()
    };
    // Precision.
    let dir = tempfile::tempdir().context("creating a temp dir")?;
    let store: Arc<dyn Store> = Arc::new(open_sqlite(dir.path(), durability).await?);
    save_schedules(
        store.as_ref(),
        vec![json!({"name": "tick", "cron": "* * * * * *", "job": "noop", "overlap": "allow"})],
    )
    .await?;
    let scheduler = start(store.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let occurrences = loop {
        let history = store.occurrence_list("tick", None, 100).await?;
        if history.len() >= 20 {
            break history;
        }
        if Instant::now() > deadline {
            bail!("the schedule fired {} times in 60 s", history.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    scheduler.shutdown().await;
    store.close().await?;
    let mut late: Vec<f64> = occurrences
        .iter()
        .map(|o| {
            (o.recorded_at - o.fire_time)
                .num_microseconds()
                .unwrap_or(0) as f64
                / 1000.0
        })
        .collect();
    late.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| late[((late.len() as f64 - 1.0) * q).round() as usize];
    let (p50, p99, max) = (pick(0.5), pick(0.99), late[late.len() - 1]);

    // Cost.
    let mut cpu = Vec::new();
    for every_minute in [false, true] {
        let dir = tempfile::tempdir().context("creating a temp dir")?;
        let store: Arc<dyn Store> = Arc::new(open_sqlite(dir.path(), durability).await?);
        let specs = (0..10_000)
            .map(|i| {
                let cron = if every_minute {
                    format!("{} * * * * *", i % 60)
                } else {
                    format!("{} {} * * * *", i % 60, (i / 60) % 60)
                };
                json!({"name": format!("s{i}"), "cron": cron, "job": "noop", "overlap": "allow"})
            })
            .collect();
        save_schedules(store.as_ref(), specs).await?;
        let scheduler = start(store.clone());
        let (wall, cpu_before) = (Instant::now(), cpu_time());
        tokio::time::sleep(Duration::from_secs(15)).await;
        let used = cpu_time().saturating_sub(cpu_before);
        cpu.push(used.as_secs_f64() / wall.elapsed().as_secs_f64() * 100.0);
        scheduler.shutdown().await;
        store.close().await?;
    }
    Ok(ScheduleFigures {
        ticks: late.len(),
        late_p50_ms: p50,
        late_p99_ms: p99,
        late_max_ms: max,
        hourly_cpu_percent: cpu[0],
        minutely_cpu_percent: cpu[1],
    })
}

/// A registry with one handler, `handler`, for jobs named `name`: the benchmark's workers.
pub(crate) fn one_handler<P, F, Fut, R>(name: &str, handler: F) -> Registry
where
    F: Fn(HandlerContext, P) -> Fut + Send + Sync + 'static,
    P: serde::de::DeserializeOwned + 'static,
    Fut: std::future::Future<Output = Result<R, JobError>> + Send + 'static,
    R: serde::Serialize,
{
    let mut registry = Registry::new();
    registry.register(
        JobDefinition {
            name: name.into(),
            ..JobDefinition::default()
        },
        handler,
    );
    registry
}
