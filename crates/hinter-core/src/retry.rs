//! The retry policy: what happens to a job after a failed attempt. Decided here, once, for
//! every backend and every kind of worker.

use chrono::{DateTime, Utc};
use rand::Rng;
use std::time::Duration;

/// Default number of attempts before a job is dead.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
/// First retry delay; doubled for each further attempt.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Upper bound of the retry delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(3600);
/// Relative jitter applied to every delay (±20%).
pub const BACKOFF_JITTER: f64 = 0.2;

/// Delay before the next attempt after `attempt` (1-based) failed, without jitter:
/// 1 s × 2^(attempt−1), capped at 1 h.
pub fn backoff(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(31);
    BACKOFF_BASE.saturating_mul(1u32 << exp).min(BACKOFF_CAP)
}

/// [`backoff`] with ±20% jitter drawn from `rng`, so failing jobs do not retry in lockstep.
pub fn backoff_with_jitter(attempt: u32, rng: &mut impl Rng) -> Duration {
    let factor = 1.0 + rng.random_range(-BACKOFF_JITTER..=BACKOFF_JITTER);
    backoff(attempt).mul_f64(factor)
}

/// What becomes of a job whose attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Back to `scheduled`, to run again at the given time.
    Retry { run_at: DateTime<Utc> },
    /// Attempts used up or a permanent failure: `dead`.
    Dead,
    /// The job was asked to stop: `cancelled`.
    Cancelled,
}

/// Decides the outcome of a failed attempt. `attempt` is the attempt that failed (attempts are
/// counted when a job is taken), `retryable` is false for a permanent failure.
pub fn decide_failure(
    attempt: u32,
    max_attempts: u32,
    retryable: bool,
    cancel_requested: bool,
    now: DateTime<Utc>,
    rng: &mut impl Rng,
) -> FailOutcome {
    if cancel_requested {
        FailOutcome::Cancelled
    } else if !retryable || attempt >= max_attempts {
        FailOutcome::Dead
    } else {
        let delay = backoff_with_jitter(attempt, rng);
        let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1));
        FailOutcome::Retry {
            run_at: now + delay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(12), Duration::from_secs(2048));
        assert_eq!(backoff(13), BACKOFF_CAP);
        assert_eq!(backoff(1000), BACKOFF_CAP);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 1..20 {
            let base = backoff(attempt).as_secs_f64();
            let d = backoff_with_jitter(attempt, &mut rng).as_secs_f64();
            assert!(
                d >= base * 0.8 - 1e-9 && d <= base * 1.2 + 1e-9,
                "{d} vs {base}"
            );
        }
    }

    #[test]
    fn failure_outcomes() {
        let mut rng = StdRng::seed_from_u64(1);
        let now = Utc::now();
        assert_eq!(
            decide_failure(3, 3, true, false, now, &mut rng),
            FailOutcome::Dead
        );
        assert_eq!(
            decide_failure(1, 3, false, false, now, &mut rng),
            FailOutcome::Dead
        );
        assert_eq!(
            decide_failure(1, 3, true, true, now, &mut rng),
            FailOutcome::Cancelled
        );
        match decide_failure(2, 3, true, false, now, &mut rng) {
            FailOutcome::Retry { run_at } => {
                let d = (run_at - now).num_milliseconds();
                assert!((1600..=2400).contains(&d), "{d}");
            }
            other => panic!("expected retry, got {other:?}"),
        }
    }
}
