//! `jobs show`: what a job sent when it finished — its callback delivery and reply message
//! (`followups` of `GET /api/v1/jobs/{id}`, docs/callbacks.md), each with its attempts.

use super::{clean, time, truncate};
use hinter_core::followup::{CALLBACK_JOB, REPLY_JOB};
use hinter_core::{Job, JobState, RunOutcome};

/// The `callback:` and `reply:` lines of `jobs show`; nothing for a job that asked for
/// neither.
pub fn show(job: &Job, width: usize) -> String {
    let mut text = String::new();
    if let Some(url) = &job.callback_url {
        let deliveries: Vec<&Job> = job
            .followups
            .iter()
            .filter(|f| f.job == CALLBACK_JOB)
            .collect();
        let url = clean(url, false);
        if deliveries.is_empty() {
            text.push_str(&format!(
                "{:width$} {url} (posted when the job finishes)\n",
                "callback:"
            ));
        }
        for delivery in deliveries {
            text.push_str(&format!(
                "{:width$} {url}: {}\n",
                "callback:",
                status(delivery)
            ));
            text.push_str(&attempts(delivery));
        }
    }
    if let Some(queue) = &job.reply_to {
        let replies: Vec<&Job> = job
            .followups
            .iter()
            .filter(|f| f.job == REPLY_JOB)
            .collect();
        if replies.is_empty() {
            text.push_str(&format!(
                "{:width$} to queue {queue} (sent when the job finishes)\n",
                "reply:"
            ));
        }
        for reply in replies {
            text.push_str(&format!(
                "{:width$} message {} on queue {}: {}\n",
                "reply:", reply.id, reply.queue, reply.state
            ));
        }
    }
    text
}

/// A delivery's state in words.
fn status(delivery: &Job) -> String {
    let of = format!("attempt {}/{}", delivery.attempt, delivery.max_attempts);
    let state = match delivery.state {
        JobState::Succeeded => {
            let code = delivery
                .result
                .as_ref()
                .and_then(|r| r.get("status"))
                .and_then(|s| s.as_u64())
                .map(|s| format!(", receiver answered {s}"))
                .unwrap_or_default();
            format!("delivered on {of}{code}")
        }
        JobState::Dead => format!("not delivered, gave up after {of}"),
        JobState::Cancelled => format!("cancelled after {of}"),
        JobState::Running => format!("sending, {of}"),
        JobState::Queued => format!("queued for attempt {}", delivery.attempt + 1),
        JobState::Scheduled if delivery.attempt == 0 => {
            format!("waiting until {}", time(delivery.run_at))
        }
        JobState::Scheduled => format!(
            "retrying: attempt {}/{} at {}",
            delivery.attempt + 1,
            delivery.max_attempts,
            time(delivery.run_at)
        ),
    };
    format!("{state} (delivery {})", delivery.id)
}

/// One line per attempt: number, start, outcome, and what went wrong.
fn attempts(delivery: &Job) -> String {
    let mut text = String::new();
    for run in &delivery.runs {
        let what = match (&run.outcome, &run.error) {
            (RunOutcome::Succeeded, _) => "delivered".to_string(),
            (outcome, Some(error)) => format!("{outcome}: {}", truncate(&clean(error, false), 200)),
            (outcome, None) => outcome.to_string(),
        };
        text.push_str(&format!(
            "  attempt {} at {}: {what}\n",
            run.attempt,
            time(run.started_at)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(extra: serde_json::Value) -> Job {
        let mut value = json!({
            "id": "0190a4b2-0000-7000-8000-000000000001", "job": "work", "queue": "default",
            "payload": null, "state": "succeeded", "priority": 0, "attempt": 1,
            "max_attempts": 10, "run_at": "2026-01-01T00:00:00Z",
            "created_at": "2026-01-01T00:00:00Z", "started_at": null,
            "finished_at": "2026-01-01T00:00:01Z", "unique_key": null, "ordering_key": null,
            "timeout": null, "singleton": false, "cancel_requested": false, "worker_id": null,
            "lease_expires_at": null, "errors": [], "result": null
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            value[k] = v;
        }
        serde_json::from_value(value).unwrap()
    }

    fn run(attempt: u32, at: &str, outcome: &str, error: Option<&str>) -> serde_json::Value {
        json!({"attempt": attempt, "worker_id": "w", "started_at": at, "finished_at": at,
               "outcome": outcome, "error": error, "exit_code": null, "duration_ms": 5})
    }

    #[test]
    fn a_delivery_shows_its_state_and_each_attempt() {
        let delivery = job(json!({
            "id": "0190a4b2-0000-7000-8000-0000000000cb", "job": CALLBACK_JOB,
            "queue": "hinter.callbacks", "attempt": 3, "max_attempts": 20,
            "result": {"status": 204},
            "runs": [
                run(1, "2026-01-01T00:00:02Z", "failed",
                    Some("receiver answered 500 Internal Server Error: boom")),
                run(2, "2026-01-01T00:00:03Z", "failed", Some("connect to example.com:443 refused")),
                run(3, "2026-01-01T00:00:05Z", "succeeded", None),
            ],
        }));
        let parent = job(json!({
            "callback_url": "https://example.com/hook",
            "followups": [serde_json::to_value(&delivery).unwrap()],
        }));
        assert_eq!(
            show(&parent, 13),
            "callback:     https://example.com/hook: delivered on attempt 3/20, receiver \
             answered 204 (delivery 0190a4b2-0000-7000-8000-0000000000cb)\n\
             \x20 attempt 1 at 2026-01-01T00:00:02Z: failed: receiver answered 500 Internal \
             Server Error: boom\n\
             \x20 attempt 2 at 2026-01-01T00:00:03Z: failed: connect to example.com:443 refused\n\
             \x20 attempt 3 at 2026-01-01T00:00:05Z: delivered\n"
        );
    }

    #[test]
    fn a_retrying_delivery_says_when_and_an_unfinished_job_what_it_will_send() {
        let delivery = job(json!({
            "job": CALLBACK_JOB, "state": "scheduled", "attempt": 1, "max_attempts": 20,
            "run_at": "2026-01-01T00:00:09Z", "finished_at": null,
            "runs": [run(1, "2026-01-01T00:00:02Z", "failed", Some("no answer"))],
        }));
        let parent = job(json!({
            "callback_url": "https://example.com/hook",
            "followups": [serde_json::to_value(&delivery).unwrap()],
        }));
        let shown = show(&parent, 9);
        assert!(
            shown.starts_with(
                "callback: https://example.com/hook: retrying: attempt 2/20 at \
                 2026-01-01T00:00:09Z (delivery "
            ),
            "{shown}"
        );
        let waiting = job(json!({
            "state": "running", "callback_url": "https://example.com/hook",
            "reply_to": "replies",
        }));
        assert_eq!(
            show(&waiting, 9),
            "callback: https://example.com/hook (posted when the job finishes)\n\
             reply:    to queue replies (sent when the job finishes)\n"
        );
        assert_eq!(show(&job(json!({})), 9), "");
    }
}
