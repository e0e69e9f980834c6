//! Job definitions and the one place where an enqueue request becomes a [`NewJob`]:
//! validation, then defaults (job options > definition > built-in defaults).

use crate::job::{NewJob, DEFAULT_QUEUE};
use crate::limits;
use crate::retry::DEFAULT_MAX_ATTEMPTS;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use uuid::Uuid;

/// Settings of a named kind of work.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobDefinition {
    pub name: String,
    pub queue: Option<String>,
    pub max_attempts: Option<u32>,
    pub timeout: Option<Duration>,
    /// Never two jobs of this definition running at once, across all processes.
    pub singleton: bool,
}

/// A request to enqueue one job, as it comes from the API, the CLI or the library, and as the
/// client sends it (`hinter_client::EnqueueRequest`; only the options that are set).
/// Unset options fall back to the job's definition, then to built-in defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::JobName))]
    pub job: String,
    /// Any JSON, nested at most 64 levels.
    #[serde(default)]
    pub payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::openapi::Name>))]
    pub queue: Option<String>,
    /// -1000 to 1000; higher runs first.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "exact_priority"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = -1000, maximum = 1000))]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::job::opt_duration"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::openapi::DurationInput>))]
    pub delay: Option<Duration>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::number::opt_u32"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub max_attempts: Option<u32>,
    /// 1 to 1000 bytes (UTF-8), no NUL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 1000, pattern = "^[^\\u0000]*$")
    )]
    pub unique_key: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::job::opt_duration"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::openapi::DurationInput>))]
    pub unique_for: Option<Duration>,
    /// 1 to 1000 bytes (UTF-8), no NUL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 1000, pattern = "^[^\\u0000]*$")
    )]
    pub ordering_key: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::job::opt_duration"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::openapi::PositiveDurationInput>))]
    pub timeout: Option<Duration>,
    /// A queue that gets a reply message when the job finishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::openapi::Name>))]
    pub reply_to: Option<String>,
    /// Carried by the reply message and the callback, to match them with the request (1 to
    /// 1000 bytes of UTF-8, no NUL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 1000, pattern = "^[^\\u0000]*$")
    )]
    pub correlation_id: Option<String>,
    /// An absolute http(s) URL with a host, at most 2048 bytes, that gets a signed POST with
    /// the outcome when the job finishes. Refused (422) by a server without
    /// `--callback-secret`, and when its host is an address the server's policy refuses
    /// (loopback, private… unless `--callback-allow-net`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 2048, pattern = "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]")
    )]
    pub callback_url: Option<String>,
}

/// A priority read through its exact JSON text first, so a number beyond any integer type
/// (`1e400`, `2147483648`, `1.5`) is an error naming the field, not a JSON syntax error; a
/// whole number in any spelling (`5.0`) is that integer ([`crate::number`]).
pub(crate) fn exact_priority<'de, D: serde::Deserializer<'de>>(
    de: D,
) -> Result<Option<i32>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(de)? else {
        return Ok(None);
    };
    crate::number::whole(&number)
        .and_then(|n| i32::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| {
            serde::de::Error::custom(format_args!(
                "{number} is not an integer in {}..={}",
                PRIORITY_RANGE.start(),
                PRIORITY_RANGE.end()
            ))
        })
}

/// An invalid field of a [`JobSpec`]; `field` is its name as on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error for an item of a list: `jobs[3].priority`.
    pub fn within(self, prefix: &str) -> Self {
        Self {
            field: format!("{prefix}.{}", self.field),
            message: self.message,
        }
    }
}

/// Longest job, queue, key name accepted.
pub const MAX_NAME_LEN: usize = 200;
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;
pub const MAX_ATTEMPTS_RANGE: std::ops::RangeInclusive<u32> = 1..=1000;

