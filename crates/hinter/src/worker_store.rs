//! `hinter worker --database URL | --data-dir DIR -- COMMAND`: the worker role in store mode,
//! and [`run_worker`], the runtime both modes share.
//!
//! The process leases straight from the store the `hinter serve` processes share, with the
//! engine's [`Worker`] (fetcher, heartbeats, timeouts, cancellation through store events and
//! heartbeat answers, batched outcomes, graceful stop that hands jobs back). Its only handler
//! is a fallback that runs the command for any job name of its queues (`exec.rs`). It lists
//! itself as a live process (role `worker`, its queues and concurrency) and campaigns for
//! leadership like `serve` does, running [`Maintenance`] (lease rescue, promotion, retention)
//! while it leads, so the store stays healthy even when every `serve` is gone.

use crate::exec::{JobCommand, JobInfo, Outcome, KILL_GRACE};
use crate::scripts::ScriptHost;
use crate::serve::StoreArgs;
use crate::worker_cmd::{StopSignals, WorkerArgs, STOPPED_MESSAGE};
use hinter_core::{format_duration, ProcessInfo, Store, SystemClock};
use hinter_engine::{
    Coordinator, HandlerContext, JobError, JobSource, Maintenance, Registry, StopReason,
    StoreSource, Worker, WorkerOptions,
};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// On top of [`KILL_GRACE`]: time for a stopped command's end to be read before the engine
/// gives up on the attempt (its process group is killed either way).
const STOP_MARGIN: Duration = Duration::from_secs(2);

/// Runs the worker until SIGTERM/SIGINT.
pub async fn run(args: WorkerArgs, store: StoreArgs) -> anyhow::Result<()> {
    args.job_command_if_any()?;
    // What a lease may name, checked before anything starts (the engine refuses it too).
    hinter_core::limits::check_lease_queues("--queue", &args.queues)?;
    let cluster_options = args.cluster.options()?;
    let signals = StopSignals::listen()?;
    let backend = store.open().await?;
    let clock = store.clock();
    // Unique per process start even when the ID is given: leadership is held by this id.
    let worker_id = match &args.worker_id {
        Some(id) => format!("{id}:{:04x}", rand::random::<u16>()),
        None => hinter_engine::default_worker_id(),
    };
    let now = clock.now();
    let process = ProcessInfo {
        id: worker_id.clone(),
        host: hinter_engine::hostname(),
        pid: std::process::id(),
        role: "worker".into(),
        queues: args.queues.clone(),
        concurrency: args.concurrency,
        started_at: now,
        last_heartbeat_at: now,
        machine: hinter_core::cluster::this_machine(),
    };
    let coordinator = Coordinator::start(backend.clone(), clock.clone(), process, cluster_options);
    let store_handle: Arc<dyn Store> = backend.clone();
    let maintenance = Maintenance::start(
        store_handle.clone(),
        clock,
        args.maintenance.options(),
        coordinator.leader(),
    );
    let source = Arc::new(StoreSource(store_handle));
    let outcome = run_worker(
        &args,
        source,
        worker_id,
        signals,
        &format!("store {}", describe(&store)),
    )
    .await;
    maintenance.shutdown().await;
    coordinator.shutdown().await;
    if let Err(e) = backend.close().await {
        tracing::warn!(error = %e, "closing the store");
    }
    outcome
}

/// Both modes: the engine's worker on `source`, with one fallback handler that runs the
/// command for any job of its queues, until SIGTERM/SIGINT (then `Ok`) or until the source
/// refuses to lease for good (then `Err`, after the running jobs are handled).
pub async fn run_worker(
    args: &WorkerArgs,
    source: Arc<dyn JobSource>,
    worker_id: String,
    mut signals: StopSignals,
    from: &str,
) -> anyhow::Result<()> {
    let mut base = Registry::new();
    let program = match args.job_command_if_any()? {
        Some(command) => {
            let command = Arc::new(command);
            let program = command.program_name();
            base.register_fallback(move |ctx: HandlerContext, payload: Value| {
                run_job(command.clone(), ctx, payload, RunOptions::default())
            });
            program
        }
        None => "(none)".to_string(),
    };
    let scripts = match &args.jobs_dir {
        Some(dir) => crate::scripts::jobs_dir(Some(dir))?.map(ScriptHost::new),
        None => None,
    };
    let loaded = scripts.as_ref().map(|host| host.load()).unwrap_or_default();
    let continuous = loaded
        .iter()
        .filter(|j| j.kind == crate::scripts::folder::Kind::Continuous)
        .count();
    if continuous > 0 {
        tracing::warn!(
            continuous,
            "continuous jobs run in hinter serve only; this worker runs the triggered ones"
        );
    }
    let registry = match &scripts {
        Some(host) => host.registry(&base, &loaded),
        None => base.clone(),
    };
    let concurrency = args.concurrency as usize;
    let worker = Worker::start_on(
        source,
        Arc::new(SystemClock),
        registry,
        WorkerOptions {
            queues: args.lease_queues(),
            concurrency,
            // A little ahead of the free slots while commands are short: one lease fills
            // several slots, and a process holds at most twice its concurrency.
            prefetch: concurrency,
            lease_for: args.lease,
            stopping_wait_time: args.stopping_wait_time,
            // A stopped script gets its own stopping_wait_time between SIGTERM and SIGKILL.
            cancel_grace: if scripts.is_some() {
                crate::scripts::settings::MAX_STOPPING_WAIT + STOP_MARGIN
            } else {
                KILL_GRACE + STOP_MARGIN
            },
            worker_id: worker_id.clone(),
            ..WorkerOptions::default()
        },
    )?;
    let control = worker.control();
    tracing::info!(
        from,
        queues = ?control.queues(),
        concurrency = args.concurrency,
        worker_id = %worker_id,
        command = %program,
        jobs_dir = ?args.jobs_dir,
        scripts = ?control.job_names(),
        "hinter worker started"
    );
    // The worker's definitions are its own: the server applies its own on enqueue.
    let watching = match scripts {
        Some(host) => {
            Some(host.watch(base, loaded, control, hinter_core::Definitions::new(), None)?)
        }
        None => None,
    };

    let wait = format_duration(args.stopping_wait_time);
    let fatal = tokio::select! {
        name = signals.recv() => {
            tracing::info!(
                running = worker.running(),
                "{name} received: taking no more jobs; waiting up to {wait} for the running ones"
            );
            None
        }
        why = worker.fatal_error() => {
            tracing::error!(
                running = worker.running(),
                "{why}; taking no more jobs; waiting up to {wait} for the running ones"
            );
            Some(why)
        }
    };
    drop(watching);
    worker
        .shutdown_early_on(async {
            let name = signals.recv().await;
            tracing::warn!("{name} received again: stopping the running jobs now");
        })
        .await;
    match fatal {
        Some(why) => Err(anyhow::anyhow!(why)),
        None => {
            tracing::info!("hinter worker stopped");
            Ok(())
        }
    }
}

