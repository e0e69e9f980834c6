//! Continuous jobs (`continuous/NAME/`): started with the server, restarted with growing
//! delays when they exit, one run across two servers for a singleton (taken over when its
//! holder dies), and stopped with the shutdown file, SIGTERM, then SIGKILL of the group.

use super::support::{wait_for, wait_until, Server, TestDir};
use super::*;
use std::time::Instant;

/// The status of continuous job `name` in `GET /api/v1/definitions`.
async fn status(api: &Api, name: &str) -> Value {
    let all = definitions(api).await;
    definition(&all, name)
        .map(|d| d["status"].clone())
        .unwrap_or(Value::Null)
}

/// Lines of a file the scripts append to (empty if none yet).
fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A script that crashes at once is started again after 1 s, 2 s, 4 s: the gaps between its
/// starts (measured by the script) grow, and the API shows its restarts, last exit and
/// last output lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_continuous_job_is_restarted_with_growing_delays() {
    let dir = TestDir::new("continuous-backoff");
    let jobs = jobs_dir(&dir);
    let starts = dir.path().join("starts");
    put(
        &jobs,
        "continuous/crasher/run.sh",
        &format!(
            "date +%s.%N >> {}\necho \"run $HINTER_ATTEMPT\"\necho 'disk full' >&2\nexit 3\n",
            starts.display()
        ),
        false,
    );
    let server = serve(&dir, &jobs).await;
    let times: Vec<f64> = wait_for(Duration::from_secs(30), "four starts", || {
        let starts = starts.clone();
        async move {
            let times: Vec<f64> = lines(&starts)
                .iter()
                .filter_map(|l| l.parse().ok())
                .collect();
            (times.len() >= 4).then_some(times)
        }
    })
    .await;
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] >= 0.9, "first delay about 1 s: {gaps:?}");
    assert!(
        gaps[1] >= 1.9 && gaps[1] > gaps[0] * 1.5,
        "doubling: {gaps:?}"
    );
    assert!(
        gaps[2] >= 3.9 && gaps[2] > gaps[1] * 1.5,
        "doubling: {gaps:?}"
    );

    let status = status(&server.api, "crasher").await;
    assert!(status["restarts"].as_u64().unwrap_or(0) >= 3, "{status}");
    assert_eq!(status["last_exit"]["exit_code"], 3, "{status}");
    assert_eq!(
        status["last_exit"]["message"], "exited with code 3: disk full",
        "{status}"
    );
    assert!(
        ["backoff", "running"].contains(&status["state"].as_str().unwrap_or("")),
        "{status}"
    );
    assert!(
        !status["host"].as_str().unwrap_or("").is_empty(),
        "{status}"
    );
    let output = status["output"].as_array().cloned().unwrap_or_default();
    assert!(
        output
            .iter()
            .any(|l| l["stream"] == "stderr" && l["line"] == "disk full"),
        "{status}"
    );
    assert!(
        output.iter().any(
            |l| l["stream"] == "stdout" && l["line"].as_str().unwrap_or("").starts_with("run ")
        ),
        "{status}"
    );
    assert!(server.stderr().contains("starting it again in 2s"));

    let listed = super::support::hinter_command()
        .args(["definitions", "list", "--server", &server.api.base])
        .output()
        .expect("hinter definitions list");
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(
        table.lines().any(|l| l.starts_with("crasher ")
            && l.contains(" continuous ")
            && l.contains(" restarts")),
        "{table}"
    );
}

/// A singleton script that notes which server started it and runs until killed.
fn singleton_script(dir: &Path) -> String {
    format!(
        "echo \"$PPID $$\" >> {}/starts\nwhile :; do sleep 0.1; done\n",
        dir.display()
    )
}

