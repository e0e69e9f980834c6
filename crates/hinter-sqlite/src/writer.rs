//! The single writer thread and its group commit.
//!
//! Every change goes through one thread that owns the write connection. It takes all
//! operations waiting in its channel, runs each inside its own savepoint (so one failing
//! operation does not undo the others), and commits them together: one fsync acknowledges a
//! whole group of enqueues, leases, heartbeats and completions. Replies and events are sent
//! only after the commit succeeded, so a 2xx answer always means "on disk".

use hinter_core::{StoreError, StoreEvent};
use rusqlite::Connection;
use std::sync::mpsc;
use tokio::sync::broadcast;

/// Sends an operation's outcome once the group's commit is known.
pub type Reply = Box<dyn FnOnce(Option<&StoreError>) + Send>;
/// An operation: runs inside the group transaction, records events, returns its reply and,
/// if it failed in a way that may have left part of its changes behind, the error that
/// aborts the whole group.
pub type WriteOp =
    Box<dyn FnOnce(&Connection, &mut Vec<StoreEvent>) -> (Reply, Option<StoreError>) + Send>;

/// Most operations committed together; bounds the latency of the first in a group.
const MAX_GROUP: usize = 2048;

pub fn spawn(
    conn: Connection,
    events: broadcast::Sender<StoreEvent>,
) -> std::io::Result<mpsc::Sender<WriteOp>> {
    let (tx, rx) = mpsc::channel::<WriteOp>();
    std::thread::Builder::new()
        .name("hinter-sqlite-writer".into())
        .spawn(move || run(conn, rx, events))?;
    Ok(tx)
}

fn run(conn: Connection, rx: mpsc::Receiver<WriteOp>, events: broadcast::Sender<StoreEvent>) {
    let mut group: Vec<WriteOp> = Vec::with_capacity(MAX_GROUP);
    let mut replies: Vec<Reply> = Vec::with_capacity(MAX_GROUP);
    let mut pending_events = Vec::new();
    while let Ok(first) = rx.recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let err = StoreError::Unavailable(format!("starting a write transaction: {e}"));
            for op in group.drain(..) {
                // Ops must still answer; run nothing, fail them all.
                drop(op);
            }
            tracing::error!(error = %err, "sqlite writer cannot begin a transaction");
            continue;
        }
        let mut doom = None;
        for op in group.drain(..) {
            let (reply, fatal) = op(&conn, &mut pending_events);
            replies.push(reply);
            if doom.is_none() {
                doom = fatal;
            }
        }
        let committed = match doom {
            None => conn
                .execute_batch("COMMIT")
                .map_err(|e| format!("committing: {e}")),
            Some(e) => Err(format!(
                "an operation failed part-way, the group was rolled back: {e}"
            )),
        };
        match committed {
            Ok(()) => {
                for reply in replies.drain(..) {
                    reply(None);
                }
                for event in pending_events.drain(..) {
                    // No receivers is fine: nobody is waiting.
                    let _ = events.send(event);
                }
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                let err = StoreError::Unavailable(e);
                tracing::error!(error = %err, "sqlite writer commit failed");
                for reply in replies.drain(..) {
                    reply(Some(&err));
                }
                pending_events.clear();
            }
        }
    }
}

/// Runs `f` inside a savepoint: its changes are kept only if it succeeds.
pub fn in_savepoint<R>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    conn.execute_batch("SAVEPOINT op")
        .map_err(|e| StoreError::Unavailable(format!("savepoint: {e}")))?;
    let result = f(conn);
    let end = if result.is_ok() {
        "RELEASE op"
    } else {
        "ROLLBACK TO op; RELEASE op"
    };
    conn.execute_batch(end)
        .map_err(|e| StoreError::Unavailable(format!("savepoint: {e}")))?;
    result
}
