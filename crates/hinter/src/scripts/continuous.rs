//! Continuous script jobs (`continuous/NAME/`): started with `hinter serve`, kept running.
//!
//! The [`Supervisor`] runs one task per runnable continuous job. Each starts the script with
//! the command runner of triggered jobs (`exec.rs`: clean environment, own process group,
//! stdout/stderr logged), and when it exits starts it again after a delay that doubles from
//! [`BACKOFF_FIRST`] to [`BACKOFF_MAX`], back to the first after a run of [`STABLE_RUN`].
//! With `is_singleton`, a task first takes the store's named leadership `continuous:NAME`
//! (the one the maintenance leader uses, under another name) and renews it while the script
//! runs: across every server on the store one runs it, and when that server dies its lease
//! runs out and another takes over. Losing the leadership stops the script. On stop
//! (server shutdown, the folder removed or changed), the script gets the shutdown file and
//! SIGTERM, then SIGKILL of its group after its `stopping_wait_time`.

use super::folder::{Kind, ScriptJob};
use super::ScriptHost;
use crate::exec::{JobCommand, JobInfo, Observer, Outcome};
use chrono::{DateTime, Utc};
use hinter_core::cluster::Cluster;
use hinter_core::{format_duration, Clock, LogStream};
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

/// The first delay before a script that exited is started again.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest delay between two starts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run at least this long resets the delay to [`BACKOFF_FIRST`].
pub const STABLE_RUN: Duration = Duration::from_secs(60);
/// Output lines kept for the API, per job.
pub const TAIL_LINES: usize = 50;
/// Longest output line kept for the API.
const TAIL_LINE_BYTES: usize = 1000;
/// Longest wait between two tries at a singleton's leadership.
const SINGLETON_POLL_MAX: Duration = Duration::from_secs(1);

/// What a continuous job is doing, as `GET /api/v1/definitions` shows it (`status`).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// `starting`, `running`, `backoff`, `waiting-for-singleton`, `stopping`, `stopped`.
    pub state: &'static str,
    /// This server's host name.
    pub host: String,
    /// The running script's pid.
    pub pid: Option<u32>,
    pub started_at: Option<DateTime<Utc>>,
    /// Starts after the first.
    pub restarts: u64,
    pub last_exit: Option<Exit>,
    /// When the next start is due (state `backoff`).
    pub next_start_at: Option<DateTime<Utc>>,
    /// Who runs the singleton instead (state `waiting-for-singleton`).
    pub singleton_holder: Option<String>,
    /// The last [`TAIL_LINES`] output lines.
    pub output: VecDeque<Line>,
}

/// How a run ended.
#[derive(Debug, Clone, Serialize)]
pub struct Exit {
    pub at: DateTime<Utc>,
    /// `exited with code 3: disk full`, `killed by signal SIGKILL`, `exited with code 0`.
    pub message: String,
    pub exit_code: Option<i32>,
}

/// An output line of the script.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub at: DateTime<Utc>,
    pub stream: LogStream,
    pub line: String,
}

/// Runs the continuous jobs of a jobs folder.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    host: ScriptHost,
    cluster: Arc<dyn Cluster>,
    clock: Arc<dyn Clock>,
    /// This process's id in the store: the holder of singleton leaderships.
    holder: String,
    /// How long a singleton's leadership lasts without renewal.
    ttl: Duration,
    hostname: String,
    jobs: Mutex<HashMap<String, Supervised>>,
}

