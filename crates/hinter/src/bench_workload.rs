//! The peer workload of `../shared/peers` (the same on every job system measured there), on
//! either store, through the in-process Rust API:
//!
//! - `enqueue`: `--jobs` no-op jobs through `Store::job_insert_many` in batches of 1,000, one
//!   call after another;
//! - `drain`: those jobs with `--concurrency` in-process handlers, the clock started right
//!   before the worker (its start-up included) and stopped when every handler ran and the
//!   store holds no queued or running job; with the CPU time it took per 1,000 jobs;
//! - `latency`: a worker started, 0.5 s idle, then an open-loop producer issuing single
//!   enqueues at `--rate` for `--latency-duration`, each call on schedule and not awaited;
//!   latency = handler start minus the moment just before the enqueue call;
//! - `backlog`: the drain rate of the first 20,000 jobs with 30,000 and with `--backlog`
//!   (1,000,000) queued (medians of three alternating rounds), and this process's peak
//!   memory during the second.

use crate::bench_live::{Backend, Fresh};
use anyhow::bail;
use hinter_core::{NewJob, Store, SystemClock};
use hinter_engine::{HandlerContext, JobError, Worker, WorkerHandle, WorkerOptions};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Figures of the enqueue and drain phases.
pub struct Drain {
    pub enqueue_per_s: f64,
    /// `None` when only the enqueue was asked for.
    pub drain_per_s: Option<f64>,
    /// CPU time (user + system) of this process per 1,000 jobs drained.
    pub cpu_ms_per_1k: f64,
    /// CPU time of the PostgreSQL server's processes on this machine per 1,000 jobs drained
    /// (`None` on the embedded store, or when no `postgres` process is visible here).
    pub server_cpu_ms_per_1k: Option<f64>,
}