/// Two servers on one SQLite store with the same folder: the singleton runs on one only
/// (the other shows `waiting-for-singleton` naming the holder); when the holder is killed
/// (SIGKILL), the other starts it within the leadership lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_singleton_runs_once_across_two_servers_and_moves_when_its_holder_dies() {
    let dir = TestDir::new("continuous-singleton");
    let jobs = jobs_dir(&dir);
    put(
        &jobs,
        "continuous/only-one/run.sh",
        &singleton_script(dir.path()),
        false,
    );
    put(
        &jobs,
        "continuous/only-one/settings.job",
        r#"{"is_singleton": true}"#,
        false,
    );
    let flags = [
        "--jobs-dir",
        jobs.to_str().expect("UTF-8"),
        "--leader-ttl",
        "1s",
        "--heartbeat-interval",
        "200ms",
    ];
    let mut servers = [
        Server::start(&dir, &flags).await,
        Server::start(&dir, &flags).await,
    ];
    let starts = dir.path().join("starts");
    let (holder_pid, script_pid) = wait_for(JOB_DEADLINE, "the singleton to start", || {
        let starts = starts.clone();
        async move {
            let line = lines(&starts).first()?.clone();
            let (parent, script) = line.split_once(' ')?;
            Some((parent.parse::<u32>().ok()?, script.parse::<i32>().ok()?))
        }
    })
    .await;
    let holder = servers
        .iter()
        .position(|s| s.proc.pid() == holder_pid)
        .expect("started by one of the two servers");
    let other = 1 - holder;
    wait_until(
        JOB_DEADLINE,
        "the other server to wait for the singleton",
        || async {
            let s = status(&servers[other].api, "only-one").await;
            s["state"] == "waiting-for-singleton" && s["singleton_holder"].is_string()
        },
    )
    .await;
    let running = status(&servers[holder].api, "only-one").await;
    assert_eq!(running["state"], "running", "{running}");
    assert_eq!(running["pid"], script_pid, "{running}");
    assert_eq!(
        lines(&starts).len(),
        1,
        "started once: {:?}",
        lines(&starts)
    );

    servers[holder].kill();
    let killed_at = Instant::now();
    let other_pid = servers[other].proc.pid();
    wait_until(
        Duration::from_secs(20),
        "the other server to start the singleton",
        || async {
            lines(&starts)
                .iter()
                .any(|l| l.starts_with(&format!("{other_pid} ")))
        },
    )
    .await;
    assert!(
        killed_at.elapsed() < Duration::from_secs(10),
        "taken over within the lease: {:?}",
        killed_at.elapsed()
    );
    // The script of the killed server did not run on: it got SIGKILL when its parent died
    // (setpriv --pdeathsig).
    wait_until(
        Duration::from_secs(10),
        "the orphaned script to end",
        || async { !alive(script_pid) },
    )
    .await;
    let running = status(&servers[other].api, "only-one").await;
    assert_eq!(running["state"], "running", "{running}");
    assert_eq!(lines(&starts).len(), 2, "{:?}", lines(&starts));
}

/// On SIGTERM the server stops its continuous jobs: a polite script sees the shutdown file
/// and exits; one ignoring SIGTERM is killed with its grandchild after its
/// `stopping_wait_time` (2 s), and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_honours_the_shutdown_file_and_stopping_wait_time() {
    let dir = TestDir::new("continuous-stop");
    let jobs = jobs_dir(&dir);
    let d = dir.path().display();
    put(
        &jobs,
        "continuous/polite/run.sh",
        &format!(
            "trap '' TERM\necho $$ > {d}/polite.pid\n\
             while [ ! -e \"$WEBJOBS_SHUTDOWN_FILE\" ]; do sleep 0.05; done\n\
             touch {d}/polite-saw-the-file\nexit 0\n"
        ),
        false,
    );
    put(
        &jobs,
        "continuous/stubborn/run.sh",
        &format!(
            "trap '' TERM\nsleep 1000 &\necho \"$$ $!\" > {d}/stubborn.tmp && mv {d}/stubborn.tmp {d}/stubborn.pids\n\
             while :; do wait; done\n"
        ),
        false,
    );
    put(
        &jobs,
        "continuous/stubborn/settings.job",
        r#"{"stopping_wait_time": "2s"}"#,
        false,
    );
    let mut server = serve(&dir, &jobs).await;
    let pids_file = dir.path().join("stubborn.pids");
    let (script, grandchild) = wait_for(JOB_DEADLINE, "the stubborn script's pids", || {
        let file = pids_file.clone();
        async move {
            let text = std::fs::read_to_string(&file).ok()?;
            let (a, b) = text.trim().split_once(' ')?;
            Some((a.parse::<i32>().ok()?, b.parse::<i32>().ok()?))
        }
    })
    .await;
    let polite_pid = dir.path().join("polite.pid");
    wait_until(JOB_DEADLINE, "the polite script to run", || async {
        polite_pid.exists()
    })
    .await;
    let asked = Instant::now();
    let status = server
        .terminate(Duration::from_secs(30))
        .await
        .expect("the server stops");
    let took = asked.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        took >= Duration::from_secs(2),
        "waited stopping_wait_time: {took:?}"
    );
    assert!(took < Duration::from_secs(12), "{took:?}");
    assert!(dir.path().join("polite-saw-the-file").exists());
    assert!(!alive(script) && !alive(grandchild), "the group was killed");
    let log = server.stderr();
    assert!(
        log.contains("did not stop within 2s of SIGTERM: sending SIGKILL"),
        "{log}"
    );
}

