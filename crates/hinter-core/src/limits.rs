//! The bounds of what hinter accepts, checked in one place so that everything accepted can be
//! stored and computed with on every backend and read back by every client.
//!
//! - Durations: at most [`MAX_DURATION`] (ten years), millisecond precision. PostgreSQL
//!   cannot add an interval of 2^63 ms to a timestamp, and `now + timeout` must never
//!   overflow on either backend.
//! - Times: years 1 to 9999, the range RFC 3339 can write and both backends can store.
//! - JSON (payloads, results): nested at most [`MAX_JSON_DEPTH`] levels, so that an answer
//!   wrapping it (`{"jobs": [{"payload": …}]}`) stays within the nesting limit of common JSON
//!   parsers (serde_json's is 128).
//! - Text stored in columns (keys, worker ids): no NUL characters, which PostgreSQL text
//!   cannot hold.
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
use chrono::{DateTime, Datelike, Utc};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashSet;
use std::time::Duration;

/// Longest duration accepted anywhere: ten years (3650 days).
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// Deepest nesting of a payload or result: an array or object counts one level.
pub const MAX_JSON_DEPTH: usize = 64;

/// First and last year of a time accepted (`run_at`).
pub const YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// Checks a duration given in code (the Rust library); parsed durations are checked by
/// [`crate::parse_duration`] already.
pub fn check_duration(field: &str, value: Duration) -> Result<(), FieldError> {
    if value > MAX_DURATION {
        return Err(FieldError::new(
            field,
            format!(
                "{} is longer than the limit of 3650d (ten years)",
                crate::format_duration(value)
            ),
        ));
    }
    if !value.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(FieldError::new(
            field,
            "has a fraction of a millisecond; durations are kept in whole milliseconds",
        ));
    }
    Ok(())
}

/// Checks that a time lies in the years RFC 3339 and both backends can hold.
pub fn check_time(field: &str, value: DateTime<Utc>) -> Result<(), FieldError> {
    if !YEARS.contains(&value.year()) {
        return Err(FieldError::new(
            field,
            format!(
                "the year {} is out of range {}..={}",
                value.year(),
                YEARS.start(),
                YEARS.end()
            ),
        ));
    }
    Ok(())
}

/// Checks how deeply a JSON value nests.
pub fn check_json(field: &str, value: &Value) -> Result<(), FieldError> {
    let depth = json_depth(value);
    if depth > MAX_JSON_DEPTH {
        return Err(FieldError::new(
            field,
            format!("nests {depth} levels deep; at most {MAX_JSON_DEPTH} are allowed"),
        ));
    }
    Ok(())
}

/// Levels of arrays and objects: a scalar is 0, `[1]` is 1, `{"a": [1]}` is 2. Iterative, so
/// a value deeper than the stack could hold is still measured.
pub fn json_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        deepest = deepest.max(depth + 1);
        stack.extend(children.map(|child| (child, depth + 1)));
    }
    deepest
}

/// Checks text that is stored in a column: no NUL characters.
pub fn check_text(field: &str, value: &str) -> Result<(), FieldError> {
    if value.contains('\0') {
        return Err(FieldError::new(
            field,
            "contains a NUL character (\\u0000), which cannot be stored",
        ));
    }
    Ok(())
}

/// Most queues one lease request may name.
pub const MAX_LEASE_QUEUES: usize = 1000;
/// Most job names one lease request may be limited to.
pub const MAX_LEASE_JOB_NAMES: usize = 1000;
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
    check_distinct("queues", field, queues, MAX_LEASE_QUEUES)
}

/// At most `max` distinct names in `names` (what they name: `what`). Only a long list is
/// hashed: duplicates count once.
fn check_distinct(what: &str, field: &str, names: &[String], max: usize) -> Result<(), FieldError> {
    if names.len() > max {
        let distinct: HashSet<&str> = names.iter().map(String::as_str).collect();
        if distinct.len() > max {
            return Err(FieldError::new(
                field,
                format!(
                    "names {} {what}; one lease may name at most {max}",
                    distinct.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks the job names a lease is limited to (none: any): each a valid name, at most
/// [`MAX_LEASE_JOB_NAMES`] distinct ones.
pub fn check_lease_job_names(field: &str, names: &[String]) -> Result<(), FieldError> {
    check_distinct("jobs", field, names, MAX_LEASE_JOB_NAMES)?;
    for (i, name) in names.iter().enumerate() {
        validate_name(&format!("{field}[{i}]"), name)?;
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
/// boundary, followed by `… [truncated from N bytes]`, the whole within the bound. NUL
/// characters become U+FFFD on every backend (PostgreSQL text cannot hold them), so an error
/// reads back the same wherever it is stored.
pub fn bounded_error(message: &str) -> Cow<'_, str> {
    let message: Cow<'_, str> = if message.contains('\0') {
        Cow::Owned(message.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(message)
    };
    if message.len() <= MAX_ERROR_BYTES {
        return message;
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
    use serde_json::json;

    #[test]
    fn depth_counts_containers() {
        assert_eq!(json_depth(&json!(1)), 0);
        assert_eq!(json_depth(&json!([])), 1);
        assert_eq!(json_depth(&json!({"a": [1, {"b": null}]})), 3);
        let mut deep = json!(0);
        for _ in 0..MAX_JSON_DEPTH {
            deep = json!([deep]);
        }
        assert!(check_json("payload", &deep).is_ok());
        let deeper = json!({ "x": deep });
        let e = check_json("payload", &deeper).unwrap_err();
        assert_eq!(e.field, "payload");
        assert!(e.message.contains("65 levels"), "{}", e.message);
    }

    #[test]
    fn durations_times_and_text() {
        assert!(check_duration("timeout", MAX_DURATION).is_ok());
        assert!(check_duration("timeout", MAX_DURATION + Duration::from_millis(1)).is_err());
        assert!(check_duration("timeout", Duration::from_micros(1500)).is_err());
        assert!(check_duration("timeout", Duration::MAX).is_err());
        let max: DateTime<Utc> = "9999-12-31T23:59:59.999999Z".parse().unwrap();
        assert!(check_time("run_at", max).is_ok());
        let beyond: DateTime<Utc> = "+10000-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(check_time("run_at", beyond).unwrap_err().field, "run_at");
        assert!(check_text("unique_key", "a\0b").is_err());
        assert!(check_text("unique_key", "ä ✓ \u{1}").is_ok());
    }

    #[test]
    fn nul_in_errors_becomes_the_replacement_character() {
        assert_eq!(bounded_error("a\0b"), "a\u{fffd}b");
    }

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
