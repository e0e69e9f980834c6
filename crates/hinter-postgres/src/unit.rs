//! [`hinter_core::Store::write_unit`]: several writes in the one transaction of the caller
//! (`write_tx!`), each by the same function as its single-operation form.

use crate::access;
use crate::ops::{self, Conn, Result};
use crate::schedules;
use chrono::{DateTime, Utc};
use hinter_core::store::{StoreResult, WriteOp, WriteResult};
use hinter_core::StoreEvent;

/// The values of per-item answers, or the first error: inside a unit one refused item (a
/// stale lease, say) undoes the whole unit.
fn all_or_first_error<T>(answers: Vec<StoreResult<T>>) -> StoreResult<Vec<T>> {
    answers.into_iter().collect()
}

/// Runs `writes` in order on `c`, a connection inside a transaction; the first error ends the
/// unit (the caller then rolls the transaction back).
pub async fn write_unit<C: Conn>(
    c: &C,
    writes: &[WriteOp],
    now: DateTime<Utc>,
    events: &mut Vec<StoreEvent>,
) -> Result<Vec<WriteResult>> {
    let mut results = Vec::with_capacity(writes.len());
    for write in writes {
        results.push(match write {
            WriteOp::Insert(jobs) => {
                WriteResult::Inserted(ops::job_insert_many(c, jobs, now, events).await?)
            }
            WriteOp::Complete(items) => WriteResult::Completed(all_or_first_error(
                ops::job_complete_many(c, items, now, events).await?,
            )?),
            WriteOp::Fail(items) => WriteResult::Failed(all_or_first_error(
                ops::job_fail_many(c, items, now, events).await?,
            )?),
            WriteOp::Release(items) => WriteResult::Released(
                all_or_first_error(ops::job_release_many(c, items, now, events).await?)?.len(),
            ),
            WriteOp::Cancel(id) => {
                WriteResult::Cancelled(Box::new(ops::job_cancel(c, *id, now, events).await?))
            }
            WriteOp::InsertOnce(request) => WriteResult::InsertedOnce(
                crate::idempotency::insert_once(c, request, now, events).await?,
            ),
            WriteOp::Retry(id) => {
                WriteResult::Retried(Box::new(ops::job_retry(c, *id, now, events).await?))
            }
            WriteOp::QueuePause { queue, paused } => {
                ops::queue_set_paused(c, queue, *paused, events).await?;
                WriteResult::QueuePaused
            }
            WriteOp::TokenCreate(token) => {
                WriteResult::TokenCreated(access::token_create(c, token, now).await?)
            }
            WriteOp::TokenRevoke(name) => {
                WriteResult::TokenRevoked(access::token_revoke(c, name).await?)
            }
            WriteOp::Audit(entry) => {
                WriteResult::Audited(access::audit_append(c, entry, now).await?)
            }
            WriteOp::ScheduleSave(new) => WriteResult::ScheduleSaved(Box::new(
                schedules::schedule_save(c, new, now, events).await?,
            )),
            WriteOp::ScheduleDelete(name) => WriteResult::ScheduleDeleted(Box::new(
                schedules::schedule_delete(c, name, events).await?,
            )),
            WriteOp::SchedulePause {
                name,
                paused,
                next_fire_at,
            } => WriteResult::ScheduleSaved(Box::new(
                schedules::schedule_pause(c, name, *paused, *next_fire_at, now, events).await?,
            )),
            WriteOp::ScheduleFire(firing) => {
                WriteResult::ScheduleFired(schedules::schedule_fire(c, firing, now, events).await?)
            }
            WriteOp::JobDelete(id) => {
                WriteResult::JobDeleted(Box::new(ops::job_delete(c, *id).await?))
            }
            WriteOp::QueuePurge(purge) => {
                WriteResult::QueuePurged(ops::queue_purge(c, purge).await?)
            }
        });
    }
    Ok(results)
}
