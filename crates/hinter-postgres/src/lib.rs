//! The PostgreSQL backend of the hinter store: many `hinter serve` and `hinter worker`
//! processes, on many machines, sharing one database.
//!
//! It has exactly the semantics of the SQLite backend; the conformance suite
//! (`hinter-store-tests`) runs against both. How it works:
//!
//! - **Connections.** A [`deadpool_postgres`] pool of `tokio-postgres` connections; every
//!   statement is prepared once per connection (`prepare_cached`). With
//!   [`PostgresOptions::schema`] (default `hinter`) every connection's `search_path` is that
//!   schema, so hinter's tables never meet an application's own. Commits are durable
//!   (`synchronous_commit` is left at its default, on).
//! - **Writes.** Each write is one `READ COMMITTED` transaction; batches (inserts,
//!   heartbeats, completions, failures, releases) are one statement over `unnest` arrays, and
//!   every guard is part of the statement that changes the row (`WHERE state = 'running' AND
//!   lease_token = …`), so a stale token changes nothing. Rows of a batch are locked in id
//!   order; a deadlock or serialization failure anyway is retried.
//! - **Leasing.** Due scheduled jobs are promoted, then the best eligible jobs of each
//!   requested, unpaused queue are picked with `FOR UPDATE SKIP LOCKED` from the partial index
//!   `jobs_queued (queue, priority DESC, seq) WHERE state = 'queued'`, so concurrent leasers
//!   take disjoint jobs without waiting and the cost does not grow with finished history.
//!   The ordering-key guard (only the oldest unfinished job of a key) is part of that query;
//!   inserts of one key take an advisory lock so `seq` follows commit order. The singleton
//!   guard takes a transaction advisory lock per job name and checks again after it (see
//!   `ops::job_lease`).
//! - **Duplicates.** An insert takes `pg_advisory_xact_lock` on each `(job, unique_key)`
//!   before looking for a duplicate, so two concurrent enqueues cannot both insert.
//! - **Events.** Every change publishes its [`StoreEvent`]s with `pg_notify` inside its own
//!   transaction (delivered only on commit, to every process on the database); a dedicated
//!   connection per store `LISTEN`s and forwards them to [`Store::subscribe`] receivers,
//!   reconnecting with backoff. Events are hints; consumers also poll. See [`events`].
//! - **Event log.** Every change also writes its rows of the durable log
//!   ([`hinter_core::event`]) into `events`, in the same statement (a data-modifying CTE
//!   over the rows the change returned), so they exist if and only if it commits; `at` is
//!   the operation's `now` and `data` strings that must match the SQLite backend byte for
//!   byte (times) are made in Rust. A row's key is `(xid, seq)`: the writing transaction
//!   (`pg_current_xact_id()`) and a sequence value. Public ids cannot be either: a sequence
//!   value (or an xid) taken early can commit late, and a reader resuming "after id N" would
//!   skip it. So ids are given only to *settled* transactions, those below the xmin of the
//!   current snapshot (every transaction before them has ended, and no new event can get
//!   such an xid): a sequencer, run by each `events_read`/`events_last_id` under an advisory
//!   lock, places them in xid order in `event_txs` with
//!   `base(next) = base(prev) + span(prev)`, and an event's id is
//!   `base + (seq - first_seq)`. Ids then grow in log order, never change and are never
//!   reused (pruning keeps the newest `event_txs` row), with gaps where sequence values
//!   went elsewhere. A read maps `after` to its `(xid, seq)` position and walks the primary
//!   keys from there. The trade-off: a transaction left open anywhere on the server while
//!   holding an xid (`idle in transaction` after a write, a forgotten prepared transaction)
//!   holds back the log, for every reader, until it ends; writes go on, and their events
//!   appear, in order, when it does. After a commit that logged rows the store wakes its own
//!   readers ([`StoreEvent::Logged`]) at once and tells other processes with a NOTIFY sent
//!   outside the transaction, at most one per 5 ms (a trailing one is never dropped);
//!   [`enqueue_in`] sends it in the application's transaction instead. Readers also poll:
//!   nothing announces the end of a transaction that logged nothing but held the log back.
//! - **Cluster.** [`Cluster`] (live processes, leaderships with terms) lives in the same
//!   database; a leadership changes hands only through one guarded upsert, so concurrent
//!   candidates on any machine get exactly one winner.
//! - **Transactional enqueue.** [`enqueue_in`] (or [`PostgresStore::enqueue_in`]) inserts
//!   jobs inside the application's own `tokio-postgres` transaction, with the same code as
//!   [`Store::job_insert_many`] and the wake-up notification in that transaction: the job
//!   exists, and workers wake, if and only if the application commits. See
//!   `examples/transactional_enqueue.rs`.
//! - **Migrations.** Versioned (`schema_migrations`), applied at [`PostgresStore::connect`]
//!   under a session advisory lock so instances starting together migrate once; a database
//!   with a newer schema than this build knows is refused.

