//! Bounds on request-sized input and on what a job keeps, decided here once for every
//! backend, the API and the engine.
//!
//! - A lease names at most [`MAX_LEASE_QUEUES`] queues and asks for at most
//!   [`MAX_LEASE_JOBS`] jobs ([`check_lease_queues`], [`check_lease_max`]).
//! - An attempt's error message is kept up to [`MAX_ERROR_BYTES`] ([`bounded_error`]); a
//!   longer one is cut and says so.
//! - A job's error history keeps its first [`ERRORS_KEPT_FIRST`] and last
//!   [`ERRORS_KEPT_LAST`] entries; the ones in between are dropped and counted in
//!   `Job::errors_omitted`. Every store applies this in the statement that appends an error
//!   (a failure, a rescued lease, a timeout): append, keep positions `0..FIRST` and the last
//!   `LAST`, and add the number dropped to `errors_omitted`. So a history over the bound
//!   (written by an older hinter) shrinks back to it at the next append.

use crate::definition::{validate_name, FieldError};
use std::borrow::Cow;
use std::collections::HashSet;

/// Most queues one lease request may name.
pub const MAX_LEASE_QUEUES: usize = 1000;
/// Most jobs one lease request may take.
pub const MAX_LEASE_JOBS: u32 = 1000;

/// Longest error message kept for one attempt, in bytes (UTF-8), marker included.
pub const MAX_ERROR_BYTES: usize = 8 * 1024;
/// The oldest errors of a job that are always kept.
pub const ERRORS_KEPT_FIRST: usize = 5;
/// The newest errors of a job that are always kept.
pub const ERRORS_KEPT_LAST: usize = 20;

/// Checks the queues of a lease request (`field` is their name on the wire): at least one,
/// at most [`MAX_LEASE_QUEUES`] distinct names, each a valid queue name. Duplicates are
/// allowed and count once.
pub fn check_lease_queues(field: &str, queues: &[String]) -> Result<(), FieldError> {
    check_lease_queue_count(field, queues)?;
    for (i, queue) in queues.iter().enumerate() {
        validate_name(&format!("{field}[{i}]"), queue)?;
    }
    Ok(())
}

/// The count part of [`check_lease_queues`]: at least one queue, at most
/// [`MAX_LEASE_QUEUES`] distinct names.
pub fn check_lease_queue_count(field: &str, queues: &[String]) -> Result<(), FieldError> {
    if queues.is_empty() {
        return Err(FieldError::new(field, "must name at least one queue"));
    }
    // Only a long list is hashed: duplicates count once.
    if queues.len() > MAX_LEASE_QUEUES {
        let distinct: HashSet<&str> = queues.iter().map(String::as_str).collect();
        if distinct.len() > MAX_LEASE_QUEUES {
            return Err(FieldError::new(
                field,
                format!(
                    "names {} queues; one lease may name at most {MAX_LEASE_QUEUES}",
                    distinct.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks the `max` of a lease request: 1 to [`MAX_LEASE_JOBS`].
pub fn check_lease_max(field: &str, max: u32) -> Result<(), FieldError> {
    if (1..=MAX_LEASE_JOBS).contains(&max) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("{max} is out of range 1..={MAX_LEASE_JOBS}"),
        ))
    }
}

/// `message` if it fits in [`MAX_ERROR_BYTES`]; otherwise its start, cut on a character
/// boundary, followed by `… [truncated from N bytes]`, the whole within the bound.
pub fn bounded_error(message: &str) -> Cow<'_, str> {
    if message.len() <= MAX_ERROR_BYTES {
        return Cow::Borrowed(message);
    }
    let marker = format!("… [truncated from {} bytes]", message.len());
    let mut cut = MAX_ERROR_BYTES.saturating_sub(marker.len());
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    Cow::Owned(format!("{}{marker}", &message[..cut]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_errors_are_kept_whole() {
        assert!(matches!(bounded_error("boom"), Cow::Borrowed("boom")));
        let exact = "x".repeat(MAX_ERROR_BYTES);
        assert_eq!(bounded_error(&exact), exact);
    }

    #[test]
    fn long_errors_are_cut_on_a_char_boundary_and_say_so() {
        let long = "é".repeat(MAX_ERROR_BYTES); // 2 bytes each
        let cut = bounded_error(&long);
        assert!(cut.len() <= MAX_ERROR_BYTES, "{}", cut.len());
        assert!(cut.len() > MAX_ERROR_BYTES - 64, "{}", cut.len());
        assert!(cut.ends_with(&format!("… [truncated from {} bytes]", long.len())));
        assert!(cut.starts_with("éé"));
        let huge = "y".repeat(1 << 20);
        let cut = bounded_error(&huge);
        assert!(cut.len() <= MAX_ERROR_BYTES);
        assert!(
            cut.ends_with("… [truncated from 1048576 bytes]"),
            "{cut:.40}"
        );
    }

    #[test]
    fn lease_queue_bounds() {
        let names = |n: usize| (0..n).map(|i| format!("q{i}")).collect::<Vec<_>>();
        assert!(check_lease_queues("queues", &names(MAX_LEASE_QUEUES)).is_ok());
        let mut dup = names(MAX_LEASE_QUEUES);
        dup.extend(names(MAX_LEASE_QUEUES));
        assert!(
            check_lease_queues("queues", &dup).is_ok(),
            "duplicates count once"
        );
        let e = check_lease_queues("queues", &names(MAX_LEASE_QUEUES + 1)).unwrap_err();
        assert_eq!(e.field, "queues");
        assert!(e.message.contains("at most 1000"), "{e}");
        assert_eq!(
            check_lease_queues("queues", &[]).unwrap_err().field,
            "queues"
        );
        let e = check_lease_queues("queues", &["ok".into(), "b d".into()]).unwrap_err();
        assert_eq!(e.field, "queues[1]");
        assert!(check_lease_max("max", 0).is_err());
        assert!(check_lease_max("max", MAX_LEASE_JOBS).is_ok());
        assert!(check_lease_max("max", MAX_LEASE_JOBS + 1).is_err());
    }
}