/// Checks a job or queue name: 1–200 of letters, digits, `-`, `_`, `.`, `:`, other than
/// `.` and `..`.
pub fn validate_name(field: &str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() || value.len() > MAX_NAME_LEN {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {MAX_NAME_LEN} characters long"),
        ));
    }
    if value == "." || value == ".." {
        // They would name the parent or the same path segment in a URL.
        return Err(FieldError::new(
            field,
            format!("{value:?} is not a usable name; it must not be '.' or '..'"),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(FieldError::new(
            field,
            format!("{value:?} contains {c:?}; use letters, digits, '-', '_', '.', ':'"),
        ));
    }
    Ok(())
}

fn validate_key(field: &str, value: &Option<String>) -> Result<(), FieldError> {
    match value {
        Some(v) if v.is_empty() || v.len() > 1000 => Err(FieldError::new(
            field,
            "must be 1 to 1000 bytes long (UTF-8)",
        )),
        Some(v) => crate::limits::check_text(field, v),
        None => Ok(()),
    }
}

impl JobSpec {
    /// A job with every option left to the definition and the defaults.
    pub fn new(job: impl Into<String>, payload: Value) -> Self {
        Self {
            job: job.into(),
            payload,
            ..Self::default()
        }
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }
    pub fn unique(mut self, key: impl Into<String>, window: Option<Duration>) -> Self {
        self.unique_key = Some(key.into());
        self.unique_for = window;
        self
    }
    pub fn ordering_key(mut self, key: impl Into<String>) -> Self {
        self.ordering_key = Some(key.into());
        self
    }
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
    /// When the job finishes, put a reply message on `queue`, carrying `correlation_id`.
    pub fn reply_to(mut self, queue: impl Into<String>, correlation_id: Option<String>) -> Self {
        self.reply_to = Some(queue.into());
        self.correlation_id = correlation_id;
        self
    }
    /// When the job finishes, post its outcome to `url`.
    pub fn callback_url(mut self, url: impl Into<String>) -> Self {
        self.callback_url = Some(url.into());
        self
    }

    /// Checks every field; the first problem found is returned, naming the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        crate::followup::check_job_name("job", &self.job)?;
        if let Some(queue) = &self.queue {
            validate_name("queue", queue)?;
        }
        if let Some(queue) = &self.reply_to {
            validate_name("reply_to", queue)?;
        }
        validate_key("correlation_id", &self.correlation_id)?;
        if let Some(url) = &self.callback_url {
            crate::followup::check_callback_url("callback_url", url)?;
        }
        if let Some(p) = self.priority {
            if !PRIORITY_RANGE.contains(&p) {
                return Err(FieldError::new(
                    "priority",
                    format!("{p} is out of range -1000..=1000"),
                ));
            }
        }
        if self.run_at.is_some() && self.delay.is_some() {
            return Err(FieldError::new(
                "delay",
                "give either run_at or delay, not both",
            ));
        }
        if let Some(n) = self.max_attempts {
            if !MAX_ATTEMPTS_RANGE.contains(&n) {
                return Err(FieldError::new(
                    "max_attempts",
                    format!("{n} is out of range 1..=1000"),
                ));
            }
        }
        validate_key("unique_key", &self.unique_key)?;
        validate_key("ordering_key", &self.ordering_key)?;
        if self.unique_for.is_some() && self.unique_key.is_none() {
            return Err(FieldError::new("unique_for", "requires unique_key"));
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(FieldError::new("timeout", "must be greater than zero"));
        }
        for (field, value) in [
            ("delay", self.delay),
            ("unique_for", self.unique_for),
            ("timeout", self.timeout),
        ] {
            if let Some(value) = value {
                limits::check_duration(field, value)?;
            }
        }
        if let Some(at) = self.run_at {
            limits::check_time("run_at", at)?;
        }
        limits::check_json("payload", &self.payload)
    }
}

/// How a loaded definition is described to users (`GET /api/v1/definitions`): script
/// folders with what runs them and their settings, or the error that keeps one from loading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DefinitionInfo {
    pub name: String,
    /// `triggered`, `continuous` (script folders) or `code` (registered in Rust).
    pub kind: String,
    /// The job's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// The file that runs, relative to the folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// What runs it: `["python3"]`, `["java", "-jar"]`; empty for a file run directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<Vec<String>>,
    /// The effective settings (settings.job over the defaults); `null` when they could not
    /// be read.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub settings: Value,
    /// Why the definition cannot run; `None` when it is loaded.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub error: Option<String>,
    /// What a continuous job is doing now (state, pid, restarts, last exit, last lines),
    /// filled in by [`Definitions::describe`] from the status source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