struct Supervised {
    job: ScriptJob,
    status: Arc<Mutex<Status>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Why a run was stopped.
enum Why {
    Stop,
    LostSingleton,
}

impl Supervisor {
    pub fn new(
        host: ScriptHost,
        cluster: Arc<dyn Cluster>,
        clock: Arc<dyn Clock>,
        holder: String,
        ttl: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                host,
                cluster,
                clock,
                holder,
                ttl,
                hostname: hinter_engine::hostname(),
                jobs: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Runs the runnable continuous jobs of `jobs`: starts those not running, stops those
    /// gone, restarts those changed (once the old run has stopped).
    pub fn update(&self, jobs: &[ScriptJob]) {
        let wanted: Vec<&ScriptJob> = jobs
            .iter()
            .filter(|j| j.kind == Kind::Continuous && j.is_runnable())
            .collect();
        let mut running = self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let mut previous: HashMap<String, JoinHandle<()>> = HashMap::new();
        let names: Vec<String> = running.keys().cloned().collect();
        for name in names {
            let keep = wanted
                .iter()
                .any(|j| j.name == name && running[&name].job == **j);
            if !keep {
                if let Some(old) = running.remove(&name) {
                    tracing::info!(job = %name, "continuous job removed or changed: stopping it");
                    let _ = old.stop.send(true);
                    previous.insert(name, old.task);
                }
            }
        }
        for job in wanted {
            if running.contains_key(&job.name) {
                continue;
            }
            let Some(command) = self.inner.host.continuous_command(job) else {
                continue;
            };
            let status = Arc::new(Mutex::new(Status {
                state: "starting",
                host: self.inner.hostname.clone(),
                pid: None,
                started_at: None,
                restarts: 0,
                last_exit: None,
                next_start_at: None,
                singleton_holder: None,
                output: VecDeque::new(),
            }));
            let (stop, stopped) = watch::channel(false);
            let task = tokio::spawn(supervise(
                self.inner.clone(),
                job.clone(),
                command,
                status.clone(),
                stopped,
                previous.remove(&job.name),
            ));
            running.insert(
                job.name.clone(),
                Supervised {
                    job: job.clone(),
                    status,
                    stop,
                    task,
                },
            );
        }
    }

    /// The status of continuous job `name`, if it is supervised here.
    pub fn status(&self, name: &str) -> Option<Value> {
        let running = self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let status = running.get(name)?.status.lock().ok()?.clone();
        serde_json::to_value(status).ok()
    }

    /// Stops every script (shutdown file, SIGTERM, SIGKILL after its stopping_wait_time) and
    /// waits for them.
    pub async fn shutdown(&self) {
        let stopping: Vec<Supervised> = {
            let mut running = self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner());
            running.drain().map(|(_, s)| s).collect()
        };
        for supervised in &stopping {
            let _ = supervised.stop.send(true);
        }
        for supervised in stopping {
            let _ = supervised.task.await;
        }
    }
}

/// Keeps the last output lines of a run in its status.
struct Tail(Arc<Mutex<Status>>);

impl Observer for Tail {
    fn spawned(&self, pid: u32) {
        if let Ok(mut status) = self.0.lock() {
            status.pid = Some(pid);
        }
    }

