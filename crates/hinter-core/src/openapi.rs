//! Schemas the derives cannot read from the Rust types (feature `openapi`): durations,
//! which travel as text (`"30s"`) rather than as the `std::time::Duration` they hold.

use std::borrow::Cow;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;

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

/// A duration as requests may give it: the text form, or a JSON number of seconds. At most
/// `3650d`, in whole milliseconds, not negative (else 422 naming the field).
pub struct DurationInput;

impl utoipa::PartialSchema for DurationInput {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some(
                        "A number with a unit (`500ms`, `30s`, `5m`, `2h`, `1d`) or a plain \
                         number of seconds (`90`, `0.5`).",
                    ))
                    .examples(["30s"]),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .minimum(Some(0))
                    .description(Some("Seconds, in whole milliseconds (`0.5`).")),
            )
            .description(Some(
                "A duration: text such as `30s` or a number of seconds; at most `3650d`, in \
                 whole milliseconds, not negative.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for DurationInput {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("DurationInput")
    }
}
