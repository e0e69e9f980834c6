//! What a running attempt reports besides its outcome: log lines, progress and checkpoints.
//!
//! A worker sends them with [`crate::Store::job_report`] under the attempt's lease token (so
//! a rescued attempt's old worker cannot write into the new one); readers page through a
//! job's lines with [`crate::Store::job_logs`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Longest log line kept; a longer one is cut and says so.
pub const MAX_LOG_LINE_BYTES: usize = 16 * 1024;
/// Most lines in one report.
pub const MAX_REPORT_LINES: usize = 1000;
/// Longest progress message.
pub const MAX_PROGRESS_MESSAGE_BYTES: usize = 1024;
/// Most log lines answered at once.
pub const MAX_LOG_PAGE: u32 = 1000;

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// The command's standard output: level INFO.
    Stdout,
    /// The command's standard error: level ERROR.
    Stderr,
    /// hinter itself about the attempt (output dropped at the cap, a bad directive): WARN.
    Hinter,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::Hinter => "hinter",
        }
    }

    /// The level shown for lines of this stream.
    pub fn level(self) -> &'static str {
        match self {
            LogStream::Stdout => "info",
            LogStream::Stderr => "error",
            LogStream::Hinter => "warn",
        }
    }
}

impl std::str::FromStr for LogStream {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stdout" => Ok(LogStream::Stdout),
            "stderr" => Ok(LogStream::Stderr),
            "hinter" => Ok(LogStream::Hinter),
            other => Err(format!("unknown log stream {other:?}")),
        }
    }
}

/// A line to append to the attempt's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewLogLine {
    pub at: DateTime<Utc>,
    pub stream: LogStream,
    pub line: String,
}

impl NewLogLine {
    pub fn new(at: DateTime<Utc>, stream: LogStream, line: impl Into<String>) -> Self {
        Self {
            at,
            stream,
            line: line.into(),
        }
    }

    /// The line as it can be stored: NUL replaced (no backend keeps it in text), cut to
    /// [`MAX_LOG_LINE_BYTES`] with a note of how much was cut.
    pub fn storable(mut self) -> Self {
        if self.line.contains('\0') {
            self.line = self.line.replace('\0', "\u{FFFD}");
        }
        if self.line.len() > MAX_LOG_LINE_BYTES {
            let mut cut = MAX_LOG_LINE_BYTES;
            while !self.line.is_char_boundary(cut) {
                cut -= 1;
            }
            let dropped = self.line.len() - cut;
            self.line.truncate(cut);
            self.line
                .push_str(&format!("… [line cut: {dropped} more bytes]"));
        }
        self
    }
}

/// A stored log line of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogLine {
    /// Position in the job's log; lines of one job grow with it (`after=` pages on it).
    pub id: i64,
    /// The attempt that wrote it.
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub stream: LogStream,
    /// `info` (stdout), `error` (stderr) or `warn` (hinter).
    pub level: String,
    pub line: String,
}

/// The last progress an attempt reported (`::progress::42 resizing`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Progress {
    /// 0 to 100.
    #[serde(deserialize_with = "finite_percent")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 100))]
    pub percent: f64,
    /// At most 1024 bytes of UTF-8, no NUL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 1024, pattern = "^[^\\u0000]*$")
    )]
    pub message: Option<String>,
    pub at: DateTime<Utc>,
}

/// A percent as a JSON number read exactly first, so one too large for an `f64` (`1e400`) is
/// an error naming the field rather than a JSON syntax error.
fn finite_percent<'de, D: serde::Deserializer<'de>>(de: D) -> Result<f64, D::Error> {
    let number = serde_json::Number::deserialize(de)?;
    number
        .as_f64()
        .filter(|percent| percent.is_finite())
        .ok_or_else(|| serde::de::Error::custom(format_args!("{number} is not between 0 and 100")))
}

impl Progress {
    /// The `data` of the `progress` event a report that sets it logs
    /// ([`crate::EventKind::Progress`]): `{"percent": …, "message": … or null}`.
    pub fn event_data(&self) -> Value {
        serde_json::json!({"percent": self.percent, "message": self.message})
    }
}

/// What a running attempt reports; every part is optional. Fenced by the lease token: a
/// stale token changes nothing ([`crate::StoreError::StaleLease`]).
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    pub id: Uuid,
    pub lease_token: i64,
    /// Appended to the job's log under its current attempt, in this order.
    pub logs: Vec<NewLogLine>,
    /// Replaces the job's progress.
    pub progress: Option<Progress>,
    /// Replaces the job's checkpoint; the next attempt is handed it
    /// ([`crate::LeasedJob::checkpoint`]).
    pub checkpoint: Option<Value>,
}

impl JobReport {
    /// The report with every line made storable ([`NewLogLine::storable`]); stores call it
    /// before [`JobReport::check`], so a NUL or an overlong line is mended, not refused.
    pub fn storable(mut self) -> Self {
        self.logs = self.logs.into_iter().map(NewLogLine::storable).collect();
        self
    }

