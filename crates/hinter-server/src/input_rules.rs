//! The input rules of the API in its OpenAPI document, where the handlers' `#[utoipa::path]`
//! and the body types cannot say them by themselves: one table for the parameters of every
//! route (a `queue` filter is checked the same everywhere, so it is described once), and
//! the rules of bodies that tie fields together (`cron` or `at`; `run_at` or `delay`;
//! `unique_for` needs `unique_key`).
//!
//! Every rule here is one the server enforces (the names of the checks are given); the fuzz
//! test (`crates/hinter/tests/api_fuzz.rs`) sends requests that match the document and
//! requests that do not, and fails when the first are refused or the second accepted.
//!
//! Query parameters: an empty value (`?queue=`) means the parameter is absent, throughout the
//! API, so every string pattern of a query parameter admits the empty string, and an enum
//! lists `""`. Unknown query parameters are refused (400) by every route that reads
//! parameters.

use hinter_core::openapi::{duration_pattern, job_name_pattern, name_pattern, or_empty};
use serde_json::{json, Value};
use std::time::Duration;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Components, OpenApi as Document, RefOr};

/// Longest wait a query asks for that is accepted (then cut to `--max-wait`).
const MAX_WAIT: Duration = hinter_core::limits::MAX_DURATION;

/// A job id as `Uuid::parse_str` reads it, in its usual (hyphenated) form.
pub const UUID_PATTERN: &str =
    "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$";

/// `include` of a job listing (`Include::from_str`): comma-separated names, blanks around
/// them and empty items ignored.
const INCLUDE_PATTERN: &str =
    r"^\s*(?:payload|result|errors|runs|all)?\s*(?:,\s*(?:payload|result|errors|runs|all)?\s*)*$";

/// A worker process id, as a path segment (`workers::check_text`): 1 to 200 characters, no
/// NUL.
const WORKER_ID_PATTERN: &str = r"^[^\u0000]{1,200}$";

/// `Idempotency-Key` (`idempotency::key`): 1 to 255 printable ASCII characters.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[ -~]{1,255}$";

fn string(pattern: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .into()
}

fn string_enum<I: IntoIterator<Item = &'static str>>(values: I) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .into()
}

/// The schema of a parameter by where it is and its name (`path` tells the routes apart
/// where one name means two things); `None`: the handler's own schema stands.
fn parameter_schema(path: &str, location: &ParameterIn, name: &str) -> Option<RefOr<Schema>> {
    match (location, name) {
        (ParameterIn::Path, "name") => Some(string(&name_pattern())),
        (ParameterIn::Path, "job") => Some(string(&job_name_pattern())),
        (ParameterIn::Path, "id") if path.starts_with("/api/v1/workers/") => {
            Some(string(WORKER_ID_PATTERN))
        }
        (ParameterIn::Query, "queue" | "job") => Some(string(&or_empty(&name_pattern()))),
        (ParameterIn::Query, "job_id") => Some(string(&or_empty(UUID_PATTERN))),
        (ParameterIn::Query, "wait") => Some(string(&or_empty(&duration_pattern(
            Duration::ZERO,
            MAX_WAIT,
        )))),
        // Any duration: the server cuts it to 100ms..1h (`events::parse_every`), as `wait`
        // to `--max-wait`.
        (ParameterIn::Query, "every") => Some(string(&or_empty(&duration_pattern(
            Duration::ZERO,
            MAX_WAIT,
        )))),
        (ParameterIn::Query, "cursor") => Some(string(&or_empty(crate::jobs::CURSOR_PATTERN))),
        (ParameterIn::Query, "include") => Some(string(INCLUDE_PATTERN)),
        (ParameterIn::Query, "state") => Some(string_enum(
            std::iter::once("").chain(hinter_core::JobState::ALL.iter().map(|s| s.as_str())),
        )),
        (ParameterIn::Query, "window") => Some(string_enum(["", "1h", "60m", "1d", "24h"])),
        (ParameterIn::Header, "Idempotency-Key") => Some(string(IDEMPOTENCY_KEY_PATTERN)),
        _ => None,
    }
}

