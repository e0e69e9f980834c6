//! `settings.job`: a job folder's JSON settings, every key checked (docs/scripts.md lists
//! them with their defaults). An unknown key, a wrong type or a bad value is an error that
//! names the file and the key; nothing is ignored.

use hinter_core::definition::{validate_name, MAX_ATTEMPTS_RANGE};
use hinter_core::{format_duration, parse_duration};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::time::Duration;

/// Between SIGTERM and SIGKILL when `stopping_wait_time` is not set (as in WebJobs).
pub const DEFAULT_STOPPING_WAIT: Duration = Duration::from_secs(5);
/// Longest `stopping_wait_time`: the worker gives every stopped handler this long (plus a
/// margin) before it aborts it, so it bounds how long a stop can take.
pub const MAX_STOPPING_WAIT: Duration = Duration::from_secs(600);
/// Every key settings.job may hold.
pub const KEYS: [&str; 15] = [
    "schedule",
    "is_singleton",
    "stopping_wait_time",
    "queue",
    "max_attempts",
    "timeout",
    "concurrency",
    "time_zone",
    "overlap",
    "misfire",
    "watch",
    "env",
    "max_memory",
    "max_output",
    "max_processes",
];

/// What to do when a schedule fires while the previous run still goes on.
pub const OVERLAP: [&str; 3] = ["skip", "allow", "replace"];
/// What to do with occurrences missed while no server ran.
pub const MISFIRE: [&str; 3] = ["skip", "run_once", "catch_up"];

/// Longest `watch` pattern: Linux's PATH_MAX.
pub const MAX_WATCH_BYTES: usize = 4096;

/// A job folder's settings, with defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// A cron expression (5 fields, or 6 with seconds first, or an `@hourly`-style alias),
    /// checked here; the scheduler that fires it is another feature.
    pub schedule: Option<String>,
    pub is_singleton: bool,
    /// Between SIGTERM (and the shutdown file) and SIGKILL.
    pub stopping_wait_time: Duration,
    pub queue: Option<String>,
    pub max_attempts: Option<u32>,
    pub timeout: Option<Duration>,
    pub concurrency: Option<u32>,
    pub time_zone: String,
    pub overlap: String,
    pub misfire: String,
    pub watch: Option<String>,
    /// Extra variables of the script's environment, sorted by name.
    pub env: Vec<(String, String)>,
    pub max_memory: Option<u64>,
    pub max_output: Option<u64>,
    /// Most processes in the script's process group at once (a fork bomb's stop).
    pub max_processes: Option<u32>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            schedule: None,
            is_singleton: false,
            stopping_wait_time: DEFAULT_STOPPING_WAIT,
            queue: None,
            max_attempts: None,
            timeout: None,
            concurrency: None,
            time_zone: "UTC".into(),
            overlap: "skip".into(),
            misfire: "run_once".into(),
            watch: None,
            env: Vec::new(),
            max_memory: None,
            max_output: None,
            max_processes: None,
        }
    }
}

