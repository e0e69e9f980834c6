//! Competing consumers across processes: one `serve` and three `worker --database …`
//! processes drain 20,000 jobs while one worker is killed (SIGKILL) midway. Nothing is lost,
//! and only the jobs the killed worker held run twice (attempt 2).

use crate::util::*;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const JOBS: usize = 20_000;
const BATCH: usize = 1_000;
const WORKERS: usize = 3;
const CONCURRENCY: usize = 4;
const QUEUE: &str = "drain";
/// Short, so the killed worker's jobs come back soon.
const LEASE: &str = "2s";
/// Generous for a loaded 2-core machine; the test prints how long the drain took.
const DRAIN_DEADLINE: Duration = Duration::from_secs(600);

/// One line per run, `JOB_ID ATTEMPT`, appended to the file named by `$1` (one per worker
/// process). A single `echo`: one `write` with `O_APPEND`, so lines never mix.
const JOB_SCRIPT: &str = "#!/bin/sh\necho \"$HINTER_JOB_ID $HINTER_ATTEMPT\" >> \"$1\"\n";

/// Who ran which job: job id → (worker index, attempt) per run.
fn read_runs(files: &[PathBuf]) -> HashMap<String, Vec<(usize, u64)>> {
    let mut runs: HashMap<String, Vec<(usize, u64)>> = HashMap::new();
    for (worker, file) in files.iter().enumerate() {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines() {
            let (id, attempt) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("a malformed line in {}: {line:?}", file.display()));
            let attempt = attempt
                .parse()
                .unwrap_or_else(|e| panic!("attempt in {line:?}: {e}"));
            runs.entry(id.to_string())
                .or_default()
                .push((worker, attempt));
        }
    }
    runs
}

async fn succeeded(api: &Api) -> u64 {
    api.queue_counts(QUEUE).await["succeeded"]
        .as_u64()
        .unwrap_or(0)
}