mod access;
mod clock;
mod cluster;
mod connect;
mod enqueue;
pub mod events;
mod idempotency;
mod log;
mod migrate;
mod ops;
mod output;
mod schedules;
mod test_schema;
pub mod tls;
mod tx;
mod unit;

pub use test_schema::TestSchema;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use hinter_core::handoff;
use hinter_core::store::{
    Completion, Expired, Failure, Heartbeat, HeartbeatAck, JobFilter, LeaseRequest, PruneRequest,
    QueueInfo, Release, StoreResult, WriteOp, WriteResult,
};
use hinter_core::{
    Clock, Cluster, EventFilter, EventPage, Inserted, Job, JobPage, JobReport, Leadership,
    LeasedJob, ListCursor, LogLine, LogQuery, NewJob, ProcessInfo, Run, Store, StoreError,
    StoreEvent, SystemClock,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_postgres::IsolationLevel;
use uuid::Uuid;

pub use enqueue::enqueue_in;
pub use migrate::{versions as schema_versions, LATEST_VERSION as SCHEMA_VERSION};
/// The `tokio-postgres` this crate is built with: [`enqueue_in`] takes its transactions.
pub use tokio_postgres;

/// The schema hinter uses unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "hinter";

/// How often a write that hit a deadlock or serialization failure is tried in all.
const WRITE_TRIES: u32 = 3;

/// Settings of the PostgreSQL store.
#[derive(Clone)]
pub struct PostgresOptions {
    /// The schema holding hinter's tables, created if missing; every connection's
    /// `search_path`. `None` uses the connection's own `search_path` as the URL sets it.
    /// Lowercase letters, digits and `_`, at most 48.
    pub schema: Option<String>,
    /// Most pooled connections (the event listener has one more of its own).
    pub max_connections: usize,
    /// Pooled connections opened at connect, in the background (at most `max_connections`).
    /// A new connection costs the database a process and its catalog caches (tens of
    /// milliseconds): opened on demand, they come in a burst at the worst moment, when a
    /// stall has made requests pile up, and each piled-up request waits for one. Four
    /// open ahead took the latency phase's worst start from 120–150 ms to about 20
    /// (docs/performance.md).
    pub min_connections: usize,
    /// How long opening a connection may take, unless the URL sets `connect_timeout`.
    pub connect_timeout: Duration,
    /// How long an operation waits for a free pooled connection.
    pub acquire_timeout: Duration,
    /// The clock of the times callers hand in (`now`). The store measures how far the
    /// database's clock is from it and keeps leases and leadership on the database's clock,
    /// so machines whose clocks disagree agree on when a lease ends (see `clock.rs`).
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            schema: Some(DEFAULT_SCHEMA.to_string()),
            max_connections: 16,
            min_connections: 4,
            connect_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(30),
            clock: Arc::new(SystemClock),
        }
    }
}

