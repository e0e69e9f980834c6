//! What running attempts report: log lines per job and attempt, progress, checkpoints.

use crate::support::*;
use hinter_core::output::{MAX_LOG_LINE_BYTES, MAX_REPORT_LINES};
use hinter_core::retry::FailOutcome;
use hinter_core::store::{JobFilter, PruneRequest};
use hinter_core::{
    JobReport, LogLine, LogQuery, LogStream, NewLogLine, Progress, Store, StoreError,
};
use serde_json::json;
use std::sync::Arc;

fn all() -> LogQuery {
    LogQuery {
        attempt: None,
        after: 0,
        limit: 1000,
    }
}

async fn logs(store: &dyn Store, id: uuid::Uuid, query: LogQuery) -> Vec<LogLine> {
    store
        .job_logs(id, query)
        .await
        .expect("job_logs")
        .unwrap_or_else(|| panic!("job {id} should exist"))
}

fn report(id: uuid::Uuid, lease_token: i64, lines: Vec<NewLogLine>) -> JobReport {
    JobReport {
        id,
        lease_token,
        logs: lines,
        progress: None,
        checkpoint: None,
    }
}

fn texts(lines: &[LogLine]) -> Vec<(u32, &str, &str, &str)> {
    lines
        .iter()
        .map(|l| {
            (
                l.attempt,
                l.stream.as_str(),
                l.level.as_str(),
                l.line.as_str(),
            )
        })
        .collect()
}

/// Lines are kept in the order written, under the attempt that wrote them, with their
/// times, streams and levels; `attempt`, `after` and `limit` select among them. Progress
/// and the checkpoint are replaced by each report that carries them (a report without
/// them keeps them); the next attempt is handed the checkpoint at lease, and `job_get`
/// shows both while listings leave the checkpoint out.
pub async fn output_lines_progress_and_checkpoints_per_attempt(store: Arc<dyn Store>) {
    let store = &*store;
    let t0 = base_time();
    let id = insert(store, job("report"), t0).await.id;
    let first = lease_one(store, "default", t0).await;
    assert_eq!(first.checkpoint, None, "no checkpoint yet");
    let progress = Progress {
        percent: 42.5,
        message: Some("resizing".into()),
        at: t0 + secs(1),
    };
    store
        .job_report(
            JobReport {
                progress: Some(progress.clone()),
                checkpoint: Some(json!({"done": 3, "text": "ü\n\"q\""})),
                ..report(
                    id,
                    first.lease_token,
                    vec![
                        NewLogLine::new(t0 + secs(1), LogStream::Stdout, "hello"),
                        NewLogLine::new(t0 + secs(2), LogStream::Stderr, "trouble ü"),
                    ],
                )
            },
            t0 + secs(2),
        )
        .await
        .expect("the report is stored");
    // A report of lines only keeps progress and checkpoint.
    store
        .job_report(
            report(
                id,
                first.lease_token,
                vec![NewLogLine::new(t0 + secs(3), LogStream::Hinter, "note")],
            ),
            t0 + secs(3),
        )
        .await
        .expect("the second report is stored");
    let job = get(store, id).await;
    assert_eq!(job.progress, Some(progress));
    assert_eq!(job.checkpoint, Some(json!({"done": 3, "text": "ü\n\"q\""})));
    let listed = list(
        store,
        JobFilter {
            limit: 10,
            ..JobFilter::default()
        }
        .complete(),
    )
    .await;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].checkpoint, None,
        "listings leave the checkpoint out"
    );

    fail_ok(
        store,
        &first,
        FailOutcome::Retry { run_at: t0 },
        t0 + secs(4),
    )
    .await;
    let second = lease_one(store, "default", t0 + secs(5)).await;
    assert_eq!(second.attempt, 2);
    assert_eq!(
        second.checkpoint,
        Some(json!({"done": 3, "text": "ü\n\"q\""})),
        "the next attempt resumes from the checkpoint"
    );
    store
        .job_report(
            JobReport {
                checkpoint: Some(json!([4])),
                ..report(
                    id,
                    second.lease_token,
                    vec![NewLogLine::new(t0 + secs(6), LogStream::Stdout, "again")],
                )
            },
            t0 + secs(6),
        )
        .await
        .expect("the second attempt's report is stored");

    let every = logs(store, id, all()).await;
    assert_eq!(
        texts(&every),
        vec![
            (1, "stdout", "info", "hello"),
            (1, "stderr", "error", "trouble ü"),
            (1, "hinter", "warn", "note"),
            (2, "stdout", "info", "again"),
        ]
    );
    assert_eq!(every[0].at, t0 + secs(1));
    assert_eq!(every[3].at, t0 + secs(6));
    assert!(
        every.windows(2).all(|w| w[0].id < w[1].id),
        "ids grow in the order written: {every:?}"
    );
    let second_only = logs(
        store,
        id,
        LogQuery {
            attempt: Some(2),
            ..all()
        },
    )
    .await;
    assert_eq!(texts(&second_only), vec![(2, "stdout", "info", "again")]);
    let page = logs(
        store,
        id,
        LogQuery {
            after: every[0].id,
            limit: 2,
            ..all()
        },
    )
    .await;
    assert_eq!(page, every[1..3].to_vec(), "after and limit page through");
    let none = logs(
        store,
        id,
        LogQuery {
            after: every[3].id,
            ..all()
        },
    )
    .await;
    assert!(none.is_empty());
    assert_eq!(
        get(store, id).await.checkpoint,
        Some(json!([4])),
        "a later checkpoint replaces the earlier"
    );
}

