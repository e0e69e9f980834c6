//! The embedded SQLite backend of the hinter store.
//!
//! One writer thread owns the write connection and commits everything that arrives together
//! in one transaction (group commit, see [`writer`]); reads run on a small pool of reader
//! connections, which WAL mode lets proceed while the writer commits. With
//! [`Durability::Full`] (the default) every commit is fsynced before anyone is answered.

mod cluster;
mod migrate;
mod ops;
mod writer;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hinter_core::store::{
    Completion, Expired, Failure, Heartbeat, HeartbeatAck, JobFilter, LeaseRequest, PruneRequest,
    QueueInfo, Release, StoreResult,
};
use hinter_core::{
    Cluster, Inserted, Job, Leadership, LeasedJob, NewJob, ProcessInfo, Store, StoreError,
    StoreEvent,
};
use rusqlite::{Connection, OpenFlags};
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
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            busy_timeout: std::time::Duration::from_secs(5),
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
    writer: mpsc::Sender<writer::WriteOp>,
    readers: Mutex<Vec<Connection>>,
    events: broadcast::Sender<StoreEvent>,
    /// Dropping it stops the checkpointer thread.
    _checkpointer: mpsc::Sender<()>,
}

/// How often the checkpointer copies the WAL back into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Checkpoints the WAL from its own connection so the writer never does: a checkpoint
/// fsyncs the database file, and doing that inside a group commit would stall every
/// request in the group (the p99 of enqueue-to-start latency). PASSIVE never blocks the
/// writer; SQLite restarts the WAL from its start once a checkpoint has caught up.
fn spawn_checkpointer(conn: Connection) -> std::io::Result<mpsc::Sender<()>> {
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("hinter-sqlite-checkpointer".into())
        .spawn(move || loop {
            match stopped.recv_timeout(CHECKPOINT_EVERY) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "WAL checkpoint failed; will try again");
            }
        })?;
    Ok(stop)
}

fn open_connection(path: &Path, options: &SqliteOptions) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
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
        conn.set_prepared_statement_cache_capacity(64);
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
        let mut conn = open_connection(&path, &options)?;
        migrate::migrate(&mut conn).map_err(|e| match e {
            StoreError::Unavailable(m) => {
                StoreError::Unavailable(format!("{}: {m}", path.display()))
            }
            other => other,
        })?;
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0")
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
        let checkpointer = spawn_checkpointer(open_connection(&path, &options)?).map_err(|e| {
            StoreError::Unavailable(format!("cannot start the sqlite checkpointer thread: {e}"))
        })?;
        let (events, _) = broadcast::channel(4096);
        let writer = writer::spawn(conn, events.clone()).map_err(|e| {
            StoreError::Unavailable(format!("cannot start the sqlite writer thread: {e}"))
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                options,
                writer,
                readers: Mutex::new(Vec::new()),
                events,
                _checkpointer: checkpointer,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the writer thread inside the next group transaction, in its own
    /// savepoint, so an error part-way undoes only `f`'s changes. Answers once the group is
    /// committed.
    async fn write_atomic<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &mut Vec<StoreEvent>) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        self.submit(move |conn, events| {
            let result = writer::in_savepoint(conn, |c| f(c, events));
            (result, None)
        })
        .await
    }

    /// Like [`Self::write_atomic`] without the savepoint, for operations whose errors come
    /// before any change (not found, stale lease, conflict). A database error part-way
    /// rolls back the whole group instead, so nothing half-done is ever committed.
    async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &mut Vec<StoreEvent>) -> StoreResult<R> + Send + 'static,
    ) -> StoreResult<R> {
        self.submit(move |conn, events| {
            let result = f(conn, events);
            let fatal = match &result {
                Err(e @ (StoreError::Unavailable(_) | StoreError::Corrupt(_))) => Some(e.clone()),
                _ => None,
            };
            (result, fatal)
        })
        .await
    }

    async fn submit<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &mut Vec<StoreEvent>) -> (StoreResult<R>, Option<StoreError>)
            + Send
            + 'static,
    ) -> StoreResult<R> {
        let (tx, rx) = oneshot::channel();
        let op: writer::WriteOp = Box::new(move |conn, events| {
            let mut own_events = Vec::new();
            let (result, fatal) = f(conn, &mut own_events);
            if result.is_ok() {
                events.append(&mut own_events);
            }
            let reply: writer::Reply = Box::new(move |commit_error: Option<&StoreError>| {
                let _ = tx.send(match commit_error {
                    Some(e) => Err(e.clone()),
                    None => result,
                });
            });
            (reply, fatal)
        });
        self.inner
            .writer
            .send(op)
            .map_err(|_| StoreError::Unavailable("the sqlite writer has stopped".into()))?;
        rx.await.map_err(|_| {
            StoreError::Unavailable(
                "the write failed: the database could not start a transaction (see the server log)"
                    .into(),
            )
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
                None => open_connection(&inner.path, &inner.options)?,
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
            Err(e @ StoreError::Unavailable(_)) => return Err(e),
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
        self.write_atomic(move |c, ev| ops::job_insert_many(c, jobs, now, ev))
            .await
    }

    async fn job_get(&self, id: Uuid) -> StoreResult<Option<Job>> {
        self.read(move |c| ops::job_get(c, id)).await
    }

    async fn job_list(&self, filter: JobFilter) -> StoreResult<Vec<Job>> {
        self.read(move |c| ops::job_list(c, &filter)).await
    }

    async fn job_lease(&self, request: LeaseRequest) -> StoreResult<Vec<LeasedJob>> {
        if request.max == 0 || request.queues.is_empty() {
            return Ok(Vec::new());
        }
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
            .write(move |c, ev| {
                each(c, &completions, |c, item| {
                    ops::job_complete(c, item, now, ev)
                })
            })
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
        _now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<()>>> {
        self.write(move |c, ev| each(c, &releases, |c, item| ops::job_release(c, item, ev)))
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
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(ops::db_err))
            .await?;
        self.write(|_, _| Ok(())).await
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.inner.events.subscribe()
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
