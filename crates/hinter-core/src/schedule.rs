//! Schedules: cron evaluation (with the DST rules of PRODUCT.md section 5), what a schedule
//! is, and what one firing writes. No I/O: the scheduler in `hinter-engine` decides when to
//! fire, the stores record occurrences with their jobs in one transaction.
//!
//! DST, as Vixie cron: a local time skipped by spring-forward fires once, at the first instant
//! after the jump; a local time repeated by fall-back fires once (at its first instant), except
//! for patterns whose second, minute or hour field starts with `*` ("wildcard" patterns such
//! as `*/15 * * * *` or `@hourly`), which keep firing in real time through the repeated hour.
//! croner steps through naive local times and maps a skipped time to the first valid one
//! after it, which gives the first two rules; the repeated hour of wildcard patterns and the
//! "never before `after`" guarantee are added here.

use crate::definition::{validate_name, FieldError, PRIORITY_RANGE};
use crate::limits::{check_json, check_text, check_time};
use chrono::{DateTime, FixedOffset, LocalResult, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// At most this many occurrences are recorded by one catch-up (`misfire = "catch_up"`), and
/// at most this many missed ones are listed one by one after a downtime.
pub const MAX_CATCH_UP: u32 = 100;

/// A due time later than this when the scheduler gets to it counts as missed (the server
/// was down or stalled), and the schedule's `misfire` policy applies.
pub const MISFIRE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A parsed cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    tz: Tz,
    /// Second, minute or hour field starting with `*` (Vixie's rule for the repeated hour).
    wildcard: bool,
}

/// Parses an IANA time zone name (`field` names it in the error).
pub fn parse_time_zone(field: &str, name: &str) -> Result<Tz, FieldError> {
    name.parse::<Tz>().map_err(|_| {
        FieldError::new(
            field,
            format!("{name:?} is not an IANA time zone name (e.g. UTC, Europe/Paris)"),
        )
    })
}

impl CronSchedule {
    /// `expr`: 5 fields, or 6 with seconds first, or an alias (`@hourly`, `@daily`,
    /// `@midnight`, `@weekly`, `@monthly`, `@yearly`, `@annually`).
    pub fn parse(expr: &str, time_zone: &str) -> Result<Self, FieldError> {
        let tz = parse_time_zone("time_zone", time_zone)?;
        let trimmed = expr.trim();
        let expanded = match trimmed.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            _ => trimmed,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if !(5..=6).contains(&fields.len()) {
            return Err(FieldError::new(
                "cron",
                format!(
                    "{expr:?} has {} fields; expected 5 (minute hour day month weekday), 6 \
                     (second first) or an alias such as @daily",
                    fields.len()
                ),
            ));
        }
        let cron = Cron::new(expanded)
            .with_seconds_optional()
            .parse()
            .map_err(|e| {
                FieldError::new("cron", format!("{expr:?} is not a cron expression: {e}"))
            })?;
        let time_fields = if fields.len() == 6 {
            &fields[..3]
        } else {
            &fields[..2]
        };
        let wildcard = time_fields.iter().any(|f| f.starts_with('*'));
        Ok(Self { cron, tz, wildcard })
    }

    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The first fire time strictly after `after`, or `None` when there is none (a pattern
    /// that never matches, or beyond year 9999).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut best = self.next_local(after);
        if self.wildcard {
            if let Some(second_pass) = self.next_fixed_offset(after) {
                best = Some(best.map_or(second_pass, |b| b.min(second_pass)));
            }
        }
        best.filter(|t| check_time("next fire time", *t).is_ok())
    }

