//! `hinter bench --database postgres://…`: the PostgreSQL figures, each phase in a fresh
//! schema of that database (dropped afterwards).

use anyhow::Context;
use hinter_core::{NewJob, Store, SystemClock};
use hinter_engine::{HandlerContext, JobError, Worker, WorkerOptions};
use hinter_postgres::{PostgresOptions, PostgresStore};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A store in a fresh schema; the schema is dropped by [`Scratch::drop_schema`].
pub(crate) struct Scratch {
    url: String,
    schema: String,
}

impl Scratch {
    pub(crate) fn new(url: &str) -> Self {
        Scratch {
            url: url.to_string(),
            schema: format!("hinter_bench_{:08x}", rand::random::<u32>()),
        }
    }

    pub(crate) async fn connect(&self) -> anyhow::Result<Arc<PostgresStore>> {
        let options = PostgresOptions {
            schema: Some(self.schema.clone()),
            ..PostgresOptions::default()
        };
        Ok(Arc::new(
            PostgresStore::connect(&self.url, options)
                .await
                .context("connecting to the benchmark database")?,
        ))
    }

    async fn execute(&self, sql: &str) -> anyhow::Result<()> {
        // The store's own URL handling, so sslmode/sslrootcert work here too.
        let client = hinter_postgres::connect_session(&self.url)
            .await
            .context("connecting to the benchmark database")?;
        client
            .batch_execute(sql)
            .await
            .with_context(|| format!("running {sql}"))?;
        Ok(())
    }

    /// Brings the table to the steady state autovacuum keeps a live system in, so a bulk
    /// fill's pending vacuum does not compete with the measurement.
    pub(crate) async fn vacuum(&self) -> anyhow::Result<()> {
        self.execute(&format!("VACUUM (ANALYZE) {}.jobs", self.schema))
            .await
    }

    pub(crate) async fn drop_schema(self) -> anyhow::Result<()> {
        self.execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .await
    }
}

/// Enqueue-to-start latency on an idle system, enqueuer and worker on separate stores
/// (separate connection pools and LISTEN connections, as two processes would have): the
/// worker is woken by NOTIFY. Returns (p50, p99, samples).
pub async fn idle_latency(
    url: &str,
    samples: usize,
) -> anyhow::Result<(Duration, Duration, usize)> {
    let scratch = Scratch::new(url);
    let producer = scratch.connect().await?;
    let consumer = scratch.connect().await?;
    let origin = Instant::now();
    let (started_tx, mut started_rx) = mpsc::unbounded_channel::<Duration>();
    let registry = crate::bench::one_handler("probe", move |_ctx: HandlerContext, sent_us: u64| {
        let latency = origin
            .elapsed()
            .saturating_sub(Duration::from_micros(sent_us));
        let _ = started_tx.send(latency);
        async { Ok::<(), JobError>(()) }
    });
    let worker = Worker::start(
        consumer.clone(),
        Arc::new(SystemClock),
        registry,
        WorkerOptions {
            concurrency: 4,
            // Far longer than any sample: a job found by polling would show as an outlier.
            poll_interval: Duration::from_secs(5),
            ..WorkerOptions::default()
        },
    )?;
    // Let the worker go idle (its first lease finds nothing) before measuring.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut all = Vec::with_capacity(samples);
    for _ in 0..samples {
        let sent = origin.elapsed().as_micros() as u64;
        producer
            .job_insert_many(vec![NewJob::new("probe", json!(sent))], chrono::Utc::now())
            .await?;
        let latency = tokio::time::timeout(Duration::from_secs(10), started_rx.recv())
            .await
            .context("a probe job did not start within 10 s")?
            .context("the worker stopped")?;
        all.push(latency);
        // Idle gap, so every sample finds the worker waiting.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown().await;
    drop((producer, consumer));
    scratch.drop_schema().await?;
    all.sort();
    let pick = |q: f64| all[((all.len() as f64 - 1.0) * q) as usize];
    Ok((pick(0.5), pick(0.99), all.len()))
}

/// Runs the PostgreSQL phases (all, or those of `--only`) and prints them.
pub async fn run(url: &str, args: &crate::bench::BenchArgs) -> anyhow::Result<()> {
    let (jobs, concurrency, json_out) = (args.jobs, args.concurrency, args.json);
    let run = |phase: &str| args.only.is_empty() || args.only.iter().any(|p| p == phase);
    let say = |line: String| {
        if !json_out {
            println!("{line}");
        }
    };
    say(format!(
        "hinter bench — PostgreSQL ({}), synchronous_commit=on, {jobs} jobs per drain",
        crate::serve::redact(url)
    ));
    let mut figures = serde_json::Map::new();
    figures.insert("backend".into(), json!("postgres"));
    let ms = |d: Duration| json!(d.as_secs_f64() * 1000.0);
    let backend = crate::bench_live::Backend::Postgres(url);
    crate::bench_workload::run_phases(&backend, args, &run, &say, &mut figures).await?;
    if run("wakeup") {
        let (p50, p99, n) = idle_latency(url, 200).await?;
        say(format!(
            "idle enqueue-to-start across connections (NOTIFY, {n} jobs): p50 {:.2} ms, p99 {:.2} ms",
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0
        ));
        figures.insert("idle_latency_p50_ms".into(), ms(p50));
        figures.insert("idle_latency_p99_ms".into(), ms(p99));
    }
    if run("events") {
        let scratch = Scratch::new(url);
        let writer = scratch.connect().await?;
        let reader = scratch.connect().await?;
        let (p50, p99, n) = crate::bench::event_visibility(writer, reader, 300).await?;
        scratch.drop_schema().await?;
        say(format!(
            "event seen by another store instance ({n} probes):       p50 {:.2} ms, p99 {:.2} ms",
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0
        ));
        figures.insert("event_visible_p50_ms".into(), ms(p50));
        figures.insert("event_visible_p99_ms".into(), ms(p99));
    }
    if run("live") {
        let live =
            crate::bench_live::run(crate::bench_live::Backend::Postgres(url), jobs, concurrency)
                .await?;
        crate::bench_live::report(&live, concurrency, json_out, &mut figures);
    }
    if json_out {
        println!("{}", Value::Object(figures));
    }
    Ok(())
}
