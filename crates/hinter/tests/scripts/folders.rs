//! Job folders: what loads, the named errors of those that cannot, and changes while the
//! server runs.

use super::support::{hinter_command, wait_for, TestDir};
use super::*;

/// Folders that cannot run are listed with an error naming the problem (and the file and
/// key for settings), in the API and `hinter definitions list`; the others load and run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_folders_are_named_and_do_not_stop_the_others() {
    let dir = TestDir::new("bad-folders");
    let jobs = jobs_dir(&dir);
    // A PATH with bash alone: python3 is "not installed" for this server.
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    std::os::unix::fs::symlink("/bin/bash", bin.join("bash")).expect("symlink bash");
    put(
        &jobs,
        "triggered/good/run.sh",
        "echo '::result::\"fine\"'\n",
        false,
    );
    put(
        &jobs,
        "triggered/empty/notes.txt",
        "nothing to run here",
        false,
    );
    put(&jobs, "triggered/nopython/run.py", "print(1)\n", false);
    put(&jobs, "triggered/batch/run.cmd", "echo hi\r\n", false);
    put(&jobs, "triggered/unknown-key/run.sh", "", false);
    put(
        &jobs,
        "triggered/unknown-key/settings.job",
        r#"{"queue": "q", "retries": 3}"#,
        false,
    );
    put(&jobs, "triggered/wrong-type/run.sh", "", false);
    put(
        &jobs,
        "triggered/wrong-type/settings.job",
        r#"{"is_singleton": "yes"}"#,
        false,
    );
    put(&jobs, "triggered/bad-cron/run.sh", "", false);
    put(
        &jobs,
        "triggered/bad-cron/settings.job",
        r#"{"schedule": "0 61 * * *"}"#,
        false,
    );
    put(&jobs, "triggered/bad-json/run.sh", "", false);
    put(
        &jobs,
        "triggered/bad-json/settings.job",
        "{\"queue\": ",
        false,
    );
    put(&jobs, "continuous/indexer/run.sh", "", false);
    let server = Server::launch(
        "hinter serve",
        Server::READY_TIMEOUT,
        Duration::from_secs(30),
        |addr| {
            let mut command = hinter_command();
            command
                .env("PATH", &bin)
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
    let all = definitions(api).await;
    let error = |name: &str| -> String {
        definition(&all, name).unwrap_or_else(|| panic!("{name} listed: {all:?}"))["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has an error: {all:?}"))
            .to_string()
    };
    let folder = |name: &str| jobs.join("triggered").join(name).display().to_string();
    let expected = [
        ("empty", format!("{}: nothing to run: no run.* file and no file ending in .sh, .py, .js, .php, .ps1, .jar or with the execute bit", folder("empty"))),
        ("nopython", format!("{}/run.py: python3 is not installed (not found in PATH), and .py files run with it", folder("nopython"))),
        ("batch", format!("{}/run.cmd: .cmd files run only on Windows", folder("batch"))),
        ("unknown-key", format!("{}/settings.job: \"retries\": unknown setting", folder("unknown-key"))),
        ("wrong-type", format!("{}/settings.job: \"is_singleton\": must be true or false, not a string", folder("wrong-type"))),
        ("bad-cron", format!("{}/settings.job: \"schedule\": \"0 61 * * *\" is not a valid cron expression", folder("bad-cron"))),
        ("bad-json", format!("{}/settings.job: not valid JSON", folder("bad-json"))),
    ];
    for (name, start) in &expected {
        let error = error(name);
        assert!(
            error.starts_with(start.as_str()),
            "{name}: {error:?} should start with {start:?}"
        );
    }
    let good = definition(&all, "good").expect("good listed");
    assert_eq!(good["error"], Value::Null);
    assert_eq!(good["kind"], "triggered");
    assert_eq!(good["file"], "run.sh");
    assert_eq!(good["interpreter"], json!(["bash"]));
    assert_eq!(good["settings"]["queue"], "default");
    assert_eq!(good["settings"]["stopping_wait_time"], "5s");
    let indexer = definition(&all, "indexer").expect("continuous listed");
    assert_eq!(
        (indexer["kind"].as_str(), &indexer["error"]),
        (Some("continuous"), &Value::Null)
    );

    let job = finished(api, &enqueue(api, "good", json!(null)).await).await;
    assert_eq!(job["result"], "fine", "{job}");

    let listed = hinter_command()
        .args(["definitions", "list", "--server", &api.base])
        .output()
        .expect("hinter definitions list");
    assert!(listed.status.success(), "{listed:?}");
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("good ") && l.ends_with(" ok")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("nopython ") && l.ends_with(" error")),
        "{table}"
    );
    let errors = String::from_utf8_lossy(&listed.stderr);
    assert!(errors.contains("batch (triggered): "), "{errors}");
    let listed = hinter_command()
        .args(["definitions", "list", "--json", "--server", &api.base])
        .output()
        .expect("hinter definitions list --json");
    let body: Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert_eq!(
        body["definitions"].as_array().map(Vec::len),
        Some(all.len())
    );

    // A jobs folder that does not exist, named explicitly, is an error.
    let missing = hinter_command()
        .args(["serve", "--listen", "127.0.0.1:0", "--jobs-dir"])
        .arg(dir.path().join("nowhere"))
        .arg("--data-dir")
        .arg(dir.path().join("data2"))
        .output()
        .expect("hinter serve");
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("nowhere: no such directory"), "{stderr}");
}