/// Bulk enqueue of `jobs` jobs on a fresh store, then (with `drain`) their drain.
pub async fn enqueue_and_drain(
    backend: &Backend<'_>,
    jobs: u64,
    concurrency: usize,
    drain: bool,
) -> anyhow::Result<Drain> {
    let (store, fresh) = Fresh::open_store(backend).await?;
    let start = Instant::now();
    crate::bench::fill(store.as_ref(), jobs).await?;
    let enqueue_per_s = jobs as f64 / start.elapsed().as_secs_f64();
    let (cpu, server_cpu) = (crate::bench::cpu_time(), postgres_cpu());
    let drain_per_s = match drain {
        true => Some(crate::bench::run_noop_worker(store.clone(), jobs, concurrency, true).await?),
        false => None,
    };
    let cpu = crate::bench::cpu_time().saturating_sub(cpu);
    let server_cpu = match (server_cpu, postgres_cpu(), backend) {
        (Some(before), Some(after), Backend::Postgres(_)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    drop(store);
    fresh.clean_up().await?;
    let per_1k = |d: Duration| d.as_secs_f64() * 1e6 / jobs as f64;
    Ok(Drain {
        enqueue_per_s,
        drain_per_s,
        cpu_ms_per_1k: per_1k(cpu),
        server_cpu_ms_per_1k: server_cpu.map(per_1k),
    })
}

/// Figures of the open-loop latency phase.
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Jobs whose handler started within 10 s of the last enqueue call.
    pub achieved: usize,
    pub target: usize,
    pub enqueue_errors: u64,
}

/// Most probes of one latency phase (each one's start time is kept).
const MAX_PROBES: usize = 10_000_000;

/// How many probes `rate` a second for `length` are, when that is a sensible number.
pub(crate) fn check_probes(rate: u64, length: Duration) -> anyhow::Result<usize> {
    let target = (rate as f64 * length.as_secs_f64()).round() as usize;
    if !(1..=MAX_PROBES).contains(&target) {
        bail!(
            "--rate times --latency-duration must come to 1 to {MAX_PROBES} probes, not {target}"
        );
    }
    Ok(target)
}

/// Open-loop single enqueues at `rate` a second for `length` against a running worker.
pub async fn latency(
    backend: &Backend<'_>,
    rate: u64,
    length: Duration,
    concurrency: usize,
) -> anyhow::Result<Latency> {
    let target = check_probes(rate, length)?;
    let (store, fresh) = Fresh::open_store(backend).await?;
    let origin = Instant::now();
    let (worker, samples) = start_probe_worker(store.clone(), origin, concurrency)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let errors = Arc::new(AtomicU64::new(0));
    let start = tokio::time::Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    for i in 0..target {
        tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
        let (store, errors) = (store.clone(), errors.clone());
        tokio::spawn(async move {
            let sent = origin.elapsed().as_nanos() as u64;
            let job = NewJob::new("probe", json!(sent));
            if let Err(e) = store.job_insert_many(vec![job], chrono::Utc::now()).await {
                if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(error = %e, "a latency probe's enqueue failed");
                }
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while samples.lock().unwrap_or_else(|e| e.into_inner()).len() < target
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.shutdown().await;
    drop(store);
    fresh.clean_up().await?;
    let mut all = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if all.is_empty() {
        bail!("no latency probe started within 10 s");
    }
    all.sort();
    // Nearest rank, as the peers' harness computes it.
    let rank = |q: f64| {
        let i = (q * all.len() as f64).ceil() as usize;
        all[i.clamp(1, all.len()) - 1].as_secs_f64() * 1000.0
    };
    Ok(Latency {
        p50_ms: rank(0.50),
        p99_ms: rank(0.99),
        max_ms: rank(1.0),
        achieved: all.len(),
        target,
        enqueue_errors: errors.load(Ordering::Relaxed),
    })
}

/// Start latencies of probe jobs, in the order their handlers started.
pub(crate) type Samples = Arc<Mutex<Vec<Duration>>>;

/// A worker for `probe` jobs, whose payload is the moment they were sent (nanoseconds
/// since `origin`): each records how long after it its handler started.
pub(crate) fn start_probe_worker(
    store: Arc<dyn Store>,
    origin: Instant,
    concurrency: usize,
) -> anyhow::Result<(WorkerHandle, Samples)> {
    let samples: Samples = Arc::default();
    let seen = samples.clone();
    let registry = crate::bench::one_handler("probe", move |_ctx: HandlerContext, sent_ns: u64| {
        let latency = origin
            .elapsed()
            .saturating_sub(Duration::from_nanos(sent_ns));
        seen.lock().unwrap_or_else(|e| e.into_inner()).push(latency);
        async { Ok::<(), JobError>(()) }
    });
    let worker = Worker::start(
        store,
        Arc::new(SystemClock),
        registry,
        WorkerOptions {
            concurrency,
            ..WorkerOptions::default()
        },
    )?;
    Ok((worker, samples))
}

/// Figures of the growth phase.
pub struct Growth {
    pub measured: u64,
    pub backlog: u64,
    pub small_per_s: f64,
    pub large_per_s: f64,
    /// Peak resident memory of this process (store, worker, connection pools) while the
    /// first `measured` of `backlog` queued jobs drained, in bytes.
    pub large_peak_rss: Option<u64>,
}

/// Jobs measured of each backlog.
const MEASURED: u64 = 20_000;

/// Rounds of each setting of the growth phase: one drain of 20,000 jobs measures within
/// about ±20 % on this machine, so the medians of three are compared.
const GROWTH_ROUNDS: usize = 3;

/// The drain rate of the first 20,000 jobs with 30,000 and with `backlog` queued: medians
/// of [`GROWTH_ROUNDS`] rounds, the settings alternating.
pub async fn growth(
    backend: &Backend<'_>,
    backlog: u64,
    concurrency: usize,
) -> anyhow::Result<Growth> {
    let (mut small, mut large, mut peak) = (Vec::new(), Vec::new(), None::<u64>);
    for _ in 0..GROWTH_ROUNDS {
        small.push(
            drain_of_backlog(backend, 10_000 + MEASURED, concurrency)
                .await?
                .0,
        );
        let (rate, rss) = drain_of_backlog(backend, backlog, concurrency).await?;
        large.push(rate);
        peak = peak.max(rss);
    }
    Ok(Growth {
        measured: MEASURED,
        backlog,
        small_per_s: median(&mut small),
        large_per_s: median(&mut large),
        large_peak_rss: peak,
    })
}

/// The middle value (of an odd count; the upper middle of an even one).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

async fn drain_of_backlog(
    backend: &Backend<'_>,
    backlog: u64,
    concurrency: usize,
) -> anyhow::Result<(f64, Option<u64>)> {
    let (store, fresh) = Fresh::open_store(backend).await?;
    crate::bench::fill(store.as_ref(), backlog).await?;
    // The steady state a live table is kept in (PostgreSQL's autovacuum), so a bulk fill's
    // pending vacuum does not compete with the measurement.
    fresh.vacuum().await?;
    reset_peak_rss();
    let rate = crate::bench::run_noop_worker(store.clone(), MEASURED, concurrency, false).await?;
    let peak = peak_rss();
    drop(store);
    fresh.clean_up().await?;
    Ok((rate, peak))
}

/// Restarts this process's peak resident memory (`VmHWM`) count from its current size
/// (Linux: `5` written to `clear_refs`).
fn reset_peak_rss() {
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        tracing::debug!(error = %e, "cannot reset the peak memory count");
    }
}

/// This process's peak resident memory since the last reset, in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// CPU time (user + system) of every `postgres` process visible on this machine so far, or
/// `None` when there is none (a remote server).
fn postgres_cpu() -> Option<Duration> {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)? as u64;
    let mut total = 0u64;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: the name may hold spaces, so split after its `)`.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if !head.ends_with("(postgres") {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat; `rest` starts at field 3.
        let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) else {
            continue;
        };
        total += utime.parse::<u64>().unwrap_or(0) + stime.parse::<u64>().unwrap_or(0);
        found = true;
    }
    found.then(|| Duration::from_millis(total * 1000 / ticks))
}

/// `n` with thousands separated by commas.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A short human form of a byte count.
pub fn megabytes(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1_048_576.0)
}

