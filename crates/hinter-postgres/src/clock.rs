//! The database's clock for every time a caller hands in.
//!
//! Callers pass `now` from their own clock (tests drive it). Machines whose clocks disagree
//! would then disagree on when a lease or a leadership ends: a machine 30 s ahead would
//! rescue jobs others still hold and take over leadership early. So the store measures how
//! far the database's clock is from its callers' clock (at connect and every
//! [`MEASURE_EVERY`]) and shifts every time it is handed by that much: lease ends,
//! leadership terms and rescue cut-offs are then all on the database's clock, whichever
//! machine asked. Differences below [`IGNORE_BELOW`] (the same machine, a well-synced
//! cluster, the time a measurement takes) are left alone, so times stay exactly as given.

use chrono::{DateTime, Utc};
use hinter_core::retry::FailOutcome;
use hinter_core::store::{Failure, PruneRequest, WriteOp};
use hinter_core::{Clock, ProcessInfo};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the difference is measured again.
pub const MEASURE_EVERY: Duration = Duration::from_secs(30);
/// Smaller differences are not corrected.
pub const IGNORE_BELOW: Duration = Duration::from_millis(250);

/// The callers' clock and how far the database's is ahead of it.
pub struct DbClock {
    callers: Arc<dyn Clock>,
    /// Database time minus the callers' time, in microseconds; 0 when below the threshold.
    offset_micros: AtomicI64,
}

impl DbClock {
    pub fn new(callers: Arc<dyn Clock>) -> Self {
        Self {
            callers,
            offset_micros: AtomicI64::new(0),
        }
    }

    /// Records a measurement: the database said `db_now` between the callers' `before` and
    /// `after`.
    pub fn measured(&self, before: DateTime<Utc>, db_now: DateTime<Utc>, after: DateTime<Utc>) {
        let midpoint = before + (after - before) / 2;
        let offset = (db_now - midpoint).num_microseconds().unwrap_or(0);
        let ignore = i64::try_from(IGNORE_BELOW.as_micros()).unwrap_or(i64::MAX);
        let offset = if offset.abs() < ignore { 0 } else { offset };
        let previous = self.offset_micros.swap(offset, Ordering::Relaxed);
        if offset != 0 && previous == 0 {
            tracing::warn!(
                offset_ms = offset / 1000,
                "this machine's clock differs from the database's; using the database's \
                 for leases and leadership"
            );
        }
    }

    /// The callers' clock now (for a measurement).
    pub fn callers_now(&self) -> DateTime<Utc> {
        self.callers.now()
    }

    /// `t` (on the callers' clock) on the database's clock.
    pub fn at(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let offset = self.offset_micros.load(Ordering::Relaxed);
        if offset == 0 {
            return t;
        }
        t.checked_add_signed(chrono::Duration::microseconds(offset))
            .unwrap_or(t)
    }

    pub fn failures(&self, mut failures: Vec<Failure>) -> Vec<Failure> {
        for failure in &mut failures {
            if let FailOutcome::Retry { run_at } = &mut failure.outcome {
                *run_at = self.at(*run_at);
            }
        }
        failures
    }

    pub fn writes(&self, writes: Vec<WriteOp>) -> Vec<WriteOp> {
        writes
            .into_iter()
            .map(|write| match write {
                WriteOp::Fail(failures) => WriteOp::Fail(self.failures(failures)),
                WriteOp::InsertOnce(mut request) => {
                    request.expires_at = self.at(request.expires_at);
                    WriteOp::InsertOnce(request)
                }
                other => other,
            })
            .collect()
    }

    pub fn prune(&self, request: PruneRequest) -> PruneRequest {
        PruneRequest {
            succeeded_before: self.at(request.succeeded_before),
            dead_before: self.at(request.dead_before),
            cancelled_before: self.at(request.cancelled_before),
            limit: request.limit,
        }
    }

    pub fn process(&self, mut process: ProcessInfo) -> ProcessInfo {
        process.started_at = self.at(process.started_at);
        process.last_heartbeat_at = self.at(process.last_heartbeat_at);
        process
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hinter_core::ManualClock;

    #[test]
    fn small_differences_are_ignored_large_ones_corrected() {
        let t: DateTime<Utc> = "2026-11-29T12:00:00Z".parse().expect("time");
        let clock = DbClock::new(Arc::new(ManualClock::new(t)));
        let ms = chrono::Duration::milliseconds;
        clock.measured(t, t + ms(100), t + ms(2));
        assert_eq!(clock.at(t), t, "below the threshold nothing changes");
        // The database is 30 s behind the callers (they run fast).
        clock.measured(t, t - chrono::Duration::seconds(30) + ms(1), t + ms(2));
        assert_eq!(clock.at(t), t - chrono::Duration::seconds(30));
        clock.measured(t, t, t);
        assert_eq!(clock.at(t), t);
    }
}
