//! `hinter bench --only live`: what an open dashboard costs a drain.
//!
//! The in-process drain (no-op handlers, `--concurrency`) runs next to a real HTTP server on
//! the same store, as in `serve` (the API's router over hyper, and the event-log follower
//! that feeds `/metrics`, the charts and the event streams), first with no browser, then with
//! one and with five dashboard clients: each holds `GET /api/v1/events?every=1s` as
//! Server-Sent Events (what the overview's `EventSource` asks for) and, as the overview does
//! on each summary, reads `GET /api/v1/queues` and `GET /api/v1/stats`. A last setting holds
//! one stream of every event instead (`GET /api/v1/events`, what an SSE consumer of the whole
//! log costs).
//! The figures are the drain rates and the overhead: how much longer the drain takes with
//! the clients than without, in percent. Rounds alternate between the settings (each round starting with another), and each
//! setting's median is reported, since the machine's other load varies.

use crate::serve::open_sqlite;
use anyhow::{bail, Context};
use hinter_core::{Definitions, Store, SystemClock};
use hinter_server::{AppState, ConnLimits, ServerConfig};
use hinter_sqlite::Durability;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Clients per setting: how many, and whether they take every event rather than summaries.
const CLIENTS: [(usize, bool); 4] = [(0, false), (1, false), (5, false), (1, true)];
/// Rounds of the three settings.
const ROUNDS: usize = 8;

/// One setting's result.
#[derive(Debug, Clone)]
pub struct LiveFigure {
    pub clients: usize,
    /// The clients follow every event, not a summary a second.
    pub every_event: bool,
    /// Median drain rate, jobs per second.
    pub jobs_per_s: f64,
    /// How much longer the drain took than with no client, in percent (0 for the baseline).
    pub overhead_percent: f64,
    /// SSE events the clients received per second of drain, all clients together.
    pub events_per_s: f64,
    /// Median CPU time (user + system) of this process per 1,000 jobs drained: the drain,
    /// the server and the clients (PostgreSQL's own is not counted).
    pub cpu_ms_per_1k_jobs: f64,
}

/// Where each round's fresh store comes from.
pub enum Backend<'a> {
    Sqlite(Durability),
    Postgres(&'a str),
}

/// A fresh store (and what must live as long as it, or be cleaned up after).
pub(crate) enum Fresh {
    /// The store's directory, removed when dropped.
    Sqlite {
        _dir: tempfile::TempDir,
    },
    Postgres {
        url: String,
        schema: String,
    },
}

impl Fresh {
    pub(crate) async fn open(
        backend: &Backend<'_>,
    ) -> anyhow::Result<(Arc<dyn hinter_core::Backend>, Fresh)> {
        match backend {
            Backend::Sqlite(durability) => {
                let dir = tempfile::tempdir().context("creating a temp dir")?;
                let store = Arc::new(open_sqlite(dir.path(), *durability).await?);
                Ok((store, Fresh::Sqlite { _dir: dir }))
            }
            Backend::Postgres(url) => {
                let schema = format!("hinter_bench_live_{:08x}", rand::random::<u32>());
                let options = hinter_postgres::PostgresOptions {
                    schema: Some(schema.clone()),
                    ..hinter_postgres::PostgresOptions::default()
                };
                let store = hinter_postgres::PostgresStore::connect(url, options)
                    .await
                    .context("connecting to the benchmark database")?;
                Ok((
                    Arc::new(store),
                    Fresh::Postgres {
                        url: url.to_string(),
                        schema,
                    },
                ))
            }
        }
    }

    /// A fresh store of `backend`, as a plain [`Store`].
    pub(crate) async fn open_store(
        backend: &Backend<'_>,
    ) -> anyhow::Result<(Arc<dyn Store>, Fresh)> {
        let (store, fresh) = Fresh::open(backend).await?;
        Ok((store, fresh))
    }

    /// Brings PostgreSQL's `jobs` to the steady state autovacuum keeps a live table in, and
    /// writes out the bulk fill's WAL, so neither its pending vacuum nor the checkpoint its
    /// WAL forces (a million jobs write more than `max_wal_size`) lands in the measurement
    /// (SQLite: nothing). Without the checkpoint the drain with 1,000,000 queued measured
    /// 10-24 % slower than with 30,000; with it, within the runs' noise (docs/performance.md).
    pub(crate) async fn vacuum(&self) -> anyhow::Result<()> {
        match self {
            Fresh::Postgres { url, schema } => {
                execute(url, &format!("VACUUM (ANALYZE) {schema}.jobs")).await?;
                // Needs superuser or `pg_checkpoint`; without it the figure is as before.
                if let Err(e) = execute(url, "CHECKPOINT").await {
                    tracing::warn!(error = %format!("{e:#}"), "no checkpoint before measuring");
                }
                Ok(())
            }
            Fresh::Sqlite { .. } => Ok(()),
        }
    }

