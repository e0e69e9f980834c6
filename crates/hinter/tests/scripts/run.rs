//! Running script jobs: every interpreter available here, payloads that try to inject, exit
//! codes, output and its cap, and the `hinter jobs logs` command.

use super::support::{hinter_command, TestDir};
use super::*;

const SH: &str = r#"payload=$(cat)
file=$(cat "$HINTER_PAYLOAD_FILE")
echo "sh says hello"
echo "sh complains" >&2
echo "::progress::40 half way"
echo '::checkpoint::{"step": 2}'
printf '::result::{"stdin": %s, "file": %s, "job": "%s", "queue": "%s", "attempt": %s, "cwd": "%s", "token": "%s", "mode": "%s"}\n' \
    "$payload" "$file" "$HINTER_JOB_NAME" "$HINTER_QUEUE" "$HINTER_ATTEMPT" "$(pwd)" \
    "${HINTER_TOKEN-unset}${SERVER_SECRET-unset}" "$MODE"
"#;

const PY: &str = r#"import json, os, sys
payload = json.load(sys.stdin)
with open(os.environ["HINTER_PAYLOAD_FILE"]) as f:
    file = json.load(f)
print("py says hello", flush=True)
print("py complains", file=sys.stderr, flush=True)
print("::progress::40 half way", flush=True)
print("::result::" + json.dumps({"stdin": payload, "file": file, "job": os.environ["HINTER_JOB_NAME"],
      "attempt": int(os.environ["HINTER_ATTEMPT"]), "cwd": os.getcwd()}), flush=True)
sys.exit(payload.get("exit", 0))
"#;

const JS: &str = r#"const fs = require("fs");
const payload = JSON.parse(fs.readFileSync(0, "utf8"));
const file = JSON.parse(fs.readFileSync(process.env.HINTER_PAYLOAD_FILE, "utf8"));
console.log("js says hello");
console.error("js complains");
console.log("::progress::40 half way");
console.log("::result::" + JSON.stringify({stdin: payload, file, job: process.env.HINTER_JOB_NAME,
  attempt: Number(process.env.HINTER_ATTEMPT), cwd: process.cwd()}));
"#;

/// An executable without a known extension runs directly (here a POSIX shell script).
const EXE: &str = r#"#!/bin/sh
payload=$(cat)
echo "exe says hello"
echo "exe complains" >&2
echo "::progress::40 half way"
printf '::result::{"stdin": %s, "file": %s, "job": "%s", "attempt": %s, "cwd": "%s"}\n' \
    "$payload" "$(cat "$HINTER_PAYLOAD_FILE")" "$HINTER_JOB_NAME" "$HINTER_ATTEMPT" "$(pwd)"
"#;

/// One job per interpreter on this machine (.sh, .py, .js when node is installed, an
/// executable): the payload arrives on stdin and in the payload file, stdout lines are
/// stored as INFO and stderr lines as ERROR in the attempt's log, the progress and the
/// result are set, the working directory is the job's folder, and the script's environment
/// has neither the server's secrets nor its other variables, only settings.job's `env`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_interpreter_runs_its_job() {
    let dir = TestDir::new("interpreters");
    let jobs = jobs_dir(&dir);
    put(&jobs, "triggered/sh-job/run.sh", SH, false);
    put(
        &jobs,
        "triggered/sh-job/settings.job",
        r#"{"queue": "scripts", "env": {"MODE": "fast"}}"#,
        false,
    );
    put(&jobs, "triggered/py-job/run.py", PY, false);
    put(&jobs, "triggered/exe-job/tool", EXE, true);
    let node = installed("node");
    if node {
        put(&jobs, "triggered/js-job/index.js", JS, false);
    }
    let server = Server::launch(
        "hinter serve",
        Server::READY_TIMEOUT,
        Duration::from_secs(30),
        |addr| {
            let mut command = hinter_command();
            command
                .env("HINTER_TOKEN", "server-token")
                .env("SERVER_SECRET", "server-secret")
                .arg("serve")
                .arg("--data-dir")
                .arg(dir.data_dir())
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--jobs-dir")
                .arg(&jobs);
            support::ChildGuard::spawn_logged(&dir, "serve", &mut command)
        },
    )
    .await;
    let api = &server.api;
    let payload = json!({"name": "Ada", "n": 1});

    let mut names = vec!["sh-job", "py-job", "exe-job"];
    if node {
        names.push("js-job");
    }
    for name in names {
        let id = enqueue(api, name, payload.clone()).await;
        let job = finished(api, &id).await;
        assert_eq!(job["state"], "succeeded", "{name}: {job}");
        let result = &job["result"];
        assert_eq!(result["stdin"], payload, "{name}: payload on stdin");
        assert_eq!(result["file"], payload, "{name}: payload in the file");
        assert_eq!(result["job"], name);
        assert_eq!(result["attempt"], 1);
        let folder = jobs.join("triggered").join(name);
        assert_eq!(
            result["cwd"].as_str().map(PathBuf::from),
            Some(std::fs::canonicalize(&folder).expect("folder")),
            "{name}: runs in its folder"
        );
        assert_eq!(job["progress"]["percent"], 40.0, "{name}: {job}");
        assert_eq!(job["progress"]["message"], "half way");
        let short = name.trim_end_matches("-job");
        let lines = texts(&logs(api, &id, "").await);
        assert!(
            lines.contains(&("info".into(), format!("{short} says hello"))),
            "{name}: {lines:?}"
        );
        assert!(
            lines.contains(&("error".into(), format!("{short} complains"))),
            "{name}: {lines:?}"
        );
        let all = logs(api, &id, "").await;
        assert!(
            all.iter().all(|l| l["attempt"] == 1 && l["at"].is_string()),
            "{all:?}"
        );
    }
    let id = enqueue(api, "sh-job", json!(1)).await;
    let job = finished(api, &id).await;
    assert_eq!(job["queue"], "scripts", "settings.job's queue applies");
    assert_eq!(
        job["result"]["token"], "unsetunset",
        "no secrets inherited: {job}"
    );
    assert_eq!(job["result"]["mode"], "fast", "settings.job env: {job}");
    assert_eq!(job["checkpoint"], json!({"step": 2}));
}

