//! Schemas the derives cannot read from the Rust types (feature `openapi`): durations,
//! which travel as text (`"30s"`) rather than as the `std::time::Duration` they hold, and the
//! input rules of names and durations as patterns, so the OpenAPI document states what the
//! server accepts (its fuzz test checks both ways: what matches is accepted, what does not
//! is refused).
//!
//! The patterns are built from the same constants the checks use ([`crate::limits`],
//! [`crate::definition::MAX_NAME_LEN`]); they are plain ECMA-262 / Python regular
//! expressions (one negative lookahead, for the reserved job name prefix).

use std::borrow::Cow;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;

use crate::definition::MAX_NAME_LEN;
use crate::followup::RESERVED_PREFIX;
use crate::limits::MAX_DURATION;

/// The body of a name ([`crate::definition::validate_name`]): 1 to 200 of letters, digits,
/// `-`, `_`, `.`, `:`, but not `.` or `..`.
fn name_body() -> String {
    let all = "[A-Za-z0-9._:-]";
    let no_dot = "[A-Za-z0-9_:-]";
    format!("{all}{{3,{MAX_NAME_LEN}}}|{no_dot}{all}?|\\.{no_dot}",)
}

/// A queue or schedule name, whole.
pub fn name_pattern() -> String {
    format!("^(?:{})$", name_body())
}

/// A job definition's name: a name not starting with the reserved `hinter.`.
pub fn job_name_pattern() -> String {
    format!(
        "^(?!{})(?:{})$",
        RESERVED_PREFIX.replace('.', "\\."),
        name_body()
    )
}

/// `pattern` allowing the empty string too: a query filter left empty is absent.
pub fn or_empty(pattern: &str) -> String {
    let inner = pattern
        .strip_prefix('^')
        .and_then(|p| p.strip_suffix('$'))
        .unwrap_or(pattern);
    format!("^(?:{inner})?$")
}

/// Units of [`crate::parse_duration`]: suffix, milliseconds, and how many fraction digits
/// keep a value in whole milliseconds (`1.001s`, `1.0001m`, `1.00001h`).
const UNITS: [(&str, u64, usize); 5] = [
    ("ms", 1, 0),
    ("s", 1000, 3),
    ("m", 60_000, 4),
    ("h", 3_600_000, 5),
    ("d", 86_400_000, 5),
];

/// Alternatives matching the decimal integers from `lo` to `hi` (no leading zeros).
fn int_range(lo: u64, hi: u64) -> Vec<String> {
    if lo > hi {
        return Vec::new();
    }
    let (a, b) = (lo.to_string(), hi.to_string());
    if a.len() == b.len() {
        return same_length(&a, &b);
    }
    // Up to the next power of ten, then every whole length below `hi`'s in one piece.
    let power = 10u64.pow(a.len() as u32 - 1);
    let mut out = Vec::new();
    let mut from = a.len();
    if lo != power {
        out.extend(same_length(&a, &"9".repeat(a.len())));
        from += 1;
    }
    let to = b.len() - 1;
    if from <= to {
        out.push(match (from - 1, to - 1) {
            (0, 0) => "[1-9]".to_string(),
            (1, 1) => "[1-9][0-9]".to_string(),
            (x, y) if x == y => format!("[1-9][0-9]{{{x}}}"),
            (x, y) => format!("[1-9][0-9]{{{x},{y}}}"),
        });
    }
    out.extend(same_length(&format!("1{}", "0".repeat(to)), &b));
    out
}