/// Where [`Definitions::describe`] gets the live status of a continuous job by name.
pub type StatusSource = Arc<dyn Fn(&str) -> Option<Value> + Send + Sync>;

#[derive(Default)]
struct Loaded {
    by_name: HashMap<String, JobDefinition>,
    catalog: Vec<DefinitionInfo>,
    status: Option<StatusSource>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("by_name", &self.by_name)
            .field("catalog", &self.catalog)
            .finish_non_exhaustive()
    }
}

/// The registry of job definitions, shared by the API, the engine and the library.
#[derive(Debug, Clone, Default)]
pub struct Definitions(Arc<RwLock<Loaded>>);

impl Definitions {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&self, definition: JobDefinition) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .by_name
            .insert(definition.name.clone(), definition);
    }

    pub fn get(&self, name: &str) -> Option<JobDefinition> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_name
            .get(name)
            .cloned()
    }

    /// Every definition, sorted by name.
    pub fn all(&self) -> Vec<JobDefinition> {
        let loaded = self.0.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<JobDefinition> = loaded.by_name.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Replaces every definition and the catalog at once (a reload of the job folders):
    /// an enqueue sees the old set or the new one, never a mix.
    pub fn replace_all(&self, definitions: Vec<JobDefinition>, catalog: Vec<DefinitionInfo>) {
        let mut loaded = self.0.write().unwrap_or_else(|e| e.into_inner());
        loaded.by_name = definitions
            .into_iter()
            .map(|d| (d.name.clone(), d))
            .collect();
        loaded.catalog = catalog;
    }

    /// Sets where the live status of continuous jobs comes from (`describe` asks it for
    /// each `continuous` entry).
    pub fn set_status_source(&self, source: StatusSource) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).status = Some(source);
    }

    /// What `GET /api/v1/definitions` lists: the catalog (script folders, with errors), then
    /// every other definition as `code`, each sorted by name.
    pub fn describe(&self) -> Vec<DefinitionInfo> {
        let loaded = self.0.read().unwrap_or_else(|e| e.into_inner());
        let mut out = loaded.catalog.clone();
        if let Some(source) = &loaded.status {
            for info in out.iter_mut().filter(|i| i.kind == "continuous") {
                info.status = source(&info.name);
            }
        }
        let mut code: Vec<DefinitionInfo> = loaded
            .by_name
            .values()
            .filter(|d| !out.iter().any(|info| info.name == d.name))
            .map(|d| DefinitionInfo {
                name: d.name.clone(),
                kind: "code".into(),
                folder: None,
                file: None,
                interpreter: None,
                settings: serde_json::json!({
                    "queue": d.queue,
                    "max_attempts": d.max_attempts,
                    "timeout": d.timeout.map(crate::format_duration),
                    "is_singleton": d.singleton,
                }),
                error: None,
                status: None,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.kind.cmp(&b.kind)));
        code.sort_by(|a, b| a.name.cmp(&b.name));
        out.extend(code);
        out
    }

    /// Validates a request and fills in defaults: the job's own options win, then its
    /// definition's, then hinter's.
    pub fn resolve(&self, spec: JobSpec, now: DateTime<Utc>) -> Result<NewJob, FieldError> {
        spec.validate()?;
        let definition = self.get(&spec.job).unwrap_or_default();
        let run_at = match (spec.run_at, spec.delay) {
            (Some(at), _) => Some(at),
            (None, Some(delay)) => Some(
                chrono::Duration::from_std(delay)
                    .ok()
                    .and_then(|delay| now.checked_add_signed(delay))
                    .ok_or_else(|| FieldError::new("delay", "is too long"))?,
            ),
            (None, None) => None,
        };
        let job = NewJob {
            id: Uuid::now_v7(),
            queue: spec
                .queue
                .or(definition.queue)
                .unwrap_or_else(|| DEFAULT_QUEUE.to_string()),
            job: spec.job,
            payload: spec.payload,
            priority: spec.priority.unwrap_or(0),
            run_at,
            max_attempts: spec
                .max_attempts
                .or(definition.max_attempts)
                .unwrap_or(DEFAULT_MAX_ATTEMPTS),
            unique_key: spec.unique_key,
            unique_for: spec.unique_for,
            ordering_key: spec.ordering_key,
            timeout: spec.timeout.or(definition.timeout),
            singleton: definition.singleton,
            reply_to: spec.reply_to,
            correlation_id: spec.correlation_id,
            callback_url: spec.callback_url,
            parent_id: None,
        };
        // The definition's own settings come from code or config and get the same bounds.
        job.check()?;
        Ok(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn priorities_beyond_every_integer_are_field_errors_not_syntax_errors() {
        for text in ["1e400", "2147483648", "-2147483649", "1.5", "1e10"] {
            let body = format!(r#"{{"job": "a", "priority": {text}}}"#);
            let e = serde_json::from_str::<JobSpec>(&body).unwrap_err();
            assert!(e.is_data(), "{text}: {e}");
            assert!(
                e.to_string().contains("is not an integer in -1000..=1000"),
                "{text}: {e}"
            );
        }
        // A whole number is that integer however it is spelled (JSON Schema's `integer`).
        for (text, value) in [("1e3", 1000), ("5.0", 5), ("-2.00e1", -20)] {
            let body = format!(r#"{{"job": "a", "priority": {text}}}"#);
            let spec: JobSpec = serde_json::from_str(&body).unwrap();
            assert_eq!(spec.priority, Some(value), "{text}");
        }
        let spec: JobSpec = serde_json::from_str(r#"{"job": "a", "priority": -7}"#).unwrap();
        assert_eq!(spec.priority, Some(-7));
        let spec: JobSpec = serde_json::from_str(r#"{"job": "a", "priority": null}"#).unwrap();
        assert_eq!(spec.priority, None);
    }

    #[test]
    fn job_options_win_over_definition_over_defaults() {
        let defs = Definitions::new();
        defs.insert(JobDefinition {
            name: "mail".into(),
            queue: Some("mailers".into()),
            max_attempts: Some(3),
            timeout: Some(Duration::from_secs(30)),
            singleton: true,
        });
        let now = Utc::now();
        let job = defs.resolve(JobSpec::new("mail", json!({})), now).unwrap();
        assert_eq!((job.queue.as_str(), job.max_attempts), ("mailers", 3));
        assert!(job.singleton);
        let mut spec = JobSpec::new("mail", json!({}));
        spec.queue = Some("urgent".into());
        spec.max_attempts = Some(7);
        let job = defs.resolve(spec, now).unwrap();
        assert_eq!((job.queue.as_str(), job.max_attempts), ("urgent", 7));
        let other = defs.resolve(JobSpec::new("other", json!(1)), now).unwrap();
        assert_eq!((other.queue.as_str(), other.max_attempts), ("default", 10));
        assert!(!other.singleton);
    }

    #[test]
    fn delay_becomes_run_at() {
        let now = Utc::now();
        let mut spec = JobSpec::new("x", Value::Null);
        spec.delay = Some(Duration::from_secs(30));
        let job = Definitions::new().resolve(spec, now).unwrap();
        assert_eq!(job.run_at, Some(now + chrono::Duration::seconds(30)));
    }

    #[test]
    fn invalid_fields_are_named() {
        let cases: Vec<(JobSpec, &str)> = vec![
            (JobSpec::new("", Value::Null), "job"),
            (JobSpec::new("a b", Value::Null), "job"),
            (
                JobSpec {
                    priority: Some(5000),
                    ..JobSpec::new("x", Value::Null)
                },
                "priority",
            ),
            (
                JobSpec {
                    max_attempts: Some(0),
                    ..JobSpec::new("x", Value::Null)
                },
                "max_attempts",
            ),
            (
                JobSpec {
                    unique_for: Some(Duration::from_secs(1)),
                    ..JobSpec::new("x", Value::Null)
                },
                "unique_for",
            ),
            (
                JobSpec {
                    run_at: Some(Utc::now()),
                    delay: Some(Duration::from_secs(1)),
                    ..JobSpec::new("x", Value::Null)
                },
                "delay",
            ),
        ];
        for (spec, field) in cases {
            assert_eq!(spec.validate().unwrap_err().field, field, "{spec:?}");
        }
    }
}