impl Settings {
    /// Reads `path`; a missing file means every default.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(format!("{}: cannot read it: {e}", path.display())),
        };
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the text of a settings.job. Errors name the key: `"timeout": …`.
    pub fn parse(text: &str) -> Result<Self, String> {
        // Editors on Windows write a byte order mark; it is not an error.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let Value::Object(map) = value else {
            return Err(format!(
                "must be a JSON object of settings, not {}",
                type_name(&value)
            ));
        };
        let mut settings = Self::default();
        for (key, value) in &map {
            settings
                .set(key, value)
                .map_err(|message| format!("{key:?}: {message}"))?;
        }
        if settings.schedule.is_none() {
            for key in ["overlap", "misfire", "time_zone"] {
                if map.contains_key(key) {
                    return Err(format!("{key:?}: only means something with a \"schedule\""));
                }
            }
        }
        Ok(settings)
    }

    fn set(&mut self, key: &str, value: &Value) -> Result<(), String> {
        match key {
            "schedule" => {
                let text = string(value)?;
                check_cron(text)?;
                self.schedule = Some(text.to_string());
            }
            "is_singleton" => self.is_singleton = boolean(value)?,
            "stopping_wait_time" => {
                let wait = duration(value)?;
                if wait > MAX_STOPPING_WAIT {
                    return Err(format!(
                        "{} is longer than the most allowed, {}",
                        format_duration(wait),
                        format_duration(MAX_STOPPING_WAIT)
                    ));
                }
                self.stopping_wait_time = wait;
            }
            "queue" => {
                let queue = string(value)?;
                validate_name("queue", queue).map_err(|e| e.message)?;
                self.queue = Some(queue.to_string());
            }
            "max_attempts" => {
                let n = integer(value)?;
                let n = u32::try_from(n)
                    .ok()
                    .filter(|n| MAX_ATTEMPTS_RANGE.contains(n))
                    .ok_or_else(|| format!("{n} is out of range 1..=1000"))?;
                self.max_attempts = Some(n);
            }
            "timeout" => {
                let timeout = duration(value)?;
                if timeout.is_zero() {
                    return Err("must be longer than 0".into());
                }
                hinter_core::limits::check_duration("timeout", timeout).map_err(|e| e.message)?;
                self.timeout = Some(timeout);
            }
            "concurrency" => {
                let n = integer(value)?;
                let n = u32::try_from(n)
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| format!("{n} is out of range 1..=1000"))?;
                self.concurrency = Some(n);
            }
            "time_zone" => {
                let zone = string(value)?;
                zone.parse::<chrono_tz::Tz>().map_err(|_| {
                    format!(
                        "{zone:?} is not an IANA time zone (such as \"Europe/Berlin\" or \"UTC\")"
                    )
                })?;
                self.time_zone = zone.to_string();
            }
            "overlap" => self.overlap = one_of(value, &OVERLAP)?,
            "misfire" => self.misfire = one_of(value, &MISFIRE)?,
            "watch" => {
                let watch = string(value)?;
                if watch.trim().is_empty() {
                    return Err("must name a path or glob".into());
                }
                // No file name holds NUL, and paths stop at PATH_MAX (4096 bytes on Linux):
                // such a pattern could never match, so it is refused here, not left silent.
                if watch.contains('\0') {
                    return Err("must not contain a NUL character".into());
                }
                if watch.len() > MAX_WATCH_BYTES {
                    return Err(format!(
                        "is {} bytes long; a path or glob is at most {MAX_WATCH_BYTES}",
                        watch.len()
                    ));
                }
                if let Err(e) = glob::Pattern::new(watch) {
                    return Err(format!("{watch:?} is not a valid glob: {e}"));
                }
                self.watch = Some(watch.to_string());
            }
            "env" => self.env = environment(value)?,
            "max_memory" => self.max_memory = Some(size(value)?),
            "max_output" => self.max_output = Some(size(value)?),
            "max_processes" => {
                let n = integer(value)?;
                let n = u32::try_from(n)
                    .ok()
                    .filter(|n| (1..=100_000).contains(n))
                    .ok_or_else(|| format!("{n} is out of range 1..=100000"))?;
                self.max_processes = Some(n);
            }
            other => {
                let close = KEYS
                    .iter()
                    .find(|known| strsim::levenshtein(known, other) <= 2)
                    .map(|known| format!(" (did you mean {known:?}?)"))
                    .unwrap_or_default();
                return Err(format!(
                    "unknown setting{close}; settings.job knows {}",
                    KEYS.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The effective settings as shown by `GET /api/v1/definitions` (durations as strings,
    /// the values of `env` hidden: they may be secrets).
    pub fn to_json(&self) -> Value {
        let env: Map<String, Value> = self
            .env
            .iter()
            .map(|(name, _)| (name.clone(), json!("***")))
            .collect();
        json!({
            "schedule": self.schedule,
            "is_singleton": self.is_singleton,
            "stopping_wait_time": format_duration(self.stopping_wait_time),
            "queue": self.queue.as_deref().unwrap_or(hinter_core::DEFAULT_QUEUE),
            "max_attempts": self.max_attempts.unwrap_or(hinter_core::retry::DEFAULT_MAX_ATTEMPTS),
            "timeout": self.timeout.map(format_duration),
            "concurrency": self.concurrency,
            "time_zone": self.time_zone,
            "overlap": self.overlap,
            "misfire": self.misfire,
            "watch": self.watch,
            "env": env,
            "max_memory": self.max_memory,
            "max_output": self.max_output,
            "max_processes": self.max_processes,
        })
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string(value: &Value) -> Result<&str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("must be a string, not {}", type_name(value)))
}

fn boolean(value: &Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| format!("must be true or false, not {}", type_name(value)))
}

fn integer(value: &Value) -> Result<i64, String> {
    value
        .as_i64()
        .ok_or_else(|| format!("must be a whole number, not {}", describe(value)))
}

fn describe(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        other => type_name(other).to_string(),
    }
}

/// A duration: a string (`"30s"`, `"5m"`) or a number of seconds (`30`, `0.5`).
fn duration(value: &Value) -> Result<Duration, String> {
    match value {
        Value::String(text) => parse_duration(text).map_err(|e| e.to_string()),
        Value::Number(n) => parse_duration(&n.to_string()).map_err(|e| e.to_string()),
        other => Err(format!(
            "must be a duration such as \"30s\" or a number of seconds, not {}",
            type_name(other)
        )),
    }
}

fn one_of(value: &Value, allowed: &[&str]) -> Result<String, String> {
    let text = string(value)?;
    if allowed.contains(&text) {
        Ok(text.to_string())
    } else {
        Err(format!("{text:?} is not one of {}", allowed.join(", ")))
    }
}

/// `{"NAME": "value", …}`: names of letters, digits and `_`, not starting with a digit;
/// hinter's own variables cannot be overridden.
fn environment(value: &Value) -> Result<Vec<(String, String)>, String> {
    let Value::Object(map) = value else {
        return Err(format!(
            "must be an object of variable names to strings, not {}",
            type_name(value)
        ));
    };
    let mut out = Vec::with_capacity(map.len());
    for (name, value) in map {
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "{name:?} is not a variable name (letters, digits and '_', not starting with a digit)"
            ));
        }
        if name.starts_with("HINTER_") || name == "WEBJOBS_SHUTDOWN_FILE" {
            return Err(format!(
                "{name:?} is set by hinter for each job and cannot be set here"
            ));
        }
        let Value::String(text) = value else {
            return Err(format!(
                "{name:?}: the value must be a string, not {}",
                type_name(value)
            ));
        };
        if text.contains('\0') {
            return Err(format!("{name:?}: the value contains a NUL character"));
        }
        out.push((name.clone(), text.clone()));
    }
    Ok(out)
}

