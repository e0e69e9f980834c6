//! What a job leaves behind when it finishes, besides its own record: a reply message on its
//! `reply_to` queue and a callback delivery to its `callback_url` (PRODUCT.md §3).
//!
//! Both are ordinary jobs, built here from the finished job and inserted by the store in the
//! same transaction as the outcome ([`followups`]), so they are exactly as durable as the
//! outcome itself: a crash either loses both or neither, and a restart loses no reply and no
//! delivery. Being jobs, they are leased, retried with backoff, recorded attempt by attempt
//! (`runs`) and pruned like any other. Each carries `parent_id`, the job it reports on, so the
//! job's record can show them (`Store::job_followups`).
//!
//! A job finishes once per run to the end; a dead job retried by hand and finishing again
//! sends a second reply and callback, with the new outcome.

use crate::job::{Job, JobState, NewJob};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

/// Job name of reply messages, so that a worker can tell them apart (and an engine worker can
/// register a handler for them).
pub const REPLY_JOB: &str = "hinter.reply";
/// Job name of callback deliveries, run by every `hinter serve`.
pub const CALLBACK_JOB: &str = "hinter.callback";
/// Queue of callback deliveries: pause it to hold deliveries back.
pub const CALLBACK_QUEUE: &str = "hinter.callbacks";
/// Attempts of one callback delivery. With the standard backoff (1 s doubling, capped at
/// 1 h) the last one comes about 8 hours after the first (4,095 s + 7 × 1 h).
pub const CALLBACK_MAX_ATTEMPTS: u32 = 20;
/// How long one delivery attempt may take, connection and answer included.
pub const CALLBACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Prefix of job names hinter keeps for itself; enqueues through the API may not use it.
pub const RESERVED_PREFIX: &str = "hinter.";

/// How a job ended, as a reply message carries it and a callback posts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The job's `correlation_id`, as given at enqueue.
    pub correlation_id: Option<String>,
    pub job_id: Uuid,
    /// The job's definition name.
    pub job: String,
    pub queue: String,
    /// `succeeded`, `dead` or `cancelled`.
    pub state: JobState,
    /// Attempts taken.
    pub attempt: u32,
    pub finished_at: Option<DateTime<Utc>>,
    /// The handler's result (`succeeded`).
    pub result: Option<Value>,
    /// The last attempt's error (`dead`; `cancelled` when an attempt failed before).
    pub error: Option<String>,
}

impl Outcome {
    /// The outcome of a finished job.
    pub fn of(job: &Job) -> Self {
        Self {
            correlation_id: job.correlation_id.clone(),
            job_id: job.id,
            job: job.job.clone(),
            queue: job.queue.clone(),
            state: job.state,
            attempt: job.attempt,
            finished_at: job.finished_at,
            result: job.result.clone(),
            error: match job.state {
                JobState::Succeeded => None,
                _ => job.errors.last().map(|e| e.message.clone()),
            },
        }
    }
}

/// The payload of a callback delivery job: where to post, and what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackPayload {
    pub url: String,
    pub outcome: Outcome,
}

/// The jobs to insert with `job`'s outcome, in the same transaction: nothing unless the job
/// has finished and asked for a reply or a callback. Every store calls this after writing a
/// finished state (complete, fail to `dead`/`cancelled`, cancel of a waiting job).
pub fn followups(job: &Job) -> Vec<NewJob> {
    if !job.state.is_finished() || (job.reply_to.is_none() && job.callback_url.is_none()) {
        return Vec::new();
    }
    let mut outcome = Outcome::of(job);
    // A callback wraps the result two levels deep; a result nested up to the limit would
    // make a payload no store accepts, and the outcome could then never be written.
    if outcome
        .result
        .as_ref()
        .is_some_and(|r| crate::limits::json_depth(r) + 2 > crate::limits::MAX_JSON_DEPTH)
    {
        outcome.result = None;
        outcome.error = Some(format!(
            "the result is nested too deeply to be carried here; read it from the job {}",
            job.id
        ));
    }
    let mut out = Vec::with_capacity(2);
    if let Some(queue) = &job.reply_to {
        let mut reply = NewJob::new(REPLY_JOB, to_value(&outcome)).queue(queue.clone());
        reply.correlation_id = job.correlation_id.clone();
        reply.parent_id = Some(job.id);
        out.push(reply);
    }
    if let Some(url) = &job.callback_url {
        let payload = CallbackPayload {
            url: url.clone(),
            outcome,
        };
        let mut callback = NewJob::new(CALLBACK_JOB, to_value(&payload))
            .queue(CALLBACK_QUEUE)
            .max_attempts(CALLBACK_MAX_ATTEMPTS)
            .timeout(CALLBACK_TIMEOUT);
        callback.correlation_id = job.correlation_id.clone();
        callback.parent_id = Some(job.id);
        out.push(callback);
    }
    out
}