/// Exit 0 succeeds; 65 is dead at once; any other code is retried with backoff until the
/// attempts are used up; each attempt's log and exit code are kept apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_decide_the_outcome() {
    let dir = TestDir::new("exit-codes");
    let jobs = jobs_dir(&dir);
    put(
        &jobs,
        "triggered/exits/run.sh",
        "echo \"attempt $HINTER_ATTEMPT\"\necho \"failing with $(cat)\" >&2\nexit $(cat \"$HINTER_PAYLOAD_FILE\")\n",
        false,
    );
    put(
        &jobs,
        "triggered/exits/settings.job",
        r#"{"max_attempts": 2}"#,
        false,
    );
    let server = serve(&dir, &jobs).await;
    let api = &server.api;

    let ok = finished(api, &enqueue(api, "exits", json!(0)).await).await;
    assert_eq!(ok["state"], "succeeded", "{ok}");

    let permanent = finished(api, &enqueue(api, "exits", json!(65)).await).await;
    assert_eq!(permanent["state"], "dead", "{permanent}");
    assert_eq!(permanent["attempt"], 1, "no retry after exit 65");
    assert_eq!(permanent["runs"][0]["exit_code"], 65);
    let message = permanent["errors"][0]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("exited with code 65 (failed permanently): failing with 65"),
        "{message}"
    );

    let id = enqueue(api, "exits", json!(3)).await;
    let retried = finished(api, &id).await;
    assert_eq!(retried["state"], "dead", "{retried}");
    assert_eq!(retried["attempt"], 2, "retried once, then out of attempts");
    let codes: Vec<&Value> = retried["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| &r["exit_code"])
        .collect();
    assert_eq!(codes, [&json!(3), &json!(3)]);
    let first = texts(&logs(api, &id, "attempt=1").await);
    let second = texts(&logs(api, &id, "attempt=2").await);
    assert_eq!(
        first,
        [
            ("info".into(), "attempt 1".into()),
            ("error".into(), "failing with 3".into())
        ]
    );
    assert_eq!(
        second,
        [
            ("info".into(), "attempt 2".into()),
            ("error".into(), "failing with 3".into())
        ]
    );
}

/// Payloads built to break out of a shell reach the script byte for byte and never run:
/// the canary file is never created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_never_become_commands() {
    let dir = TestDir::new("injection");
    let jobs = jobs_dir(&dir);
    let canary = dir.path().join("canary");
    let c = canary.display().to_string();
    // The script hands back exactly what it read, as text.
    put(
        &jobs,
        "triggered/echo/run.sh",
        "stdin=$(cat)\nfile=$(cat \"$HINTER_PAYLOAD_FILE\")\nprintf '::result::{\"stdin\": %s, \"file\": %s}\\n' \"$stdin\" \"$file\"\n",
        false,
    );
    put(&jobs, "triggered/echo-py/run.py", "import sys, json\nraw = sys.stdin.read()\nprint('::result::' + json.dumps({'raw': raw}))\n", false);
    let server = serve(&dir, &jobs).await;
    let api = &server.api;
    let nasty = [
        json!(format!("; touch {c}")),
        json!(format!("$(touch {c})")),
        json!(format!("`touch {c}`")),
        json!(format!("' ; touch {c} ; '")),
        json!(format!("\" ; touch {c} ; \"")),
        json!(format!("line one\ntouch {c}\n")),
        json!("--help"),
        json!(["--rm", "-rf", "/", format!("--output={c}")]),
        json!({"cmd": format!("a && touch {c} || touch {c}"), "q": "\\\"'$HOME", "nl": "\n\r\t"}),
    ];
    for payload in nasty {
        let id = enqueue(api, "echo", payload.clone()).await;
        let job = finished(api, &id).await;
        assert_eq!(job["state"], "succeeded", "{payload}: {job}");
        assert_eq!(job["result"]["stdin"], payload, "stdin byte-exact");
        assert_eq!(job["result"]["file"], payload, "payload file byte-exact");
        let id = enqueue(api, "echo-py", payload.clone()).await;
        let job = finished(api, &id).await;
        let raw = job["result"]["raw"].as_str().expect("raw text");
        assert_eq!(
            raw,
            format!("{}\n", serde_json::to_string(&payload).expect("JSON")),
            "{payload}"
        );
    }
    assert!(!canary.exists(), "a payload was executed");
}