/// Reloads apply to continuous jobs: a folder added while serving is started, a changed
/// settings.job restarts it (the old run gets the shutdown file first), a removed folder
/// stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_jobs_follow_the_folder_while_serving() {
    let dir = TestDir::new("continuous-reload");
    let jobs = jobs_dir(&dir);
    std::fs::create_dir_all(jobs.join("continuous")).expect("mkdir");
    let server = serve(&dir, &jobs).await;
    let d = dir.path().display();
    let runs = dir.path().join("runs");
    // Notes "start PID COLOUR" and, when asked to stop through the shutdown file (SIGTERM
    // ignored), "stop PID".
    put(
        &jobs,
        "continuous/live/run.sh",
        &format!(
            "trap '' TERM\necho \"start $$ $COLOUR\" >> {d}/runs\n\
             while [ ! -e \"$HINTER_SHUTDOWN_FILE\" ]; do sleep 0.05; done\n\
             echo \"stop $$\" >> {d}/runs\n"
        ),
        false,
    );
    put(
        &jobs,
        "continuous/live/settings.job",
        r#"{"env": {"COLOUR": "red"}}"#,
        false,
    );
    let first: i32 = wait_for(JOB_DEADLINE, "the added job to start", || {
        let runs = runs.clone();
        async move {
            let line = lines(&runs).into_iter().find(|l| l.ends_with(" red"))?;
            line.split(' ').nth(1)?.parse().ok()
        }
    })
    .await;
    assert_eq!(status(&server.api, "live").await["state"], "running");

    put(
        &jobs,
        "continuous/live/settings.job",
        r#"{"env": {"COLOUR": "blue"}}"#,
        false,
    );
    let second: i32 = wait_for(JOB_DEADLINE, "the changed job to restart", || {
        let runs = runs.clone();
        async move {
            let line = lines(&runs).into_iter().find(|l| l.ends_with(" blue"))?;
            line.split(' ').nth(1)?.parse().ok()
        }
    })
    .await;
    let seen = lines(&runs);
    let stopped_at = seen.iter().position(|l| *l == format!("stop {first}"));
    let blue_at = seen.iter().position(|l| l.ends_with(" blue"));
    assert!(
        stopped_at.is_some() && stopped_at < blue_at,
        "the old run stopped (with the shutdown file) before the new one started: {seen:?}"
    );

    std::fs::remove_dir_all(jobs.join("continuous/live")).expect("removing the folder");
    wait_until(JOB_DEADLINE, "the removed job to stop", || async {
        lines(&runs).contains(&format!("stop {second}")) && !alive(second)
    })
    .await;
    wait_until(
        JOB_DEADLINE,
        "the removed job to leave the list",
        || async { definition(&definitions(&server.api).await, "live").is_none() },
    )
    .await;
}
