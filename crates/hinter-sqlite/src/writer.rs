//! The single writer thread and its group commit.
//!
//! Every change goes through one thread that owns the write connection. It takes all
//! operations waiting in its channel, runs them inside one transaction and commits them
//! together: one fsync acknowledges a whole group of enqueues, leases, heartbeats and
//! completions. Replies and events are sent only after the commit succeeded, so a 2xx answer
//! always means "on disk".
//!
//! Two guards run between the operations and the commit, and one after it:
//! - **The files are still the ones opened.** Before each commit the writer stats the
//!   database and its `-wal` file and compares device and inode with those seen at open. A
//!   file deleted or replaced while open (say `rm hinter.db*`) would take every later commit
//!   with it; once that is seen every write is refused with [`StoreError::Storage`], for good.
//! - **Storage failures are remembered.** A write that fails for lack of storage (disk full,
//!   I/O error) marks the store failing until a write that changes something succeeds;
//!   [`Health::check`] (used by `ping`, hence `/readyz`) reports it meanwhile.
//! - **The WAL stays bounded.** Background checkpoints (`PASSIVE`, on their own thread) cannot
//!   catch up while the writer never pauses, so the WAL would grow for ever. Once the `-wal`
//!   file passes its bound, the writer itself runs a `RESTART` checkpoint between two groups
//!   (waiting briefly for readers), so the next commit starts the WAL again from its
//!   beginning and `journal_size_limit` truncates the file. If readers keep it busy, it tries
//!   again after the next group.

use hinter_core::{StoreError, StoreEvent};
use rusqlite::{Connection, ErrorCode};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, oneshot};