    /// The next `n` fire times after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut t = after;
        while out.len() < n {
            match self.next_after(t) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    /// croner in the zone, skipping results not after `after`: stepping naive local time, a
    /// time repeated by fall-back maps to its first instant, which is behind `after` once we
    /// are in the second pass.
    fn next_local(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut from = after.with_timezone(&self.tz);
        // An ambiguous hour of a seconds pattern has 3,600 candidates; a bound keeps a bad
        // zone from looping.
        for _ in 0..4000 {
            let next = self.cron.find_next_occurrence(&from, false).ok()?;
            let utc = next.with_timezone(&Utc);
            if utc > after {
                return Some(utc);
            }
            from = next;
        }
        None
    }

    /// For wildcard patterns: the next match counting local time at the UTC offset in force at
    /// `after`, kept only where the zone agrees (that offset is in force then too). Finds the
    /// second pass through a repeated hour, which naive stepping never reaches.
    fn next_fixed_offset(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let offset: FixedOffset = after.with_timezone(&self.tz).offset().fix();
        let mut from = after.with_timezone(&offset);
        for _ in 0..64 {
            let next = self.cron.find_next_occurrence(&from, false).ok()?;
            let utc = next.with_timezone(&Utc);
            if utc > after && self.valid(utc) {
                return Some(utc);
            }
            // Left the offset (a transition): naive stepping covers the rest.
            if utc.with_timezone(&self.tz).offset().fix() != offset {
                return None;
            }
            from = next;
        }
        None
    }

    /// `t` matches the pattern in the zone, and is not the second instant of a repeated local
    /// time of a fixed-time pattern.
    fn valid(&self, t: DateTime<Utc>) -> bool {
        let local = t.with_timezone(&self.tz);
        if !self.cron.is_time_matching(&local).unwrap_or(false) {
            return false;
        }
        match self.tz.from_local_datetime(&local.naive_local()) {
            LocalResult::Ambiguous(first, _) => first == local || self.wildcard,
            _ => true,
        }
    }
}

/// What to do when an occurrence is due and the job of the previous one is still unfinished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Record the occurrence as skipped.
    #[default]
    Skip,
    /// Enqueue anyway.
    Allow,
    /// Cancel the previous job, then enqueue.
    Replace,
}

/// What to do with occurrences missed while no server ran (due more than [`MISFIRE_GRACE`]
/// ago when seen).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// Record them as missed; fire nothing.
    Skip,
    /// Fire the latest one, record the others as missed.
    #[default]
    RunOnce,
    /// Fire each (at most [`MAX_CATCH_UP`], the latest ones; older ones are missed).
    CatchUp,
}

/// A schedule as the API and `settings.job` declare it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Name))]
    pub name: String,
    /// A cron expression; exactly one of `cron` and `at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::openapi::Cron>))]
    pub cron: Option<String>,
    /// One-shot: fire once at this time (years 0001 to 9999 in UTC); exactly one of `cron` and `at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    #[serde(default = "default_time_zone")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::TimeZone, default = "UTC"))]
    pub time_zone: String,
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
        deserialize_with = "crate::definition::exact_priority"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = -1000, maximum = 1000))]
    pub priority: Option<i32>,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub misfire: Misfire,
    #[serde(default)]
    pub paused: bool,
}

fn default_time_zone() -> String {
    "UTC".into()
}

/// How a schedule's times are computed.
#[derive(Debug, Clone)]
pub enum Timing {
    Cron(Box<CronSchedule>),
    At(DateTime<Utc>),
}

impl Timing {
    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Timing::Cron(cron) => cron.next_after(after),
            Timing::At(at) => (*at > after).then_some(*at),
        }
    }

    /// The first fire time at or after `from`.
    pub fn first_from(&self, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_after(from - chrono::Duration::microseconds(1))
    }

    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        match self {
            Timing::Cron(cron) => cron.upcoming(after, n),
            Timing::At(at) => (*at > after).then_some(*at).into_iter().collect(),
        }
    }
}

