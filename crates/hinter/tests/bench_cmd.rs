//! `hinter bench` runs the peer workload's phases (enqueue, drain, latency, backlog) on both
//! stores and reports what it measured: the real binary, a small workload, `--json`.

#[path = "support/pg.rs"]
#[allow(dead_code)]
mod pg;

use serde_json::Value;
use std::process::Command;

/// Runs `hinter bench ARGS --json` and returns its figures.
fn bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_hinter"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .env("RUST_LOG", "warn")
        .output()
        .expect("running hinter bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hinter bench {args:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn number(figures: &Value, key: &str) -> f64 {
    figures[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {figures}"))
}

const WORKLOAD: [&str; 10] = [
    "--only",
    "enqueue,drain,latency,backlog",
    "--jobs",
    "2000",
    "--rate",
    "100",
    "--latency-duration",
    "1s",
    "--backlog",
    "40000",
];

/// The figures every store reports for the workload.
fn check_workload(figures: &Value) {
    assert!(number(figures, "enqueue_jobs_per_s") > 0.0, "{figures}");
    assert!(
        number(figures, "drain_in_process_jobs_per_s") > 0.0,
        "{figures}"
    );
    assert!(
        number(figures, "drain_cpu_ms_per_1k_jobs") > 0.0,
        "{figures}"
    );
    // Every probe of the open loop (100 a second for 1 s) started, and the ranks are ordered.
    assert_eq!(number(figures, "latency_achieved"), 100.0, "{figures}");
    let (p50, p99, max) = (
        number(figures, "latency_p50_ms"),
        number(figures, "latency_p99_ms"),
        number(figures, "latency_max_ms"),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{figures}");
    assert_eq!(number(figures, "drain_backlog_large"), 40000.0);
    assert!(number(figures, "drain_backlog_30k_jobs_per_s") > 0.0);
    assert!(number(figures, "drain_backlog_large_jobs_per_s") > 0.0);
    // The store, the worker and the runtime take some memory, and far less than a gigabyte.
    let peak = number(figures, "drain_backlog_large_peak_rss_bytes");
    assert!((1e6..1e9).contains(&peak), "{figures}");
}

#[test]
fn the_peer_workload_runs_on_the_embedded_store() {
    let figures = bench(&WORKLOAD);
    check_workload(&figures);
    assert!(figures.get("drain_server_cpu_ms_per_1k_jobs").is_none());
}

#[test]
fn the_peer_workload_runs_on_postgres() {
    let Some(url) = pg::database_url("the PostgreSQL bench test") else {
        return;
    };
    let mut args = WORKLOAD.to_vec();
    args.extend(["--database", &url]);
    let figures = bench(&args);
    check_workload(&figures);
    let out = Command::new(env!("CARGO_BIN_EXE_hinter"))
        .args(["bench", "--database", &url, "--only", "latency"])
        .args(["--rate", "100000", "--latency-duration", "1000d"])
        .output()
        .expect("running hinter bench");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("probes"));
    // The test database runs on this machine (CI starts it here), so its CPU is counted too.
    if url.contains("127.0.0.1") || url.contains("localhost") {
        assert!(number(&figures, "drain_server_cpu_ms_per_1k_jobs") > 0.0);
    }
}

#[test]
fn a_backlog_below_the_measured_drain_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_hinter"))
        .args(["bench", "--only", "backlog", "--backlog", "100"])
        .output()
        .expect("running hinter bench");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--backlog") && stderr.contains("30000"),
        "{stderr}"
    );
}

#[test]
fn a_phase_of_the_other_store_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_hinter"))
        .args(["bench", "--only", "wakeup"])
        .output()
        .expect("running hinter bench");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the wakeup phase does not run on the embedded store"),
        "{stderr}"
    );
}

#[test]
fn extreme_workloads_are_refused_before_anything_runs() {
    for (args, says) in [
        (&["--jobs", "0"][..], "--jobs"),
        (&["--jobs", "100000001"][..], "--jobs"),
        (&["--jobs=-5"][..], "--jobs"),
        (&["--backlog", "100000001"][..], "--backlog"),
        (&["--rate", "0"][..], "--rate"),
        (&["--rate", "18446744073709551616"][..], "--rate"),
        (
            &[
                "--only",
                "latency",
                "--rate",
                "100000",
                "--latency-duration",
                "1000d",
            ][..],
            "probes",
        ),
        (
            &["--only", "latency", "--latency-duration", "1ms"][..],
            "probes",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_hinter"))
            .arg("bench")
            .args(args)
            .output()
            .expect("running hinter bench");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} ran");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
