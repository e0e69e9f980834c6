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

use crate::definition::FieldError;
use chrono::{DateTime, Datelike, Utc};
use serde_json::Value;
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
    if value.subsec_nanos() % 1_000_000 != 0 {
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
}