    pub(crate) async fn clean_up(self) -> anyhow::Result<()> {
        match self {
            Fresh::Postgres { url, schema } => {
                execute(&url, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await
            }
            Fresh::Sqlite { .. } => Ok(()),
        }
    }
}

/// Runs `sql` in a session of its own on the benchmark database.
async fn execute(url: &str, sql: &str) -> anyhow::Result<()> {
    let client = hinter_postgres::connect_session(url)
        .await
        .context("connecting to the benchmark database")?;
    client
        .batch_execute(sql)
        .await
        .with_context(|| format!("running {sql}"))
}

/// A dashboard's live view: the event stream, read to the end of every event, and the
/// overview's reads at most once a second while events arrive. Counts the events.
async fn dashboard_client(
    http: reqwest::Client,
    base: String,
    every_event: bool,
    events: Arc<AtomicU64>,
    connected: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<()> {
    let path = if every_event {
        "/api/v1/events"
    } else {
        "/api/v1/events?every=1s"
    };
    let mut stream = http
        .get(format!("{base}{path}"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .context("opening the event stream")?;
    if !stream.status().is_success() {
        bail!("the event stream answered {}", stream.status());
    }
    let _ = connected.send(()).await;
    let mut last_refresh = Instant::now();
    let mut pending_refresh = false;
    let mut tail = Vec::new();
    while let Some(chunk) = stream.chunk().await.context("reading the event stream")? {
        tail.extend_from_slice(&chunk);
        // Events end with an empty line; count the complete ones.
        let mut seen = 0;
        let mut start = 0;
        while let Some(at) = tail[start..].windows(2).position(|w| w == b"\n\n") {
            let block = &tail[start..start + at];
            if block.starts_with(b"id:") || block.windows(7).any(|w| w == b"\nevent:") {
                seen += 1;
            }
            start += at + 2;
        }
        tail.drain(..start);
        if seen > 0 {
            events.fetch_add(seen, Ordering::Relaxed);
            pending_refresh = true;
        }
        // Summaries come at most once a second; every event: refresh at most once a second.
        if pending_refresh && (!every_event || last_refresh.elapsed() >= Duration::from_secs(1)) {
            for path in ["/api/v1/queues", "/api/v1/stats?window=1h"] {
                let answer = http.get(format!("{base}{path}")).send().await?;
                if !answer.status().is_success() {
                    bail!("{path} answered {}", answer.status());
                }
                let _: Value = answer.json().await?;
            }
            last_refresh = Instant::now();
            pending_refresh = false;
        }
    }
    Ok(())
}

/// One drain of `jobs` with `clients` dashboards open: (jobs per second, events received,
/// CPU time of the drain).
async fn round(
    backend: &Backend<'_>,
    jobs: u64,
    concurrency: usize,
    (clients, every_event): (usize, bool),
) -> anyhow::Result<(f64, u64, Duration)> {
    let (backend_store, fresh) = Fresh::open(backend).await?;
    let store: Arc<dyn Store> = backend_store.clone();
    crate::bench::fill(store.as_ref(), jobs).await?;
    let metrics = hinter_server::Metrics::new();
    // As `serve` does: one follower of the log feeds the metrics, the charts and the streams.
    let hub = hinter_server::EventHub::default();
    let (_, counting) = hinter_server::live::follow_log(
        store.clone(),
        metrics.clone(),
        hub.clone(),
        Arc::new(SystemClock),
    )
    .await?;
    // As `serve`'s maintenance leader does: fold PostgreSQL's count deltas every second, or
    // each read of the counts would sum every delta of the drain so far.
    let folding = {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Err(e) = store.queue_counts_fold().await {
                    tracing::warn!(error = %e, "folding the job counts");
                }
            }
        })
    };
    let state = AppState {
        store: store.clone(),
        cluster: backend_store.clone(),
        clock: Arc::new(SystemClock),
        definitions: Definitions::new(),
        config: Arc::new(ServerConfig::default()),
        ready: Arc::new(AtomicBool::new(true)),
        metrics,
        hub,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(hinter_server::serve(
        listener,
        state.clone(),
        ConnLimits::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let http = reqwest::Client::new();
    let events = Arc::new(AtomicU64::new(0));
    let (connected_tx, mut connected_rx) = tokio::sync::mpsc::channel(clients.max(1));
    let mut browsers = tokio::task::JoinSet::new();
    for _ in 0..clients {
        browsers.spawn(dashboard_client(
            http.clone(),
            base.clone(),
            every_event,
            events.clone(),
            connected_tx.clone(),
        ));
    }
    for _ in 0..clients {
        tokio::time::timeout(Duration::from_secs(10), connected_rx.recv())
            .await
            .context("a dashboard client did not connect within 10 s")?;
    }
    let cpu = crate::bench::cpu_time();
    let rate = crate::bench::run_noop_worker(store.clone(), jobs, concurrency, true).await?;
    let cpu = crate::bench::cpu_time().saturating_sub(cpu);
    let received = events.load(Ordering::Relaxed);
    // The streams end when the server stops.
    state.ready.store(false, Ordering::Release);
    let _ = stop.send(());
    browsers.abort_all();
    while let Some(done) = browsers.join_next().await {
        if let Ok(Err(e)) = done {
            bail!("a dashboard client failed: {e:#}");
        }
    }
    let _ = server.await;
    counting.abort();
    folding.abort();
    // Closing would wait for the streams' readers; the temporary store just goes.
    drop((store, backend_store));
    fresh.clean_up().await?;
    Ok((rate, received, cpu))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Runs [`ROUNDS`] rounds of each setting of [`CLIENTS`], alternating.
pub async fn run(
    backend: Backend<'_>,
    jobs: u64,
    concurrency: usize,
) -> anyhow::Result<Vec<LiveFigure>> {
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); CLIENTS.len()];
    let mut event_rates: Vec<Vec<f64>> = vec![Vec::new(); CLIENTS.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); CLIENTS.len()];
    for r in 0..ROUNDS {
        // Each round starts with another setting, so none always runs first (the first
        // drain of a round was seen to run slower).
        for k in 0..CLIENTS.len() {
            let i = (r + k) % CLIENTS.len();
            let setting = CLIENTS[i];
            let (rate, received, spent) = round(&backend, jobs, concurrency, setting).await?;
            rates[i].push(rate);
            cpu[i].push(spent.as_secs_f64() * 1e6 / jobs as f64);
            event_rates[i].push(received as f64 * rate / jobs as f64);
        }
    }
    let base = median(rates[0].clone());
    Ok(CLIENTS
        .iter()
        .enumerate()
        .map(|(i, &(clients, every_event))| {
            let rate = median(rates[i].clone());
            LiveFigure {
                clients,
                every_event,
                jobs_per_s: rate,
                overhead_percent: if i == 0 {
                    0.0
                } else {
                    (base / rate - 1.0) * 100.0
                },
                events_per_s: median(event_rates[i].clone()),
                cpu_ms_per_1k_jobs: median(cpu[i].clone()),
            }
        })
        .collect())
}

/// Prints the figures (unless `json`) and adds them to `figures`.
pub fn report(
    figures_of: &[LiveFigure],
    concurrency: usize,
    json_out: bool,
    figures: &mut serde_json::Map<String, Value>,
) {
    for f in figures_of {
        if !json_out {
            if f.clients == 0 {
                println!(
                    "drain with a serve-like HTTP server, concurrency {concurrency:<3}, no dashboard: {:>8.0} jobs/s, CPU {:.0} ms per 1,000 jobs",
                    f.jobs_per_s, f.cpu_ms_per_1k_jobs
                );
            } else {
                let plural = if f.clients == 1 { "" } else { "s" };
                let who = if f.every_event {
                    format!(
                        "{} stream{plural} of every event ({:>7.0} events/s received)",
                        f.clients, f.events_per_s
                    )
                } else {
                    format!(
                        "{} dashboard{plural} live ({:>5.1} summaries/s received)",
                        f.clients, f.events_per_s
                    )
                };
                println!(
                    "  … with {who}: {:>8.0} jobs/s, overhead {:+.1} %, CPU {:.0} ms per 1,000 jobs",
                    f.jobs_per_s, f.overhead_percent, f.cpu_ms_per_1k_jobs
                );
            }
        }
        let key = if f.every_event {
            format!("live_{}_full_streams", f.clients)
        } else {
            format!("live_{}_dashboards", f.clients)
        };
        figures.insert(format!("{key}_jobs_per_s"), json!(f.jobs_per_s.round()));
        figures.insert(
            format!("{key}_cpu_ms_per_1k_jobs"),
            json!(f.cpu_ms_per_1k_jobs.round()),
        );
        if f.clients > 0 {
            figures.insert(
                format!("{key}_overhead_percent"),
                json!((f.overhead_percent * 10.0).round() / 10.0),
            );
        }
    }
}