    /// Checks that the report can be stored ([`crate::limits`]); stores call it first.
    pub fn check(&self) -> Result<(), crate::FieldError> {
        if self.logs.len() > MAX_REPORT_LINES {
            return Err(crate::FieldError::new(
                "logs",
                format!(
                    "{} lines in one report; at most {MAX_REPORT_LINES}",
                    self.logs.len()
                ),
            ));
        }
        for (i, line) in self.logs.iter().enumerate() {
            let field = format!("logs[{i}].line");
            crate::limits::check_text(&field, &line.line)?;
            if line.line.len() > MAX_LOG_LINE_BYTES + 64 {
                return Err(crate::FieldError::new(
                    field,
                    format!("longer than {MAX_LOG_LINE_BYTES} bytes"),
                ));
            }
            crate::limits::check_time(&format!("logs[{i}].at"), line.at)?;
        }
        if let Some(progress) = &self.progress {
            if !(0.0..=100.0).contains(&progress.percent) {
                return Err(crate::FieldError::new(
                    "progress.percent",
                    format!("{} is not between 0 and 100", progress.percent),
                ));
            }
            if let Some(message) = &progress.message {
                crate::limits::check_text("progress.message", message)?;
                if message.len() > MAX_PROGRESS_MESSAGE_BYTES {
                    return Err(crate::FieldError::new(
                        "progress.message",
                        format!("longer than {MAX_PROGRESS_MESSAGE_BYTES} bytes"),
                    ));
                }
            }
            crate::limits::check_time("progress.at", progress.at)?;
        }
        if let Some(checkpoint) = &self.checkpoint {
            crate::limits::check_json("checkpoint", checkpoint)?;
        }
        Ok(())
    }
}

/// `POST /api/v1/jobs/{id}/report` body: a worker's report on the attempt it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReportBody {
    #[serde(deserialize_with = "crate::number::i64")]
    pub lease_token: i64,
    /// At most 1000 lines.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 1000))]
    pub logs: Vec<NewLogLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Value>,
}

impl ReportBody {
    /// The store's form of this report on job `id`.
    pub fn into_report(self, id: Uuid) -> JobReport {
        JobReport {
            id,
            lease_token: self.lease_token,
            logs: self.logs,
            progress: self.progress,
            checkpoint: self.checkpoint,
        }
    }
}

/// Progress as a worker sends it in a heartbeat (`POST /api/v1/jobs/{id}/heartbeat`):
/// `{"percent": 42, "message": "resizing"}`; the server stamps the time it arrives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProgressUpdate {
    /// 0 to 100.
    #[serde(deserialize_with = "finite_percent")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 100))]
    pub percent: f64,
    /// At most 1024 bytes of UTF-8, no NUL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 1024, pattern = "^[^\\u0000]*$")
    )]
    pub message: Option<String>,
}

impl ProgressUpdate {
    pub fn new(percent: f64, message: Option<String>) -> Self {
        Self { percent, message }
    }

    /// The stored form, reported at `at`.
    pub fn at(self, at: DateTime<Utc>) -> Progress {
        Progress {
            percent: self.percent,
            message: self.message,
            at,
        }
    }
}

/// `GET /api/v1/jobs/{id}/logs` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogPage {
    pub job_id: Uuid,
    pub lines: Vec<LogLine>,
    /// Ask with `after=` this to get the lines written since (the last line's id, or the
    /// `after` asked with when there were none).
    pub next_after: i64,
}

/// `GET /api/v1/definitions` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DefinitionList {
    pub definitions: Vec<crate::DefinitionInfo>,
}

/// Which lines of a job's log to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogQuery {
    /// Only the lines of this attempt.
    pub attempt: Option<u32>,
    /// Only lines after this [`LogLine::id`] (0: from the start).
    pub after: i64,
    /// Most lines answered (capped at [`MAX_LOG_PAGE`]).
    pub limit: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_made_storable() {
        let now = Utc::now();
        let line = NewLogLine::new(now, LogStream::Stdout, "a\0b").storable();
        assert_eq!(line.line, "a\u{FFFD}b");
        let long = "é".repeat(MAX_LOG_LINE_BYTES);
        let line = NewLogLine::new(now, LogStream::Stdout, long).storable();
        assert!(
            line.line.len() <= MAX_LOG_LINE_BYTES + 64,
            "{}",
            line.line.len()
        );
        assert!(line
            .line
            .ends_with(&format!("[line cut: {} more bytes]", MAX_LOG_LINE_BYTES)));
    }

    #[test]
    fn reports_are_checked() {
        let now = Utc::now();
        let mut report = JobReport {
            id: Uuid::nil(),
            lease_token: 1,
            logs: vec![NewLogLine::new(now, LogStream::Stderr, "x")],
            progress: Some(Progress {
                percent: 101.0,
                message: None,
                at: now,
            }),
            checkpoint: None,
        };
        assert_eq!(report.check().unwrap_err().field, "progress.percent");
        report.progress = None;
        report.logs[0].line = "a\0".into();
        assert_eq!(report.check().unwrap_err().field, "logs[0].line");
    }
}