    fn line(&self, stream: LogStream, line: &str) {
        let mut text = line.to_string();
        if text.len() > TAIL_LINE_BYTES {
            let mut cut = TAIL_LINE_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        if let Ok(mut status) = self.0.lock() {
            if status.output.len() == TAIL_LINES {
                status.output.pop_front();
            }
            status.output.push_back(Line {
                at: Utc::now(),
                stream,
                line: text,
            });
        }
    }
}

fn set(status: &Mutex<Status>, change: impl FnOnce(&mut Status)) {
    let mut status = status.lock().unwrap_or_else(|e| e.into_inner());
    change(&mut status);
}

/// Resolves once `stop` says to stop (or its sender is gone).
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// One continuous job, until stopped.
async fn supervise(
    inner: Arc<Inner>,
    job: ScriptJob,
    command: JobCommand,
    status: Arc<Mutex<Status>>,
    mut stop: watch::Receiver<bool>,
    previous: Option<JoinHandle<()>>,
) {
    if let Some(previous) = previous {
        let _ = previous.await;
    }
    let settings = job.settings.clone().unwrap_or_default();
    let leadership = format!("continuous:{}", job.name);
    let queue = settings
        .queue
        .clone()
        .unwrap_or_else(|| hinter_core::DEFAULT_QUEUE.to_string());
    let mut delay = BACKOFF_FIRST;
    let mut runs: u32 = 0;
    let observer: Arc<dyn Observer> = Arc::new(Tail(status.clone()));
    loop {
        if *stop.borrow() {
            break;
        }
        let mut held_until = None;
        if settings.is_singleton {
            match acquire(&inner, &leadership, &status, &mut stop).await {
                Some(until) => held_until = Some(until),
                None => break,
            }
        }
        runs = runs.saturating_add(1);
        let id = Uuid::new_v4();
        set(&status, |s| {
            s.state = "running";
            s.started_at = Some(Utc::now());
            s.next_start_at = None;
            s.singleton_holder = None;
            s.pid = None;
        });
        tracing::info!(job = %job.name, run_id = %id, run = runs, "continuous job starting");
        let info = JobInfo {
            id,
            job: &job.name,
            queue: &queue,
            attempt: runs,
            max_attempts: 0,
            payload: &Value::Null,
            checkpoint: None,
        };
        let started = Instant::now();
        let stop_run = {
            let mut stop = stop.clone();
            let inner = inner.clone();
            let leadership = leadership.clone();
            async move {
                match held_until {
                    Some(until) => tokio::select! {
                        _ = stop_requested(&mut stop) => Why::Stop,
                        _ = keep(&inner, &leadership, until) => Why::LostSingleton,
                    },
                    None => {
                        stop_requested(&mut stop).await;
                        Why::Stop
                    }
                }
            }
        };
        let outcome = command
            .run_observed(&info, None, Some(observer.clone()), stop_run)
            .await;
        let lost = matches!(outcome, Outcome::Stopped(Why::LostSingleton));
        let (message, exit_code) = match outcome {
            Outcome::Stopped(Why::Stop) => ("stopped".to_string(), None),
            Outcome::Stopped(Why::LostSingleton) => {
                ("stopped: lost the singleton".to_string(), None)
            }
            Outcome::Succeeded(_) => ("exited with code 0".to_string(), Some(0)),
            Outcome::Failed {
                message, exit_code, ..
            } => (message, exit_code),
        };
        set(&status, |s| {
            s.pid = None;
            s.last_exit = Some(Exit {
                at: Utc::now(),
                message: message.clone(),
                exit_code,
            });
        });
        if settings.is_singleton {
            let _ = inner
                .cluster
                .leader_release(&leadership, &inner.holder)
                .await;
        }
        if *stop.borrow() {
            break;
        }
        if lost {
            tracing::warn!(job = %job.name, "continuous job stopped: this server lost its singleton leadership");
            continue;
        }
        if started.elapsed() >= STABLE_RUN {
            delay = BACKOFF_FIRST;
        }
        tracing::warn!(
            job = %job.name,
            "continuous job {message}; starting it again in {}",
            format_duration(delay)
        );
        set(&status, |s| {
            s.state = "backoff";
            s.restarts += 1;
            s.next_start_at = chrono::Duration::from_std(delay)
                .ok()
                .map(|d| Utc::now() + d);
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop_requested(&mut stop) => break,
        }
        delay = (delay * 2).min(BACKOFF_MAX);
    }
    set(&status, |s| {
        s.state = "stopped";
        s.pid = None;
        s.next_start_at = None;
    });
    tracing::info!(job = %job.name, "continuous job stopped");
}

/// Takes the singleton's leadership, waiting while another process holds it. Answers until
/// when it may be trusted, or `None` when told to stop first.
async fn acquire(
    inner: &Inner,
    leadership: &str,
    status: &Mutex<Status>,
    stop: &mut watch::Receiver<bool>,
) -> Option<Instant> {
    let poll = (inner.ttl / 3).min(SINGLETON_POLL_MAX);
    loop {
        let asked = Instant::now();
        match inner
            .cluster
            .leader_acquire(leadership, &inner.holder, inner.ttl, inner.clock.now())
            .await
        {
            Ok(Some(_)) => return Some(asked + inner.ttl * 2 / 3),
            Ok(None) => {
                let holder = match inner.cluster.leader_get(leadership).await {
                    Ok(Some(held)) => Some(held.holder),
                    _ => None,
                };
                set(status, |s| {
                    if s.state != "waiting-for-singleton" {
                        tracing::info!(leadership, holder = ?holder, "singleton continuous job runs elsewhere; waiting");
                    }
                    s.state = "waiting-for-singleton";
                    s.singleton_holder = holder;
                    s.next_start_at = None;
                });
            }
            Err(e) => {
                tracing::warn!(leadership, error = %e, "cannot take the singleton leadership")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stop_requested(stop) => return None,
        }
    }
}

/// Renews the singleton's leadership every third of its lifetime; completes when it is lost
/// (another holder has it, or it could not be confirmed before `until`).
async fn keep(inner: &Inner, leadership: &str, mut until: Instant) {
    loop {
        tokio::time::sleep(inner.ttl / 3).await;
        let asked = Instant::now();
        match inner
            .cluster
            .leader_acquire(leadership, &inner.holder, inner.ttl, inner.clock.now())
            .await
        {
            Ok(Some(_)) => until = asked + inner.ttl * 2 / 3,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(leadership, error = %e, "cannot renew the singleton leadership");
                if Instant::now() >= until {
                    return;
                }
            }
        }
    }
}