/// Alternatives for the digit strings of one length from `a` to `b`.
fn same_length(a: &str, b: &str) -> Vec<String> {
    if a.is_empty() {
        return vec![String::new()];
    }
    if a == b {
        return vec![a.to_string()];
    }
    let (a0, b0) = (a.as_bytes()[0] - b'0', b.as_bytes()[0] - b'0');
    let (a_rest, b_rest) = (&a[1..], &b[1..]);
    if a0 == b0 {
        return same_length(a_rest, b_rest)
            .into_iter()
            .map(|r| format!("{a0}{r}"))
            .collect();
    }
    let rest = a_rest.len();
    let any = match rest {
        0 => String::new(),
        1 => "[0-9]".to_string(),
        n => format!("[0-9]{{{n}}}"),
    };
    // The first digit's whole decade (`a0` followed by anything) when `a` starts it, and the
    // same for `b`: one class for every such first digit.
    let (low_whole, high_whole) = (
        a_rest.bytes().all(|c| c == b'0'),
        b_rest.bytes().all(|c| c == b'9'),
    );
    let mut out = Vec::new();
    if !low_whole {
        out.extend(
            same_length(a_rest, &"9".repeat(rest))
                .into_iter()
                .map(|r| format!("{a0}{r}")),
        );
    }
    let (from, to) = (
        if low_whole { a0 } else { a0 + 1 },
        if high_whole { b0 } else { b0 - 1 },
    );
    if from <= to {
        let digits = if from == to {
            from.to_string()
        } else {
            format!("[{from}-{to}]")
        };
        out.push(format!("{digits}{any}"));
    }
    if !high_whole {
        out.extend(
            same_length(&"0".repeat(rest), b_rest)
                .into_iter()
                .map(|r| format!("{b0}{r}")),
        );
    }
    out
}

fn alternatives(parts: &[String]) -> String {
    format!("(?:{})", parts.join("|"))
}

/// The text of a duration from `min` to `max` as [`crate::parse_duration`] reads it: a
/// number (leading zeros allowed) with a unit (`ms`, `s`, `m`, `h`, `d`; none: seconds).
///
/// With `min` zero or a millisecond, fractions are described as the parser takes them
/// (`1.5s`, `.5m`, `0.25h`: in whole milliseconds); with a larger `min` (a lease's `1s`)
/// only whole numbers of each unit, a subset that keeps the pattern short.
pub fn duration_pattern(min: std::time::Duration, max: std::time::Duration) -> String {
    let (min, max) = (min.as_millis() as u64, max.as_millis() as u64);
    let mut units = Vec::new();
    for (unit, size, digits) in UNITS {
        let top = max / size;
        let mut numbers = Vec::new();
        if min <= 1 {
            // Whole part below the top: any fraction in whole milliseconds.
            let fraction = if digits == 0 {
                "(?:\\.0*)?".to_string()
            } else {
                format!("(?:\\.[0-9]{{0,{digits}}}0*)?")
            };
            let below = int_range(1, top.saturating_sub(1));
            if !below.is_empty() {
                numbers.push(format!("{}{fraction}", alternatives(&below)));
            }
            if top >= 1 && top * size == max {
                numbers.push(format!("{top}(?:\\.0*)?"));
            }
            if digits > 0 {
                // Nothing before the point but zeros: the fraction is not zero.
                numbers.push(format!("\\.[0-9]{{0,{}}}[1-9]0*", digits - 1));
            }
            if min == 0 {
                numbers.push("0(?:\\.0*)?|\\.0+".to_string());
            }
        } else {
            let low = min.div_ceil(size).max(1);
            let whole = int_range(low, top);
            if !whole.is_empty() {
                numbers.push(format!("{}(?:\\.0*)?", alternatives(&whole)));
            }
        }
        if numbers.is_empty() {
            continue;
        }
        let suffix = if unit == "s" { "s?" } else { unit };
        units.push(format!("0*{}{suffix}", alternatives(&numbers)));
    }
    format!("^{}$", alternatives(&units))
}

/// A duration as answers write it: `500ms`, `30s`, `5m`, `2h`, `1d`.
pub struct DurationText;

impl utoipa::PartialSchema for DurationText {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A duration: a number with a unit (`500ms`, `30s`, `5m`, `2h`, `1d`).",
            ))
            .examples(["30s"])
            .into()
    }
}

impl utoipa::ToSchema for DurationText {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Duration")
    }
}

/// A duration of a request body, from `min` to `max`: the text form, or a JSON number of
/// seconds in whole milliseconds.
fn duration_input(
    min: std::time::Duration,
    max: std::time::Duration,
    exclusive_min: bool,
    description: &str,
) -> RefOr<Schema> {
    let mut number = ObjectBuilder::new()
        .schema_type(Type::Number)
        .maximum(Some(max.as_secs_f64()))
        .multiple_of(Some(0.001))
        .description(Some("Seconds, in whole milliseconds (`0.5`)."));
    number = if exclusive_min {
        number.exclusive_minimum(Some(min.as_secs_f64()))
    } else {
        number.minimum(Some(min.as_secs_f64()))
    };
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(duration_pattern(
                    if exclusive_min {
                        std::time::Duration::from_millis(1)
                    } else {
                        min
                    },
                    max,
                )))
                .description(Some(
                    "A number with a unit (`500ms`, `30s`, `5m`, `2h`, `1d`) or a plain \
                     number of seconds (`90`, `0.5`).",
                ))
                .examples(["30s"]),
        )
        .item(number)
        .description(Some(description))
        .into()
}

