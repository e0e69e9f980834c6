//! Durations as users write them: `500ms`, `30s`, `5m`, `2h`, `1d`, or a plain number of seconds.
//!
//! Parsing is exact (decimal, not floating point) and bounded: at most
//! [`crate::limits::MAX_DURATION`], in whole milliseconds. A duration beyond either is refused,
//! never rounded or clamped.

use crate::limits::MAX_DURATION;
use std::time::Duration;

/// A duration string that could not be understood, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    pub input: String,
    pub reason: &'static str,
}

const SYNTAX: &str =
    "expected a number with a unit (500ms, 30s, 5m, 2h, 1d) or a plain number of seconds";
const NEGATIVE: &str = "a duration cannot be negative";
const TOO_LONG: &str = "longer than the limit of 3650d (ten years)";
const TOO_FINE: &str = "has a fraction of a millisecond; durations are kept in whole milliseconds";

/// Parses `500ms`, `30s`, `5m`, `2h`, `1d`, `1.5s` or a plain number of seconds (`90`, `0.5`).
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_string(),
        reason,
    };
    let s = input.trim();
    if s.starts_with('-') {
        return Err(err(NEGATIVE));
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let millis_per_unit: u128 = match unit.trim() {
        "" | "s" => 1000,
        "ms" => 1,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(err(SYNTAX)),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(err(SYNTAX));
    }
    let max_millis = MAX_DURATION.as_millis();
    // Leading zeros carry no value; more significant digits than the limit has cannot fit.
    let whole = whole.trim_start_matches('0');
    if whole.len() > 20 {
        return Err(err(TOO_LONG));
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| err(SYNTAX))?
    };
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > 20 {
        return Err(err(TOO_FINE));
    }
    let scale = 10u128.pow(fraction.len() as u32);
    let fraction: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| err(SYNTAX))?
    };
    let whole_millis = whole.checked_mul(millis_per_unit).ok_or(err(TOO_LONG))?;
    let fraction_scaled = fraction * millis_per_unit;
    if !fraction_scaled.is_multiple_of(scale) {
        return Err(err(TOO_FINE));
    }
    let millis = whole_millis + fraction_scaled / scale;
    if millis > max_millis {
        return Err(err(TOO_LONG));
    }
    Ok(Duration::from_millis(millis as u64))
}

/// Formats a duration in the shortest exact unit: `1500ms`, `30s`, `5m`, `2h`, `1d`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    for (unit, size) in [("d", 86_400u128), ("h", 3600), ("m", 60)] {
        if secs >= size && secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_plain_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0.1"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1.1m"), Ok(Duration::from_millis(66_000)));
        assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3650d"), Ok(MAX_DURATION));
        assert_eq!(
            parse_duration("00000000000000000000000001s")
                .unwrap()
                .as_secs(),
            1
        );
        assert_eq!(
            parse_duration("1.50000000000000000000000000s")
                .unwrap()
                .as_millis(),
            1500
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", "s", ".", "10x", "ten", "5 m s", "1e400", "1.2.3s", "1e3",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert_eq!(e.reason, SYNTAX, "{bad}");
        }
    }

    #[test]
    fn refuses_instead_of_clamping_or_rounding() {
        for (bad, reason) in [
            ("-5s", NEGATIVE),
            ("-1", NEGATIVE),
            ("3650.001d", TOO_LONG),
            ("3651d", TOO_LONG),
            ("9223372036854775807ms", TOO_LONG),
            ("18446744073709551615ms", TOO_LONG),
            ("99999999999999999999999999999999999999999s", TOO_LONG),
            ("0.0001s", TOO_FINE),
            ("1.5ms", TOO_FINE),
        ] {
            assert_eq!(parse_duration(bad).unwrap_err().reason, reason, "{bad}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for s in ["500ms", "30s", "5m", "2h", "1d", "90s", "3650d"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}