/// Sends an operation's outcome once the group's commit is known.
pub type Reply = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// What an operation is given: the connection to run on, or the error that refuses it
/// without running (the database file is gone, a transaction could not begin).
pub enum Slot<'a> {
    Run(&'a Connection),
    Refused(&'a StoreError),
}

/// What an operation leaves to the writer.
pub struct Ran {
    /// Answers the caller once the commit is known.
    pub reply: Reply,
    /// It failed in a way that may have left part of its changes behind: the whole group is
    /// rolled back.
    pub fatal: Option<StoreError>,
    /// It failed for lack of storage (disk full, I/O error): the store is failing.
    pub storage: Option<String>,
}

impl Ran {
    /// An operation that already answered its caller.
    pub fn answered() -> Self {
        Ran {
            reply: Box::new(|_| {}),
            fatal: None,
            storage: None,
        }
    }
}

/// An operation: runs inside the group transaction and records events (or is refused).
pub type WriteOp = Box<dyn FnOnce(Slot<'_>, &mut Vec<StoreEvent>) -> Ran + Send>;

/// What the writer's channel carries.
pub enum Msg {
    Op(WriteOp),
    /// Checkpoint and truncate the WAL, then refuse every later write.
    Close(oneshot::Sender<Result<(), StoreError>>),
}

/// Most operations committed together; bounds the latency of the first in a group.
const MAX_GROUP: usize = 2048;

/// Longest the writer waits for readers (or a background checkpoint) in a bounding
/// checkpoint before it gives up until the next group.
const CHECKPOINT_WAIT: Duration = Duration::from_millis(1000);

/// A WAL this many times over its bound is worth a warning: checkpoints cannot keep up.
pub const WAL_FAR_OVER: u64 = 4;

/// Least time between two warnings about the WAL size.
const WAL_WARN_EVERY: Duration = Duration::from_secs(30);

/// The cause, in words fit for clients, when `e` means the storage refuses to work (disk
/// full, I/O error, read-only file); `None` for any other error.
pub fn storage_cause(e: &rusqlite::Error) -> Option<String> {
    let rusqlite::Error::SqliteFailure(failure, _) = e else {
        return None;
    };
    match failure.code {
        ErrorCode::DiskFull => Some(format!("disk full ({e})")),
        ErrorCode::SystemIoFailure => Some(format!(
            "disk I/O error (SQLite code {})",
            failure.extended_code
        )),
        ErrorCode::ReadOnly => Some(format!("the database file cannot be written ({e})")),
        _ => None,
    }
}

/// Maps a database error: storage failures to [`StoreError::Storage`], anything else to
/// [`StoreError::Unavailable`] with `context`.
pub fn db_error(e: rusqlite::Error, context: &str) -> StoreError {
    match storage_cause(&e) {
        Some(cause) => StoreError::Storage(cause),
        None if context.is_empty() => StoreError::Unavailable(e.to_string()),
        None => StoreError::Unavailable(format!("{context}: {e}")),
    }
}

/// What the writer knows about the store's health, shared with `ping` and readiness.
pub struct Health {
    /// Set once the database file is no longer the one opened; every write is refused.
    gone: OnceLock<String>,
    /// The last storage failure, until a write succeeds again.
    failing: Mutex<Option<Failing>>,
    /// Size of the `-wal` file at the last look.
    wal_bytes: AtomicU64,
    /// The bound the writer keeps the WAL under.
    pub wal_limit: u64,
    /// The writer is bounding the WAL: background checkpoints stand aside (two checkpoints
    /// cannot run at once, and the writer's must not wait behind theirs).
    bounding: AtomicBool,
    /// Told of each committed group (`Store::observe_commits`).
    pub commits: OnceLock<hinter_core::store::CommitObserver>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("gone", &self.gone)
            .field("failing", &self.failing)
            .field("wal_bytes", &self.wal_bytes)
            .field("wal_limit", &self.wal_limit)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Failing {
    cause: String,
    last: Instant,
}

impl Health {
    pub fn new(wal_limit: u64) -> Self {
        Health {
            gone: OnceLock::new(),
            failing: Mutex::new(None),
            wal_bytes: AtomicU64::new(0),
            wal_limit,
            bounding: AtomicBool::new(false),
            commits: OnceLock::new(),
        }
    }

    /// Whether the writer is running a bounding checkpoint.
    pub fn bounding(&self) -> bool {
        self.bounding.load(Ordering::Acquire)
    }

    /// Fails while writes are refused (the database file is gone) or while the last write
    /// failed for lack of storage and none has succeeded since.
    pub fn check(&self) -> Result<(), StoreError> {
        if let Some(reason) = self.gone.get() {
            return Err(StoreError::Storage(reason.clone()));
        }
        let failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match &*failing {
            Some(f) => Err(StoreError::Storage(format!(
                "{}; the last write failed {}s ago and none has succeeded since",
                f.cause,
                f.last.elapsed().as_secs()
            ))),
            None => Ok(()),
        }
    }

    /// Size of the `-wal` file at the writer's last look.
    pub fn wal_bytes(&self) -> u64 {
        self.wal_bytes.load(Ordering::Relaxed)
    }

    fn failed(&self, cause: &str) {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        if failing.is_none() {
            tracing::error!(
                cause,
                "sqlite writes fail; the store reports not ready until one succeeds"
            );
        }
        *failing = Some(Failing {
            cause: cause.to_string(),
            last: Instant::now(),
        });
    }

    fn succeeded(&self) {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = failing.take() {
            tracing::info!(previous = %f.cause, "sqlite writes succeed again");
        }
    }
}

/// Device and inode: which file a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

fn file_id(meta: &std::fs::Metadata) -> FileId {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        FileId { dev: 0, ino: 0 }
    }
}

/// The database and `-wal` files as opened, to notice when they are deleted or replaced.
#[derive(Debug)]
pub struct Files {
    db: PathBuf,
    wal: PathBuf,
    db_id: Option<FileId>,
    wal_id: Option<FileId>,
}

impl Files {
    /// Notes which files `db` and its `-wal` name now (call once the database is open).
    pub fn note(db: &Path) -> Files {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let id = |p: &Path| std::fs::metadata(p).ok().map(|m| file_id(&m));
        Files {
            db_id: id(db),
            wal_id: id(&wal),
            db: db.to_path_buf(),
            wal,
        }
    }

    /// The size of the `-wal` file, or what happened to the files since they were noted
    /// ("the database file was deleted"). A file that cannot be looked at for another reason
    /// is taken to be unchanged.
    fn check(&self) -> Result<u64, &'static str> {
        if let Some(id) = self.db_id {
            match std::fs::metadata(&self.db) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err("the database file was deleted")
                }
                Ok(meta) if file_id(&meta) != id => {
                    return Err("the database file was replaced by another file")
                }
                _ => {}
            }
        }
        match std::fs::metadata(&self.wal) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.wal_id.is_some() => {
                Err("the database's write-ahead log (-wal file) was deleted")
            }
            Ok(meta) if self.wal_id.is_some_and(|id| id != file_id(&meta)) => {
                Err("the database's write-ahead log (-wal file) was replaced by another file")
            }
            Ok(meta) => Ok(meta.len()),
            Err(_) => Ok(0),
        }
    }

    /// The size of the `-wal` file now (0 if it cannot be seen).
    fn wal_size(&self) -> u64 {
        std::fs::metadata(&self.wal).map(|m| m.len()).unwrap_or(0)
    }
}

