//! The embedded SQLite backend of the hinter store.
//!
//! One writer thread owns the write connection and commits everything that arrives together
//! in one transaction (group commit, see [`writer`]); reads run on a small pool of reader
//! connections, which WAL mode lets proceed while the writer commits. With
//! [`Durability::Full`] (the default) every commit is fsynced before anyone is answered.

mod access;
mod cluster;
mod counts;
mod idempotency;
mod log;
mod migrate;
mod ops;
mod output;
mod schedules;
mod writer;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hinter_core::handoff;
use hinter_core::schedule::{Occurrence, Schedule};
use hinter_core::store::{
    Completion, Expired, Failure, Heartbeat, HeartbeatAck, JobFilter, LeaseRequest, PruneRequest,
    QueueInfo, Release, StoreResult, WriteOp, WriteResult,
};
use hinter_core::{
    Cluster, Inserted, Job, JobReport, Leadership, LeasedJob, LogLine, LogQuery, NewJob,
    ProcessInfo, Run, Store, StoreError, StoreEvent,
};
use rusqlite::{Connection, OpenFlags};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use tokio::sync::{broadcast, oneshot};
use uuid::Uuid;

pub use migrate::LATEST_VERSION as SCHEMA_VERSION;

/// When an acknowledged write is safe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// fsync on every commit (synchronous=FULL): an acknowledged job survives power loss.
    #[default]
    Full,
    /// No fsync per commit (synchronous=NORMAL): survives a process crash, but the last
    /// commits may be lost on power loss or an OS crash.
    Relaxed,
}

/// Settings of the SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub durability: Durability,
    /// How long a write waits for another process holding the database lock.
    pub busy_timeout: std::time::Duration,
    /// Bound of the write-ahead log (`-wal` file), in bytes: past it the writer checkpoints
    /// and restarts the log, which is then truncated to this size. Default
    /// [`DEFAULT_WAL_LIMIT`].
    pub wal_limit: u64,
    /// Largest size of the database file, in bytes (SQLite's `max_page_count`): writes that
    /// would grow it further fail as "disk full". `None`: no limit but the disk.
    pub max_size: Option<u64>,
}

/// Default bound of the write-ahead log: 64 MiB.
pub const DEFAULT_WAL_LIMIT: u64 = 64 * 1024 * 1024;

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            busy_timeout: std::time::Duration::from_secs(5),
            wal_limit: DEFAULT_WAL_LIMIT,
            max_size: None,
        }
    }
}

/// The SQLite store. Cheap to clone; all clones share the writer and the readers.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    options: SqliteOptions,
    writer: mpsc::Sender<writer::Msg>,
    health: Arc<writer::Health>,
    readers: Mutex<Vec<Connection>>,
    events: broadcast::Sender<StoreEvent>,
    /// Lease requests of this process's idle workers, served by inserts (`handoff`).
    lot: hinter_core::handoff::ParkingLot,
    /// Dropping it stops the checkpointer thread.
    checkpointer: mpsc::Sender<()>,
    /// The writer and checkpointer threads, joined when the store is dropped.
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Inner {
    /// Stops the threads and waits for them, so the database files are closed (and the WAL
    /// checkpointed) once the last clone of the store is gone.
    fn drop(&mut self) {
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        drop(std::mem::replace(&mut self.checkpointer, mpsc::channel().0));
        drop(std::mem::replace(&mut self.writer, mpsc::channel().0));
        let me = std::thread::current().id();
        for thread in self.threads.drain(..) {
            if thread.thread().id() != me {
                let _ = thread.join();
            }
        }
    }
}