/// A duration as requests may give it: the text form, or a JSON number of seconds. At most
/// `3650d`, in whole milliseconds, not negative (else 422 naming the field).
pub struct DurationInput;

impl utoipa::PartialSchema for DurationInput {
    fn schema() -> RefOr<Schema> {
        duration_input(
            std::time::Duration::ZERO,
            MAX_DURATION,
            false,
            "A duration: text such as `30s` or a number of seconds; at most `3650d`, in \
             whole milliseconds, not negative.",
        )
    }
}

impl utoipa::ToSchema for DurationInput {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("DurationInput")
    }
}

/// [`DurationInput`] greater than zero (a job's `timeout`).
pub struct PositiveDurationInput;

impl utoipa::PartialSchema for PositiveDurationInput {
    fn schema() -> RefOr<Schema> {
        duration_input(
            std::time::Duration::ZERO,
            MAX_DURATION,
            true,
            "A duration greater than zero: text such as `30s` or a number of seconds; at \
             most `3650d`, in whole milliseconds.",
        )
    }
}

impl utoipa::ToSchema for PositiveDurationInput {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("PositiveDurationInput")
    }
}

/// A lease's length: 1s to 1h.
pub struct LeaseDurationInput;

impl utoipa::PartialSchema for LeaseDurationInput {
    fn schema() -> RefOr<Schema> {
        duration_input(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(3600),
            false,
            "A lease's length, from `1s` to `1h`: text such as `30s` (whole numbers of a \
             unit) or a number of seconds.",
        )
    }
}

impl utoipa::ToSchema for LeaseDurationInput {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("LeaseDurationInput")
    }
}

/// A queue (or schedule) name: 1 to 200 of letters, digits, `-`, `_`, `.`, `:`, but not
/// `.` or `..`.
pub struct Name;

impl utoipa::PartialSchema for Name {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(name_pattern()))
            .description(Some(
                "1 to 200 of letters, digits, `-`, `_`, `.`, `:`, but not `.` or `..`.",
            ))
            .examples(["default"])
            .into()
    }
}

impl utoipa::ToSchema for Name {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Name")
    }
}

/// A job definition's name: a [`Name`] not starting with `hinter.` (hinter's own jobs).
pub struct JobName;

impl utoipa::PartialSchema for JobName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(job_name_pattern()))
            .description(Some(
                "1 to 200 of letters, digits, `-`, `_`, `.`, `:`, but not `.` or `..`, and \
                 not starting with `hinter.` (kept for hinter's own jobs).",
            ))
            .examples(["thumbnail"])
            .into()
    }
}

impl utoipa::ToSchema for JobName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("JobName")
    }
}

/// A cron expression as [`crate::schedule::CronSchedule::parse`] reads it, as far as a
/// pattern can say: five fields (minute hour day month weekday), each `*`, `*/STEP` or a
/// list of values in the field's range; or an alias (`@hourly`, `@daily`, `@midnight`,
/// `@weekly`, `@monthly`, `@yearly`, `@annually`). The parser takes more (six fields with
/// seconds, ranges, names such as `MON`, `L`, `#`): those are accepted too, the pattern
/// describes the common subset.
pub fn cron_pattern() -> String {
    // (values, steps) per field.
    let fields = [
        ("[1-5]?[0-9]", "[1-9]|[1-5][0-9]"),
        ("1?[0-9]|2[0-3]", "[1-9]|1[0-9]|2[0-3]"),
        ("[1-9]|[12][0-9]|3[01]", "[1-9]|[12][0-9]|3[01]"),
        ("[1-9]|1[0-2]", "[1-9]|1[0-2]"),
        ("[0-6]", "[1-6]"),
    ];
    let field = |(value, step): (&str, &str)| {
        format!("(?:\\*(?:/(?:{step}))?|(?:{value})(?:,(?:{value}))*)")
    };
    let five: Vec<String> = fields.into_iter().map(field).collect();
    format!(
        "^(?:{}|@(?:hourly|daily|midnight|weekly|monthly|yearly|annually))$",
        five.join(" ")
    )
}