/// A folder added while the server runs can be enqueued and runs; a changed settings.job
/// takes effect; a removed folder's definition is gone and its jobs are no longer run here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folders_are_reloaded_while_serving() {
    let dir = TestDir::new("reload");
    let jobs = jobs_dir(&dir);
    let server = serve(&dir, &jobs).await;
    let api = &server.api;
    // No script jobs yet: only hinter's own (callback deliveries).
    let builtin = |d: &Value| d["name"].as_str().is_some_and(|n| n.starts_with("hinter."));
    assert!(definitions(api).await.iter().all(builtin));

    put(
        &jobs,
        "triggered/late/run.sh",
        "echo \"::result::\\\"late $HINTER_QUEUE\\\"\"\n",
        false,
    );
    wait_for(JOB_DEADLINE, "the new folder to load", || async {
        definition(&definitions(api).await, "late").cloned()
    })
    .await;
    let job = finished(api, &enqueue(api, "late", json!(null)).await).await;
    assert_eq!(job["result"], "late default", "{job}");

    put(
        &jobs,
        "triggered/late/settings.job",
        r#"{"queue": "elsewhere"}"#,
        false,
    );
    wait_for(JOB_DEADLINE, "the changed settings to load", || async {
        let all = definitions(api).await;
        (definition(&all, "late")?["settings"]["queue"] == "elsewhere").then_some(())
    })
    .await;
    let job = finished(api, &enqueue(api, "late", json!(null)).await).await;
    assert_eq!(
        job["result"], "late elsewhere",
        "runs from its new queue: {job}"
    );

    // A broken edit shows its error; fixing it loads it again.
    put(
        &jobs,
        "triggered/late/settings.job",
        r#"{"queue": 7}"#,
        false,
    );
    wait_for(JOB_DEADLINE, "the broken settings to show", || async {
        let all = definitions(api).await;
        definition(&all, "late")?["error"]
            .as_str()
            .map(str::to_string)
    })
    .await;

    std::fs::remove_dir_all(jobs.join("triggered/late")).expect("remove the folder");
    wait_for(JOB_DEADLINE, "the removed folder to go", || async {
        definition(&definitions(api).await, "late")
            .is_none()
            .then_some(())
    })
    .await;
    let workers = api.get("/api/v1/workers").await.expect_status(200);
    assert!(
        server.stderr().contains("script job removed"),
        "{workers:?}"
    );
}

/// A `schedule` in settings.job becomes a schedule (source `settings.job`) that fires the job;
/// editing it out of the settings deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_schedule_fires_the_job_and_follows_the_folder() {
    let dir = TestDir::new("settings-schedule");
    let jobs = jobs_dir(&dir);
    put(
        &jobs,
        "triggered/tick/run.sh",
        "echo '::result::\"tock\"'\n",
        false,
    );
    put(
        &jobs,
        "triggered/tick/settings.job",
        r#"{"schedule": "* * * * * *", "queue": "ticks"}"#,
        false,
    );
    let server = serve(&dir, &jobs).await;
    let api = &server.api;
    let schedule = wait_for(JOB_DEADLINE, "the declared schedule", || async {
        let answer = api.get("/api/v1/schedules/tick").await;
        (answer.status == 200).then_some(answer.body)
    })
    .await;
    assert_eq!(schedule["source"], "settings.job", "{schedule}");
    assert_eq!(schedule["job"], "tick", "{schedule}");
    assert_eq!(schedule["queue"], "ticks", "{schedule}");
    // It fires: a tick job succeeds.
    wait_for(JOB_DEADLINE, "a fired tick to succeed", || async {
        let page = api
            .get("/api/v1/jobs?job=tick&state=succeeded&include=result")
            .await;
        let first = page.body["jobs"].as_array()?.first()?.clone();
        (first["result"] == "tock").then_some(())
    })
    .await;
    // Edited out of the settings: the schedule goes.
    put(
        &jobs,
        "triggered/tick/settings.job",
        r#"{"queue": "ticks"}"#,
        false,
    );
    wait_for(JOB_DEADLINE, "the schedule to be deleted", || async {
        (api.get("/api/v1/schedules/tick").await.status == 404).then_some(())
    })
    .await;
}

