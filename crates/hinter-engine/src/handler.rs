//! Typed handlers and the registry that maps job names to them.

use hinter_core::{Definitions, JobDefinition, LeasedJob};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What a handler knows about the job it runs.
#[derive(Debug, Clone)]
pub struct HandlerContext {
    pub id: Uuid,
    pub job: String,
    pub queue: String,
    /// This attempt, counting from 1.
    pub attempt: u32,
    pub max_attempts: u32,
    /// The last checkpoint an earlier attempt saved ([`HandlerContext::report`]), to resume
    /// from.
    pub checkpoint: Option<Value>,
    lease_token: i64,
    cancel: CancellationToken,
    stop: Arc<OnceLock<StopReason>>,
    reporter: Option<Reporter>,
}

/// Where a handler's reports go: the worker's source, on the worker's clock.
#[derive(Clone)]
pub(crate) struct Reporter {
    pub(crate) source: Arc<dyn crate::JobSource>,
    pub(crate) clock: Arc<dyn hinter_core::Clock>,
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reporter")
    }
}

/// Why the engine told a handler to stop ([`HandlerContext::stop_reason`]).
///
/// A stopped handler has `cancel_grace` ([`crate::WorkerOptions::cancel_grace`]) to return,
/// whatever the reason, so it can clean up (a command gets SIGTERM, then SIGKILL); after
/// that it is aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The job was cancelled (`POST /api/v1/jobs/{id}/cancel`): whatever the handler
    /// returns now, the job ends `cancelled`.
    Cancelled,
    /// The job ran past its `timeout`: the attempt fails with "timed out after …" and is
    /// retried with backoff, whatever the handler returns now.
    TimedOut,
    /// Another worker holds the job now (the lease expired and it was rescued): nothing the
    /// handler returns is stored.
    LeaseLost,
    /// The worker is shutting down and `stopping_wait_time` is over: an error hands the job
    /// back to the queue without counting the attempt; a success is still stored.
    Shutdown,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::Cancelled => "cancelled",
            StopReason::TimedOut => "timed out",
            StopReason::LeaseLost => "lease lost",
            StopReason::Shutdown => "worker stopping",
        })
    }
}

impl HandlerContext {
    pub(crate) fn new(
        job: &LeasedJob,
        cancel: CancellationToken,
        stop: Arc<OnceLock<StopReason>>,
        reporter: Reporter,
    ) -> Self {
        Self {
            id: job.id,
            job: job.job.clone(),
            queue: job.queue.clone(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            checkpoint: job.checkpoint.clone(),
            lease_token: job.lease_token,
            cancel,
            stop,
            reporter: Some(reporter),
        }
    }

    /// A context for running a handler outside a worker (tests, tools): it is never told
    /// to stop, and its reports go nowhere.
    pub fn detached(id: Uuid, job: &str, queue: &str, attempt: u32, max_attempts: u32) -> Self {
        Self {
            id,
            job: job.to_string(),
            queue: queue.to_string(),
            attempt,
            max_attempts,
            checkpoint: None,
            lease_token: 0,
            cancel: CancellationToken::new(),
            stop: Arc::new(OnceLock::new()),
            reporter: None,
        }
    }

    /// Appends log lines to this attempt's log and sets the job's progress and checkpoint
    /// (each part optional), under this attempt's lease: once the lease is lost the store
    /// refuses it ([`hinter_core::StoreError::StaleLease`]).
    pub async fn report(
        &self,
        logs: Vec<hinter_core::NewLogLine>,
        progress: Option<hinter_core::Progress>,
        checkpoint: Option<Value>,
    ) -> Result<(), hinter_core::StoreError> {
        let Some(reporter) = &self.reporter else {
            return Ok(());
        };
        let report = hinter_core::JobReport {
            id: self.id,
            lease_token: self.lease_token,
            logs,
            progress,
            checkpoint,
        };
        reporter.source.report(report, reporter.clock.now()).await
    }

    /// Sets the job's progress: `percent` from 0 to 100 and an optional message (shown by
    /// `GET /api/v1/jobs/{id}` and `hinter enqueue --wait`). A percent outside 0 to 100 is
    /// refused ([`hinter_core::StoreError::Invalid`]); a message with NUL or over 1 KiB too.
    pub async fn progress(
        &self,
        percent: f64,
        message: impl Into<Option<String>>,
    ) -> Result<(), hinter_core::StoreError> {
        let progress = hinter_core::ProgressUpdate::new(percent, message.into()).at(self.now());
        self.report(Vec::new(), Some(progress), None).await
    }

    /// Saves a checkpoint (any JSON, at most 64 levels deep): if this attempt fails, crashes
    /// or times out, the next one is handed it in [`HandlerContext::checkpoint`] and can
    /// resume from there.
    ///
    /// ```no_run
    /// # async fn run(ctx: hinter_engine::HandlerContext, items: Vec<String>)
    /// #     -> Result<usize, hinter_engine::JobError> {
    /// let start = ctx
    ///     .checkpoint
    ///     .as_ref()
    ///     .and_then(|c| c["done"].as_u64())
    ///     .unwrap_or(0) as usize;
    /// for (i, item) in items.iter().enumerate().skip(start) {
    ///     // … process `item` …
    ///     ctx.checkpoint(serde_json::json!({ "done": i + 1 })).await?;
    ///     ctx.progress(100.0 * (i + 1) as f64 / items.len() as f64, format!("{item} done"))
    ///         .await?;
    /// }
    /// Ok(items.len())
    /// # }
    /// ```
    pub async fn checkpoint(&self, checkpoint: Value) -> Result<(), hinter_core::StoreError> {
        self.report(Vec::new(), None, Some(checkpoint)).await
    }

    /// Appends a line to this attempt's log (`GET /api/v1/jobs/{id}/logs`), as INFO; a NUL
    /// is replaced and an overlong line cut, as for script output.
    pub async fn log(&self, line: impl Into<String>) -> Result<(), hinter_core::StoreError> {
        let line = hinter_core::NewLogLine::new(self.now(), hinter_core::LogStream::Stdout, line);
        self.report(vec![line], None, None).await
    }

    /// The time on the worker's clock (for log lines and progress).
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        match &self.reporter {
            Some(reporter) => reporter.clock.now(),
            None => chrono::Utc::now(),
        }
    }

