//! Job counts per queue and state, kept in `job_counts` (migration 13) so that listing queues
//! reads a few rows instead of counting every job.
//!
//! Every statement that inserts jobs, changes a job's state or deletes jobs notes what it did
//! here ([`moved`]), right after the statement succeeded. The notes wait on the writer thread
//! and the writer adds them to `job_counts` just before it commits the group ([`flush`]), one
//! statement per (queue, state) touched: a group of a thousand leases and completions costs
//! three or four small updates, not two per job. Notes follow the fate of the changes they
//! describe: an operation in a savepoint that rolls back drops its notes ([`mark`],
//! [`undo_to`]), and a group that rolls back drops them all ([`discard`]).
//!
//! Why not triggers: an SQLite trigger on `UPDATE OF state` makes every state-changing
//! statement open a statement journal (a copy of each page it touches) in case the trigger
//! fails, and hinter changes a job's state with one statement per job. Measured on this
//! schema (one lease and one completion statement per job, 50,000 jobs in one transaction),
//! a trigger whose body does nothing took a job from about 24 µs to 90 µs, one that keeps a
//! counts table to about 105 µs; counting in the writer costs a vector push per job.
//!
//! Only the writer thread writes jobs, and it flushes every group, so the notes of one group
//! never mix with another's. Other processes on the same file run the same writer code and
//! add their own changes in their own transactions (`n = n + delta`), so counts stay exact
//! with several writers too.

use crate::ops::db_err;
use hinter_core::{JobState, StoreError};
use rusqlite::{params, Connection};
use std::cell::RefCell;
use std::collections::HashMap;

/// One job entering `to` and leaving `from` (`None`: inserted, or deleted).
struct Move {
    queue: String,
    from: Option<JobState>,
    to: Option<JobState>,
}

thread_local! {
    /// The writer group's notes, in the order written.
    static PENDING: RefCell<Vec<Move>> = const { RefCell::new(Vec::new()) };
}

/// Notes that a job of `queue` went from `from` to `to` (`None`: it did not exist before, or
/// no longer exists). Call right after the statement that did it succeeded.
pub(crate) fn moved(queue: &str, from: Option<JobState>, to: Option<JobState>) {
    if from == to {
        return;
    }
    PENDING.with(|p| {
        p.borrow_mut().push(Move {
            queue: queue.to_string(),
            from,
            to,
        })
    });
}

/// Where the notes stand, to drop those written after it with [`undo_to`].
pub(crate) fn mark() -> usize {
    PENDING.with(|p| p.borrow().len())
}

/// Drops the notes written since `mark` (their savepoint rolled back).
pub(crate) fn undo_to(mark: usize) {
    PENDING.with(|p| p.borrow_mut().truncate(mark));
}

/// Drops every note (the group rolled back).
pub(crate) fn discard() {
    PENDING.with(|p| p.borrow_mut().clear());
}

/// Adds the group's notes to `job_counts`, inside the group's transaction, and clears them.
pub(crate) fn flush(conn: &Connection) -> Result<(), StoreError> {
    let moves = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    if moves.is_empty() {
        return Ok(());
    }
    let mut deltas: HashMap<(&str, JobState), i64> = HashMap::new();
    for m in &moves {
        if let Some(from) = m.from {
            *deltas.entry((m.queue.as_str(), from)).or_default() -= 1;
        }
        if let Some(to) = m.to {
            *deltas.entry((m.queue.as_str(), to)).or_default() += 1;
        }
    }
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO job_counts (queue, state, n) VALUES (?1, ?2, ?3) \
             ON CONFLICT (queue, state) DO UPDATE SET n = n + excluded.n",
        )
        .map_err(db_err)?;
    for ((queue, state), delta) in deltas {
        if delta != 0 {
            stmt.execute(params![queue, state.as_str(), delta])
                .map_err(db_err)?;
        }
    }
    Ok(())
}