/// A report is fenced like every worker call: a stale lease token, a finished job or an
/// unknown id changes nothing. Reading the log of an unknown job answers `None`.
pub async fn output_reports_are_fenced(store: Arc<dyn Store>) {
    let store = &*store;
    let t0 = base_time();
    let id = insert(store, job("fenced"), t0).await.id;
    let leased = lease_one(store, "default", t0).await;
    let line = || vec![NewLogLine::new(t0, LogStream::Stdout, "x")];
    let stale = store
        .job_report(
            JobReport {
                checkpoint: Some(json!(1)),
                ..report(id, leased.lease_token + 1, line())
            },
            t0,
        )
        .await;
    assert_stale(stale, id, "a report with a wrong token");
    let unknown = uuid::Uuid::now_v7();
    assert_not_found(
        store.job_report(report(unknown, 1, line()), t0).await,
        unknown,
        "a report of an unknown job",
    );
    complete_ok(store, &leased, t0 + secs(1)).await;
    assert_stale(
        store
            .job_report(report(id, leased.lease_token, line()), t0 + secs(2))
            .await,
        id,
        "a report after the job finished",
    );
    assert!(
        logs(store, id, all()).await.is_empty(),
        "nothing was written"
    );
    assert_eq!(get(store, id).await.checkpoint, None);
    assert_eq!(
        store.job_logs(unknown, all()).await.expect("job_logs"),
        None
    );
}

/// A NUL is replaced and an overlong line cut, saying how much; a report that cannot be
/// stored (progress out of 0..=100, too many lines) is refused whole.
pub async fn output_lines_are_mended_and_reports_checked(store: Arc<dyn Store>) {
    let store = &*store;
    let t0 = base_time();
    let id = insert(store, job("mend"), t0).await.id;
    let leased = lease_one(store, "default", t0).await;
    let long = "x".repeat(MAX_LOG_LINE_BYTES + 10);
    store
        .job_report(
            report(
                id,
                leased.lease_token,
                vec![
                    NewLogLine::new(t0, LogStream::Stdout, "a\0b"),
                    NewLogLine::new(t0, LogStream::Stdout, long),
                ],
            ),
            t0,
        )
        .await
        .expect("mended lines are stored");
    let bad_progress = JobReport {
        progress: Some(Progress {
            percent: 150.0,
            message: None,
            at: t0,
        }),
        ..report(
            id,
            leased.lease_token,
            vec![NewLogLine::new(t0, LogStream::Stdout, "not kept")],
        )
    };
    match store.job_report(bad_progress, t0).await {
        Err(StoreError::Invalid(e)) => assert_eq!(e.field, "progress.percent"),
        other => panic!("progress 150 should be refused, got {other:?}"),
    }
    let too_many = report(
        id,
        leased.lease_token,
        vec![NewLogLine::new(t0, LogStream::Stdout, "l"); MAX_REPORT_LINES + 1],
    );
    assert!(matches!(
        store.job_report(too_many, t0).await,
        Err(StoreError::Invalid(_))
    ));
    let lines = logs(store, id, all()).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0].line, "a\u{FFFD}b");
    assert!(lines[1].line.starts_with("xxx"));
    assert!(
        lines[1].line.ends_with("[line cut: 10 more bytes]"),
        "{}",
        &lines[1].line[MAX_LOG_LINE_BYTES - 10..]
    );
    assert_eq!(get(store, id).await.progress, None);
}

/// A pruned job's log goes with it.
pub async fn output_logs_pruned_with_their_job(store: Arc<dyn Store>) {
    let store = &*store;
    let old = base_time() - chrono::Duration::days(40);
    let id = insert(store, job("gone"), old).await.id;
    let leased = lease_one(store, "default", old).await;
    store
        .job_report(
            report(
                id,
                leased.lease_token,
                vec![NewLogLine::new(old, LogStream::Stdout, "bye")],
            ),
            old,
        )
        .await
        .expect("report");
    complete_ok(store, &leased, old + secs(1)).await;
    let deleted = store
        .job_prune(PruneRequest {
            succeeded_before: old + secs(2),
            dead_before: old + secs(2),
            cancelled_before: old + secs(2),
            limit: 100,
        })
        .await
        .expect("job_prune");
    assert_eq!(deleted, 1);
    assert_eq!(store.job_logs(id, all()).await.expect("job_logs"), None);
}