/// How often the checkpointer copies the WAL back into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Checkpoints the WAL from its own connection so the writer never does: a checkpoint
/// fsyncs the database file, and doing that inside a group commit would stall every
/// request in the group (the p99 of enqueue-to-start latency). PASSIVE never blocks the
/// writer; SQLite restarts the WAL from its start once a checkpoint has caught up. While the
/// writer bounds the WAL itself (under sustained writes), this one stands aside.
fn spawn_checkpointer(
    conn: Connection,
    health: Arc<writer::Health>,
) -> std::io::Result<(mpsc::Sender<()>, std::thread::JoinHandle<()>)> {
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("hinter-sqlite-checkpointer".into())
        .spawn(move || {
            // Warn once per run of failures (a full disk fails every attempt).
            let mut failing = false;
            loop {
                match stopped.recv_timeout(CHECKPOINT_EVERY) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                if health.bounding() {
                    continue;
                }
                match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "WAL checkpoint failed; will keep trying");
                    }
                    Err(e) => tracing::debug!(error = %e, "WAL checkpoint failed again"),
                }
            }
        })?;
    Ok((stop, thread))
}

/// Opens a connection; only with `create` is a missing database file created (readers
/// must not create an empty database where the real one was deleted).
/// The writer connection's page cache, in KiB (readers keep 32 MB each).
const WRITER_CACHE_KIB: u32 = 8_000;

