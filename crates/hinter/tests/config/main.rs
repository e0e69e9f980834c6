//! End-to-end tests of `hinter.toml` and `hinter config show`: the real `hinter` binary, run
//! in a temporary directory with a real file, environment and flags.
//!
//! Precedence is read back through `hinter config show --json` (which parses with the very
//! parser the command uses) and checked in real behaviour: a `hinter serve` listening where
//! the file (or the environment over it) says, refusing bodies over the file's limit.

#[path = "../support/mod.rs"]
mod support;

use serde_json::Value;
use std::path::Path;
use std::process::{Output, Stdio};
use support::{hinter_command, ChildGuard, Server, TestDir};

/// Runs `hinter ARGS` in `dir` with `env` (and no other `HINTER_*` variable).
fn run(dir: &TestDir, args: &[&str], env: &[(&str, &str)]) -> Output {
    hinter_command()
        .current_dir(dir.path())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("running hinter")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `hinter [PRE] config show --json TARGET` in `dir`: the document, after checking success.
fn show(dir: &TestDir, pre: &[&str], target: &[&str], env: &[(&str, &str)]) -> Value {
    let mut args: Vec<&str> = pre.to_vec();
    args.extend(["config", "show", "--json"]);
    args.extend(target);
    let output = run(dir, &args, env);
    assert!(
        output.status.success(),
        "hinter {args:?} failed: {}",
        stderr(&output)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "config show --json printed no JSON ({e}): {}",
            stdout(&output)
        )
    })
}

/// `(value, source)` of a setting in a `config show --json` document.
fn setting(doc: &Value, key: &str) -> (Value, String) {
    let entry = &doc["settings"][key];
    assert!(entry.is_object(), "no setting {key} in {doc:#}");
    (
        entry["value"].clone(),
        entry["source"].as_str().unwrap_or("?").to_string(),
    )
}

fn text(value: &str) -> Value {
    Value::String(value.to_string())
}

/// Asserts a usage failure (exit status 2) whose message is `message`.
#[track_caller]
fn assert_config_error(output: &Output, message: &str) {
    assert_eq!(output.status.code(), Some(2), "stderr: {}", stderr(output));
    assert!(
        stderr(output).contains(&format!("error: {message}")),
        "expected {message:?} in stderr: {}",
        stderr(output)
    );
}

#[test]
fn precedence_is_flag_then_env_then_file_then_default() {
    let dir = TestDir::new("precedence");
    let file = dir.write(
        "settings.toml",
        "data_dir = \"file-data\"\n\
         [serve]\n\
         listen = \"127.0.0.1:1111\"\n\
         max_job_bytes = 5000\n\
         retain_dead = \"1d\"\n\
         retain_succeeded = \"2d\"\n",
    );
    let config = file.to_str().expect("a UTF-8 path");
    let pre = ["--config", config];
    let env = [
        ("HINTER_MAX_JOB_BYTES", "6000"),
        ("HINTER_RETAIN_DEAD", "3d"),
    ];

    // Flags over the environment over the file over the defaults.
    let doc = show(
        &dir,
        &pre,
        &["serve", "--retain-dead", "4d", "--data-dir", "flag-data"],
        &env,
    );
    assert_eq!(doc["command"], text("hinter serve"));
    assert_eq!(doc["config_file"], text(config));
    assert_eq!(
        setting(&doc, "listen"),
        (text("127.0.0.1:1111"), "file".into())
    );
    assert_eq!(
        doc["settings"]["listen"]["file_key"],
        text("[serve] listen")
    );
    assert_eq!(
        setting(&doc, "retain_succeeded"),
        (text("2d"), "file".into())
    );
    assert_eq!(setting(&doc, "max_job_bytes"), (text("6000"), "env".into()));
    assert_eq!(setting(&doc, "retain_dead"), (text("4d"), "flag".into()));
    assert_eq!(
        setting(&doc, "data_dir"),
        (text("flag-data"), "flag".into())
    );
    assert_eq!(
        setting(&doc, "retain_cancelled"),
        (text("30d"), "default".into())
    );
    assert_eq!(setting(&doc, "database"), (Value::Null, "unset".into()));

    // Without the flags, the environment; without it, the file.
    let doc = show(&dir, &pre, &["serve"], &env);
    assert_eq!(setting(&doc, "retain_dead"), (text("3d"), "env".into()));
    assert_eq!(
        setting(&doc, "data_dir"),
        (text("file-data"), "file".into())
    );
    assert_eq!(doc["settings"]["data_dir"]["file_key"], text("data_dir"));
    let doc = show(&dir, &pre, &[], &[]);
    assert_eq!(doc["command"], text("hinter serve"), "serve is the default");
    assert_eq!(
        setting(&doc, "max_job_bytes"),
        (text("5000"), "file".into())
    );
    assert_eq!(setting(&doc, "retain_dead"), (text("1d"), "file".into()));

    // Top-level keys reach every command with the setting; a section only its command.
    let doc = show(&dir, &pre, &["migrate"], &[]);
    assert_eq!(
        setting(&doc, "data_dir"),
        (text("file-data"), "file".into())
    );
    let doc = show(&dir, &pre, &["worker"], &[]);
    assert_eq!(
        setting(&doc, "data_dir"),
        (text("file-data"), "file".into())
    );
    assert_eq!(
        setting(&doc, "retain_dead"),
        (text("30d"), "default".into())
    );
}