/// A schedule's `cron` ([`cron_pattern`]).
pub struct Cron;

impl utoipa::PartialSchema for Cron {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(cron_pattern()))
            .description(Some(
                "A cron expression: five fields (minute hour day month weekday), each `*`, \
                 `*/STEP` or a list of values; or `@hourly`, `@daily`, `@midnight`, \
                 `@weekly`, `@monthly`, `@yearly`, `@annually`. The server also takes six \
                 fields (seconds first), ranges, names (`MON`), `L` and `#`.",
            ))
            .examples(["*/5 * * * *"])
            .into()
    }
}

impl utoipa::ToSchema for Cron {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Cron")
    }
}

/// An IANA time zone name, as the schedule's `time_zone` takes it.
pub struct TimeZone;

impl utoipa::PartialSchema for TimeZone {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())))
            .description(Some("An IANA time zone name (`UTC`, `Europe/Paris`)."))
            .examples(["UTC"])
            .into()
    }
}

impl utoipa::ToSchema for TimeZone {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("TimeZone")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `text` matches one alternative of [`int_range`]: digits, `[a-b]`,
    /// `[a-b]{n}`, `[a-b]{m,n}`.
    fn matches(piece: &str, text: &str) -> bool {
        // (low, high, least, most) per token.
        let mut tokens: Vec<(u8, u8, usize, usize)> = Vec::new();
        let bytes = piece.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let (lo, hi) = if bytes[i] == b'[' {
                i += 5;
                (bytes[i - 4], bytes[i - 2])
            } else {
                i += 1;
                (bytes[i - 1], bytes[i - 1])
            };
            let (mut least, mut most) = (1, 1);
            if bytes.get(i) == Some(&b'{') {
                let end = piece[i..].find('}').unwrap() + i;
                let inner = &piece[i + 1..end];
                (least, most) = match inner.split_once(',') {
                    Some((m, n)) => (m.parse().unwrap(), n.parse().unwrap()),
                    None => (inner.parse().unwrap(), inner.parse().unwrap()),
                };
                i = end + 1;
            }
            tokens.push((lo, hi, least, most));
        }
        fn walk(tokens: &[(u8, u8, usize, usize)], text: &[u8]) -> bool {
            let Some(&(lo, hi, least, most)) = tokens.first() else {
                return text.is_empty();
            };
            (least..=most).any(|n| {
                n <= text.len()
                    && text[..n].iter().all(|c| lo <= *c && *c <= hi)
                    && walk(&tokens[1..], &text[n..])
            })
        }
        walk(&tokens, text.as_bytes())
    }

    #[test]
    fn integer_ranges_match_exactly_their_numbers() {
        for (lo, hi) in [
            (1, 9),
            (5, 5),
            (1, 3649),
            (1, 3600),
            (100, 3600),
            (7, 1234),
            (10, 99),
            (10, 100_000),
            (1, 87_599),
            (1000, 99_999),
        ] {
            let pieces = int_range(lo, hi);
            for n in 0..=100_000u64 {
                let text = n.to_string();
                let matched = pieces.iter().any(|p| matches(p, &text));
                assert_eq!(
                    matched,
                    (lo..=hi).contains(&n),
                    "{lo}..={hi}: {n} ({pieces:?})"
                );
            }
        }
        assert!(int_range(2, 1).is_empty());
    }

    #[test]
    fn patterns_have_their_bounds() {
        let max = duration_pattern(std::time::Duration::ZERO, MAX_DURATION);
        assert!(max.contains("|3650(?:\\.0*)?|"), "{max}");
        assert!(max.contains("0(?:\\.0*)?|\\.0+"), "{max}");
        let positive = duration_pattern(std::time::Duration::from_millis(1), MAX_DURATION);
        assert!(!positive.contains("\\.0+"), "{positive}");
        let lease = duration_pattern(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(3600),
        );
        assert!(lease.contains("0*(?:(?:1)(?:\\.0*)?)h"), "{lease}");
        assert!(!lease.contains(")d"), "{lease}");
        assert_eq!(or_empty("^(?:a)$"), "^(?:(?:a))?$");
        assert!(name_pattern().starts_with("^(?:[A-Za-z0-9._:-]{3,200}|"));
        assert!(job_name_pattern().starts_with("^(?!hinter\\.)"));
    }
}
