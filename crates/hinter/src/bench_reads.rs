//! `hinter bench --only reads`: how quickly the dashboard's reads answer on a big store
//! (issue 12): 1,000,000 finished jobs retained and 100,000 queued, then `GET
//! /api/v1/queues`, every request the dashboard's overview page makes, and filtered job
//! lists, each asked a few hundred times over real HTTP on loopback, one at a time.
//!
//! The store is filled through its own code: batched inserts, then leases of 1,000 and
//! batched outcomes (succeeded, dead, cancelled), as fast workers would write them, then the
//! queued jobs. PostgreSQL then gets `VACUUM ANALYZE` (the steady state autovacuum keeps a
//! live table in) and one fold of the job count deltas (what the maintenance leader does
//! every second).

use crate::bench::BenchArgs;
use crate::bench_pg::Scratch;
use anyhow::{bail, Context};
use hinter_core::retry::FailOutcome;
use hinter_core::store::{Completion, Failure, LeaseRequest};
use hinter_core::{Cluster, Definitions, NewJob, Store, SystemClock};
use hinter_server::{AppState, ServerConfig};
use serde_json::{json, Value};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Finished jobs retained.
const FINISHED: u64 = 1_000_000;
/// Jobs waiting in their queues.
const QUEUED: u64 = 100_000;
/// Requests per measured read.
const REQUESTS: usize = 300;
/// The queues and job names of the filled store.
const QUEUES: [&str; 3] = ["default", "mail", "reports"];
const JOBS: [&str; 4] = ["resize", "send", "render", "sync"];

/// One measured read: its figures.
struct Read {
    name: String,
    p50: Duration,
    p99: Duration,
    max: Duration,
    /// Jobs (or queues) in the last answer, to show the read found something.
    items: usize,
}