fn open_connection(path: &Path, options: &SqliteOptions, create: bool) -> StoreResult<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    let setup = |conn: &Connection| -> rusqlite::Result<()> {
        conn.busy_timeout(options.busy_timeout)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(rusqlite::Error::InvalidParameterName(format!(
                "journal_mode is {mode}, WAL is required"
            )));
        }
        let sync = match options.durability {
            Durability::Full => "FULL",
            Durability::Relaxed => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {sync}; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -32000;"
        ))?;
        // Room for every statement a connection runs, the multi-row ones in each of their
        // sizes (`ops::Chunked`: ten statements in eight sizes on the writer): a statement
        // evicted is parsed again, which cost the writer 7 % of a drain at 64.
        conn.set_prepared_statement_cache_capacity(256);
        Ok(())
    };
    setup(&conn)
        .map_err(|e| StoreError::Unavailable(format!("cannot set up {}: {e}", path.display())))?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it to the current
    /// schema. Fails with a message naming the path if it cannot be opened or written.
    pub async fn open(path: &Path, options: SqliteOptions) -> StoreResult<Self> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(path, options))
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening the store: {e}")))?
    }

    fn open_blocking(path: PathBuf, options: SqliteOptions) -> StoreResult<Self> {
        let mut conn = open_connection(&path, &options, true)?;
        migrate::migrate(&mut conn).map_err(|e| match e {
            StoreError::Unavailable(m) => {
                StoreError::Unavailable(format!("{}: {m}", path.display()))
            }
            other => other,
        })?;
        let at_path =
            |e: rusqlite::Error| StoreError::Unavailable(format!("{}: {e}", path.display()));
        // The writer never checkpoints inside a commit; it bounds the WAL between groups
        // (see `writer`), and a restarted WAL is truncated to the bound.
        //
        // Its page cache is smaller than the readers': every commit after a B-tree page split
        // walks the whole cache's hash table (SQLite renumbers pages through a spare number
        // past the end of the file, and the commit then drops cached pages past the end by
        // scanning every bucket), which took 3-10 % of the writer thread with 32 MB
        // (docs/performance.md). What it writes lives at the ends of its indexes, and the
        // operating system caches the rest.
        conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {}; \
             PRAGMA cache_size = -{WRITER_CACHE_KIB};",
            i64::try_from(options.wal_limit).unwrap_or(i64::MAX)
        ))
        .map_err(at_path)?;
        if let Some(max_size) = options.max_size {
            let page_size: i64 = conn
                .query_row("PRAGMA page_size", [], |r| r.get(0))
                .map_err(at_path)?;
            let pages = (max_size / u64::try_from(page_size).unwrap_or(4096).max(1)).max(1);
            conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
                .map_err(at_path)?;
        }
        // Start with an empty WAL: a previous process may have left a large one behind.
        match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        }) {
            Ok(0) => {}
            Ok(_) => tracing::debug!("WAL not truncated at open: other connections are reading"),
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint at open failed"),
        }
        let health = Arc::new(writer::Health::new(options.wal_limit));
        let (checkpointer, checkpoint_thread) = spawn_checkpointer(
            open_connection(&path, &options, false)?,
            health.clone(),
        )
        .map_err(|e| {
            StoreError::Unavailable(format!("cannot start the sqlite checkpointer thread: {e}"))
        })?;
        let (events, _) = broadcast::channel(4096);
        let (writer, writer_thread) = writer::spawn(writer::Writer {
            conn,
            events: events.clone(),
            health: health.clone(),
            files: writer::Files::note(&path),
            busy_timeout: options.busy_timeout,
        })
        .map_err(|e| {
            StoreError::Unavailable(format!("cannot start the sqlite writer thread: {e}"))
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                options,
                writer,
                health,
                readers: Mutex::new(Vec::new()),
                events,
                lot: Default::default(),
                checkpointer,
                threads: vec![checkpoint_thread, writer_thread],
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// [`Store::job_insert_many`] of `jobs` with the lease of `parked`, a request of an idle
    /// worker of this process, in the insert's savepoint, so in its commit
    /// (`hinter_core::handoff`). The jobs go to the worker from the writer thread once the
    /// commit is known, one task wake-up sooner than through the caller's task, and whether
    /// or not the caller still waits; jobs leased for a worker that is gone are released by
    /// a write queued behind it.
    async fn insert_handing_over(
        &self,
        jobs: Vec<NewJob>,
        now: DateTime<Utc>,
        parked: handoff::Parked,
    ) -> StoreResult<Vec<Inserted>> {
        let request = parked.request_at(now);
        let writer = self.inner.writer.clone();
        let (tx, rx) = oneshot::channel();
        let insert = atomic(move |c, ev| {
            let mut inserting = Vec::new();
            let inserted = ops::job_insert_many(c, jobs, now, &mut inserting)?;
            let leased = ops::job_lease(c, &request, ev)?;
            handoff::unannounce_taken(&mut inserting, &inserted, &leased);
            ev.append(&mut inserting);
            Ok((inserted, leased))
        });
        let op = write_op(insert, move |written| {
            let (inserted, unwanted) = handoff::settle(parked, written);
            if !unwanted.is_empty() {
                let release = move |c: &Connection, ev: &mut Vec<StoreEvent>| {
                    let released = each(c, &unwanted, |c, item| ops::job_release(c, item, now, ev));
                    (released, true)
                };
                // A failure only delays them: their lease expires and they are rescued.
                let warn = |released: StoreResult<_>| {
                    if let Err(e) = released {
                        tracing::warn!(error = %e, "releasing jobs leased for a worker that is gone failed");
                    }
                };
                if writer
                    .send(writer::Msg::Op(write_op(release, warn)))
                    .is_err()
                {
                    tracing::warn!("releasing jobs leased for a worker that is gone failed: the sqlite writer has stopped");
                }
            }
            let _ = tx.send(inserted);
        });
        self.answer(op, rx).await
    }

    /// Runs `f` on the writer thread inside the next group transaction, in its own
    /// savepoint, so an error part-way undoes only `f`'s changes. Answers once the group is
    /// committed.
    async fn write_atomic<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &mut Vec<StoreEvent>) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        self.submit(atomic(f)).await
    }

    /// Like [`Self::write_atomic`] without the savepoint, for operations whose errors come
    /// before any change (not found, stale lease, conflict). A database error part-way
    /// rolls back the whole group instead, so nothing half-done is ever committed.
    async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &mut Vec<StoreEvent>) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        self.submit(move |conn, events| (f(conn, events), true))
            .await
    }

    /// Hands `f` to the writer. `f` returns its result and whether an error of the database
    /// (not an answer like "not found") dooms the whole group.
    async fn submit<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &mut Vec<StoreEvent>) -> (StoreResult<R>, bool) + Send + 'static,
    ) -> StoreResult<R> {
        let (tx, rx) = oneshot::channel();
        let op = write_op(f, move |result| {
            let _ = tx.send(result);
        });
        self.answer(op, rx).await
    }

    /// Sends `op` to the writer and waits for the answer it sends on `rx`.
    async fn answer<R>(
        &self,
        op: writer::WriteOp,
        rx: oneshot::Receiver<StoreResult<R>>,
    ) -> StoreResult<R> {
        self.inner
            .writer
            .send(writer::Msg::Op(op))
            .map_err(|_| StoreError::Unavailable("the sqlite writer has stopped".into()))?;
        rx.await.map_err(|_| {
            StoreError::Unavailable("the sqlite writer stopped before answering".into())
        })?
    }

    /// Runs `f` on a pooled reader connection on the blocking thread pool.
    async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner
                .readers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => open_connection(&inner.path, &inner.options, false)?,
            };
            let result = f(&conn);
            let mut pool = inner.readers.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < 8 {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("reader task failed: {e}")))?
    }
}

