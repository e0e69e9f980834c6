//! Integers of request bodies, read through their JSON text: `32`, and also `32.0`, `3.2e1`
//! or `1e+16`. JSON Schema counts every number with a zero fraction as an integer (so the
//! OpenAPI document's `type: integer` admits them), and so do JSON writers that hold
//! numbers as floats. A fraction (`32.5`) or a value out of the field's range is refused,
//! naming the value; nothing is rounded.

use serde::de::{Deserialize, Deserializer, Error, Unexpected};
use serde_json::Number;

/// The value of `number` when it is a whole number that fits an `i128`.
pub fn whole(number: &Number) -> Option<i128> {
    let text = number.to_string();
    if let Ok(n) = text.parse::<i128>() {
        return Some(n);
    }
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.trim_start_matches('+').parse::<i64>().ok()?),
        None => (text.as_str(), 0),
    };
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa),
    };
    let (int, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits = format!("{int}{fraction}");
    let mut exponent = exponent.checked_sub(fraction.len() as i64)?;
    while exponent < 0 && digits.ends_with('0') {
        digits.pop();
        exponent += 1;
    }
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Some(0);
    }
    if !(0..=38).contains(&exponent) || digits.len() > 39 {
        return None;
    }
    let value = digits
        .parse::<i128>()
        .ok()?
        .checked_mul(10i128.checked_pow(exponent as u32)?)?;
    Some(if negative { -value } else { value })
}

/// An integer of type `T` from a JSON number, else an error naming the value and the range.
fn read<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128> + Bounds,
{
    let Some(number) = Option::<Number>::deserialize(de)? else {
        return Ok(None);
    };
    whole(&number)
        .and_then(|n| T::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| {
            D::Error::invalid_value(
                Unexpected::Other(&number.to_string()),
                &format!("an integer from {} to {}", T::MIN_TEXT, T::MAX_TEXT).as_str(),
            )
        })
}

/// The range of an integer type, for messages.
pub trait Bounds {
    const MIN_TEXT: &'static str;
    const MAX_TEXT: &'static str;
}

impl Bounds for i64 {
    const MIN_TEXT: &'static str = "-9223372036854775808";
    const MAX_TEXT: &'static str = "9223372036854775807";
}

impl Bounds for i32 {
    const MIN_TEXT: &'static str = "-2147483648";
    const MAX_TEXT: &'static str = "2147483647";
}

impl Bounds for u32 {
    const MIN_TEXT: &'static str = "0";
    const MAX_TEXT: &'static str = "4294967295";
}

fn required<'de, D: Deserializer<'de>, T: TryFrom<i128> + Bounds>(de: D) -> Result<T, D::Error> {
    read(de)?.ok_or_else(|| D::Error::invalid_type(Unexpected::Unit, &"an integer"))
}

/// `#[serde(deserialize_with = "hinter_core::number::i64")]`.
pub fn i64<'de, D: Deserializer<'de>>(de: D) -> Result<i64, D::Error> {
    required(de)
}

/// `#[serde(deserialize_with = "hinter_core::number::u32")]`.
pub fn u32<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    required(de)
}

/// An optional `i32` (`null` or absent: `None`; absent needs `#[serde(default)]`).
pub fn opt_i32<'de, D: Deserializer<'de>>(de: D) -> Result<Option<i32>, D::Error> {
    read(de)
}

/// An optional `u32` (`null` or absent: `None`; absent needs `#[serde(default)]`).
pub fn opt_u32<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u32>, D::Error> {
    read(de)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(text: &str) -> Number {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn whole_numbers_in_any_spelling() {
        for (text, value) in [
            ("32", 32),
            ("-196.0", -196),
            ("32.000", 32),
            ("3.2e1", 32),
            ("1e+16", 10_000_000_000_000_000),
            ("1E2", 100),
            ("-0.0", 0),
            ("0e5", 0),
            ("1000e-3", 1),
            ("1500e-2", 15),
            (
                "123456789012345678901234567890",
                123_456_789_012_345_678_901_234_567_890,
            ),
        ] {
            assert_eq!(whole(&n(text)), Some(value), "{text}");
        }
        for text in ["32.5", "1e-3", "1e400", "0.1", "1e39", "1500e-3"] {
            assert_eq!(whole(&n(text)), None, "{text}");
        }
    }

    #[test]
    fn fields_refuse_fractions_and_out_of_range() {
        #[derive(serde::Deserialize, Debug)]
        struct T {
            #[serde(deserialize_with = "super::u32")]
            a: u32,
            #[serde(default, deserialize_with = "super::opt_i32")]
            b: Option<i32>,
        }
        let t: T = serde_json::from_str(r#"{"a": 5.0, "b": -2e0}"#).unwrap();
        assert_eq!((t.a, t.b), (5, Some(-2)));
        let t: T = serde_json::from_str(r#"{"a": 1}"#).unwrap();
        assert_eq!(t.b, None);
        for bad in [
            r#"{"a": -1}"#,
            r#"{"a": 1.5}"#,
            r#"{"a": 4294967296}"#,
            r#"{"a": "1"}"#,
        ] {
            let e = serde_json::from_str::<T>(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid"), "{bad}: {e}");
        }
    }
}
