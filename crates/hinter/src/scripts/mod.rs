//! Script jobs, the WebJobs hosting model (docs/scripts.md): a jobs folder
//! (`--jobs-dir`) holds `triggered/NAME/` and `continuous/NAME/` folders, each with a file to
//! run and an optional `settings.job`.
//!
//! [`ScriptHost`] loads the folder (`folder.rs`, `settings.rs`) into handlers of the engine's
//! [`Registry`], one per runnable triggered job, each running its file through the command
//! runner every other job command uses (`exec.rs`, via `worker_store::run_job`) with a clean
//! environment, the job's folder as working directory, its output stored per attempt, and
//! its own `stopping_wait_time` between SIGTERM and SIGKILL. It then watches the folder
//! (`notify`, debounced) and on every change loads it again: if what runs changed, the
//! running worker is handed the new registry ([`WorkerControl::set_registry`]) and the
//! API the new definitions, so folders added, changed or removed take effect without a
//! restart. Continuous jobs are run by `hinter serve`'s [`continuous::Supervisor`], updated on
//! every reload too.

pub mod continuous;
pub mod folder;
pub mod settings;
pub mod watch;

use crate::exec::JobCommand;
use anyhow::{bail, Context};
use folder::{Kind, ScriptJob};
use hinter_core::schedule::{Misfire, Overlap, ScheduleSpec, SOURCE_SETTINGS};
use hinter_core::{Clock, DefinitionInfo, Definitions, JobDefinition, Store};
use hinter_engine::{HandlerContext, Registry, WorkerControl};
use notify_debouncer_mini::{new_debouncer, DebounceEventResult};
use serde_json::Value;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Where `hinter serve` looks for job folders when `--jobs-dir` is not given.
pub const DEFAULT_JOBS_DIR: &str = "./jobs";

/// Variables a script gets from the environment of the process that runs it, when set
/// there; nothing else of it is passed on (docs/scripts.md).
pub const PASSED_VARIABLES: [&str; 9] = [
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
];
/// `PATH` of a script when the process has none.
pub const FALLBACK_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How long the folder must be quiet before a change is loaded: an editor's save or a
/// `cp -r` arrives as a burst of events, loaded once.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// The jobs folder to use: `given` (it must exist), else [`DEFAULT_JOBS_DIR`] if it exists.
/// `None`: no script jobs.
pub fn jobs_dir(given: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    match given {
        Some(dir) => {
            if !dir.is_dir() {
                bail!(
                    "--jobs-dir {}: no such directory (create it, with triggered/NAME/ \
                     folders inside)",
                    dir.display()
                );
            }
            Ok(Some(dir.to_path_buf()))
        }
        None => {
            let dir = PathBuf::from(DEFAULT_JOBS_DIR);
            Ok(dir.is_dir().then_some(dir))
        }
    }
}

/// A job's `concurrency` and the semaphore that enforces it.
type Permits = (u32, Arc<Semaphore>);

/// Script jobs of one jobs folder, as handlers of the engine.
#[derive(Clone)]
pub struct ScriptHost {
    dir: PathBuf,
    /// `PATH` of this process, where interpreters are looked for.
    path_var: Option<OsString>,
    /// The environment every script starts from ([`PASSED_VARIABLES`]).
    base_env: Vec<(OsString, OsString)>,
    /// `concurrency` permits per job name, kept across reloads while the limit is the same
    /// (jobs started before a reload count against the new registry too).
    permits: Arc<std::sync::Mutex<HashMap<String, Permits>>>,
    /// Where the folders' `schedule`s are kept in step on every load (`serve` only).
    schedules: Option<(Arc<dyn Store>, Arc<dyn Clock>)>,
    /// The file-change triggers, kept in step on every reload (`serve` only).
    watches: Option<Arc<watch::Watches>>,
}