/// `f` in its own savepoint ([`SqliteStore::write_atomic`]): an error undoes only its
/// changes, and never dooms the group.
fn atomic<R>(
    f: impl FnOnce(&Connection, &mut Vec<StoreEvent>) -> StoreResult<R> + Send + 'static,
) -> impl FnOnce(&Connection, &mut Vec<StoreEvent>) -> (StoreResult<R>, bool) + Send + 'static {
    move |conn, events| {
        let mark = counts::mark();
        let result = writer::in_savepoint(conn, |c| f(c, events));
        if result.is_err() {
            // Rolled back: so are its changes to the job counts.
            counts::undo_to(mark);
        }
        (result, false)
    }
}

/// An operation for the writer: runs `f` (its result, and whether a database error of it
/// dooms the group), then hands `then` the outcome on the writer thread once the commit is
/// known: `f`'s result, or the error that refused it or failed the commit.
fn write_op<R: Send + 'static>(
    f: impl FnOnce(&Connection, &mut Vec<StoreEvent>) -> (StoreResult<R>, bool) + Send + 'static,
    then: impl FnOnce(StoreResult<R>) + Send + 'static,
) -> writer::WriteOp {
    Box::new(move |slot, events| {
        let conn = match slot {
            writer::Slot::Run(conn) => conn,
            writer::Slot::Refused(e) => {
                then(Err(e.clone()));
                return writer::Ran::answered();
            }
        };
        let mut own_events = Vec::new();
        let (result, dooms) = f(conn, &mut own_events);
        if result.is_ok() {
            events.append(&mut own_events);
        }
        let storage = match &result {
            Err(StoreError::Storage(cause)) => Some(cause.clone()),
            _ => None,
        };
        let fatal = match &result {
            Err(
                e @ (StoreError::Unavailable(_) | StoreError::Corrupt(_) | StoreError::Storage(_)),
            ) if dooms => Some(e.clone()),
            _ => None,
        };
        let reply: writer::Reply = Box::new(move |commit_error: Option<&StoreError>| {
            then(match commit_error {
                Some(e) => Err(e.clone()),
                None => result,
            })
        });
        writer::Ran {
            reply,
            fatal,
            storage,
        }
    })
}

/// Applies `f` to each item, keeping per-item errors (stale leases) apart from failures of
/// the whole operation.
fn each<T, R>(
    conn: &Connection,
    items: &[T],
    mut f: impl FnMut(&Connection, &T) -> StoreResult<R>,
) -> StoreResult<Vec<StoreResult<R>>> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match f(conn, item) {
            Err(e @ (StoreError::Unavailable(_) | StoreError::Storage(_))) => return Err(e),
            other => out.push(other),
        }
    }
    Ok(out)
}