/// Applies the parameter table to `operation` of `path`; any other query parameter (a
/// number, a time) admits the empty string besides its own schema.
fn parameters(path: &str, operation: &mut Operation) {
    for parameter in operation.parameters.iter_mut().flatten() {
        if let Some(schema) = parameter_schema(path, &parameter.parameter_in, &parameter.name) {
            parameter.schema = Some(schema);
        } else if parameter.parameter_in == ParameterIn::Query {
            if let Some(own) = parameter.schema.take() {
                let empty = ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(0));
                parameter.schema = Some(
                    AnyOfBuilder::new()
                        .item(own)
                        .item(empty)
                        .description(Some("Empty: as absent."))
                        .into(),
                );
            }
        }
    }
}

/// Sets extra JSON Schema keywords (`oneOf`, `allOf`…) on the component `name`, an object.
fn add_keywords(components: &mut Components, name: &str, keywords: Value) {
    let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(name) else {
        return;
    };
    let Value::Object(keywords) = keywords else {
        return;
    };
    let extensions = object.extensions.get_or_insert_with(Default::default);
    for (key, value) in keywords {
        extensions.insert(key, value);
    }
}

/// Present and not `null`.
fn given(field: &str) -> Value {
    json!({"required": [field], "properties": {field: {"not": {"type": "null"}}}})
}

/// The rules tying fields of a body together.
fn bodies(components: &mut Components) {
    // ScheduleSpec::validate: exactly one of `cron` and `at`.
    let cron_or_at = json!({"oneOf": [given("cron"), given("at")]});
    // PUT /api/v1/schedules/{name}: the body without `name` (the path's); a `name` other
    // than the path's is 422, one equal to it is taken.
    if let Some(RefOr::T(Schema::Object(spec))) = components.schemas.get("ScheduleSpec") {
        let mut replace = spec.clone();
        replace.properties.remove("name");
        replace.required.retain(|field| field != "name");
        replace.description = Some(
            "A schedule as `PUT /api/v1/schedules/{name}` takes it: `name` is the path's \
             (given in the body too, it must be the same)."
                .into(),
        );
        components
            .schemas
            .insert(REPLACE_SCHEDULE.into(), RefOr::T(Schema::Object(replace)));
    }
    add_keywords(components, "ScheduleSpec", cron_or_at.clone());
    add_keywords(components, REPLACE_SCHEDULE, cron_or_at);
    // JobSpec::validate: not both `run_at` and `delay`; `unique_for` only with `unique_key`.
    add_keywords(
        components,
        "JobSpec",
        json!({
            "not": {"allOf": [given("run_at"), given("delay")]},
            "anyOf": [
                {"not": given("unique_for")},
                given("unique_key"),
            ],
        }),
    );
}

/// The component the replace route reads.
pub const REPLACE_SCHEDULE: &str = "ScheduleReplace";

/// States the input rules in `doc` (see the module doc).
pub fn apply(doc: &mut Document) {
    if let Some(components) = doc.components.as_mut() {
        bodies(components);
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        for operation in [
            item.get.as_mut(),
            item.post.as_mut(),
            item.put.as_mut(),
            item.delete.as_mut(),
            item.patch.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            parameters(path, operation);
            if path == "/api/v1/schedules/{name}" && item_is_put(operation) {
                replace_body(operation);
            }
        }
    }
}

/// Whether `operation` is the replace of a schedule (its operation id).
fn item_is_put(operation: &Operation) -> bool {
    operation.operation_id.as_deref() == Some("replace_schedule")
}

/// Points the replace route's body at [`REPLACE_SCHEDULE`].
fn replace_body(operation: &mut Operation) {
    let Some(body) = operation.request_body.as_mut() else {
        return;
    };
    for content in body.content.values_mut() {
        content.schema = Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
            REPLACE_SCHEDULE,
        )));
    }
}