    /// True once the job should stop: it was cancelled, timed out, lost its lease, or the
    /// worker is shutting down.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Why the job should stop; `None` while it may run on. Set before
    /// [`HandlerContext::cancelled`] completes.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop.get().copied()
    }

    /// Completes when the job should stop; `select!` on it in long-running handlers.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// The job's cancellation token, to hand to other tasks.
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

/// A failed attempt. Retried with backoff unless [`JobError::permanent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    pub message: String,
    pub retryable: bool,
    /// The exit code of the command the attempt ran, kept in the attempt's run record.
    pub exit_code: Option<i32>,
}

impl JobError {
    /// A failure worth retrying.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
            exit_code: None,
        }
    }

    /// A failure that no retry will fix: the job goes `dead` at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            exit_code: None,
        }
    }

    /// The same failure, recording the exit code of the command that ran the attempt.
    pub fn with_exit_code(mut self, exit_code: Option<i32>) -> Self {
        self.exit_code = exit_code;
        self
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Any error converts into a retryable failure, so handlers can use `?`.
impl<E: std::error::Error> From<E> for JobError {
    fn from(e: E) -> Self {
        JobError::retryable(e.to_string())
    }
}

pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = Result<Option<Value>, JobError>> + Send>>;

pub(crate) trait ErasedHandler: Send + Sync + 'static {
    fn call(&self, ctx: HandlerContext, payload: Value) -> BoxFuture;
}

struct Typed<F, P> {
    f: F,
    _payload: std::marker::PhantomData<fn(P)>,
}

impl<F, P, Fut, R> ErasedHandler for Typed<F, P>
where
    F: Fn(HandlerContext, P) -> Fut + Send + Sync + 'static,
    P: DeserializeOwned + 'static,
    Fut: Future<Output = Result<R, JobError>> + Send + 'static,
    R: Serialize,
{
    fn call(&self, ctx: HandlerContext, payload: Value) -> BoxFuture {
        let payload: P = match serde_json::from_value(payload) {
            Ok(p) => p,
            Err(e) => {
                let message = format!("payload does not fit job {:?}: {e}", ctx.job);
                return Box::pin(async move { Err(JobError::permanent(message)) });
            }
        };
        let fut = (self.f)(ctx, payload);
        Box::pin(async move {
            let value = fut.await?;
            let value = serde_json::to_value(value)
                .map_err(|e| JobError::permanent(format!("result is not JSON: {e}")))?;
            Ok((!value.is_null()).then_some(value))
        })
    }
}

