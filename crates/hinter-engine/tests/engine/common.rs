//! Shared helpers: the backend harness (a fresh store per test on SQLite or PostgreSQL, and
//! the macro that runs every case on both), fast worker options, condition waits with
//! deadlines, and small probes handlers use to report what happened to them.

use hinter_core::store::{
    Completion, Expired, Failure, Heartbeat, HeartbeatAck, JobFilter, LeaseRequest, PruneRequest,
    QueueInfo, Release, StoreResult,
};
use hinter_core::{
    Backend, Inserted, Job, JobDefinition, JobState, LeasedJob, NewJob, Store, StoreEvent,
    SystemClock,
};
use hinter_engine::{Registry, Worker, WorkerHandle, WorkerOptions};
use hinter_postgres::{PostgresOptions, PostgresStore, TestSchema};
use hinter_sqlite::{SqliteOptions, SqliteStore};
use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use uuid::Uuid;

/// Upper bound for things that should happen "at once"; generous for a loaded machine.
pub const SOON: Duration = Duration::from_secs(5);

/// The test database for the PostgreSQL cases.
pub const URL_VAR: &str = "HINTER_TEST_DATABASE_URL";

/// The backend a case runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// Instantiates every case named (an `async fn(Kind)` of the calling module) once per
/// backend, as `<module>::sqlite::<case>` and `<module>::postgres::<case>`. A case left out
/// of the list is dead code, which clippy refuses.
///
/// The PostgreSQL cases need `HINTER_TEST_DATABASE_URL`; without it they say so and pass,
/// except under CI=true, where they fail: CI must never skip them (see [`postgres_ready`]).
macro_rules! on_both_backends {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($crate::common::Kind::Sqlite).await
                }
            )+
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if $crate::common::postgres_ready() {
                        super::$case($crate::common::Kind::Postgres).await
                    }
                }
            )+
        }
    };
}
pub(crate) use on_both_backends;

/// Whether the PostgreSQL cases can run: `HINTER_TEST_DATABASE_URL` is set. Without it, a
/// note and `false`; under CI=true a panic instead, as CI must run them.
pub fn postgres_ready() -> bool {
    if std::env::var_os(URL_VAR).is_some() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{URL_VAR} is not set: CI must run the PostgreSQL engine tests \
             (e.g. {URL_VAR}=postgres://postgres@127.0.0.1:5432/test)"
        );
    }
    // Written past the test harness's capture, so the note shows although the test passes.
    let _ = writeln!(
        std::io::stderr(),
        "note: {URL_VAR} is not set; the PostgreSQL engine tests did not run"
    );
    false
}

/// The data of one test: a SQLite file in a temporary directory, or a PostgreSQL schema of
/// its own. Store instances opened on it act as separate processes sharing one database;
/// dropping it (after them) deletes the data.
pub struct Data {
    place: Place,
}

enum Place {
    Sqlite(TempDir),
    Postgres(TestSchema),
}

impl Data {
    /// Fresh, empty data for `kind` (the schema or file is created by the first store).
    pub fn fresh(kind: Kind) -> Data {
        let place = match kind {
            Kind::Sqlite => {
                Place::Sqlite(tempfile::tempdir().expect("create a temporary directory"))
            }
            Kind::Postgres => {
                let url = std::env::var(URL_VAR)
                    .unwrap_or_else(|_| panic!("{URL_VAR} is not set (see postgres_ready)"));
                Place::Postgres(TestSchema::fresh(&url, "hinter_engine_"))
            }
        };
        Data { place }
    }