impl ScheduleSpec {
    /// Checks every field (errors name it) and returns how its times are computed.
    pub fn validate(&self) -> Result<Timing, FieldError> {
        validate_name("name", &self.name)?;
        crate::followup::check_job_name("job", &self.job)?;
        if let Some(queue) = &self.queue {
            validate_name("queue", queue)?;
        }
        if let Some(priority) = self.priority {
            if !PRIORITY_RANGE.contains(&priority) {
                return Err(FieldError::new(
                    "priority",
                    format!(
                        "{priority} is outside {}..={}",
                        PRIORITY_RANGE.start(),
                        PRIORITY_RANGE.end()
                    ),
                ));
            }
        }
        check_json("payload", &self.payload)?;
        check_text("time_zone", &self.time_zone)?;
        match (&self.cron, self.at) {
            (Some(cron), None) => {
                check_text("cron", cron)?;
                Ok(Timing::Cron(Box::new(CronSchedule::parse(
                    cron,
                    &self.time_zone,
                )?)))
            }
            (None, Some(at)) => {
                parse_time_zone("time_zone", &self.time_zone)?;
                check_time("at", at)?;
                Ok(Timing::At(at))
            }
            (Some(_), Some(_)) => Err(FieldError::new(
                "at",
                "give either cron (recurring) or at (one-shot), not both",
            )),
            (None, None) => Err(FieldError::new(
                "cron",
                "missing: give cron (recurring) or at (one-shot)",
            )),
        }
    }
}

/// Where a schedule was declared: `api` (API and CLI) or `settings.job` (script folders,
/// replaced as a set by `Store` writes from the script loader).
pub const SOURCE_API: &str = "api";
pub const SOURCE_SETTINGS: &str = "settings.job";

/// A stored schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Schedule {
    #[serde(flatten)]
    pub spec: ScheduleSpec,
    pub source: String,
    /// `None`: nothing left to fire (a one-shot that fired, a pattern with no future match).
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub next_fire_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Schedule {
    /// The next `n` fire times (none while paused), for display.
    pub fn next_fire_times(&self, n: usize) -> Vec<DateTime<Utc>> {
        let Some(first) = self.next_fire_at else {
            return Vec::new();
        };
        if self.spec.paused || n == 0 {
            return Vec::new();
        }
        let mut out = vec![first];
        if let Ok(timing) = self.spec.validate() {
            out.extend(timing.upcoming(first, n - 1));
        }
        out
    }
}

/// A schedule to store: its spec, where it came from and its first fire time.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSchedule {
    pub spec: ScheduleSpec,
    pub source: String,
    pub next_fire_at: Option<DateTime<Utc>>,
    /// Refuse (409) when the name exists, rather than replace it.
    pub create_only: bool,
}

impl NewSchedule {
    /// Validates `spec` and computes its first fire time from `now` (on the store's clock,
    /// [`crate::Store::store_time`]): the first cron time at or after `now`, or `at` itself
    /// (one in the past fires at once, as a late occurrence under `misfire`).
    pub fn from_spec(
        spec: ScheduleSpec,
        source: &str,
        now: DateTime<Utc>,
        create_only: bool,
    ) -> Result<Self, FieldError> {
        let next_fire_at = match spec.validate()? {
            Timing::At(at) => Some(at),
            timing => timing.first_from(now),
        };
        Ok(Self {
            spec,
            source: source.to_string(),
            next_fire_at,
            create_only,
        })
    }
}

/// What became of one occurrence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = OccurrenceOutcome))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Fired,
    Skipped,
    Missed,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Fired => "fired",
            Outcome::Skipped => "skipped",
            Outcome::Missed => "missed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fired" => Some(Outcome::Fired),
            "skipped" => Some(Outcome::Skipped),
            "missed" => Some(Outcome::Missed),
            _ => None,
        }
    }
}

/// One recorded occurrence of a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Occurrence {
    pub schedule: String,
    pub fire_time: DateTime<Utc>,
    pub outcome: Outcome,
    /// Why it was skipped or missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
    /// The process that recorded it (its id in `GET /api/v1/workers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_by: Option<String>,
    pub recorded_at: DateTime<Utc>,
}

/// One occurrence to record: a job to insert, or a miss.
// A firing holds at most a few of these (bounded by the misfire walk): not worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Due {
    Fire {
        fire_time: DateTime<Utc>,
        job: crate::job::NewJob,
    },
    Missed {
        fire_time: DateTime<Utc>,
        reason: String,
    },
}