/// The jobs of `job`, oldest first: (payload path's file name, event).
async fn watch_jobs(api: &crate::Api, job: &str) -> Vec<(String, String)> {
    let page = api
        .get(&format!(
            "/api/v1/jobs?job={job}&include=payload&limit=1000"
        ))
        .await;
    page.body["jobs"]
        .as_array()
        .map(|jobs| {
            jobs.iter()
                .map(|j| {
                    let path = j["payload"]["path"].as_str().unwrap_or("");
                    let name = path.rsplit('/').next().unwrap_or("").to_string();
                    (
                        name,
                        j["payload"]["event"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `watch` in settings.job: one job per created or changed matching file, a slowly written
/// file once when complete, other files none, and files changed while no server ran once at
/// the next start (and nothing already seen again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_files_trigger_their_job_once_per_version() {
    let dir = TestDir::new("watch");
    let jobs = jobs_dir(&dir);
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).expect("inbox");
    std::fs::write(inbox.join("before.txt"), "old").expect("before.txt");
    put(&jobs, "triggered/ingest/run.sh", "cat >/dev/null\n", false);
    put(
        &jobs,
        "triggered/ingest/settings.job",
        &format!(r#"{{"watch": "{}/*.txt"}}"#, inbox.display()),
        false,
    );
    let mut server = serve(&dir, &jobs).await;
    let api = server.api.clone();
    let until = |want: Vec<(&'static str, &'static str)>| {
        let api = api.clone();
        async move {
            let want: Vec<(String, String)> = want
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            wait_for(JOB_DEADLINE, &format!("watch jobs {want:?}"), || {
                let api = api.clone();
                let want = want.clone();
                async move {
                    let got = watch_jobs(&api, "ingest").await;
                    (got == want).then_some(())
                }
            })
            .await;
        }
    };
    // The start scan finds what was there before.
    until(vec![("before.txt", "scan")]).await;
    std::fs::write(inbox.join("new.txt"), "1").expect("new.txt");
    std::fs::write(inbox.join("other.log"), "not matched").expect("other.log");
    until(vec![("before.txt", "scan"), ("new.txt", "created")]).await;
    std::fs::write(inbox.join("new.txt"), "22").expect("change new.txt");
    until(vec![
        ("before.txt", "scan"),
        ("new.txt", "created"),
        ("new.txt", "changed"),
    ])
    .await;
    // Written in three chunks with pauses shorter than the settle time: one job. (The pauses
    // stand for a slow writer; they are not waits for hinter.)
    {
        use std::io::Write;
        let mut slow = std::fs::File::create(inbox.join("slow.txt")).expect("slow.txt");
        for chunk in ["a", "b", "c"] {
            slow.write_all(chunk.as_bytes()).expect("write");
            slow.flush().expect("flush");
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    }
    until(vec![
        ("before.txt", "scan"),
        ("new.txt", "created"),
        ("new.txt", "changed"),
        ("slow.txt", "created"),
    ])
    .await;

    // Down: a file arrives; the next start picks it up once, and nothing seen before again.
    server.terminate(std::time::Duration::from_secs(20)).await;
    std::fs::write(inbox.join("while-down.txt"), "x").expect("while-down.txt");
    let server = serve(&dir, &jobs).await;
    let api = server.api.clone();
    wait_for(JOB_DEADLINE, "the file written while down", || {
        let api = api.clone();
        async move {
            let got = watch_jobs(&api, "ingest").await;
            (got.len() == 5).then_some(got)
        }
    })
    .await;
    // A marker file proves the watcher is past the start scan before the final count.
    std::fs::write(inbox.join("zz-marker.txt"), "m").expect("marker");
    let got = wait_for(JOB_DEADLINE, "the marker", || {
        let api = api.clone();
        async move {
            let got = watch_jobs(&api, "ingest").await;
            (got.len() >= 6).then_some(got)
        }
    })
    .await;
    assert_eq!(
        got,
        [
            ("before.txt", "scan"),
            ("new.txt", "created"),
            ("new.txt", "changed"),
            ("slow.txt", "created"),
            ("while-down.txt", "scan"),
            ("zz-marker.txt", "created"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string())),
    );
}