fn path_arg(path: &Path) -> String {
    path.to_str().expect("a UTF-8 path").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_drain_20000_jobs_and_one_is_killed_midway() {
    let Some(db) = TestDb::new("three_workers_drain_20000_jobs_and_one_is_killed_midway") else {
        return;
    };
    let dir = TestDir::new("drain");
    let script = path_arg(&dir.write("job.sh", JOB_SCRIPT));
    let serve = start_serve(&dir, &db, "serve", &[]).await;
    let files: Vec<PathBuf> = (0..WORKERS)
        .map(|n| dir.path().join(format!("worker-{n}.lines")))
        .collect();
    let concurrency = CONCURRENCY.to_string();
    let mut workers: Vec<Proc> = files
        .iter()
        .enumerate()
        .map(|(n, file)| {
            start_worker(
                &dir,
                &db,
                &format!("worker-{n}"),
                &[
                    "--queue",
                    QUEUE,
                    "--concurrency",
                    &concurrency,
                    "--lease",
                    LEASE,
                ],
                &["/bin/sh", &script, &path_arg(file)],
            )
        })
        .collect();

    // Each worker lists itself (role, queues, concurrency); its listed id is the worker_id
    // its leases carry.
    let pids: Vec<u32> = workers.iter().map(Proc::pid).collect();
    let listed: Vec<Value> = wait_for(
        Duration::from_secs(60),
        "the three workers to list themselves",
        || async {
            let processes = serve.api.workers().await;
            pids.iter()
                .map(|pid| processes.iter().find(|p| p["pid"] == *pid).cloned())
                .collect::<Option<Vec<_>>>()
        },
    )
    .await;
    for process in &listed {
        assert_eq!(process["role"], "worker", "{process}");
        assert_eq!(process["queues"], json!([QUEUE]), "{process}");
        assert_eq!(process["concurrency"], CONCURRENCY, "{process}");
    }
    let ids: Vec<String> = listed.iter().map(|p| str_of(p, "id").to_string()).collect();

    let began = Instant::now();
    for batch in 0..JOBS / BATCH {
        let jobs: Vec<Value> = (0..BATCH)
            .map(|i| json!({"job": "noop", "queue": QUEUE, "payload": {"n": batch * BATCH + i}}))
            .collect();
        serve
            .api
            .post("/api/v1/jobs/batch", &json!({ "jobs": jobs }))
            .await
            .expect_status(201);
    }
    let enqueued = began.elapsed();

    // Midway: SIGKILL the first worker.
    wait_for(DRAIN_DEADLINE, "half the jobs to succeed", || async {
        (succeeded(&serve.api).await >= (JOBS / 2) as u64).then_some(())
    })
    .await;
    workers[0].kill();
    let killed = began.elapsed();
    // What it held: still `running` under its id until the leases expire and the leader
    // rescues them (it can report nothing more).
    let in_flight: HashSet<String> = serve
        .api
        .list_jobs(&format!("state=running&queue={QUEUE}"))
        .await
        .iter()
        .filter(|job| job["worker_id"] == ids[0].as_str())
        .map(|job| str_of(job, "id").to_string())
        .collect();
    // It holds at most concurrency + prefetch jobs; a job whose handler has returned frees
    // its place at once, while its outcome may still be on the way to the store (outcomes
    // are written in batches), so the store may show up to as many again as `running`.
    assert!(
        !in_flight.is_empty() && in_flight.len() <= 4 * CONCURRENCY,
        "the killed worker held {} jobs; it holds 1…{} (concurrency + prefetch, plus as \
         many finished ones whose outcome was not yet written)",
        in_flight.len(),
        4 * CONCURRENCY
    );

    // The other two drain the rest, the rescued jobs included.
    let deadline = Instant::now() + DRAIN_DEADLINE;
    loop {
        for worker in workers.iter_mut().skip(1) {
            worker.assert_running();
        }
        let done = succeeded(&serve.api).await;
        if done >= JOBS as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {JOBS} jobs succeeded within {DRAIN_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drained = began.elapsed();

    // Zero lost: every job succeeded.
    let jobs = serve.api.list_jobs(&format!("queue={QUEUE}")).await;
    assert_eq!(jobs.len(), JOBS);
    let not_succeeded: Vec<&Value> = jobs.iter().filter(|j| j["state"] != "succeeded").collect();
    assert!(not_succeeded.is_empty(), "{not_succeeded:?}");

    // No job succeeded twice, except those the killed worker held: each ran at most once
    // on it (attempt 1) and once more elsewhere (attempt 2).
    let runs = read_runs(&files);
    let mut twice = 0;
    let mut rerun = 0;
    let mut late = 0;
    for job in &jobs {
        let id = str_of(job, "id");
        let attempt = job["attempt"].as_u64().unwrap_or(0);
        let ran = runs
            .get(id)
            .unwrap_or_else(|| panic!("job {id} succeeded but its command never ran: {job}"));
        let final_run = *ran.last().expect("at least one run");
        if in_flight.contains(id) {
            // Rescued and run again (attempt 2), or, if its completion was committing at the
            // instant of the kill, done at attempt 1.
            assert!(attempt == 1 || attempt == 2, "{job}");
            match ran.as_slice() {
                [(worker, 1)] if attempt == 1 => assert_eq!(*worker, 0, "{id}: {ran:?}"),
                [(worker, 2)] if attempt == 2 => assert_ne!(*worker, 0, "{id}: {ran:?}"),
                [(0, 1), (worker, 2)] if attempt == 2 => {
                    assert_ne!(*worker, 0, "{id}: {ran:?}");
                    twice += 1;
                }
                _ => panic!("job {id} (attempt {attempt}) ran {ran:?}"),
            }
            if attempt == 2 {
                rerun += 1;
            }
        } else if attempt == 2 {
            // A lease round the killed worker had sent: the server runs a statement already
            // received to its end and commits it after the client is gone, so the lease can
            // land after the listing above. The worker never got the rows, so the job never
            // ran on it; it came back by lease expiry and ran once, elsewhere.
            assert_eq!(
                job["last_error"]["message"], "lease expired: the worker stopped heartbeating",
                "{job}"
            );
            assert!(
                matches!(ran.as_slice(), [(worker, 2)] if *worker != 0),
                "job {id} was leased after the kill but ran {ran:?}"
            );
            late += 1;
        } else {
            assert_eq!(
                ran.len(),
                1,
                "job {id} was not held by the killed worker but ran {ran:?}"
            );
            assert_eq!(attempt, 1, "{job}");
            assert_eq!(final_run.1, 1, "{id}: {ran:?}");
        }
    }
    assert!(rerun > 0, "none of the killed worker's jobs ran again");
    // At most one lease round was on its way: no more than the worker could hold.
    assert!(
        late <= 4 * CONCURRENCY,
        "{late} jobs were leased by the killed worker after it was killed"
    );

    // Each surviving worker took part.
    for (n, file) in files.iter().enumerate().skip(1) {
        let lines = std::fs::read_to_string(file).unwrap_or_default();
        assert!(lines.lines().count() > 0, "worker {n} ran nothing");
    }
    eprintln!(
        "drain of {JOBS} jobs by {WORKERS} workers (concurrency {CONCURRENCY}, one killed): \
         enqueued in {enqueued:.1?}, worker 0 killed at {killed:.1?} holding {} jobs \
         ({rerun} ran again, {twice} of them twice, {late} leased as it died), all succeeded at {drained:.1?} \
         ({:.0} jobs/s)",
        in_flight.len(),
        JOBS as f64 / drained.as_secs_f64()
    );
}