impl Due {
    pub fn fire_time(&self) -> DateTime<Utc> {
        match self {
            Due::Fire { fire_time, .. } | Due::Missed { fire_time, .. } => *fire_time,
        }
    }
}

/// One firing of a schedule, written as one unit: advance `next_fire_at` from `expected` to
/// `next` (only if it still is `expected` and the schedule is not paused: else another server
/// fired it, or it changed, and nothing is written), record each occurrence once (a unique
/// (schedule, fire_time): an occurrence recorded before is left alone and its job not
/// inserted), apply `overlap` against the job of the latest fired occurrence before this
/// firing (unfinished: skip / allow / cancel it), insert the jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleFiring {
    pub schedule: String,
    pub expected: DateTime<Utc>,
    pub next: Option<DateTime<Utc>>,
    pub overlap: Overlap,
    pub due: Vec<Due>,
    /// The process firing (recorded with each occurrence).
    pub fired_by: Option<String>,
}

/// What a firing wrote.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FireReport {
    /// False: the schedule was not at `expected` (fired elsewhere, changed, paused, deleted);
    /// nothing was written.
    pub advanced: bool,
    /// The occurrences recorded now (not those recorded before).
    pub recorded: Vec<Occurrence>,
    /// A previous job cancelled by `overlap = "replace"`.
    pub replaced: Option<Uuid>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    /// The fire times of `expr` in `tz` in (from, to].
    fn times(expr: &str, tz: &str, from: &str, to: &str) -> Vec<String> {
        let cron = CronSchedule::parse(expr, tz).expect("parses");
        let (from, to) = (utc(from), utc(to));
        let mut out = Vec::new();
        let mut t = from;
        while let Some(next) = cron.next_after(t) {
            if next > to {
                break;
            }
            out.push(next.with_timezone(&cron.time_zone()).to_rfc3339());
            t = next;
        }
        out
    }

    #[test]
    fn new_york_dst_table() {
        let ny = "America/New_York";
        // Spring forward 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00Z).
        let cases: &[(&str, &str, &str, &[&str])] = &[
            // 02:30 does not exist: fires once, right after the jump.
            (
                "30 2 * * *",
                "2026-03-07T12:00:00Z",
                "2026-03-09T12:00:00Z",
                &["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"],
            ),
            // 01:30 exists once: unchanged.
            (
                "30 1 * * *",
                "2026-03-07T12:00:00Z",
                "2026-03-09T12:00:00Z",
                &["2026-03-08T01:30:00-05:00", "2026-03-09T01:30:00-04:00"],
            ),
            (
                "*/15 * * * *",
                "2026-03-08T06:20:00Z",
                "2026-03-08T07:20:00Z",
                &[
                    "2026-03-08T01:30:00-05:00",
                    "2026-03-08T01:45:00-05:00",
                    "2026-03-08T03:00:00-04:00",
                    "2026-03-08T03:15:00-04:00",
                ],
            ),
            // Fall back 2026-11-01: 02:00 EDT becomes 01:00 EST (06:00Z); 01:xx happens twice.
            (
                "30 2 * * *",
                "2026-10-31T12:00:00Z",
                "2026-11-02T12:00:00Z",
                &["2026-11-01T02:30:00-05:00", "2026-11-02T02:30:00-05:00"],
            ),
            // 01:30 is repeated: fires once, at its first instant.
            (
                "30 1 * * *",
                "2026-10-31T12:00:00Z",
                "2026-11-02T12:00:00Z",
                &["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"],
            ),
            // A wildcard pattern keeps real time through the repeated hour.
            (
                "*/15 * * * *",
                "2026-11-01T05:20:00Z",
                "2026-11-01T07:20:00Z",
                &[
                    "2026-11-01T01:30:00-04:00",
                    "2026-11-01T01:45:00-04:00",
                    "2026-11-01T01:00:00-05:00",
                    "2026-11-01T01:15:00-05:00",
                    "2026-11-01T01:30:00-05:00",
                    "2026-11-01T01:45:00-05:00",
                    "2026-11-01T02:00:00-05:00",
                    "2026-11-01T02:15:00-05:00",
                ],
            ),
        ];
        for (expr, from, to, want) in cases {
            assert_eq!(times(expr, ny, from, to), *want, "{expr} from {from}");
        }
    }

    #[test]
    fn second_pass_start_does_not_go_back() {
        // From inside the repeated hour (second pass), a fixed-time pattern waits a day.
        let cron = CronSchedule::parse("30 1 * * *", "America/New_York").expect("parses");
        let next = cron.next_after(utc("2026-11-01T06:10:00Z")).expect("next");
        assert_eq!(next, utc("2026-11-02T06:30:00Z"));
    }

    #[test]
    fn fields_seconds_aliases_and_zones() {
        let t = utc("2026-01-01T00:00:00Z");
        let cases = [
            ("*/5 * * * *", "UTC", "2026-01-01T00:05:00Z"),
            ("*/10 * * * * *", "UTC", "2026-01-01T00:00:10Z"),
            ("@hourly", "UTC", "2026-01-01T01:00:00Z"),
            ("@daily", "UTC", "2026-01-02T00:00:00Z"),
            ("@midnight", "UTC", "2026-01-02T00:00:00Z"),
            ("@weekly", "UTC", "2026-01-04T00:00:00Z"),
            ("@monthly", "UTC", "2026-02-01T00:00:00Z"),
            ("@yearly", "UTC", "2027-01-01T00:00:00Z"),
            ("@annually", "UTC", "2027-01-01T00:00:00Z"),
            ("0 9 * * *", "Europe/Paris", "2026-01-01T08:00:00Z"),
            ("0 9 * * *", "Asia/Kolkata", "2026-01-01T03:30:00Z"),
        ];
        for (expr, tz, want) in cases {
            let cron = CronSchedule::parse(expr, tz).expect(expr);
            assert_eq!(cron.next_after(t), Some(utc(want)), "{expr} in {tz}");
        }
    }

    #[test]
    fn bad_expressions_and_zones_name_the_field() {
        for bad in [
            "* * *",
            "61 * * * *",
            "* * * * * * * *",
            "@fortnightly",
            "x y z a b",
        ] {
            let err = CronSchedule::parse(bad, "UTC").expect_err(bad);
            assert_eq!(err.field, "cron", "{bad}: {err}");
        }
        let err = CronSchedule::parse("* * * * *", "Mars/Olympus").expect_err("zone");
        assert_eq!(err.field, "time_zone");
    }

    #[test]
    fn spec_validation() {
        let spec: ScheduleSpec = serde_json::from_value(serde_json::json!({
            "name": "nightly", "cron": "0 3 * * *", "job": "report"
        }))
        .expect("spec");
        assert_eq!(spec.time_zone, "UTC");
        assert_eq!(spec.overlap, Overlap::Skip);
        assert_eq!(spec.misfire, Misfire::RunOnce);
        assert!(spec.validate().is_ok());
        let both = ScheduleSpec {
            at: Some(utc("2030-01-01T00:00:00Z")),
            ..spec.clone()
        };
        assert_eq!(both.validate().expect_err("both").field, "at");
        let neither = ScheduleSpec {
            cron: None,
            ..spec.clone()
        };
        assert_eq!(neither.validate().expect_err("neither").field, "cron");
        let at = ScheduleSpec {
            cron: None,
            at: Some(utc("2030-01-01T00:00:00Z")),
            ..spec
        };
        let timing = at.validate().expect("one-shot");
        assert_eq!(
            timing.next_after(utc("2029-01-01T00:00:00Z")),
            Some(utc("2030-01-01T00:00:00Z"))
        );
        assert_eq!(timing.next_after(utc("2030-01-01T00:00:00Z")), None);
    }
}