/// Job definitions with their in-process handlers, and optionally a fallback handler for
/// every other job name.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn ErasedHandler>>,
    fallback: Option<Arc<dyn ErasedHandler>>,
    definitions: Definitions,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for jobs named `definition.name`. The payload is deserialized into
    /// `P`; a payload that does not fit fails the job permanently. The handler's return value
    /// becomes the job's `result`.
    pub fn register<P, F, Fut, R>(&mut self, definition: JobDefinition, handler: F) -> &mut Self
    where
        F: Fn(HandlerContext, P) -> Fut + Send + Sync + 'static,
        P: DeserializeOwned + 'static,
        Fut: Future<Output = Result<R, JobError>> + Send + 'static,
        R: Serialize,
    {
        self.handlers.insert(
            definition.name.clone(),
            Arc::new(Typed {
                f: handler,
                _payload: std::marker::PhantomData,
            }),
        );
        self.definitions.insert(definition);
        self
    }

    /// Registers `handler` for every job whose name has no handler of its own (one
    /// registered with [`Registry::register`] always wins). Like a typed handler, it gets the
    /// payload as `P` (use [`serde_json::Value`] to take any payload; one that does not fit
    /// fails the job permanently) and its return value becomes the job's `result`;
    /// [`HandlerContext::job`] tells it which job it runs. A second call replaces the first.
    ///
    /// A fallback adds no definition and no queue: a worker that relies on it must be told
    /// its queues ([`crate::WorkerOptions::queues`]), since [`Registry::queues`] cannot know
    /// where unnamed jobs go. `hinter worker --database … -- COMMAND` is built this way.
    pub fn register_fallback<P, F, Fut, R>(&mut self, handler: F) -> &mut Self
    where
        F: Fn(HandlerContext, P) -> Fut + Send + Sync + 'static,
        P: DeserializeOwned + 'static,
        Fut: Future<Output = Result<R, JobError>> + Send + 'static,
        R: Serialize,
    {
        self.fallback = Some(Arc::new(Typed {
            f: handler,
            _payload: std::marker::PhantomData,
        }));
        self
    }

    /// A copy with its own definitions (the same ones, copied): registering more on it
    /// changes neither this registry nor the definitions it shares with an API. A reload of
    /// script jobs builds each new registry on a snapshot of the code-registered one.
    pub fn snapshot(&self) -> Registry {
        let definitions = Definitions::new();
        for definition in self.definitions.all() {
            definitions.insert(definition);
        }
        Registry {
            handlers: self.handlers.clone(),
            fallback: self.fallback.clone(),
            definitions,
        }
    }

    /// True if a fallback handler is registered.
    pub fn has_fallback(&self) -> bool {
        self.fallback.is_some()
    }

    /// The definitions of every registered handler; share them with the API so enqueues
    /// pick up each definition's defaults.
    pub fn definitions(&self) -> &Definitions {
        &self.definitions
    }

    /// Queues that the jobs of handlers registered by name go to. A fallback handler adds
    /// none: it runs whatever the worker's queues hold.
    pub fn queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = self
            .handlers
            .keys()
            .filter_map(|name| self.definitions.get(name))
            .map(|d| {
                d.queue
                    .unwrap_or_else(|| hinter_core::DEFAULT_QUEUE.to_string())
            })
            .collect();
        queues.sort();
        queues.dedup();
        queues
    }

    /// The job names a worker of this registry leases: every name with a handler, sorted; or
    /// none, meaning any, when a fallback runs every other name. So a worker never takes a
    /// job it cannot run from a queue it shares with other workers.
    pub fn job_names(&self) -> Vec<String> {
        if self.fallback.is_some() {
            return Vec::new();
        }
        let mut names: Vec<String> = self.handlers.keys().cloned().collect();
        names.sort();
        names
    }

    /// True if no handler is registered, neither by name nor as fallback.
    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty() && self.fallback.is_none()
    }

    /// The handler of jobs named `name`: its own, else the fallback.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<dyn ErasedHandler>> {
        self.handlers.get(name).or(self.fallback.as_ref()).cloned()
    }
}