/// The PostgreSQL store. Cheap to clone; clones share the pool and the event listener,
/// which stops when the last clone is dropped.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// `user@host:port/db`, for messages.
    target: String,
    schema: Option<String>,
    channel: String,
    /// This instance's tag on its notifications: its listener skips them, since each write
    /// hands its events to this instance's subscribers right after it commits.
    origin: String,
    events: broadcast::Sender<StoreEvent>,
    /// Pokes the task that announces new event log entries to other processes
    /// ([`events::announce_logged`]); a full channel means a poke is already pending.
    logged: mpsc::Sender<()>,
    /// Counts announcements of new log entries that this store committed (inside a writing
    /// transaction that notified anyway, or by the announcer), so the announcer can skip one
    /// that a transaction made meanwhile.
    announced: Arc<AtomicU64>,
    /// Callers' times on the database's clock.
    clock: clock::DbClock,
    /// Dropping it stops the listener task.
    _stop: watch::Sender<()>,
    /// Told of each committed write transaction (`Store::observe_commits`).
    commits: std::sync::OnceLock<hinter_core::store::CommitObserver>,
    /// Lease requests of this process's idle workers, served by inserts (`handoff`).
    lot: hinter_core::handoff::ParkingLot,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.inner.target)
            .field("channel", &self.inner.channel)
            .finish_non_exhaustive()
    }
}