/// A size: a number of bytes, or a string with a unit (`"512MiB"`, `"1GB"`, `"64KiB"`).
fn size(value: &Value) -> Result<u64, String> {
    let bytes = match value {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("{n} is not a whole number of bytes"))?,
        Value::String(text) => parse_size(text)?,
        other => {
            return Err(format!(
                "must be a size such as \"512MiB\" or a number of bytes, not {}",
                type_name(other)
            ))
        }
    };
    if bytes == 0 {
        return Err("must be more than 0 bytes".into());
    }
    Ok(bytes)
}

fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as \"512MiB\" or \"1GB\""))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1000 * 1000,
        "MiB" => 1 << 20,
        "GB" => 1000 * 1000 * 1000,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "{other:?} is not a size unit; use B, KB, KiB, MB, MiB, GB or GiB"
            ))
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Checks a cron expression: 5 fields (minute first), 6 (seconds first), or an alias such
/// as `@hourly`.
pub fn check_cron(expression: &str) -> Result<(), String> {
    let trimmed = expression.trim();
    if !trimmed.starts_with('@') {
        let fields = trimmed.split_whitespace().count();
        if fields != 5 && fields != 6 {
            return Err(format!(
                "{expression:?} has {fields} fields; a cron expression has 5 (minute hour \
                 day-of-month month day-of-week) or 6 (seconds first)"
            ));
        }
    }
    croner::Cron::new(trimmed)
        .with_seconds_optional()
        .parse()
        .map(|_| ())
        .map_err(|e| format!("{expression:?} is not a valid cron expression: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses_with_its_value() {
        let settings = Settings::parse(
            r#"{
                "schedule": "*/5 * * * * *",
                "is_singleton": true,
                "stopping_wait_time": 30,
                "queue": "media",
                "max_attempts": 3,
                "timeout": "2m",
                "concurrency": 2,
                "time_zone": "Europe/Berlin",
                "overlap": "replace",
                "misfire": "catch_up",
                "watch": "/srv/in/*.png",
                "env": {"MODE": "fast", "B_2": ""},
                "max_memory": "512MiB",
                "max_output": 1048576,
                "max_processes": 50
            }"#,
        )
        .expect("valid settings");
        assert_eq!(settings.schedule.as_deref(), Some("*/5 * * * * *"));
        assert!(settings.is_singleton);
        assert_eq!(settings.stopping_wait_time, Duration::from_secs(30));
        assert_eq!(settings.queue.as_deref(), Some("media"));
        assert_eq!(settings.max_attempts, Some(3));
        assert_eq!(settings.timeout, Some(Duration::from_secs(120)));
        assert_eq!(settings.concurrency, Some(2));
        assert_eq!(settings.time_zone, "Europe/Berlin");
        assert_eq!(
            (settings.overlap.as_str(), settings.misfire.as_str()),
            ("replace", "catch_up")
        );
        assert_eq!(settings.watch.as_deref(), Some("/srv/in/*.png"));
        assert_eq!(
            settings.env,
            vec![("B_2".into(), "".into()), ("MODE".into(), "fast".into())]
        );
        assert_eq!(settings.max_memory, Some(512 << 20));
        assert_eq!(settings.max_output, Some(1 << 20));
        assert_eq!(settings.max_processes, Some(50));
        let shown = settings.to_json();
        assert_eq!(
            shown["env"],
            json!({"MODE": "***", "B_2": "***"}),
            "values hidden"
        );
        assert_eq!(shown["stopping_wait_time"], json!("30s"));
    }

    #[test]
    fn defaults_for_an_empty_or_missing_file() {
        assert_eq!(Settings::parse("").expect("empty"), Settings::default());
        assert_eq!(
            Settings::parse("\u{feff}{}").expect("BOM"),
            Settings::default()
        );
        let missing = Settings::read(Path::new("/nonexistent/settings.job")).expect("missing");
        assert_eq!(missing, Settings::default());
        let d = Settings::default();
        assert_eq!(d.stopping_wait_time, Duration::from_secs(5));
        assert_eq!(
            (d.time_zone.as_str(), d.overlap.as_str(), d.misfire.as_str()),
            ("UTC", "skip", "run_once")
        );
    }

    #[test]
    fn watch_patterns_that_cannot_match_are_refused() {
        let long = format!(r#"{{"watch": "/{}"}}"#, "a".repeat(MAX_WATCH_BYTES));
        for (text, expected) in [
            (
                r#"{"watch": "/srv/in\u0000/*.png"}"#,
                "must not contain a NUL",
            ),
            (long.as_str(), "a path or glob is at most 4096"),
            (r#"{"watch": "/srv/[in"}"#, "is not a valid glob"),
            (r#"{"watch": "   "}"#, "must name a path or glob"),
        ] {
            let e = Settings::parse(text).expect_err(text);
            assert!(
                e.contains("\"watch\":") && e.contains(expected),
                "{text}: {e}"
            );
        }
        let longest = format!(r#"{{"watch": "/{}"}}"#, "a".repeat(MAX_WATCH_BYTES - 1));
        let settings = Settings::parse(&longest).expect("the longest pattern");
        assert_eq!(settings.watch.map(|w| w.len()), Some(MAX_WATCH_BYTES));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                r#"{"timeuot": "5s"}"#,
                "\"timeuot\": unknown setting (did you mean \"timeout\"?)",
            ),
            (
                r#"{"is_singleton": "yes"}"#,
                "\"is_singleton\": must be true or false, not a string",
            ),
            (
                r#"{"schedule": "61 * * * *"}"#,
                "\"schedule\": \"61 * * * *\" is not a valid cron",
            ),
            (
                r#"{"schedule": "* * * *"}"#,
                "\"schedule\": \"* * * *\" has 4 fields",
            ),
            (r#"{"schedule": "0 0 0 * * * *"}"#, "has 7 fields"),
            (
                r#"{"schedule": "@hourly", "time_zone": "Mars/Base"}"#,
                "\"time_zone\": \"Mars/Base\" is not an IANA time zone",
            ),
            (
                r#"{"time_zone": "UTC"}"#,
                "\"time_zone\": only means something with a \"schedule\"",
            ),
            (
                r#"{"max_attempts": 0}"#,
                "\"max_attempts\": 0 is out of range 1..=1000",
            ),
            (
                r#"{"max_attempts": 1.5}"#,
                "\"max_attempts\": must be a whole number, not 1.5",
            ),
            (r#"{"timeout": "soon"}"#, "\"timeout\":"),
            (r#"{"timeout": 0}"#, "\"timeout\": must be longer than 0"),
            (
                r#"{"stopping_wait_time": "1h"}"#,
                "\"stopping_wait_time\": 1h is longer than the most allowed, 10m",
            ),
            (r#"{"queue": "a b"}"#, "\"queue\": \"a b\" contains ' '"),
            (
                r#"{"overlap": "sometimes"}"#,
                "\"overlap\": \"sometimes\" is not one of skip, allow, replace",
            ),
            (
                r#"{"env": {"HINTER_JOB_ID": "x"}}"#,
                "\"env\": \"HINTER_JOB_ID\" is set by hinter",
            ),
            (
                r#"{"env": {"A": 1}}"#,
                "\"env\": \"A\": the value must be a string, not a number",
            ),
            (r#"{"env": ["A"]}"#, "\"env\": must be an object"),
            (
                r#"{"max_memory": "lots"}"#,
                "\"max_memory\": \"lots\" is not a size",
            ),
            (
                r#"{"max_output": "5M"}"#,
                "\"max_output\": \"M\" is not a size unit",
            ),
            (
                r#"{"max_processes": 0}"#,
                "\"max_processes\": 0 is out of range 1..=100000",
            ),
            (
                r#"{"max_output": 0}"#,
                "\"max_output\": must be more than 0 bytes",
            ),
            (r#"[1]"#, "must be a JSON object of settings, not an array"),
            (
                r#"{"queue": "a",}"#,
                "not valid JSON: trailing comma at line 1 column 15",
            ),
        ];
        for (text, expected) in cases {
            let error = Settings::parse(text).expect_err(text);
            assert!(
                error.contains(expected),
                "{text}: {error:?} should contain {expected:?}"
            );
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("settings.job");
        std::fs::write(&path, r#"{"bogus": 1}"#).expect("write");
        let error = Settings::read(&path).expect_err("unknown key");
        assert!(
            error.starts_with(&format!("{}: \"bogus\": unknown setting", path.display())),
            "{error}"
        );
    }

    #[test]
    fn cron_takes_five_or_six_fields_and_aliases() {
        for good in [
            "*/5 * * * *",
            "0 */5 * * * *",
            "0 0 12 * * MON-FRI",
            "@hourly",
            "@daily",
        ] {
            check_cron(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in ["", "* * *", "60 * * * * *", "@sometimes", "0 0 32 * *"] {
            assert!(check_cron(bad).is_err(), "{bad}");
        }
    }
}