/// Output past the per-attempt cap (1 MiB) is not kept, and a last line says how much was
/// dropped; the job itself is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_over_the_cap_is_dropped_and_said() {
    let dir = TestDir::new("output-cap");
    let jobs = jobs_dir(&dir);
    // 30,000 lines of 99 characters (100 bytes with the newline): about 3 MB.
    put(
        &jobs,
        "triggered/chatty/run.py",
        "import sys\nline = 'x' * 99\nfor i in range(30000):\n    sys.stdout.write(line + '\\n')\nprint('::result::{\"done\": true}')\n",
        false,
    );
    let server = serve(&dir, &jobs).await;
    let api = &server.api;
    let id = enqueue(api, "chatty", json!(null)).await;
    let job = finished(api, &id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        job["result"],
        json!({"done": true}),
        "the result line past the cap still counts"
    );
    let lines = logs(api, &id, "").await;
    let kept = (1024 * 1024) / 100;
    assert_eq!(lines.len(), kept + 1, "kept lines and the note");
    let note = lines.last().expect("a note");
    assert_eq!(note["level"], "warn");
    let dropped = 30_001 - kept;
    assert_eq!(
        note["line"],
        format!(
            "output over this attempt's log cap of 1 MiB: {dropped} more lines ({} bytes) were not kept",
            dropped * 100 - (100 - "::result::{\"done\": true}".len() - 1)
        ),
        "{note}"
    );
}

/// `hinter jobs logs ID` prints the lines with time, attempt and level; `--follow` prints
/// them as they come and returns once the job has finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_logs_prints_and_follows() {
    let dir = TestDir::new("logs-cli");
    let jobs = jobs_dir(&dir);
    let go = dir.path().join("go");
    put(
        &jobs,
        "triggered/slow/run.sh",
        &format!(
            "echo first\nwhile [ ! -e {} ]; do sleep 0.05; done\necho second >&2\n",
            go.display()
        ),
        false,
    );
    let server = serve(&dir, &jobs).await;
    let api = &server.api;
    let id = enqueue(api, "slow", json!(null)).await;
    wait_until_logged(api, &id, 1).await;
    let follow = hinter_command()
        .args(["jobs", "logs", &id, "--follow", "--server", &api.base])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("hinter jobs logs --follow");
    std::fs::write(&go, "").expect("release the job");
    let output = tokio::task::spawn_blocking(move || follow.wait_with_output())
        .await
        .expect("join")
        .expect("output");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    let printed: Vec<&str> = text.lines().collect();
    assert_eq!(printed.len(), 2, "{text}");
    assert!(printed[0].ends_with(" #1 INFO  first"), "{text}");
    assert!(printed[1].ends_with(" #1 ERROR second"), "{text}");
    assert_eq!(finished(api, &id).await["state"], "succeeded");

    let json_out = hinter_command()
        .args(["jobs", "logs", &id, "--json", "--server", &api.base])
        .output()
        .expect("hinter jobs logs --json");
    assert!(json_out.status.success(), "{json_out:?}");
    let page: Value = serde_json::from_slice(&json_out.stdout).expect("JSON");
    assert_eq!(page["lines"].as_array().map(Vec::len), Some(2), "{page}");
    assert_eq!(page["lines"][1]["stream"], "stderr");

    let missing = hinter_command()
        .args([
            "jobs",
            "logs",
            "01a228aa-0000-7000-8000-000000000000",
            "--server",
            &api.base,
        ])
        .output()
        .expect("hinter jobs logs");
    assert_eq!(missing.status.code(), Some(3), "unknown job: exit 3");
}

async fn wait_until_logged(api: &Api, id: &str, lines: usize) {
    support::wait_until(JOB_DEADLINE, "the job's first line", || async move {
        logs(api, id, "").await.len() >= lines
    })
    .await;
}
