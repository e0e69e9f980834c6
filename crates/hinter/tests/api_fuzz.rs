//! The HTTP API against its own OpenAPI document, on the real `hinter serve` binary:
//!
//! 1. `GET /api/v1/openapi.json` is a valid OpenAPI 3.1 document (`openapi-spec-validator`);
//! 2. a property-based fuzzer, [schemathesis](https://schemathesis.readthedocs.io), sends
//!    requests generated from the document (valid and invalid ones, and stateful sequences
//!    following the answers' ids) with an admin token, and checks every answer: no server
//!    error, each status, content type, header and body as the document says, invalid input
//!    refused, valid input accepted.
//!
//! The tools come from a Python virtual environment (`.ci/run` makes it: `ensure_fuzzer`):
//! `HINTER_TEST_SCHEMATHESIS` is its `st`, `HINTER_TEST_OPENAPI_PYTHON` its `python` (with
//! `openapi-spec-validator`); both default to `~/.cache/hinter-ci/venv/bin/`. Without them
//! the test prints a note and passes, except under CI=true, where it fails.
//!
//! schemathesis' reports (JUnit XML, ndjson of every request) go to `target/api-fuzz/<store>/`
//! (CI keeps them as artifacts). The run is bounded: a fixed seed, a number of examples per
//! operation and a time budget.
//!
//! Every check of schemathesis runs, `positive_data_acceptance` (a request the document
//! calls valid is not refused with 400/422) and `negative_data_rejection` (one it calls
//! invalid is refused) included: the document states the input rules the server enforces
//! (`crates/hinter-server/src/input_rules.rs`). Two answers to valid requests depend on
//! something no schema holds (a reused `Idempotency-Key`, a server without
//! `--callback-secret`): the hooks of
//! `tests/api_fuzz_hooks.py` keep just those out of the requests generated as valid, with
//! the reasons.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use support::{hinter_command, pg, Server, TestDir};

/// The fuzzer's seed: a run is repeatable.
const SEED: &str = "20261130";
/// Generated examples per operation and phase.
const MAX_EXAMPLES: &str = "40";
/// The fuzzing/stateful phases repeat until this budget (seconds) is spent.
const MAX_TIME: &str = "90";
/// No request may take longer (seconds). The long-polls (`wait` of a job, a lease, an events
/// page) are cut by the server to its `--max-wait` (100 ms here), and the event stream is
/// only answered to `Accept: text/event-stream`, which the fuzzer does not send: every
/// request ends well before (schemathesis' own response-time check wants 10 s).
const REQUEST_TIMEOUT: &str = "75";
/// Where a tool is: `var`, else `default` in the CI venv; `None` (after a note, or a panic
/// under CI) when it is not there.
fn tool(var: &str, default: &str) -> Option<PathBuf> {
    let path = match std::env::var_os(var) {
        Some(path) => PathBuf::from(path),
        None => {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/hinter-ci/venv/bin").join(default)
        }
    };
    if path.is_file() {
        return Some(path);
    }
    pg::cannot_run(
        "the API fuzz test",
        &format!(
            "{} is missing (set {var}, or make the venv: python3 -m venv \
             ~/.cache/hinter-ci/venv && ~/.cache/hinter-ci/venv/bin/pip install \
             schemathesis==4.32.5 openapi-spec-validator==0.9.0)",
            path.display()
        ),
    );
    None
}

/// `target/api-fuzz/<name>/`, emptied.
fn report_dir(name: &str) -> PathBuf {
    // The test binary is target/<profile>/deps/api_fuzz-<hash>.
    let exe = std::env::current_exe().expect("the test binary's path");
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"));
    let dir = target.join("api-fuzz").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the report folder");
    dir
}

/// `hinter tokens create fuzz --scope admin STORE…`: the secret (its last line).
fn admin_token(store: &[String]) -> String {
    let output = hinter_command()
        .args(["tokens", "create", "fuzz", "--scope", "admin"])
        .args(store)
        .output()
        .expect("running hinter tokens create");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "hinter tokens create failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.lines().last().expect("the token").trim().to_string()
}

/// Runs `command` to its end; its exit status and output (stdout then stderr).
async fn run(mut command: Command) -> (std::process::ExitStatus, String) {
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the blocking task")
        .expect("running the tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, text)
}

/// Validates the document, then fuzzes the API of a server on `store`.
async fn fuzz(name: &str, dir: &TestDir, store: Vec<String>) {
    let (Some(st), Some(python)) = (
        tool("HINTER_TEST_SCHEMATHESIS", "st"),
        tool("HINTER_TEST_OPENAPI_PYTHON", "python"),
    ) else {
        return;
    };
    let started = Instant::now();
    let token = admin_token(&store);
    // Long-polls cut to a tenth of a second: a generated `wait` (valid ones go up to `3650d`)
    // answers at once instead of holding the run, and schemathesis' response-time check
    // (10 s) holds for every request.
    let server = Server::start_on(dir, &store, "serve", &["--max-wait", "100ms"]).await;
    let base = format!("http://{}", server.addr);

    let document = reqwest::get(format!("{base}/api/v1/openapi.json"))
        .await
        .expect("GET /api/v1/openapi.json")
        .text()
        .await
        .expect("the document");
    let path = dir.write("openapi.json", &document);
    let mut validate = Command::new(&python);
    validate.args(["-m", "openapi_spec_validator"]).arg(&path);
    let (status, output) = run(validate).await;
    assert!(
        status.success(),
        "openapi-spec-validator refuses the document:\n{output}"
    );

    let reports = report_dir(name);
    let mut st_run = Command::new(&st);
    st_run
        .arg("run")
        .arg(format!("{base}/api/v1/openapi.json"))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all"])
        .args(["--seed", SEED])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--max-time", MAX_TIME])
        // One worker: with two, schemathesis' generator (Hypothesis describing its strategies
        // with `ast.parse` from two threads) fails now and then inside CPython 3.11 ("AST
        // constructor recursion depth mismatch"), an error of the tool, not of the API.
        .args(["--workers", "1"])
        .args(["--request-timeout", REQUEST_TIMEOUT])
        .args(["--report", "junit,ndjson"])
        .arg("--report-dir")
        .arg(&reports)
        .args(["--generation-database", "none"])
        .arg("--no-color")
        // Keeps valid requests valid where the answer depends on state, configuration or
        // another header (see the file).
        .env(
            "SCHEMATHESIS_HOOKS",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api_fuzz_hooks.py"),
        )
        // No interactive prompts, no telemetry, no database of examples in the worktree.
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("NO_COLOR", "1")
        .current_dir(dir.path());
    let (status, output) = run(st_run).await;
    eprintln!(
        "schemathesis ({name}) took {:?}; reports in {}",
        started.elapsed(),
        reports.display()
    );
    assert!(
        status.success(),
        "schemathesis found problems ({status}):\n{output}\nserver log:\n{}",
        server.stderr()
    );
    eprintln!(
        "{}",
        output.lines().rev().take(15).collect::<Vec<_>>().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_matches_its_openapi_document_under_fuzzing_sqlite() {
    let dir = TestDir::new("fuzz");
    let store = vec![
        "--data-dir".to_string(),
        dir.data_dir().display().to_string(),
    ];
    fuzz("sqlite", &dir, store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_matches_its_openapi_document_under_fuzzing_postgres() {
    let Some(url) = pg::database_url("the API fuzz test on PostgreSQL") else {
        return;
    };
    let db = pg::TestDb::fresh(&url, "hinter_fuzz");
    let dir = TestDir::new("fuzz-pg");
    fuzz("postgres", &dir, db.args()).await;
}