/// Fills the store: `FINISHED` jobs finished (about 94% succeeded, 5% dead, 1% cancelled)
/// and `QUEUED` queued, spread over [`QUEUES`] and [`JOBS`].
async fn fill(store: &dyn Store, say: &dyn Fn(String)) -> anyhow::Result<()> {
    let started = Instant::now();
    let job = |i: u64| {
        NewJob::new(JOBS[(i % 4) as usize], json!({ "i": i })).queue(QUEUES[(i % 3) as usize])
    };
    let mut done = 0u64;
    let mut k = 0u64;
    while done < FINISHED {
        let n = (FINISHED - done).min(10_000);
        for chunk in (done..done + n).collect::<Vec<_>>().chunks(1000) {
            let batch = chunk.iter().map(|&i| job(i)).collect();
            store.job_insert_many(batch, chrono::Utc::now()).await?;
        }
        let mut left = n;
        while left > 0 {
            let now = chrono::Utc::now();
            let leased = store
                .job_lease(LeaseRequest {
                    jobs: Vec::new(),
                    queues: QUEUES.iter().map(|q| q.to_string()).collect(),
                    worker_id: "bench-fill".into(),
                    max: 1000,
                    lease_for: Duration::from_secs(600),
                    now,
                })
                .await?;
            if leased.is_empty() {
                bail!("the fill found nothing to lease with {left} jobs left");
            }
            left = left.saturating_sub(leased.len() as u64);
            let (mut completions, mut dead, mut cancelled) = (Vec::new(), Vec::new(), Vec::new());
            for l in leased {
                k += 1;
                let failure = |outcome| Failure {
                    id: l.id,
                    lease_token: l.lease_token,
                    error: "bench".into(),
                    outcome,
                    exit_code: None,
                    rescued: None,
                };
                match k % 100 {
                    0..=4 => dead.push(failure(FailOutcome::Dead)),
                    5 => cancelled.push(failure(FailOutcome::Cancelled)),
                    _ => completions.push(Completion {
                        id: l.id,
                        lease_token: l.lease_token,
                        result: Some(json!({ "ok": true })),
                    }),
                }
            }
            let now = chrono::Utc::now();
            for answer in store.job_complete_many(completions, now).await? {
                answer?;
            }
            dead.append(&mut cancelled);
            for answer in store.job_fail_many(dead, now).await? {
                answer?;
            }
        }
        done += n;
        if done.is_multiple_of(200_000) {
            say(format!(
                "  filled {done} finished jobs ({:.0} s)",
                started.elapsed().as_secs_f64()
            ));
        }
    }
    for start in (0..QUEUED).step_by(1000) {
        let batch = (start..(start + 1000).min(QUEUED)).map(job).collect();
        store.job_insert_many(batch, chrono::Utc::now()).await?;
    }
    say(format!(
        "  filled {FINISHED} finished and {QUEUED} queued jobs in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Serves the API and dashboard over `store` on a loopback port; returns its base URL.
async fn serve(
    store: Arc<dyn Store>,
    cluster: Arc<dyn Cluster>,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let state = AppState {
        store,
        cluster,
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
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((base, task))
}

/// Asks `path` [`REQUESTS`] times, one after the other (after a few unmeasured ones).
async fn measure(
    client: &reqwest::Client,
    base: &str,
    name: &str,
    path: &str,
    accept: Option<&str>,
) -> anyhow::Result<Read> {
    let mut times = Vec::with_capacity(REQUESTS);
    let mut items = 0;
    for i in 0..REQUESTS + 5 {
        let mut request = client.get(format!("{base}{path}"));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let started = Instant::now();
        let response = request.send().await.with_context(|| path.to_string())?;
        let status = response.status();
        if !status.is_success() {
            bail!("{path}: {status}");
        }
        if accept.is_some() {
            // A stream: measured to its headers, then dropped.
            drop(response);
        } else {
            let body = response.bytes().await?;
            if i == 0 {
                let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                items = ["jobs", "queues"]
                    .iter()
                    .find_map(|k| value.get(k).and_then(Value::as_array).map(Vec::len))
                    .unwrap_or(0);
            }
        }
        if i >= 5 {
            times.push(started.elapsed());
        }
    }
    times.sort();
    let pick = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
    Ok(Read {
        name: name.to_string(),
        p50: pick(0.5),
        p99: pick(0.99),
        max: times[times.len() - 1],
        items,
    })
}

/// Every read measured: the queues, the overview page's requests, the job lists the jobs and
/// dead pages ask for.
async fn reads(base: &str) -> anyhow::Result<Vec<Read>> {
    let client = reqwest::Client::builder()
        .build()
        .context("building the HTTP client")?;
    let cases: [(&str, &str, Option<&str>); 14] = [
        ("GET /api/v1/queues", "/api/v1/queues", None),
        ("overview: GET /", "/", None),
        ("overview: GET /ui/app.js", "/ui/app.js", None),
        ("overview: GET /ui/session", "/ui/session", None),
        (
            "overview: GET /api/v1/events (stream, to its headers)",
            "/api/v1/events",
            Some("text/event-stream"),
        ),
        ("jobs page: no filter", "/api/v1/jobs?limit=50", None),
        (
            "jobs page: state=dead&queue=mail",
            "/api/v1/jobs?limit=50&state=dead&queue=mail",
            None,
        ),
        (
            "jobs page: state=succeeded&job=render",
            "/api/v1/jobs?limit=50&state=succeeded&job=render",
            None,
        ),
        (
            "jobs page: queue=mail",
            "/api/v1/jobs?limit=50&queue=mail",
            None,
        ),
        (
            "jobs page: job=render",
            "/api/v1/jobs?limit=50&job=render",
            None,
        ),
        (
            "jobs page: queue=mail&job=send",
            "/api/v1/jobs?limit=50&queue=mail&job=send",
            None,
        ),
        (
            "jobs page: state=cancelled&queue=reports&job=sync",
            "/api/v1/jobs?limit=50&state=cancelled&queue=reports&job=sync",
            None,
        ),
        (
            "jobs page: state=queued",
            "/api/v1/jobs?limit=50&state=queued",
            None,
        ),
        (
            "dead page: state=dead",
            "/api/v1/jobs?limit=100&state=dead",
            None,
        ),
    ];
    let mut out = Vec::new();
    for (name, path, accept) in cases {
        out.push(measure(&client, base, name, path, accept).await?);
    }
    Ok(out)
}

fn report(
    backend: &str,
    all: &[Read],
    say: &dyn Fn(String),
    figures: &mut serde_json::Map<String, Value>,
) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    say(format!(
        "reads with {FINISHED} finished and {QUEUED} queued jobs ({backend}, {REQUESTS} requests each, p50 / p99 / max):"
    ));
    for r in all {
        say(format!(
            "  {:<56} {:>7.2} / {:>7.2} / {:>7.2} ms  ({} items)",
            r.name,
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            r.items
        ));
    }
    let list: Vec<Value> = all
        .iter()
        .map(|r| {
            json!({
                "read": r.name,
                "p50_ms": ms(r.p50),
                "p99_ms": ms(r.p99),
                "max_ms": ms(r.max),
                "items": r.items,
            })
        })
        .collect();
    figures.insert("reads".into(), Value::Array(list));
}

/// Runs the phase on the embedded store, or on PostgreSQL with `--database`.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let json_out = args.json;
    let say = |line: String| {
        if !json_out {
            println!("{line}");
        }
    };
    let mut figures = serde_json::Map::new();
    match &args.database {
        None => {
            let durability = if args.durability == "relaxed" {
                hinter_sqlite::Durability::Relaxed
            } else {
                hinter_sqlite::Durability::Full
            };
            let dir = tempfile::tempdir().context("creating a temp dir")?;
            let sqlite = Arc::new(crate::serve::open_sqlite(dir.path(), durability).await?);
            fill(sqlite.as_ref(), &say).await?;
            let (base, task) = serve(sqlite.clone(), sqlite.clone()).await?;
            let all = reads(&base).await?;
            task.abort();
            report("embedded SQLite", &all, &say, &mut figures);
        }
        Some(url) => {
            let scratch = Scratch::new(url);
            let store = scratch.connect().await?;
            let result = async {
                fill(store.as_ref(), &say).await?;
                scratch.vacuum().await?;
                store.queue_counts_fold().await?;
                let (base, task) = serve(store.clone(), store.clone()).await?;
                let all = reads(&base).await;
                task.abort();
                all
            }
            .await;
            drop(store);
            scratch.drop_schema().await?;
            report("PostgreSQL", &result?, &say, &mut figures);
        }
    }
    if json_out {
        println!("{}", Value::Object(figures));
    }
    Ok(())
}