/// Everything the writer thread owns.
pub struct Writer {
    pub conn: Connection,
    pub events: broadcast::Sender<StoreEvent>,
    pub health: Arc<Health>,
    pub files: Files,
    /// The connection's usual busy timeout, restored after a bounding checkpoint.
    pub busy_timeout: Duration,
}

/// How often an idle writer looks whether another process committed to the database file.
const WATCH_EVERY: Duration = Duration::from_millis(10);

pub fn spawn(writer: Writer) -> std::io::Result<(mpsc::Sender<Msg>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<Msg>();
    let thread = std::thread::Builder::new()
        .name("hinter-sqlite-writer".into())
        .spawn(move || writer.run(rx))?;
    Ok((tx, thread))
}

impl Writer {
    /// `PRAGMA data_version` of the writer's connection: it changes exactly when another
    /// connection commits, and in this process only the writer writes.
    fn data_version(&self) -> Option<i64> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .ok()
    }

    /// Publishes [`StoreEvent::Changed`] when another process (another store on this file:
    /// a `hinter worker --data-dir` beside a `serve`, say) committed since the last look, so
    /// its jobs are seen at once rather than at the next poll.
    fn notice_other_processes(&self, last: &mut Option<i64>) {
        let now = self.data_version();
        if now.is_some() && now != *last {
            // No receivers is fine: nobody is waiting.
            let _ = self.events.send(StoreEvent::Changed);
        }
        *last = now;
    }

    fn run(self, rx: mpsc::Receiver<Msg>) {
        let mut group: Vec<WriteOp> = Vec::with_capacity(MAX_GROUP);
        let mut replies: Vec<Reply> = Vec::with_capacity(MAX_GROUP);
        let mut pending_events = Vec::new();
        let mut closed = false;
        let mut close_requests = Vec::new();
        let mut last_warning: Option<Instant> = None;
        let mut data_version = self.data_version();
        loop {
            self.notice_other_processes(&mut data_version);
            match rx.recv_timeout(WATCH_EVERY) {
                Ok(Msg::Op(op)) => group.push(op),
                Ok(Msg::Close(done)) => close_requests.push(done),
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(Msg::Op(op)) => group.push(op),
                    Ok(Msg::Close(done)) => close_requests.push(done),
                    Err(_) => break,
                }
            }
            if !group.is_empty() {
                let refusal = if closed {
                    Some(StoreError::Unavailable(
                        "the store was closed (the server is stopping)".into(),
                    ))
                } else {
                    self.gone_error()
                };
                match refusal {
                    Some(err) => refuse(&mut group, &err, &mut pending_events),
                    None => {
                        let wal = self.commit_group(&mut group, &mut replies, &mut pending_events);
                        if let Some(wal_before) = wal {
                            self.bound_wal(wal_before, &mut last_warning);
                        }
                    }
                }
            }
            for done in close_requests.drain(..) {
                if !closed {
                    closed = true;
                    let _ = done.send(self.truncate_wal());
                } else {
                    let _ = done.send(Ok(()));
                }
            }
        }
        if !closed {
            if let Err(e) = self.truncate_wal() {
                tracing::warn!(error = %e, "final WAL checkpoint failed");
            }
        }
    }

    fn gone_error(&self) -> Option<StoreError> {
        self.health
            .gone
            .get()
            .map(|r| StoreError::Storage(r.clone()))
    }

    /// Runs and commits one group; returns the `-wal` size seen before a successful commit.
    fn commit_group(
        &self,
        group: &mut Vec<WriteOp>,
        replies: &mut Vec<Reply>,
        pending_events: &mut Vec<StoreEvent>,
    ) -> Option<u64> {
        let conn = &self.conn;
        let began = Instant::now();
        let operations = group.len();
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let err = db_error(e, "starting a write transaction");
            match &err {
                StoreError::Storage(cause) => self.health.failed(cause),
                _ => tracing::error!(error = %err, "sqlite writer cannot begin a transaction"),
            }
            refuse(group, &err, pending_events);
            return None;
        }
        let changes_before = conn.total_changes();
        let mut doom: Option<StoreError> = None;
        let mut storage_failure: Option<String> = None;
        for op in group.drain(..) {
            if let Some(err) = doom.as_ref().filter(|_| conn.is_autocommit()) {
                // SQLite rolled the whole transaction back (it may, on disk full or an I/O
                // error): running more would commit each alone. Refuse the rest.
                let ran = op(Slot::Refused(err), pending_events);
                replies.push(ran.reply);
                continue;
            }
            let ran = op(Slot::Run(conn), pending_events);
            replies.push(ran.reply);
            if let Some(cause) = ran.storage {
                storage_failure.get_or_insert(cause);
            }
            if doom.is_none() {
                doom = ran.fatal;
            }
            if doom.is_none() && conn.is_autocommit() {
                doom = Some(match &storage_failure {
                    Some(cause) => StoreError::Storage(cause.clone()),
                    None => StoreError::Unavailable(
                        "the database rolled back the write transaction".into(),
                    ),
                });
            }
        }
        if doom.is_none() {
            // The job counts of what the group changed, in its transaction.
            if let Err(e) = crate::counts::flush(conn) {
                doom = Some(e);
            }
        }
        let mut wal_before = None;
        let committed = match doom {
            Some(e) => Err(match e {
                e @ StoreError::Storage(_) => e,
                e => StoreError::Unavailable(format!(
                    "an operation failed part-way, the group was rolled back: {e}"
                )),
            }),
            None => match self.files.check() {
                Err(what) => Err(self.mark_gone(what)),
                Ok(wal) => {
                    wal_before = Some(wal);
                    conn.execute_batch("COMMIT")
                        .map_err(|e| db_error(e, "committing"))
                }
            },
        };
        match committed {
            Ok(()) => {
                if let Some(observe) = self.health.commits.get() {
                    observe(began.elapsed(), operations);
                }
                // Health first: a caller told of a failure must find the store failing.
                match storage_failure {
                    Some(cause) => self.health.failed(&cause),
                    None if conn.total_changes() != changes_before => self.health.succeeded(),
                    None => {}
                }
                for reply in replies.drain(..) {
                    reply(None);
                }
                for event in pending_events.drain(..) {
                    // No receivers is fine: nobody is waiting.
                    let _ = self.events.send(event);
                }
            }
            Err(err) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                crate::counts::discard();
                match &err {
                    // Already logged, once, by `mark_gone`.
                    StoreError::Storage(_) if self.health.gone.get().is_some() => {}
                    StoreError::Storage(cause) => self.health.failed(cause),
                    _ => tracing::error!(error = %err, "sqlite writer commit failed"),
                }
                for reply in replies.drain(..) {
                    reply(Some(&err));
                }
                pending_events.clear();
                return None;
            }
        }
        wal_before
    }

    /// Records that the files are no longer the ones opened; logs it once.
    fn mark_gone(&self, what: &str) -> StoreError {
        let reason =
            format!("{what} while the store was open; writes are refused until it is restarted");
        if self.health.gone.set(reason.clone()).is_ok() {
            tracing::error!(
                path = %self.files.db.display(),
                "{what} while the store was open: every write is refused from now on, and the \
                 store reports not ready. Jobs acknowledged before are in the lost file (this \
                 process still holds it open); a restart opens a new, empty database"
            );
        }
        StoreError::Storage(reason)
    }

    /// After a commit: once the WAL is over its bound, checkpoints with `RESTART` so the
    /// next commit writes the WAL from its beginning (and truncates it to the bound).
    fn bound_wal(&self, wal_before: u64, last_warning: &mut Option<Instant>) {
        let limit = self.health.wal_limit;
        if wal_before <= limit {
            self.health.wal_bytes.store(wal_before, Ordering::Relaxed);
            return;
        }
        // The commit may have truncated the file (the first commit after a restart does).
        let size = self.files.wal_size();
        self.health.wal_bytes.store(size, Ordering::Relaxed);
        if size <= limit {
            return;
        }
        if size > limit.saturating_mul(WAL_FAR_OVER)
            && last_warning.is_none_or(|t| t.elapsed() >= WAL_WARN_EVERY)
        {
            *last_warning = Some(Instant::now());
            tracing::warn!(
                wal_bytes = size,
                wal_limit_bytes = limit,
                "the SQLite write-ahead log is far over its bound: readers keep checkpoints \
                 from finishing"
            );
        }
        // The busy handler waits for readers; a background checkpoint in progress makes
        // SQLite answer "busy" at once, so that is waited out here.
        self.health.bounding.store(true, Ordering::Release);
        let _ = self.conn.busy_timeout(CHECKPOINT_WAIT);
        let deadline = Instant::now() + CHECKPOINT_WAIT;
        let result = loop {
            match self
                .conn
                .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0))
            {
                Ok(0) => break Ok(true),
                Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                Ok(_) => break Ok(false),
                Err(e) => break Err(e),
            }
        };
        let _ = self.conn.busy_timeout(self.busy_timeout);
        self.health.bounding.store(false, Ordering::Release);
        match result {
            Ok(true) => tracing::debug!(wal_bytes = size, "WAL checkpointed and restarted"),
            Ok(false) => tracing::debug!(
                wal_bytes = size,
                "WAL checkpoint kept busy by readers; trying again after the next group"
            ),
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; will try again"),
        }
    }

    /// Folds the whole WAL into the database and truncates it to nothing.
    fn truncate_wal(&self) -> Result<(), StoreError> {
        if let Some(err) = self.gone_error() {
            return Err(err);
        }
        let busy: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .map_err(|e| db_error(e, "checkpointing the WAL"))?;
        self.health
            .wal_bytes
            .store(self.files.wal_size(), Ordering::Relaxed);
        if busy != 0 {
            return Err(StoreError::Unavailable(
                "the WAL could not be truncated: other connections are reading".into(),
            ));
        }
        Ok(())
    }
}

/// Answers every operation of `group` with `err` without running any.
fn refuse(group: &mut Vec<WriteOp>, err: &StoreError, events: &mut Vec<StoreEvent>) {
    for op in group.drain(..) {
        let ran = op(Slot::Refused(err), events);
        (ran.reply)(Some(err));
    }
}

/// Runs `f` inside a savepoint: its changes are kept only if it succeeds.
pub fn in_savepoint<R>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    conn.execute_batch("SAVEPOINT op")
        .map_err(|e| db_error(e, "savepoint"))?;
    let result = f(conn);
    let end = if result.is_ok() {
        "RELEASE op"
    } else {
        "ROLLBACK TO op; RELEASE op"
    };
    match conn.execute_batch(end) {
        Ok(()) => result,
        // The operation's own error says more (SQLite may have rolled the whole
        // transaction back after it, taking the savepoint along).
        Err(_) if result.is_err() => result,
        Err(e) => Err(db_error(e, "savepoint")),
    }
}