#[test]
fn the_table_names_each_source() {
    let dir = TestDir::new("table");
    dir.write("hinter.toml", "[serve]\nlisten = \"127.0.0.1:1111\"\n");
    let output = run(
        &dir,
        &["config", "show", "serve", "--retain-dead", "4d"],
        &[("HINTER_MAX_JOB_BYTES", "6000")],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let table = stdout(&output);
    assert!(
        table.starts_with("hinter serve: settings (config file: hinter.toml)\n"),
        "{table}"
    );
    let row = |key: &str| {
        table
            .lines()
            .find(|line| line.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no row {key} in {table}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(row("listen"), "listen 127.0.0.1:1111 file [serve]");
    assert_eq!(
        row("max_job_bytes"),
        "max_job_bytes 6000 env HINTER_MAX_JOB_BYTES"
    );
    assert_eq!(row("retain_dead"), "retain_dead 4d flag --retain-dead");
    assert_eq!(row("retain_events"), "retain_events 7d default");
}

/// Starts `hinter --config FILE serve` with no `--listen`, the file (written per address)
/// naming the address; `env` on top.
async fn serve_from_file(
    dir: &TestDir,
    body: impl Fn(&str) -> String,
    env: &[(&str, &str)],
) -> Server {
    let data_dir = dir.data_dir();
    Server::launch(
        "hinter serve",
        Server::READY_TIMEOUT,
        Server::READY_TIMEOUT,
        |addr| {
            let file = dir.write(
                "serve.toml",
                &format!(
                    "data_dir = {:?}\n{}",
                    data_dir.to_str().expect("a UTF-8 path"),
                    body(&addr.to_string())
                ),
            );
            let mut command = hinter_command();
            command
                .arg("--config")
                .arg(&file)
                .arg("serve")
                .envs(env.iter().copied())
                .current_dir(dir.path());
            ChildGuard::spawn_logged(dir, "serve", &mut command)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_listens_and_limits_as_the_file_says() {
    let dir = TestDir::new("serve-file");
    let server = serve_from_file(
        &dir,
        |addr| format!("[serve]\nlisten = \"{addr}\"\nmax_job_bytes = 300\n"),
        &[],
    )
    .await;
    // The file's limit, not the default 1 MiB: a 400-byte job is too large.
    let big = format!(r#"{{"job":"t","payload":"{}"}}"#, "x".repeat(400));
    let resp = server.post_raw("/api/v1/jobs", big).await;
    assert_eq!(resp.status, 413, "{resp:?}");
    server
        .post_raw("/api/v1/jobs", r#"{"job":"t"}"#)
        .await
        .expect_status(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_beats_the_file_in_serve() {
    let dir = TestDir::new("serve-env");
    // The file's address cannot be bound; the environment's is the one served on.
    let mut addr_env = String::new();
    let data_dir = dir.data_dir();
    let server = Server::launch(
        "hinter serve",
        Server::READY_TIMEOUT,
        Server::READY_TIMEOUT,
        |addr| {
            addr_env = addr.to_string();
            let file = dir.write(
                "serve.toml",
                &format!(
                    "data_dir = {:?}\n[serve]\nlisten = \"203.0.113.1:1\"\nmax_job_bytes = 300\n",
                    data_dir.to_str().expect("a UTF-8 path")
                ),
            );
            let mut command = hinter_command();
            command
                .arg("serve")
                .env("HINTER_CONFIG", &file)
                .env("HINTER_LISTEN", addr.to_string())
                .env("HINTER_MAX_JOB_BYTES", "100000");
            ChildGuard::spawn_logged(&dir, "serve", &mut command)
        },
    )
    .await;
    assert_eq!(server.addr.to_string(), addr_env);
    let big = format!(r#"{{"job":"t","payload":"{}"}}"#, "x".repeat(400));
    server
        .post_raw("/api/v1/jobs", big)
        .await
        .expect_status(201);
}

#[test]
fn unknown_keys_are_named() {
    let dir = TestDir::new("unknown");
    // ./hinter.toml is read without being named.
    dir.write("hinter.toml", "[serve]\nlisten_addr = \"127.0.0.1:1\"\n");
    let output = run(&dir, &["serve"], &[]);
    assert_config_error(
        &output,
        "hinter.toml: [serve] listen_addr: unknown key (did you mean listen?)",
    );
    assert!(
        !dir.path().join("hinter-data").exists(),
        "nothing was started"
    );
    dir.write("hinter.toml", "retain_deed = \"1d\"\n");
    assert_config_error(
        &run(&dir, &["config", "show"], &[]),
        "hinter.toml: retain_deed: unknown key (did you mean retain_dead?)",
    );
    dir.write("hinter.toml", "[serv]\nlisten = \"127.0.0.1:1\"\n");
    assert_config_error(
        &run(&dir, &["jobs", "list"], &[]),
        "hinter.toml: serv: unknown key (did you mean [serve]?)",
    );
}

#[test]
fn max_event_streams_beyond_its_range_is_refused_naming_it() {
    let dir = TestDir::new("streams");
    for value in ["18446744073709551615", "1000001", "-1", "1e3", "many"] {
        let flag = format!("--max-event-streams={value}");
        let output = run(&dir, &["serve", &flag], &[]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{value}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("--max-event-streams"),
            "{value}: {}",
            stderr(&output)
        );
        let output = run(&dir, &["serve"], &[("HINTER_MAX_EVENT_STREAMS", value)]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "env {value}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn wrong_types_are_named() {
    let dir = TestDir::new("types");
    let cases = [
        (
            "[serve]\nmax_job_bytes = \"big\"\n",
            "[serve] max_job_bytes: expected a number of bytes, got \"big\"",
        ),
        (
            "durability = \"fast\"\n",
            "durability: expected one of \"full\", \"relaxed\", got \"fast\"",
        ),
        (
            "[worker]\nqueue = { name = \"a\" }\n",
            "[worker] queue: expected a string or an array of strings, got a table",
        ),
        (
            "[serve]\nretain_dead = 30\nrescue_interval = \"10ms\"\n",
            "[serve] rescue_interval: \"10ms\" is too short; an interval must be at least 100ms",
        ),
        (
            "[serve]\nlisten = [\"127.0.0.1:1\"]\n",
            "[serve] listen: expected a single value, got an array",
        ),
    ];
    for (body, message) in cases {
        let file = dir.write("bad.toml", body);
        let output = run(
            &dir,
            &["--config", file.to_str().expect("UTF-8"), "serve"],
            &[],
        );
        assert_config_error(&output, &format!("{}: {message}", file.display()));
    }
    dir.write(
        "hinter.toml",
        "[serve]\nlisten = \"127.0.0.1:1\"\nmax_job_bytes = \n",
    );
    assert_config_error(
        &run(&dir, &["serve"], &[]),
        "hinter.toml: line 3, column 17: invalid TOML: ",
    );
}

#[test]
fn a_named_file_must_exist() {
    let dir = TestDir::new("missing");
    let missing = dir.path().join("nope.toml");
    let missing = missing.to_str().expect("UTF-8");
    assert_config_error(
        &run(&dir, &["--config", missing, "serve"], &[]),
        &format!("{missing}: no such file (named by --config)"),
    );
    assert_config_error(
        &run(&dir, &["serve"], &[("HINTER_CONFIG", missing)]),
        &format!("{missing}: no such file (named by HINTER_CONFIG)"),
    );
    assert!(
        !dir.path().join("hinter-data").exists(),
        "nothing was started"
    );
    // No ./hinter.toml and none named: the defaults.
    let doc = show(&dir, &[], &[], &[]);
    assert_eq!(doc["config_file"], Value::Null);
    assert_eq!(
        setting(&doc, "listen"),
        (text("127.0.0.1:7433"), "default".into())
    );
}

#[test]
fn hinter_config_picks_the_file() {
    let dir = TestDir::new("env-file");
    dir.write("hinter.toml", "[serve]\nlisten = \"127.0.0.1:1001\"\n");
    let env_file = dir.write("env.toml", "[serve]\nlisten = \"127.0.0.1:1002\"\n");
    let flag_file = dir.write("flag.toml", "[serve]\nlisten = \"127.0.0.1:1003\"\n");
    let env_file = env_file.to_str().expect("UTF-8");
    let flag_file = flag_file.to_str().expect("UTF-8");
    let listen = |doc: &Value| setting(doc, "listen").0;

    let doc = show(&dir, &[], &[], &[]);
    assert_eq!(doc["config_file"], text("hinter.toml"));
    assert_eq!(listen(&doc), text("127.0.0.1:1001"));
    let doc = show(&dir, &[], &[], &[("HINTER_CONFIG", env_file)]);
    assert_eq!(doc["config_file"], text(env_file));
    assert_eq!(listen(&doc), text("127.0.0.1:1002"));
    let doc = show(
        &dir,
        &["--config", flag_file],
        &[],
        &[("HINTER_CONFIG", env_file)],
    );
    assert_eq!(doc["config_file"], text(flag_file));
    assert_eq!(listen(&doc), text("127.0.0.1:1003"));
}

#[test]
fn secrets_are_hidden() {
    let dir = TestDir::new("secrets");
    dir.write(
        "hinter.toml",
        "token = \"file-token-secret\"\n\
         server = \"http://user:server-secret@127.0.0.1:1\"\n\
         [serve]\n\
         database = \"postgres://hinter:file-db-secret@127.0.0.1:1/db\"\n\
         [[tokens]]\n\
         name = \"web\"\n\
         scopes = [\"enqueue\", \"read\"]\n\
         queues = [\"emails\"]\n\
         hash = \"99e20bbd62346bc2a5498c0a61de09750306cf107b7aa17ce17c60180eb09950\"\n",
    );
    let secrets = [
        "file-token-secret",
        "server-secret",
        "file-db-secret",
        "env-token-secret",
        "flag-db-secret",
        "99e20bbd62346bc2",
    ];
    let mut printed = String::new();
    for json in [true, false] {
        for target in [
            &["serve"][..],
            &["worker", "--database", "postgres://u:flag-db-secret@h/db"][..],
            &["jobs", "list"][..],
        ] {
            let mut args = vec!["config", "show"];
            if json {
                args.push("--json");
            }
            args.extend(target);
            let output = run(&dir, &args, &[("HINTER_TOKEN", "env-token-secret")]);
            assert!(output.status.success(), "{}", stderr(&output));
            printed.push_str(&stdout(&output));
            printed.push_str(&stderr(&output));
        }
    }
    for help in [
        &["serve", "--help"][..],
        &["jobs", "list", "--help"][..],
        &["worker", "--help"][..],
    ] {
        let output = run(&dir, help, &[]);
        assert!(output.status.success(), "{}", stderr(&output));
        printed.push_str(&stdout(&output));
    }
    for secret in secrets {
        assert!(!printed.contains(secret), "{secret} was shown:\n{printed}");
    }
    assert!(
        printed.contains("postgres://hinter:***@127.0.0.1:1/db"),
        "{printed}"
    );
    assert!(printed.contains("postgres://u:***@h/db"), "{printed}");

    let doc = show(
        &dir,
        &[],
        &["jobs", "list"],
        &[("HINTER_TOKEN", "env-token-secret")],
    );
    assert_eq!(setting(&doc, "token"), (text("***"), "env".into()));
    assert_eq!(
        setting(&doc, "server"),
        (text("http://user:***@127.0.0.1:1"), "file".into())
    );
    // Declared tokens: names, scopes and queues only.
    assert_eq!(
        doc["tokens"],
        serde_json::json!([{"name": "web", "scopes": ["enqueue", "read"], "queues": ["emails"]}])
    );
}

#[test]
fn a_plain_token_secret_is_refused() {
    let dir = TestDir::new("plain-token");
    dir.write(
        "hinter.toml",
        "[[tokens]]\nname = \"web\"\nscopes = [\"enqueue\"]\nsecret = \"s3cret\"\n",
    );
    let output = run(&dir, &["config", "show"], &[]);
    assert_config_error(
        &output,
        "hinter.toml: tokens[0].secret: a token's secret does not belong in the file",
    );
    assert!(!stderr(&output).contains("s3cret"));
}

#[test]
fn the_worker_mode_follows_the_file() {
    let dir = TestDir::new("worker-mode");
    dir.write(
        "hinter.toml",
        "server = \"http://127.0.0.1:1\"\ndata_dir = \"data\"\n",
    );
    let output = run(&dir, &["worker", "--", "true"], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(
            "sets both server (HTTP mode) and database or data_dir (store mode) at the top level"
        ),
        "{}",
        stderr(&output)
    );
}

#[test]
fn the_documented_example_loads() {
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md"),
    )
    .expect("reading docs/configuration.md");
    let marker = "<!-- example: hinter.toml -->\n```toml\n";
    let start = docs.find(marker).expect("the example's marker") + marker.len();
    let end = start + docs[start..].find("```").expect("the example's end");
    let dir = TestDir::new("example");
    let file = dir.write("example.toml", &docs[start..end]);
    let pre = ["--config", file.to_str().expect("UTF-8")];
    let doc = show(&dir, &pre, &["serve"], &[]);
    assert_eq!(
        setting(&doc, "data_dir"),
        (text("/var/lib/hinter"), "file".into())
    );
    assert_eq!(setting(&doc, "retain_dead"), (text("90d"), "file".into()));
    let names: Vec<&Value> = doc["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| &t["name"])
        .collect();
    assert_eq!(names, [&text("web"), &text("remote-workers")]);
    let doc = show(&dir, &pre, &["worker"], &[]);
    assert_eq!(
        setting(&doc, "queue"),
        (serde_json::json!(["emails", "reports"]), "file".into())
    );
    assert_eq!(setting(&doc, "concurrency"), (text("8"), "file".into()));
}