/// Runs the workload's phases that `run` selects on `backend`, says each figure and adds it
/// to `figures`.
pub async fn run_phases(
    backend: &Backend<'_>,
    args: &crate::bench::BenchArgs,
    run: impl Fn(&str) -> bool,
    say: impl Fn(String),
    figures: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    let (jobs, concurrency) = (args.jobs, args.concurrency);
    if run("enqueue") || run("drain") {
        let d = enqueue_and_drain(backend, jobs, concurrency, run("drain")).await?;
        if run("enqueue") {
            say(format!(
                "bulk enqueue (Rust API, 1,000 per call):          {:>10.0} jobs/s",
                d.enqueue_per_s
            ));
            figures.insert("enqueue_jobs_per_s".into(), json!(d.enqueue_per_s.round()));
        }
        if let Some(drain_per_s) = d.drain_per_s {
            let server = d
                .server_cpu_ms_per_1k
                .map(|ms| format!(", PostgreSQL {ms:.0} ms"))
                .unwrap_or_default();
            say(format!(
                "drain, in-process handlers, concurrency {concurrency:<3}:      {:>10.0} jobs/s \
                 (CPU per 1,000 jobs: hinter {:.0} ms{server})",
                drain_per_s, d.cpu_ms_per_1k
            ));
            figures.insert(
                "drain_in_process_jobs_per_s".into(),
                json!(drain_per_s.round()),
            );
            figures.insert("drain_cpu_ms_per_1k_jobs".into(), json!(d.cpu_ms_per_1k));
            if let Some(ms) = d.server_cpu_ms_per_1k {
                figures.insert("drain_server_cpu_ms_per_1k_jobs".into(), json!(ms));
            }
        }
    }
    if run("latency") {
        let lat = latency(backend, args.rate, args.latency_duration, concurrency).await?;
        say(format!(
            "enqueue-to-start latency, open loop at {} jobs/s (Rust API, {} of {} jobs): \
             p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            args.rate, lat.achieved, lat.target, lat.p50_ms, lat.p99_ms, lat.max_ms
        ));
        if lat.enqueue_errors > 0 {
            bail!(
                "{} latency probes could not be enqueued",
                lat.enqueue_errors
            );
        }
        figures.insert("latency_p50_ms".into(), json!(lat.p50_ms));
        figures.insert("latency_p99_ms".into(), json!(lat.p99_ms));
        figures.insert("latency_max_ms".into(), json!(lat.max_ms));
        figures.insert("latency_achieved".into(), json!(lat.achieved));
    }
    if run("backlog") {
        let g = growth(backend, args.backlog, concurrency).await?;
        let peak = g.large_peak_rss.map(megabytes).unwrap_or("unknown".into());
        say(format!(
            "drain of {} with {:>9} queued:          {:>10.0} jobs/s",
            grouped(g.measured),
            grouped(10_000 + g.measured),
            g.small_per_s
        ));
        say(format!(
            "drain of {} with {:>9} queued:          {:>10.0} jobs/s ({:+.0} %), peak memory {peak}",
            grouped(g.measured),
            grouped(g.backlog),
            g.large_per_s,
            (g.large_per_s / g.small_per_s - 1.0) * 100.0
        ));
        figures.insert(
            "drain_backlog_30k_jobs_per_s".into(),
            json!(g.small_per_s.round()),
        );
        figures.insert("drain_backlog_large".into(), json!(g.backlog));
        figures.insert(
            "drain_backlog_large_jobs_per_s".into(),
            json!(g.large_per_s.round()),
        );
        if let Some(bytes) = g.large_peak_rss {
            figures.insert("drain_backlog_large_peak_rss_bytes".into(), json!(bytes));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn medians() {
        assert_eq!(super::median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(&mut [5.0]), 5.0);
        assert_eq!(super::median(&mut []), 0.0);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(super::grouped(0), "0");
        assert_eq!(super::grouped(999), "999");
        assert_eq!(super::grouped(20_000), "20,000");
        assert_eq!(super::grouped(1_000_000), "1,000,000");
    }
}