/// Where the store is, without secrets.
fn describe(store: &StoreArgs) -> String {
    match &store.database {
        Some(_) => format!("postgres (schema {})", store.schema),
        None => store.data_dir.display().to_string(),
    }
}

/// How a script job runs beyond its command ([`run_job`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Stop the command after this long, failing the attempt "timed out after …", even when
    /// the job itself carries no timeout (it was enqueued on a server that does not know
    /// the script's settings). The job's own timeout is applied by the engine as well.
    pub timeout: Option<Duration>,
}

/// Why a command was stopped: the engine told its handler, or [`RunOptions::timeout`].
enum Stop {
    Engine(Option<StopReason>),
    TimedOut(Duration),
}

/// One attempt of a job, run by `command`: the fallback handler of `hinter worker --
/// COMMAND`, and the handler of each script job (`scripts/`), which also stores the output
/// in the attempt's log and has its settings' timeout.
pub async fn run_job(
    command: Arc<JobCommand>,
    ctx: HandlerContext,
    payload: Value,
    options: RunOptions,
) -> Result<Option<Value>, JobError> {
    let id = ctx.id;
    tracing::info!(
        job_id = %id,
        job = %ctx.job,
        queue = %ctx.queue,
        attempt = ctx.attempt,
        max_attempts = ctx.max_attempts,
        "running job"
    );
    let info = JobInfo {
        id,
        job: &ctx.job,
        queue: &ctx.queue,
        attempt: ctx.attempt,
        max_attempts: ctx.max_attempts,
        payload: &payload,
        checkpoint: ctx.checkpoint.as_ref(),
    };
    let stop = async {
        if let Some(limit) = options.timeout {
            tokio::select! {
                _ = ctx.cancelled() => {}
                _ = tokio::time::sleep(limit) => {
                    tracing::warn!(job_id = %id, "ran past its timeout of {}: stopping the command", format_duration(limit));
                    return Stop::TimedOut(limit);
                }
            }
        } else {
            ctx.cancelled().await;
        }
        let reason = ctx.stop_reason();
        match reason {
            Some(StopReason::Cancelled) => {
                tracing::info!(job_id = %id, "cancel requested: stopping the command")
            }
            Some(StopReason::LeaseLost) => tracing::warn!(
                job_id = %id,
                "lost the lease: stopping the command; the job is no longer this worker's, \
                 nothing is reported"
            ),
            Some(StopReason::Shutdown) => {
                tracing::warn!(job_id = %id, "worker stopping: stopping the command")
            }
            _ => tracing::warn!(job_id = %id, "{}: stopping the command", describe_stop(reason)),
        }
        Stop::Engine(reason)
    };
    // Progress and checkpoints always; output lines unless the command stores directives
    // only (`JobCommand::directives_only`).
    match command.run_reporting(&info, Some(ctx.clone()), stop).await {
        Outcome::Succeeded(result) => {
            tracing::info!(job_id = %id, "job succeeded");
            Ok(result)
        }
        Outcome::Failed {
            message,
            retry,
            exit_code,
        } => {
            tracing::warn!(job_id = %id, retry, "job failed: {message}");
            Err(if retry {
                JobError::retryable(message)
            } else {
                JobError::permanent(message)
            }
            .with_exit_code(exit_code))
        }
        // The engine decides what a stopped attempt becomes: cancelled, failed by its
        // timeout, handed back on shutdown, or nothing (lease lost).
        Outcome::Stopped(Stop::Engine(reason)) => Err(JobError::retryable(match reason {
            Some(StopReason::Cancelled) => "cancelled".to_string(),
            Some(StopReason::Shutdown) => STOPPED_MESSAGE.to_string(),
            other => describe_stop(other),
        })),
        Outcome::Stopped(Stop::TimedOut(limit)) => Err(JobError::retryable(format!(
            "timed out after {}",
            format_duration(limit)
        ))),
    }
}

fn describe_stop(reason: Option<StopReason>) -> String {
    match reason {
        Some(reason) => reason.to_string(),
        None => "stopped".to_string(),
    }
}