#[async_trait]
impl Store for SqliteStore {
    async fn job_insert_many(
        &self,
        jobs: Vec<NewJob>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Inserted>> {
        let Some(parked) = self.inner.lot.take(handoff::ready_queues(&jobs, now)) else {
            return self
                .write_atomic(move |c, ev| ops::job_insert_many(c, jobs, now, ev))
                .await;
        };
        self.insert_handing_over(jobs, now, parked).await
    }

    fn park_lease(&self, request: LeaseRequest) -> Option<handoff::Handoff> {
        Some(self.inner.lot.park(request.bounded()?))
    }

    async fn job_get(&self, id: Uuid) -> StoreResult<Option<Job>> {
        self.read(move |c| ops::job_get(c, id)).await
    }

    async fn job_list(&self, filter: JobFilter) -> StoreResult<Vec<Job>> {
        self.read(move |c| ops::job_list(c, &filter)).await
    }

    fn observe_commits(&self, observer: hinter_core::store::CommitObserver) {
        let _ = self.inner.health.commits.set(observer);
    }

    async fn job_followups(&self, id: Uuid) -> StoreResult<Vec<Job>> {
        self.read(move |c| ops::job_followups(c, id)).await
    }

    async fn job_runs(&self, ids: Vec<Uuid>) -> StoreResult<HashMap<Uuid, Vec<Run>>> {
        self.read(move |c| ops::job_runs(c, &ids)).await
    }

    async fn job_lease(&self, request: LeaseRequest) -> StoreResult<Vec<LeasedJob>> {
        let Some(request) = request.bounded() else {
            return Ok(Vec::new());
        };
        self.write(move |c, ev| ops::job_lease(c, &request, ev))
            .await
    }

    async fn job_heartbeat_many(
        &self,
        heartbeats: Vec<Heartbeat>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<HeartbeatAck>>> {
        self.write(move |c, _| each(c, &heartbeats, |c, hb| ops::job_heartbeat(c, hb, now)))
            .await
    }

    async fn job_complete_many(
        &self,
        completions: Vec<Completion>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<Job>>> {
        let raws = self
            .write(move |c, ev| ops::job_complete_many(c, &completions, now, ev))
            .await?;
        Ok(raws
            .into_iter()
            .map(|raw| raw.and_then(ops::RawJob::decode))
            .collect())
    }

    async fn job_fail_many(
        &self,
        failures: Vec<Failure>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<Job>>> {
        self.write(move |c, ev| each(c, &failures, |c, item| ops::job_fail(c, item, now, ev)))
            .await
    }

    async fn job_release_many(
        &self,
        releases: Vec<Release>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<()>>> {
        self.write(move |c, ev| each(c, &releases, |c, item| ops::job_release(c, item, now, ev)))
            .await
    }

    async fn write_unit(
        &self,
        ops: Vec<WriteOp>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<WriteResult>> {
        // One savepoint around the whole unit: an error anywhere undoes all of it (and only
        // it: the rest of the writer's group goes on).
        self.write_atomic(move |c, ev| {
            let mut results = Vec::with_capacity(ops.len());
            for op in ops {
                results.push(match op {
                    WriteOp::Insert(jobs) => {
                        WriteResult::Inserted(ops::job_insert_many(c, jobs, now, ev)?)
                    }
                    WriteOp::Complete(items) => WriteResult::Completed(
                        ops::job_complete_many(c, &items, now, ev)?
                            .into_iter()
                            .map(|raw| raw?.decode())
                            .collect::<StoreResult<_>>()?,
                    ),
                    WriteOp::Fail(items) => WriteResult::Failed(
                        items
                            .iter()
                            .map(|item| ops::job_fail(c, item, now, ev))
                            .collect::<StoreResult<_>>()?,
                    ),
                    WriteOp::Release(items) => {
                        for item in &items {
                            ops::job_release(c, item, now, ev)?;
                        }
                        WriteResult::Released(items.len())
                    }
                    WriteOp::Cancel(id) => {
                        WriteResult::Cancelled(Box::new(ops::job_cancel(c, id, now, ev)?))
                    }
                    WriteOp::InsertOnce(request) => {
                        WriteResult::InsertedOnce(idempotency::insert_once(c, request, now, ev)?)
                    }
                    WriteOp::Retry(id) => {
                        WriteResult::Retried(Box::new(ops::job_retry(c, id, now, ev)?))
                    }
                    WriteOp::QueuePause { queue, paused } => {
                        ops::queue_set_paused(c, &queue, paused, ev)?;
                        WriteResult::QueuePaused
                    }
                    WriteOp::TokenCreate(token) => {
                        WriteResult::TokenCreated(access::token_create(c, &token, now)?)
                    }
                    WriteOp::TokenRevoke(name) => {
                        WriteResult::TokenRevoked(access::token_revoke(c, &name)?)
                    }
                    WriteOp::Audit(entry) => {
                        WriteResult::Audited(access::audit_append(c, &entry, now)?)
                    }
                    WriteOp::ScheduleSave(new) => WriteResult::ScheduleSaved(Box::new(
                        schedules::schedule_save(c, &new, now, ev)?,
                    )),
                    WriteOp::ScheduleDelete(name) => WriteResult::ScheduleDeleted(Box::new(
                        schedules::schedule_delete(c, &name, ev)?,
                    )),
                    WriteOp::SchedulePause {
                        name,
                        paused,
                        next_fire_at,
                    } => WriteResult::ScheduleSaved(Box::new(schedules::schedule_pause(
                        c,
                        &name,
                        paused,
                        next_fire_at,
                        now,
                        ev,
                    )?)),
                    WriteOp::ScheduleFire(firing) => {
                        WriteResult::ScheduleFired(schedules::schedule_fire(c, firing, now, ev)?)
                    }
                    WriteOp::JobDelete(id) => {
                        WriteResult::JobDeleted(Box::new(ops::job_delete(c, id)?))
                    }
                    WriteOp::QueuePurge(purge) => {
                        WriteResult::QueuePurged(ops::queue_purge(c, &purge)?)
                    }
                });
            }
            Ok(results)
        })
        .await
    }

    async fn job_cancel(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Job> {
        self.write(move |c, ev| ops::job_cancel(c, id, now, ev))
            .await
    }

    async fn job_retry(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Job> {
        self.write(move |c, ev| ops::job_retry(c, id, now, ev))
            .await
    }

    async fn job_expired_list(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Expired>> {
        self.read(move |c| ops::job_expired_list(c, now, limit))
            .await
    }

    async fn job_promote_scheduled(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        self.write(move |c, ev| ops::job_promote_scheduled(c, now, ev))
            .await
    }

    async fn job_next_scheduled_at(&self) -> StoreResult<Option<DateTime<Utc>>> {
        self.read(ops::job_next_scheduled_at).await
    }

    async fn job_prune(&self, request: PruneRequest) -> StoreResult<u64> {
        self.write(move |c, _| ops::job_prune(c, &request)).await
    }

    async fn queue_list(&self) -> StoreResult<Vec<QueueInfo>> {
        self.read(ops::queue_list).await
    }

    async fn queue_set_paused(&self, queue: &str, paused: bool) -> StoreResult<()> {
        let queue = queue.to_string();
        self.write(move |c, ev| ops::queue_set_paused(c, &queue, paused, ev))
            .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.inner.health.check()?;
        // The write first: the writer checks that the database file is still the one
        // opened, which names the cause better than a reader that cannot open it.
        self.write(|_, _| Ok(())).await?;
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(ops::db_err))
            .await
    }

    fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        let health = &self.inner.health;
        let (wal, limit) = (health.wal_bytes(), health.wal_limit);
        let mut details = serde_json::Map::new();
        details.insert("wal_bytes".into(), wal.into());
        details.insert("wal_limit_bytes".into(), limit.into());
        if wal > limit.saturating_mul(writer::WAL_FAR_OVER) {
            details.insert(
                "warning".into(),
                format!(
                    "the write-ahead log is {wal} bytes, far over its bound of {limit}:                      readers keep checkpoints from finishing"
                )
                .into(),
            );
        }
        details
    }

    async fn close(&self) -> StoreResult<()> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .writer
            .send(writer::Msg::Close(tx))
            .map_err(|_| StoreError::Unavailable("the sqlite writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the sqlite writer has stopped".into()))?
    }

    async fn events_read(
        &self,
        after: i64,
        filter: &hinter_core::EventFilter,
        limit: u32,
    ) -> StoreResult<hinter_core::EventPage> {
        let filter = filter.clone();
        self.read(move |c| log::read(c, after, &filter, limit))
            .await
    }

    async fn events_last_id(&self) -> StoreResult<i64> {
        self.read(log::last_id).await
    }

    async fn events_prune(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<u64> {
        self.write(move |c, _| log::prune(c, before, limit)).await
    }

    async fn idempotency_prune(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<u64> {
        self.write(move |c, _| idempotency::prune(c, now, limit))
            .await
    }

    async fn job_report(&self, report: JobReport, now: DateTime<Utc>) -> StoreResult<()> {
        let report = report.storable();
        report.check().map_err(StoreError::Invalid)?;
        self.write(move |c, hints| output::job_report(c, &report, now, hints))
            .await
    }

    async fn job_logs(&self, id: Uuid, query: LogQuery) -> StoreResult<Option<Vec<LogLine>>> {
        self.read(move |c| output::job_logs(c, id, query)).await
    }

    async fn schedule_get(&self, name: &str) -> StoreResult<Option<Schedule>> {
        let name = name.to_string();
        self.read(move |c| schedules::schedule_get(c, &name)).await
    }

    async fn schedule_list(&self) -> StoreResult<Vec<Schedule>> {
        self.read(schedules::schedule_list).await
    }

    async fn schedule_due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Schedule>> {
        self.read(move |c| schedules::schedule_due(c, now, limit))
            .await
    }

    async fn schedule_next_fire_at(&self) -> StoreResult<Option<DateTime<Utc>>> {
        self.read(schedules::schedule_next_fire_at).await
    }

    async fn occurrence_list(
        &self,
        schedule: &str,
        before: Option<DateTime<Utc>>,
        limit: u32,
    ) -> StoreResult<Vec<Occurrence>> {
        let schedule = schedule.to_string();
        self.read(move |c| schedules::occurrence_list(c, &schedule, before, limit))
            .await
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.inner.events.subscribe()
    }

    async fn token_list(&self) -> StoreResult<Vec<hinter_core::access::TokenInfo>> {
        self.read(access::token_list).await
    }

    async fn audit_list(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<hinter_core::access::AuditEntry>> {
        self.read(move |c| access::audit_list(c, before, limit))
            .await
    }
}

#[async_trait]
impl Cluster for SqliteStore {
    async fn process_heartbeat(&self, process: ProcessInfo) -> StoreResult<()> {
        self.write(move |c, _| cluster::process_heartbeat(c, &process))
            .await
    }

    async fn process_list(&self, alive_since: DateTime<Utc>) -> StoreResult<Vec<ProcessInfo>> {
        self.read(move |c| cluster::process_list(c, alive_since))
            .await
    }

    async fn process_prune(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        self.write(move |c, _| cluster::process_prune(c, before))
            .await
    }

    async fn process_remove(&self, id: &str) -> StoreResult<()> {
        let id = id.to_string();
        self.write(move |c, _| cluster::process_remove(c, &id))
            .await
    }

    async fn leader_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Leadership>> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.write(move |c, _| cluster::leader_acquire(c, &name, &holder, ttl, now))
            .await
    }

    async fn leader_release(&self, name: &str, holder: &str) -> StoreResult<()> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.write(move |c, _| cluster::leader_release(c, &name, &holder))
            .await
    }

    async fn leader_get(&self, name: &str) -> StoreResult<Option<Leadership>> {
        let name = name.to_string();
        self.read(move |c| cluster::leader_get(c, &name)).await
    }
}