    /// A store instance on this data: its own connections (and, for SQLite, its own writer
    /// thread; for PostgreSQL, its own pool and event listener), as another process has.
    ///
    /// The PostgreSQL store keeps the wall clock as the callers' clock (the default): on one
    /// machine the database's clock does not differ from it, so every time a test hands in,
    /// also from a `ManualClock`, is stored as given, as SQLite does.
    pub async fn open(&self) -> Arc<dyn Backend> {
        match &self.place {
            Place::Sqlite(dir) => Arc::new(
                SqliteStore::open(&dir.path().join("hinter.db"), SqliteOptions::default())
                    .await
                    .expect("open the SQLite store"),
            ),
            Place::Postgres(schema) => Arc::new(
                PostgresStore::connect(
                    &schema.url,
                    PostgresOptions {
                        schema: Some(schema.name.clone()),
                        max_connections: 4,
                        ..PostgresOptions::default()
                    },
                )
                .await
                .expect("connect to the test database"),
            ),
        }
    }
}

/// A fresh store on `kind`, and its data (keep it alive for the test: dropping it deletes
/// the data).
pub async fn open_store(kind: Kind) -> (Data, Arc<dyn Backend>) {
    let data = Data::fresh(kind);
    let store = data.open().await;
    (data, store)
}

/// Short leases, fast polling and a short stop: every test stays quick. Settings not
/// named here keep their defaults.
pub fn fast_options(concurrency: usize) -> WorkerOptions {
    WorkerOptions {
        concurrency,
        lease_for: Duration::from_secs(2),
        poll_interval: Duration::from_millis(50),
        stopping_wait_time: Duration::from_millis(200),
        cancel_grace: Duration::from_secs(1),
        worker_id: "test-worker".into(),
        ..WorkerOptions::default()
    }
}

/// Starts a worker on the wall clock.
pub fn start_worker(
    store: &Arc<dyn Backend>,
    registry: Registry,
    options: WorkerOptions,
) -> WorkerHandle {
    Worker::start(store.clone(), Arc::new(SystemClock), registry, options)
        .expect("start the worker")
}

/// A definition with every setting at its default.
pub fn def(name: &str) -> JobDefinition {
    JobDefinition {
        name: name.into(),
        ..JobDefinition::default()
    }
}

pub async fn enqueue(store: &Arc<dyn Backend>, job: NewJob) -> Uuid {
    let inserted = store
        .job_insert_many(vec![job], chrono::Utc::now())
        .await
        .expect("enqueue");
    assert_eq!(inserted.len(), 1);
    assert!(!inserted[0].duplicate);
    inserted[0].job.id
}

pub async fn enqueue_many(store: &Arc<dyn Backend>, jobs: Vec<NewJob>) -> Vec<Uuid> {
    store
        .job_insert_many(jobs, chrono::Utc::now())
        .await
        .expect("enqueue")
        .into_iter()
        .map(|i| i.job.id)
        .collect()
}

pub async fn get(store: &Arc<dyn Backend>, id: Uuid) -> Job {
    store
        .job_get(id)
        .await
        .expect("read the job")
        .unwrap_or_else(|| panic!("job {id} does not exist"))
}

fn describe(job: &Job) -> String {
    format!(
        "state {}, attempt {}/{}, errors {:?}, result {:?}",
        job.state,
        job.attempt,
        job.max_attempts,
        job.errors.iter().map(|e| &e.message).collect::<Vec<_>>(),
        job.result
    )
}