impl ScriptHost {
    pub fn new(dir: PathBuf) -> Self {
        let path_var = std::env::var_os("PATH");
        let mut base_env: Vec<(OsString, OsString)> = PASSED_VARIABLES
            .iter()
            .filter_map(|name| std::env::var_os(name).map(|value| (OsString::from(name), value)))
            .collect();
        if path_var.is_none() {
            base_env.push(("PATH".into(), FALLBACK_PATH.into()));
        }
        Self {
            dir,
            path_var,
            base_env,
            permits: Arc::default(),
            schedules: None,
            watches: None,
        }
    }

    /// Keeps `watches` in step with the folders' `watch` settings on every reload.
    pub fn with_watches(mut self, watches: Arc<watch::Watches>) -> Self {
        self.watches = Some(watches);
        self
    }

    /// Keeps the store's `settings.job` schedules in step with the folders on every reload.
    pub fn with_schedules(mut self, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        self.schedules = Some((store, clock));
        self
    }

    /// Makes the store's `settings.job` schedules those `jobs` declare (when this host keeps
    /// them: [`ScriptHost::with_schedules`]); logs what changed and what was refused.
    pub async fn sync_schedules(&self, jobs: &[ScriptJob]) {
        let Some((store, clock)) = &self.schedules else {
            return;
        };
        let specs = declared_schedules(jobs);
        match hinter_engine::scheduler::sync_declared(
            store.as_ref(),
            clock.as_ref(),
            SOURCE_SETTINGS,
            specs,
        )
        .await
        {
            Ok(report) => {
                for name in &report.refused {
                    tracing::warn!(
                        schedule = %name,
                        "settings.job schedule not taken: a schedule of that name was made through the API"
                    );
                }
                if !(report.created.is_empty()
                    && report.updated.is_empty()
                    && report.deleted.is_empty())
                {
                    tracing::info!(
                        created = ?report.created,
                        updated = ?report.updated,
                        deleted = ?report.deleted,
                        "settings.job schedules updated"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot update the settings.job schedules"),
        }
    }

    /// The permits of job `name` limited to `n` at once.
    fn permits(&self, name: &str, n: u32) -> Arc<Semaphore> {
        let mut permits = self.permits.lock().unwrap_or_else(|e| e.into_inner());
        match permits.get(name) {
            Some((limit, semaphore)) if *limit == n => semaphore.clone(),
            _ => {
                let semaphore = Arc::new(Semaphore::new(n as usize));
                permits.insert(name.to_string(), (n, semaphore.clone()));
                semaphore
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads every job folder; logs each that cannot run, with why.
    pub fn load(&self) -> Vec<ScriptJob> {
        let jobs = folder::load(&self.dir, self.path_var.as_deref());
        for job in &jobs {
            match &job.error {
                Some(error) => {
                    tracing::error!(job = %job.name, kind = job.kind.as_str(), "script job not loaded: {error}")
                }
                None => tracing::info!(
                    job = %job.name,
                    kind = job.kind.as_str(),
                    file = job.file.as_deref().unwrap_or(""),
                    "script job loaded"
                ),
            }
        }
        jobs
    }

    /// `base` (handlers registered in code, copied) with a handler for each runnable
    /// triggered job of `jobs`.
    pub fn registry(&self, base: &Registry, jobs: &[ScriptJob]) -> Registry {
        let mut registry = base.snapshot();
        for job in jobs {
            if job.kind != Kind::Triggered || !job.is_runnable() {
                continue;
            }
            let (Some(settings), Some(command)) = (&job.settings, self.command(job)) else {
                continue;
            };
            let definition = JobDefinition {
                name: job.name.clone(),
                queue: settings.queue.clone(),
                max_attempts: settings.max_attempts,
                timeout: settings.timeout,
                singleton: settings.is_singleton,
            };
            let command = Arc::new(command);
            let options = crate::worker_store::RunOptions {
                timeout: settings.timeout,
            };
            // Per process: a job over its definition's `concurrency` waits for a permit
            // (holding its lease and its run slot) before its script starts.
            let permits = settings.concurrency.map(|n| self.permits(&job.name, n));
            registry.register(definition, move |ctx: HandlerContext, payload: Value| {
                let command = command.clone();
                let permits = permits.clone();
                async move {
                    let _permit = match &permits {
                        Some(permits) => tokio::select! {
                            permit = permits.clone().acquire_owned() => permit.ok(),
                            _ = ctx.cancelled() => {
                                return Err(hinter_engine::JobError::retryable(
                                    "stopped while waiting for its concurrency limit",
                                ))
                            }
                        },
                        None => None,
                    };
                    crate::worker_store::run_job(command, ctx, payload, options).await
                }
            });
        }
        registry
    }

    /// How continuous `job` runs: as [`ScriptHost::command`], under `setpriv --pdeathsig
    /// KILL` when `setpriv` (util-linux) is installed, so that the script is killed if this
    /// process dies without stopping it (SIGKILL, a crash) instead of running on beside the
    /// server that takes its singleton over. (The kernel sends the signal when the thread
    /// that spawned the script ends: a tokio worker thread, which lives as long as the
    /// runtime.)
    pub fn continuous_command(&self, job: &ScriptJob) -> Option<JobCommand> {
        match folder::find_in_path("setpriv", self.path_var.as_deref()) {
            Some(setpriv) => {
                let mut wrapped = job.clone();
                wrapped.argv = [
                    setpriv.into_os_string(),
                    "--pdeathsig".into(),
                    "KILL".into(),
                    "--".into(),
                ]
                .into_iter()
                .chain(job.argv.iter().cloned())
                .collect();
                self.command(&wrapped)
            }
            None => self.command(job),
        }
    }

    /// How `job` runs: its file (through its interpreter), in its folder, with the base
    /// environment and its settings' `env`, stopped with its `stopping_wait_time`.
    pub fn command(&self, job: &ScriptJob) -> Option<JobCommand> {
        let settings = job.settings.as_ref()?;
        let mut env = self.base_env.clone();
        for (name, value) in &settings.env {
            env.retain(|(existing, _)| existing != name.as_str());
            env.push((name.into(), value.into()));
        }
        Some(
            JobCommand::from_argv(&job.argv)?
                .clean_environment(env)
                .workdir(job.folder.clone())
                .kill_grace(settings.stopping_wait_time)
                .limits(crate::exec::Limits {
                    max_memory: settings.max_memory,
                    max_processes: settings.max_processes,
                    max_output: settings.max_output,
                }),
        )
    }

    /// What `GET /api/v1/definitions` shows of `jobs`.
    pub fn catalog(jobs: &[ScriptJob]) -> Vec<DefinitionInfo> {
        jobs.iter()
            .map(|job| DefinitionInfo {
                name: job.name.clone(),
                kind: job.kind.as_str().to_string(),
                folder: Some(job.folder.display().to_string()),
                file: job.file.clone(),
                interpreter: job.file.as_ref().map(|_| job.interpreter.clone()),
                settings: job.settings.as_ref().map_or(Value::Null, |s| s.to_json()),
                error: job.error.clone(),
                status: None,
            })
            .collect()
    }

    /// Publishes `jobs` to the API: the definitions (code ones of `base` and the runnable
    /// triggered scripts) and the catalog.
    pub fn publish(&self, definitions: &Definitions, registry: &Registry, jobs: &[ScriptJob]) {
        definitions.replace_all(registry.definitions().all(), Self::catalog(jobs));
    }

    /// Watches the folder and reloads on every change until the returned guard is dropped:
    /// the worker behind `control` gets the new registry, `definitions` the new set.
    pub fn watch(
        self,
        base: Registry,
        current: Vec<ScriptJob>,
        control: WorkerControl,
        definitions: Definitions,
        continuous: Option<continuous::Supervisor>,
    ) -> anyhow::Result<Watching> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut debouncer =
            new_debouncer(DEBOUNCE, move |events: DebounceEventResult| match events {
                Ok(_) => {
                    let _ = tx.send(());
                }
                Err(e) => tracing::warn!(error = %e, "watching the jobs folder"),
            })
            .context("cannot watch the jobs folder")?;
        debouncer
            .watcher()
            .watch(&self.dir, notify::RecursiveMode::Recursive)
            .with_context(|| format!("cannot watch the jobs folder {}", self.dir.display()))?;
        let reloader = tokio::spawn(async move {
            let mut current = current;
            while rx.recv().await.is_some() {
                // Events that came in while loading are covered by this load.
                while rx.try_recv().is_ok() {}
                let host = self.clone();
                let loaded = match tokio::task::spawn_blocking(move || host.load_quietly()).await {
                    Ok(loaded) => loaded,
                    Err(e) => {
                        tracing::error!(error = %e, "reloading the jobs folder failed");
                        continue;
                    }
                };
                if loaded == current {
                    continue;
                }
                log_changes(&current, &loaded);
                if let Some(supervisor) = &continuous {
                    supervisor.update(&loaded);
                }
                let registry = self.registry(&base, &loaded);
                if let Err(e) = control.set_registry(registry.clone()) {
                    tracing::error!(error = %e, "the reloaded script jobs cannot be run; keeping the previous ones");
                    continue;
                }
                self.publish(&definitions, &registry, &loaded);
                self.sync_schedules(&loaded).await;
                if let Some(watches) = &self.watches {
                    watches.update(watch::specs(&loaded));
                }
                current = loaded;
            }
        });
        Ok(Watching {
            _debouncer: Box::new(debouncer),
            reloader: crate::exec::AbortOnDrop(reloader),
        })
    }

    /// [`ScriptHost::load`] without logging each job (changes are logged instead).
    fn load_quietly(&self) -> Vec<ScriptJob> {
        folder::load(&self.dir, self.path_var.as_deref())
    }
}

/// The schedule each runnable triggered job declares in its settings.job (`schedule`, with
/// its `time_zone`, `overlap`, `misfire` and `queue`), named after the job.
pub fn declared_schedules(jobs: &[ScriptJob]) -> Vec<ScheduleSpec> {
    jobs.iter()
        .filter(|job| job.kind == Kind::Triggered && job.is_runnable())
        .filter_map(|job| {
            let settings = job.settings.as_ref()?;
            let cron = settings.schedule.clone()?;
            // settings.rs checked both against the same names the scheduler uses.
            let overlap: Overlap =
                serde_json::from_value(Value::from(settings.overlap.as_str())).ok()?;
            let misfire: Misfire =
                serde_json::from_value(Value::from(settings.misfire.as_str())).ok()?;
            Some(ScheduleSpec {
                name: job.name.clone(),
                cron: Some(cron),
                at: None,
                time_zone: settings.time_zone.clone(),
                job: job.name.clone(),
                payload: Value::Null,
                queue: settings.queue.clone(),
                priority: None,
                overlap,
                misfire,
                paused: false,
            })
        })
        .collect()
}

/// Logs what a reload changed.
fn log_changes(before: &[ScriptJob], after: &[ScriptJob]) {
    let key = |j: &ScriptJob| (j.kind, j.name.clone());
    for job in after {
        match before.iter().find(|old| key(old) == key(job)) {
            None => match &job.error {
                None => {
                    tracing::info!(job = %job.name, kind = job.kind.as_str(), "script job added")
                }
                Some(e) => {
                    tracing::error!(job = %job.name, kind = job.kind.as_str(), "script job added, not loaded: {e}")
                }
            },
            Some(old) if old != job => match &job.error {
                None => {
                    tracing::info!(job = %job.name, kind = job.kind.as_str(), "script job changed")
                }
                Some(e) => {
                    tracing::error!(job = %job.name, kind = job.kind.as_str(), "script job changed, not loaded: {e}")
                }
            },
            Some(_) => {}
        }
    }
    for job in before {
        if !after.iter().any(|new| key(new) == key(job)) {
            tracing::info!(job = %job.name, kind = job.kind.as_str(), "script job removed");
        }
    }
}

/// Keeps the jobs folder watched; dropping it stops watching.
pub struct Watching {
    _debouncer: Box<dyn std::any::Any + Send>,
    reloader: crate::exec::AbortOnDrop<()>,
}

impl Watching {
    /// Stops watching.
    pub fn stop(self) {
        drop(self.reloader);
    }
}