/// Opens one plain connection to the database at `url`, with the same URL handling as
/// [`PostgresStore::connect`] (TLS by `sslmode`/`sslrootcert`, see [`tls`]), its
/// connection task spawned. For tools and tests that need a session of their own.
pub async fn connect_session(url: &str) -> StoreResult<tokio_postgres::Client> {
    let options = PostgresOptions {
        schema: None,
        ..PostgresOptions::default()
    };
    connect::Settings::new(url, &options)?.connect().await
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`), brings
    /// its schema up to date and starts listening for events. An unreachable database, a
    /// refused login or a schema from a newer hinter is [`StoreError::Unavailable`] with a
    /// message naming the host (never the password).
    pub async fn connect(url: &str, options: PostgresOptions) -> StoreResult<Self> {
        let settings = connect::Settings::new(url, &options)?;
        let target = settings.target.clone();
        let mut session = settings.connect().await?;
        migrate::migrate(&mut session, options.schema.as_deref())
            .await
            .map_err(|e| match e {
                StoreError::Unavailable(m) => StoreError::Unavailable(format!("{target}: {m}")),
                other => other,
            })?;
        drop(session);

        let manager = Manager::from_config(
            settings.config.clone(),
            settings.connector.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(options.connect_timeout))
            .wait_timeout(Some(options.acquire_timeout))
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot build the pool: {e}")))?;

        tokio::spawn(open_ahead(
            pool.clone(),
            options.min_connections.min(options.max_connections),
        ));
        let channel = events::channel(options.schema.as_deref());
        let origin = format!("{:016x}", rand::random::<u64>());
        let (events_tx, _) = broadcast::channel(4096);
        let (stop, stop_rx) = watch::channel(());
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(events::listen(
            settings,
            target.clone(),
            channel.clone(),
            origin.clone(),
            events_tx.clone(),
            stop_rx,
            ready_tx,
        ));
        ready_rx.await.map_err(|_| {
            StoreError::Unavailable(format!("the event listener for {target} stopped"))
        })??;

        let (logged, pokes) = mpsc::channel(1);
        let announced = Arc::new(AtomicU64::new(0));
        tokio::spawn(events::announce_logged(
            pool.clone(),
            channel.clone(),
            origin.clone(),
            pokes,
            announced.clone(),
        ));
        let store = Self {
            inner: Arc::new(Inner {
                pool,
                target,
                schema: options.schema.clone(),
                channel,
                origin,
                events: events_tx,
                logged,
                announced,
                clock: clock::DbClock::new(options.clock.clone()),
                _stop: stop,
                commits: std::sync::OnceLock::new(),
                lot: Default::default(),
            }),
        };
        store.measure_clock().await?;
        let weak = Arc::downgrade(&store.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(clock::MEASURE_EVERY).await;
                let Some(inner) = weak.upgrade() else { return };
                let store = PostgresStore { inner };
                if let Err(e) = store.measure_clock().await {
                    tracing::debug!(error = %e, "measuring the database's clock failed");
                }
            }
        });
        Ok(store)
    }

    /// Measures how far the database's clock is from the callers' ([`clock::DbClock`]).
    async fn measure_clock(&self) -> StoreResult<()> {
        let clock = &self.inner.clock;
        self.read(async |c| {
            let before = clock.callers_now();
            let row = c
                .query_one("SELECT clock_timestamp()", &[])
                .await
                .map_err(ops::Error::Db)?;
            let after = clock.callers_now();
            let db_now: DateTime<Utc> = row.try_get(0).map_err(ops::Error::Db)?;
            clock.measured(before, db_now, after);
            Ok(())
        })
        .await
    }

    /// Brings the database at `url` to the current schema without keeping a store open
    /// (`hinter migrate`); returns the schema version.
    pub async fn migrate(url: &str, options: &PostgresOptions) -> StoreResult<i64> {
        let settings = connect::Settings::new(url, options)?;
        let mut session = settings.connect().await?;
        migrate::migrate(&mut session, options.schema.as_deref()).await
    }

    /// Connections the pool holds open, in use or idle.
    pub fn pooled_connections(&self) -> usize {
        self.inner.pool.status().size
    }

    /// The database, as `postgres://user@host:port/db` (no password).
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// The schema holding hinter's tables (`None`: the connection's own `search_path`).
    pub fn schema(&self) -> Option<&str> {
        self.inner.schema.as_deref()
    }

    /// Enqueues `jobs` inside the application's own transaction `tx` (on this store's
    /// database), in this store's schema: see [`enqueue_in`]. The jobs exist, and workers
    /// wake, if and only if `tx` commits.
    pub async fn enqueue_in(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        jobs: Vec<NewJob>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Inserted>> {
        enqueue_in(tx, self.schema(), jobs, self.inner.clock.at(now)).await
    }

    /// The LISTEN/NOTIFY channel of this store's events.
    pub fn channel(&self) -> &str {
        &self.inner.channel
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, ops::Error> {
        self.inner.pool.get().await.map_err(|e| {
            ops::Error::Store(StoreError::Unavailable(format!(
                "no database connection to {}: {}",
                self.inner.target,
                match &e {
                    deadpool_postgres::PoolError::Backend(db) => ops::describe(db),
                    other => other.to_string(),
                }
            )))
        })
    }

    /// Called after the commit of a write that logged events: wakes this process's readers
    /// at once. Other processes were told by the transaction itself when it notified anyway
    /// (`in_commit`); otherwise the announcer tells them (after its rate limit, unless a
    /// transaction does first).
    fn logged(&self, in_commit: bool) {
        let _ = self.inner.events.send(StoreEvent::Logged);
        if in_commit {
            self.inner.announced.fetch_add(1, Ordering::Release);
        } else {
            // Full: a poke is pending already and covers this one.
            let _ = self.inner.logged.try_send(());
        }
    }

    /// Places the events of settled transactions in the log (see `log.rs`), each step in a
    /// transaction of its own under the sequencing lock, so a read that follows sees every
    /// event that could be placed when it started.
    async fn sequence(&self, client: &mut deadpool_postgres::Client) -> Result<(), ops::Error> {
        for _ in 0..log::MAX_STEPS {
            let tx = log_transaction(client).await?;
            let placed = log::sequence_step(&tx).await?;
            tx.commit().await?;
            if i64::try_from(placed).unwrap_or(i64::MAX) < log::STEP_TXS {
                break;
            }
        }
        Ok(())
    }

    /// Runs `f` on a pooled connection, outside a transaction: reads, and writes of a
    /// single statement that publish no events.
    async fn read<R>(
        &self,
        f: impl AsyncFnOnce(&deadpool_postgres::Client) -> Result<R, ops::Error>,
    ) -> StoreResult<R> {
        let client = self.client().await.map_err(ops::Error::into_store)?;
        f(&client).await.map_err(ops::Error::into_store)
    }
}

/// A `READ COMMITTED` transaction holding the event log's sequencing lock: sequencing and
/// pruning take turns.
async fn log_transaction(
    client: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>, ops::Error> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await?;
    log::lock(&tx).await?;
    Ok(tx)
}

/// Opens `count` of `pool`'s connections ([`PostgresOptions::min_connections`]): takes them
/// one after another, holding each, so each is a new one, then gives them all back. A failure
/// ends it: the pool opens connections on demand anyway.
async fn open_ahead(pool: Pool, count: usize) {
    let mut held = Vec::with_capacity(count);
    while held.len() < count && pool.status().size < count {
        match pool.get().await {
            Ok(client) => held.push(client),
            Err(e) => {
                tracing::debug!(error = %e, "opening pooled connections ahead failed");
                break;
            }
        }
    }
}

/// Makes a transaction's statements use generic plans: a prepared statement is then planned
/// once per connection, not at each execution. PostgreSQL re-plans the insert and the lease's
/// candidates at every call, as their custom plans look cheaper on paper: planning took a
/// third of the server's CPU at 200 single enqueues a second; a one-job enqueue went from 1.7
/// to 1.2 ms, and the lease's candidates took 0.5 ms to plan (docs/performance.md). The lease
/// sets it after its promotion of scheduled jobs, whose `run_at <= $1` only a custom plan
/// judges well, and with a literal limit (`ops::lease_candidates`). Pipelined with the first
/// statement it applies to; `LOCAL` ends with the transaction, so a pooled connection's next
/// user is not affected.
pub(crate) const GENERIC_PLANS: &str = "SET LOCAL plan_cache_mode = force_generic_plan";

/// Runs `$body` (an expression using the transaction `$tx` and the event list `$ev`) in a
/// `READ COMMITTED` transaction, publishes the events and commits; tries again on a deadlock
/// or serialization failure. Evaluates to a `StoreResult`.
macro_rules! write_tx {
    ($store:expr, |$tx:ident, $ev:ident| $body:expr) => {
        write_tx!($store, false, |$tx, $ev| $body)
    };
    ($store:expr, generic_plans, |$tx:ident, $ev:ident| $body:expr) => {
        write_tx!($store, true, |$tx, $ev| $body)
    };
    ($store:expr, $generic_plans:expr, |$tx:ident, $ev:ident| $body:expr) => {{
        let mut tries = 0;
        loop {
            tries += 1;
            let attempt: Result<_, ops::Error> = async {
                let began = std::time::Instant::now();
                let $tx = tx::Tx::new($store.client().await?);
                let mut events: Vec<StoreEvent> = Vec::new();
                // `BEGIN` (and `SET LOCAL`) go out with the body's first statements.
                let value = $tx
                    .run($generic_plans, async {
                        let $ev = &mut events;
                        $body.await
                    })
                    .await?;
                // New log entries are announced after the commit, rate-limited, not by a
                // notification of this transaction.
                let count = events.len();
                events.retain(|e| *e != StoreEvent::Logged);
                let logged = events.len() != count;
                // A transaction that notifies anyway carries the hint for free. One that does
                // not is not made to: a notifying commit queues for PostgreSQL's global
                // notification lock, so the announcer sends it, paced, after the commit.
                let in_commit = logged && !events.is_empty();
                if in_commit {
                    events.push(StoreEvent::Logged);
                }
                // The notification goes out with `COMMIT`.
                let payloads = events::encode(&events, Some(&$store.inner.origin));
                let notify: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
                    [&$store.inner.channel, &payloads];
                $tx.commit((!payloads.is_empty()).then_some((ops::NOTIFY, &notify[..])))
                    .await?;
                // This process's subscribers (its workers, waiting requests) hear at once,
                // not after a round trip through the database's notification queue.
                for event in events.iter().filter(|e| **e != StoreEvent::Logged) {
                    let _ = $store.inner.events.send(event.clone());
                }
                if let Some(observe) = $store.inner.commits.get() {
                    observe(began.elapsed(), 1);
                }
                if logged {
                    $store.logged(in_commit);
                }
                Ok(value)
            }
            .await;
            match attempt {
                Err(e) if e.is_retryable() && tries < WRITE_TRIES => continue,
                other => break other.map_err(ops::Error::into_store),
            }
        }
    }};
}

impl PostgresStore {
    /// [`Store::job_insert_many`] of `jobs` with the lease of `parked`, a request of an idle
    /// worker of this process, in the same transaction (`hinter_core::handoff`). `now` is on
    /// the database's clock, `called` the caller's.
    async fn insert_handing_over(
        self,
        jobs: Vec<NewJob>,
        now: DateTime<Utc>,
        called: DateTime<Utc>,
        parked: handoff::Parked,
    ) -> StoreResult<Vec<Inserted>> {
        // The lease's statements are sent right after the insert's, in the same round trip
        // when the insert is a single statement; run after it, they see the new jobs.
        let request = parked.request_at(now);
        let written = write_tx!(self, generic_plans, |tx, ev| async {
            let (mut inserting, mut leasing) = (Vec::new(), Vec::new());
            let (inserted, leased) = tokio::join!(
                ops::job_insert_many(&tx, &jobs, now, &mut inserting),
                ops::job_lease(&tx, &request, &mut leasing)
            );
            let inserted = inserted?;
            let leased = leased?;
            handoff::unannounce_taken(&mut inserting, &inserted, &leased);
            ev.append(&mut inserting);
            ev.append(&mut leasing);
            Ok::<_, ops::Error>((inserted, leased))
        });
        let (inserted, unwanted) = handoff::settle(parked, written);
        if !unwanted.is_empty() {
            // A failure only delays them: their lease expires and they are rescued.
            if let Err(e) = self.job_release_many(unwanted, called).await {
                tracing::warn!(error = %e, "releasing jobs leased for a worker that is gone failed");
            }
        }
        inserted
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn job_insert_many(
        &self,
        jobs: Vec<NewJob>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Inserted>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let called = now;
        let now = self.inner.clock.at(now);
        let Some(parked) = self.inner.lot.take(handoff::ready_queues(&jobs, now)) else {
            return write_tx!(self, generic_plans, |tx, ev| ops::job_insert_many(
                &tx, &jobs, now, ev
            ));
        };
        // Spawned: once its transaction commits, the jobs it leased must reach the worker
        // (or be released) even if this call is abandoned meanwhile.
        tokio::spawn(self.clone().insert_handing_over(jobs, now, called, parked))
            .await
            .map_err(|e| StoreError::Unavailable(format!("the enqueue's task failed: {e}")))?
    }

    fn park_lease(&self, request: LeaseRequest) -> Option<handoff::Handoff> {
        Some(self.inner.lot.park(request.bounded()?))
    }

    async fn job_get(&self, id: Uuid) -> StoreResult<Option<Job>> {
        self.read(async |c| ops::job_get(c, id).await).await
    }

    async fn job_list(&self, filter: JobFilter) -> StoreResult<Vec<Job>> {
        if filter.limit == 0 {
            return Ok(Vec::new());
        }
        self.read(async |c| ops::job_list(c, &filter).await).await
    }

    async fn job_page(&self, filter: JobFilter, after: Option<ListCursor>) -> StoreResult<JobPage> {
        if filter.limit == 0 {
            return Ok(JobPage::default());
        }
        let attempt: Result<JobPage, ops::Error> = async {
            let mut client = self.client().await?;
            // One snapshot for the page, the one its cursor names.
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let page = ops::job_page(&tx, &filter, after).await?;
            tx.commit().await?;
            Ok(page)
        }
        .await;
        attempt.map_err(ops::Error::into_store)
    }

    fn observe_commits(&self, observer: hinter_core::store::CommitObserver) {
        let _ = self.inner.commits.set(observer);
    }

    async fn job_followups(&self, id: Uuid) -> StoreResult<Vec<Job>> {
        self.read(async |c| ops::job_followups(c, id).await).await
    }

    async fn job_runs(&self, ids: Vec<Uuid>) -> StoreResult<HashMap<Uuid, Vec<Run>>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        self.read(async |c| ops::job_runs(c, &ids).await).await
    }

    async fn job_lease(&self, request: LeaseRequest) -> StoreResult<Vec<LeasedJob>> {
        let Some(mut request) = request.bounded() else {
            return Ok(Vec::new());
        };
        request.now = self.inner.clock.at(request.now);
        write_tx!(self, |tx, ev| ops::job_lease(&tx, &request, ev))
    }

    async fn job_heartbeat_many(
        &self,
        heartbeats: Vec<Heartbeat>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<HeartbeatAck>>> {
        if heartbeats.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.inner.clock.at(now);
        self.read(async |c| ops::job_heartbeat_many(c, &heartbeats, now).await)
            .await
    }

    async fn job_complete_many(
        &self,
        completions: Vec<Completion>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<Job>>> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.inner.clock.at(now);
        write_tx!(self, |tx, ev| ops::job_complete_many(
            &tx,
            &completions,
            now,
            ev
        ))
    }

    async fn job_fail_many(
        &self,
        failures: Vec<Failure>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<Job>>> {
        if failures.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.inner.clock.at(now);
        let failures = self.inner.clock.failures(failures);
        write_tx!(self, |tx, ev| ops::job_fail_many(&tx, &failures, now, ev))
    }

    async fn job_release_many(
        &self,
        releases: Vec<Release>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<()>>> {
        if releases.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.inner.clock.at(now);
        write_tx!(self, |tx, ev| ops::job_release_many(
            &tx, &releases, now, ev
        ))
    }

    async fn write_unit(
        &self,
        ops: Vec<WriteOp>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<WriteResult>> {
        let now = self.inner.clock.at(now);
        let ops = self.inner.clock.writes(ops);
        write_tx!(self, |tx, ev| unit::write_unit(&tx, &ops, now, ev))
    }

    async fn job_cancel(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Job> {
        let now = self.inner.clock.at(now);
        write_tx!(self, |tx, ev| ops::job_cancel(&tx, id, now, ev))
    }

    async fn job_retry(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Job> {
        let now = self.inner.clock.at(now);
        write_tx!(self, |tx, ev| ops::job_retry(&tx, id, now, ev))
    }

    async fn job_expired_list(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Expired>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = self.inner.clock.at(now);
        self.read(async |c| ops::job_expired_list(c, now, limit).await)
            .await
    }

    async fn job_promote_scheduled(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let now = self.inner.clock.at(now);
        write_tx!(self, |tx, ev| ops::job_promote_scheduled(&tx, now, ev))
    }

    async fn job_next_scheduled_at(&self) -> StoreResult<Option<DateTime<Utc>>> {
        self.read(async |c| ops::job_next_scheduled_at(c).await)
            .await
    }

    async fn job_prune(&self, request: PruneRequest) -> StoreResult<u64> {
        if request.limit == 0 {
            return Ok(0);
        }
        let request = self.inner.clock.prune(request);
        self.read(async |c| ops::job_prune(c, &request).await).await
    }

    async fn queue_list(&self) -> StoreResult<Vec<QueueInfo>> {
        self.read(async |c| ops::queue_list(c).await).await
    }

    async fn queue_counts_fold(&self) -> StoreResult<()> {
        self.read(async |c| ops::queue_counts_fold(c).await.map(|_| ()))
            .await
    }

    async fn queue_set_paused(&self, queue: &str, paused: bool) -> StoreResult<()> {
        write_tx!(self, |tx, ev| ops::queue_set_paused(&tx, queue, paused, ev))
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(async |c| ops::ping(c).await).await
    }

    /// A negative `after` reads from the start, like 0. `limit` 0 reads nothing and stays at
    /// `after`. A filter string with a NUL (which no stored name can hold) matches nothing.
    async fn events_read(
        &self,
        after: i64,
        filter: &EventFilter,
        limit: u32,
    ) -> StoreResult<EventPage> {
        let after = after.max(0);
        if limit == 0 {
            return Ok(EventPage {
                events: Vec::new(),
                next_after: after,
            });
        }
        let impossible = [filter.queue.as_deref(), filter.job.as_deref()]
            .into_iter()
            .flatten()
            .any(|s| s.contains('\0'));
        async {
            let mut client = self.client().await?;
            self.sequence(&mut client).await?;
            if impossible {
                return Ok(EventPage {
                    events: Vec::new(),
                    next_after: log::last_id(&client).await?.max(after),
                });
            }
            log::read(&client, after, filter, limit).await
        }
        .await
        .map_err(ops::Error::into_store)
    }

    async fn events_last_id(&self) -> StoreResult<i64> {
        async {
            let mut client = self.client().await?;
            self.sequence(&mut client).await?;
            log::last_id(&client).await
        }
        .await
        .map_err(ops::Error::into_store)
    }

    async fn events_prune(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<u64> {
        if limit == 0 {
            return Ok(0);
        }
        let before = self.inner.clock.at(before);
        async {
            let mut client = self.client().await?;
            self.sequence(&mut client).await?;
            let tx = log_transaction(&mut client).await?;
            let pruned = log::prune(&tx, before, limit).await?;
            tx.commit().await?;
            Ok(pruned)
        }
        .await
        .map_err(ops::Error::into_store)
    }

    async fn idempotency_prune(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<u64> {
        if limit == 0 {
            return Ok(0);
        }
        let now = self.inner.clock.at(now);
        self.read(async |c| idempotency::prune(c, now, limit).await)
            .await
    }

    async fn job_report(&self, report: JobReport, now: DateTime<Utc>) -> StoreResult<()> {
        let mut report = report.storable();
        report.check().map_err(StoreError::Invalid)?;
        // Times on the database's clock, as every other time this store writes.
        for line in &mut report.logs {
            line.at = self.inner.clock.at(line.at);
        }
        if let Some(progress) = &mut report.progress {
            progress.at = self.inner.clock.at(progress.at);
        }
        let now = self.inner.clock.at(now);
        self.read(async |c| output::job_report(c, &report, now).await)
            .await?;
        if report.progress.is_some() {
            // A single statement, committed: wake the log's readers as a write does.
            self.logged(false);
        }
        Ok(())
    }

    async fn job_logs(&self, id: Uuid, query: LogQuery) -> StoreResult<Option<Vec<LogLine>>> {
        self.read(async |c| output::job_logs(c, id, query).await)
            .await
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.inner.events.subscribe()
    }

    fn store_time(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        self.inner.clock.at(t)
    }

    async fn schedule_get(
        &self,
        name: &str,
    ) -> StoreResult<Option<hinter_core::schedule::Schedule>> {
        self.read(async |c| schedules::schedule_get(c, name).await)
            .await
    }

    async fn schedule_list(&self) -> StoreResult<Vec<hinter_core::schedule::Schedule>> {
        self.read(async |c| schedules::schedule_list(c).await).await
    }

    async fn schedule_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<hinter_core::schedule::Schedule>> {
        self.read(async |c| schedules::schedule_due(c, now, limit).await)
            .await
    }

    async fn schedule_next_fire_at(&self) -> StoreResult<Option<DateTime<Utc>>> {
        self.read(async |c| schedules::schedule_next_fire_at(c).await)
            .await
    }

    async fn occurrence_list(
        &self,
        schedule: &str,
        before: Option<DateTime<Utc>>,
        limit: u32,
    ) -> StoreResult<Vec<hinter_core::schedule::Occurrence>> {
        self.read(async |c| schedules::occurrence_list(c, schedule, before, limit).await)
            .await
    }

    async fn token_list(&self) -> StoreResult<Vec<hinter_core::access::TokenInfo>> {
        self.read(async |c| access::token_list(c).await).await
    }

    async fn audit_list(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<hinter_core::access::AuditEntry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.read(async |c| access::audit_list(c, before, limit).await)
            .await
    }
}

#[async_trait]
impl Cluster for PostgresStore {
    async fn process_heartbeat(&self, process: ProcessInfo) -> StoreResult<()> {
        let process = self.inner.clock.process(process);
        self.read(async |c| cluster::process_heartbeat(c, &process).await)
            .await
    }

    async fn process_list(&self, alive_since: DateTime<Utc>) -> StoreResult<Vec<ProcessInfo>> {
        let alive_since = self.inner.clock.at(alive_since);
        self.read(async |c| cluster::process_list(c, alive_since).await)
            .await
    }

    async fn process_prune(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let before = self.inner.clock.at(before);
        self.read(async |c| cluster::process_prune(c, before).await)
            .await
    }

    async fn process_remove(&self, id: &str) -> StoreResult<()> {
        self.read(async |c| cluster::process_remove(c, id).await)
            .await
    }

    async fn leader_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Leadership>> {
        let now = self.inner.clock.at(now);
        self.read(async |c| cluster::leader_acquire(c, name, holder, ttl, now).await)
            .await
    }

    async fn leader_release(&self, name: &str, holder: &str) -> StoreResult<()> {
        self.read(async |c| cluster::leader_release(c, name, holder).await)
            .await
    }

    async fn leader_get(&self, name: &str) -> StoreResult<Option<Leadership>> {
        self.read(async |c| cluster::leader_get(c, name).await)
            .await
    }
}