/// Polls the job until `done` holds; panics with the last state seen after `within`.
pub async fn wait_for_job(
    store: &Arc<dyn Backend>,
    id: Uuid,
    what: &str,
    within: Duration,
    done: impl Fn(&Job) -> bool,
) -> Job {
    let poll = async {
        loop {
            let job = get(store, id).await;
            if done(&job) {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    match tokio::time::timeout(within, poll).await {
        Ok(job) => job,
        Err(_) => {
            let job = get(store, id).await;
            panic!(
                "job {id} ({}) did not become {what} within {within:?}; last seen: {}",
                job.job,
                describe(&job)
            )
        }
    }
}

/// Polls the job until it is in `state`.
pub async fn wait_for_state(
    store: &Arc<dyn Backend>,
    id: Uuid,
    state: JobState,
    within: Duration,
) -> Job {
    wait_for_job(store, id, state.as_str(), within, |j| j.state == state).await
}

/// Polls `cond` until it holds; panics naming `what` after `within`.
pub async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let poll = async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    if tokio::time::timeout(within, poll).await.is_err() {
        panic!("timed out after {within:?} waiting until {what}");
    }
}

/// Runs `fut`, failing the test if it takes longer than `within`.
pub async fn within<T>(what: &str, within: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(within, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {within:?}"))
}

/// A flag shared between a test and its handlers.
#[derive(Clone, Default)]
pub struct Flag(Arc<AtomicBool>);

impl Flag {
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// A guard that sets the flag when dropped: a handler holding it shows whether its
    /// future was dropped (returned, or was aborted).
    pub fn set_on_drop(&self) -> SetOnDrop {
        SetOnDrop(self.clone())
    }
}

pub struct SetOnDrop(Flag);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// Counts handlers running at once and remembers the peak.
#[derive(Clone, Default)]
pub struct Gauge {
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
}

impl Gauge {
    /// Counts one more running handler until the guard is dropped (also when aborted).
    pub fn enter(&self) -> GaugeGuard {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        self.total.fetch_add(1, Ordering::SeqCst);
        GaugeGuard(self.now.clone())
    }

    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    pub fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }
}

pub struct GaugeGuard(Arc<AtomicUsize>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A store that delegates to another but can hold back the answer to one lease that took
/// jobs: the lease is committed, its answer not yet delivered, as with a slow commit. Lets a
/// test act (shut down) at exactly that moment. Also counts the idempotency keys pruned
/// through it, so a test sees when maintenance pruned.
pub struct HeldLease {
    inner: Arc<dyn Backend>,
    keys_pruned: std::sync::atomic::AtomicU64,
    armed: AtomicBool,
    committed: tokio::sync::Notify,
    open: tokio::sync::Notify,
    abandoned: Flag,
}

impl HeldLease {
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        Self {
            inner,
            keys_pruned: std::sync::atomic::AtomicU64::new(0),
            armed: AtomicBool::new(false),
            committed: tokio::sync::Notify::new(),
            open: tokio::sync::Notify::new(),
            abandoned: Flag::default(),
        }
    }

    /// Holds the answer of the next lease that takes at least one job.
    pub fn hold_next_lease(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Completes once the held lease is committed in the store.
    pub async fn committed(&self) {
        self.committed.notified().await
    }

    /// Lets the held answer go to the caller (if it still waits for it).
    pub fn open(&self) {
        self.open.notify_one();
    }

    /// How many idempotency keys were pruned through this store.
    pub fn keys_pruned(&self) -> u64 {
        self.keys_pruned.load(Ordering::SeqCst)
    }

    /// True once the caller dropped the held lease call without its answer.
    pub fn abandoned(&self) -> bool {
        self.abandoned.is_set()
    }
}

/// Sets its flag when dropped, unless disarmed first.
struct UnlessDisarmed(Option<Flag>);

impl Drop for UnlessDisarmed {
    fn drop(&mut self) {
        if let Some(flag) = self.0.take() {
            flag.set();
        }
    }
}

#[async_trait::async_trait]
impl Store for HeldLease {
    async fn job_insert_many(
        &self,
        jobs: Vec<NewJob>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<Vec<Inserted>> {
        self.inner.job_insert_many(jobs, now).await
    }

    async fn job_get(&self, id: Uuid) -> StoreResult<Option<Job>> {
        self.inner.job_get(id).await
    }

    async fn job_list(&self, filter: JobFilter) -> StoreResult<Vec<Job>> {
        self.inner.job_list(filter).await
    }

    async fn job_followups(&self, id: Uuid) -> StoreResult<Vec<Job>> {
        self.inner.job_followups(id).await
    }

    async fn job_lease(&self, request: LeaseRequest) -> StoreResult<Vec<LeasedJob>> {
        let jobs = self.inner.job_lease(request).await?;
        if jobs.is_empty() || !self.armed.swap(false, Ordering::SeqCst) {
            return Ok(jobs);
        }
        let mut abandoned = UnlessDisarmed(Some(self.abandoned.clone()));
        self.committed.notify_one();
        self.open.notified().await;
        abandoned.0 = None;
        Ok(jobs)
    }

    async fn job_heartbeat_many(
        &self,
        heartbeats: Vec<Heartbeat>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<Vec<StoreResult<HeartbeatAck>>> {
        self.inner.job_heartbeat_many(heartbeats, now).await
    }

    async fn job_complete_many(
        &self,
        completions: Vec<Completion>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<Vec<StoreResult<Job>>> {
        self.inner.job_complete_many(completions, now).await
    }

    async fn job_fail_many(
        &self,
        failures: Vec<Failure>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<Vec<StoreResult<Job>>> {
        self.inner.job_fail_many(failures, now).await
    }

    async fn write_unit(
        &self,
        ops: Vec<hinter_core::store::WriteOp>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<Vec<hinter_core::store::WriteResult>> {
        self.inner.write_unit(ops, now).await
    }

    async fn job_release_many(
        &self,
        releases: Vec<Release>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<Vec<StoreResult<()>>> {
        self.inner.job_release_many(releases, now).await
    }

    async fn job_report(
        &self,
        report: hinter_core::JobReport,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<()> {
        self.inner.job_report(report, now).await
    }

    async fn job_logs(
        &self,
        id: Uuid,
        query: hinter_core::LogQuery,
    ) -> StoreResult<Option<Vec<hinter_core::LogLine>>> {
        self.inner.job_logs(id, query).await
    }

    async fn job_cancel(&self, id: Uuid, now: chrono::DateTime<chrono::Utc>) -> StoreResult<Job> {
        self.inner.job_cancel(id, now).await
    }

    async fn job_retry(&self, id: Uuid, now: chrono::DateTime<chrono::Utc>) -> StoreResult<Job> {
        self.inner.job_retry(id, now).await
    }

    async fn job_expired_list(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> StoreResult<Vec<Expired>> {
        self.inner.job_expired_list(now, limit).await
    }

    async fn job_promote_scheduled(&self, now: chrono::DateTime<chrono::Utc>) -> StoreResult<u64> {
        self.inner.job_promote_scheduled(now).await
    }

    async fn job_next_scheduled_at(&self) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>> {
        self.inner.job_next_scheduled_at().await
    }

    async fn job_prune(&self, request: PruneRequest) -> StoreResult<u64> {
        self.inner.job_prune(request).await
    }

    async fn queue_list(&self) -> StoreResult<Vec<QueueInfo>> {
        self.inner.queue_list().await
    }

    async fn queue_set_paused(&self, queue: &str, paused: bool) -> StoreResult<()> {
        self.inner.queue_set_paused(queue, paused).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }

    async fn events_read(
        &self,
        after: i64,
        filter: &hinter_core::EventFilter,
        limit: u32,
    ) -> StoreResult<hinter_core::EventPage> {
        self.inner.events_read(after, filter, limit).await
    }

    async fn events_last_id(&self) -> StoreResult<i64> {
        self.inner.events_last_id().await
    }

    async fn events_prune(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> StoreResult<u64> {
        self.inner.events_prune(before, limit).await
    }

    async fn idempotency_prune(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> StoreResult<u64> {
        let pruned = self.inner.idempotency_prune(now, limit).await?;
        self.keys_pruned.fetch_add(pruned, Ordering::SeqCst);
        Ok(pruned)
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<StoreEvent> {
        self.inner.subscribe()
    }

    async fn token_list(&self) -> StoreResult<Vec<hinter_core::access::TokenInfo>> {
        self.inner.token_list().await
    }

    async fn audit_list(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<hinter_core::access::AuditEntry>> {
        self.inner.audit_list(before, limit).await
    }
}