fn to_value<T: Serialize>(value: &T) -> Value {
    // Plain data with string keys: serialising it cannot fail.
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Checks the name of a job to enqueue or schedule: a valid name
/// ([`crate::definition::validate_name`]) not starting with [`RESERVED_PREFIX`].
pub fn check_job_name(field: &str, name: &str) -> Result<(), crate::FieldError> {
    crate::definition::validate_name(field, name)?;
    if name.starts_with(RESERVED_PREFIX) {
        return Err(crate::FieldError::new(
            field,
            format!(
                "{name:?}: names starting with {RESERVED_PREFIX:?} are kept for hinter's own jobs"
            ),
        ));
    }
    Ok(())
}

/// Checks a `callback_url` as given at enqueue: an absolute `http` or `https` URL with a host,
/// at most [`MAX_CALLBACK_URL_LEN`] bytes. Which addresses it may reach is decided by the
/// server's policy, at enqueue and again for every address it resolves to at delivery.
pub fn check_callback_url(field: &str, value: &str) -> Result<url::Url, crate::FieldError> {
    use crate::FieldError;
    if value.len() > MAX_CALLBACK_URL_LEN {
        return Err(FieldError::new(
            field,
            format!("is longer than {MAX_CALLBACK_URL_LEN} bytes"),
        ));
    }
    crate::limits::check_text(field, value)?;
    let url = url::Url::parse(value)
        .map_err(|e| FieldError::new(field, format!("{value:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FieldError::new(
            field,
            format!(
                "the scheme {:?} is not allowed; use http or https",
                url.scheme()
            ),
        ));
    }
    if url.host().is_none() {
        return Err(FieldError::new(field, "has no host"));
    }
    Ok(url)
}

/// Longest `callback_url` accepted.
pub const MAX_CALLBACK_URL_LEN: usize = 2048;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::AttemptError;
    use serde_json::json;

    fn finished(state: JobState) -> Job {
        let mut job: Job = serde_json::from_value(json!({
            "id": Uuid::now_v7(), "job": "resize", "queue": "images", "payload": {},
            "state": state, "priority": 0, "attempt": 3, "max_attempts": 3,
            "run_at": "2026-01-01T00:00:00Z", "created_at": "2026-01-01T00:00:00Z",
            "started_at": null, "finished_at": "2026-01-01T00:01:00Z", "unique_key": null,
            "ordering_key": null, "timeout": null, "singleton": false,
            "cancel_requested": false, "worker_id": null, "lease_expires_at": null,
            "errors": [], "result": {"ok": 1}
        }))
        .unwrap();
        job.errors.push(AttemptError {
            attempt: 3,
            at: Utc::now(),
            message: "boom".into(),
        });
        job
    }

    #[test]
    fn nothing_follows_without_reply_to_or_callback_or_before_the_end() {
        assert!(followups(&finished(JobState::Succeeded)).is_empty());
        let mut job = finished(JobState::Scheduled);
        job.reply_to = Some("replies".into());
        assert!(followups(&job).is_empty());
    }

    #[test]
    fn a_reply_and_a_callback_carry_the_outcome() {
        let mut job = finished(JobState::Dead);
        job.reply_to = Some("replies".into());
        job.correlation_id = Some("order-7".into());
        job.callback_url = Some("https://example.com/hook".into());
        let jobs = followups(&job);
        assert_eq!(jobs.len(), 2);
        let reply = &jobs[0];
        assert_eq!(
            (reply.job.as_str(), reply.queue.as_str()),
            (REPLY_JOB, "replies")
        );
        assert_eq!(reply.parent_id, Some(job.id));
        assert_eq!(reply.payload["correlation_id"], "order-7");
        assert_eq!(reply.payload["state"], "dead");
        assert_eq!(reply.payload["error"], "boom");
        assert_eq!(reply.payload["job_id"], json!(job.id));
        let callback = &jobs[1];
        assert_eq!(callback.queue, CALLBACK_QUEUE);
        assert_eq!(callback.max_attempts, CALLBACK_MAX_ATTEMPTS);
        let payload: CallbackPayload = serde_json::from_value(callback.payload.clone()).unwrap();
        assert_eq!(payload.url, "https://example.com/hook");
        assert_eq!(payload.outcome, Outcome::of(&job));
    }

    #[test]
    fn a_succeeded_outcome_has_its_result_and_no_error() {
        let mut job = finished(JobState::Succeeded);
        job.reply_to = Some("r".into());
        let reply = &followups(&job)[0];
        assert_eq!(reply.payload["result"], json!({"ok": 1}));
        assert_eq!(reply.payload["error"], Value::Null);
    }

    #[test]
    fn a_result_nested_to_the_limit_is_left_out_so_the_followups_are_storable() {
        let mut deep = json!(1);
        for _ in 0..crate::limits::MAX_JSON_DEPTH {
            deep = json!([deep]);
        }
        let mut job = finished(JobState::Succeeded);
        job.result = Some(deep);
        job.reply_to = Some("r".into());
        job.callback_url = Some("http://example.com/".into());
        for followup in followups(&job) {
            followup.check().unwrap();
            assert!(followup.payload.to_string().contains("nested too deeply"));
        }
    }

    #[test]
    fn callback_urls_must_be_http_with_a_host() {
        assert!(check_callback_url("callback_url", "https://example.com/x?y=1").is_ok());
        for bad in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "example.com/hook",
            "http://",
            "https://exa\0mple.com/",
        ] {
            let e = check_callback_url("callback_url", bad).unwrap_err();
            assert_eq!(e.field, "callback_url", "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_CALLBACK_URL_LEN));
        assert!(check_callback_url("callback_url", &long).is_err());
    }
}
