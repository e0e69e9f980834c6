//! The store conformance suite: the rules of [`hinter_core::Store`] written once, as tests that
//! every backend (SQLite, PostgreSQL, …) must pass.
//!
//! A backend runs the whole suite from one integration test file:
//!
//! ```ignore
//! async fn my_store() -> (std::sync::Arc<dyn hinter_core::Store>, hinter_store_tests::Guard) {
//!     let dir = tempfile::tempdir().expect("temp dir");
//!     let store = MyStore::open(dir.path()).await.expect("open");
//!     (std::sync::Arc::new(store), Box::new(dir))
//! }
//! hinter_store_tests::conformance_suite!(my_store);
//! ```
//!
//! Run it with `cargo test -p hinter-sqlite --test conformance` (one test:
//! `… --test conformance -- lease_by_priority_then_fifo`).
//!
//! This expands to one `#[test]` per rule, named after it, so a failure names the rule. Every
//! test gets a fresh, empty store from the factory and drops it (then the guard) at the end.
//!
//! Tests never sleep to let time pass: every store operation takes `now`, and the tests move
//! `now` forward explicitly. Times are whole milliseconds, so backends must keep at least
//! millisecond precision for times and durations.

mod access;
mod cluster;
mod concurrency;
mod counts;
mod events;
mod finish;
mod followups;
mod handoff;
mod idempotency;
mod insert;
mod lease;
mod limits;
mod log;
mod manage;
mod ordering;
mod output;
mod runs;
mod schedules;
mod support;
mod unique;

pub use access::*;
pub use cluster::*;
pub use concurrency::*;
pub use counts::*;
pub use events::*;
pub use finish::*;
pub use followups::*;
pub use handoff::*;
pub use idempotency::*;
pub use insert::*;
pub use lease::*;
pub use limits::*;
pub use log::*;
pub use manage::*;
pub use ordering::*;
pub use output::*;
pub use runs::*;
pub use schedules::*;
pub use unique::*;

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Whatever must outlive the store in a test (a temporary directory, a scratch database); it
/// is dropped after the store.
pub type Guard = Box<dyn Any + Send>;

/// A single test fails when it runs longer than this (a deadlock, a lost wake-up).
pub const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs one conformance test: builds a multi-threaded runtime, gets a fresh backend (a
/// [`hinter_core::Store`] or a [`hinter_core::Cluster`]) from `factory` and hands it to `test`. Used by
/// [`conformance_suite!`] and [`cluster_conformance_suite!`].
pub fn run<B, F, FFut, T, TFut>(factory: F, test: T)
where
    B: ?Sized,
    F: FnOnce() -> FFut,
    FFut: Future<Output = (Arc<B>, Guard)>,
    T: FnOnce(Arc<B>) -> TFut,
    TFut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("build a tokio runtime");
    runtime.block_on(async {
        let (backend, guard) = factory().await;
        tokio::time::timeout(TEST_TIMEOUT, test(backend))
            .await
            .expect("the conformance test did not finish in time");
        drop(guard);
    });
}

/// Expands to one `#[test]` per [`hinter_core::Cluster`] rule, each against a fresh backend from
/// `$factory`: an `async fn() -> (Arc<dyn hinter_core::Cluster>, hinter_store_tests::Guard)`.
#[macro_export]
macro_rules! cluster_conformance_suite {
    ($factory:path) => {
        $crate::__cluster_tests!(
            $factory;
            process_heartbeat_and_list,
            silent_processes_drop_off,
            leadership_is_exclusive_and_fenced,
            leadership_release_hands_over,
            leadership_one_winner_under_contention,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __cluster_tests {
    ($factory:path; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::run($factory, $crate::$name);
            }
        )*
    };
}

/// Expands to one `#[test]` per conformance rule, each running against a fresh store from
/// `$factory`: an `async fn() -> (Arc<dyn hinter_core::Store>, hinter_store_tests::Guard)`.
#[macro_export]
macro_rules! conformance_suite {
    ($factory:path) => {
        $crate::__conformance_tests!(
            $factory;
            // insert and get
            insert_and_get_round_trip,
            get_unknown_is_none,
            insert_state_depends_on_run_at,
            insert_batch_returns_results_in_order,
            insert_batch_is_atomic,
            a_large_mixed_batch_is_stored_logged_and_counted_in_order,
            a_large_completion_batch_answers_each_item_and_logs_in_order,
            ping_succeeds,
            limits_extreme_values_are_stored_and_computed,
            limits_unstorable_jobs_are_refused,
            // lease
            lease_by_priority_then_fifo,
            lease_only_requested_queues,
            handoff_leases_an_inserted_job_for_a_parked_worker,
            handoff_keeps_the_lease_order,
            handoff_serves_its_queues_and_names_only,
            handoff_survives_an_abandoned_insert,
            handoff_keeps_paused_queues_and_singletons,
            handoff_releases_the_jobs_of_a_worker_gone,
            lease_and_park_hold_max_to_the_lease_limit,
            lease_respects_max,
            lease_sets_running_fields_and_counts_attempt,
            lease_token_changes_between_leases,
            scheduled_not_leased_before_run_at,
            promote_scheduled_and_next_scheduled_at,
            lease_over_many_queues,
            lease_only_requested_job_names,
            // heartbeat, complete, fail, release, expiry
            heartbeat_extends_lease,
            heartbeat_stale_token_refused,
            heartbeat_reports_cancel_requested,
            complete_records_result,
            stale_token_refused_and_nothing_changes,
            complete_twice_refused,
            fail_retry_schedules_and_records_error,
            fail_dead_and_cancelled,
            fail_retry_while_cancel_requested_ends_cancelled,
            expired_lease_listed,
            expired_list_longest_overdue_first,
            expired_list_ties_in_enqueue_order,
            timed_out_job_listed,
            rescued_job_old_token_stale,
            poison_job_ends_dead,
            release_returns_job_uncounted,
            fail_error_message_is_bounded,
            fail_history_keeps_first_and_last,
            // cancel, retry
            cancel_queued_and_scheduled,
            cancel_running_requests_cancel,
            cancel_finished_conflict_and_unknown_not_found,
            retry_dead_and_cancelled,
            retry_other_states_conflict,
            // duplicates
            unique_key_while_unfinished,
            unique_key_with_window,
            unique_key_per_job_name,
            unique_key_duplicates_within_batch,
            // ordering keys and singletons
            ordering_key_one_at_a_time_in_order,
            ordering_key_head_waits,
            ordering_key_other_keys_not_held_up,
            ordering_key_retried_head_waits_for_running,
            singleton_one_running_at_a_time,
            singleton_retried_from_dead_holds_its_name,
            lease_skips_blocked_jobs_to_fill_max,
            // queues, listing, retention
            pause_stops_leases,
            queue_list_counts_and_paused,
            queue_counts_follow_every_transition,
            queue_counts_follow_deletes_and_rollbacks,
            list_filters,
            list_pages_with_cursor,
            list_pages_by_job_page,
            list_reads_bodies_only_when_asked,
            list_byte_budget_ends_pages_early,
            prune_finished_by_cutoff,
            prune_respects_limit,
            prune_oldest_finished_first,
            delete_finished_job_only,
            purge_queue_finished_jobs,
            // replies and callbacks written with the outcome
            followups_reply_on_success,
            followups_reply_on_dead_and_cancelled,
            followups_only_with_a_written_outcome,
            followups_callback_delivery_job,
            followups_batch_each_replies_once,
            followups_extreme_fields_round_trip,
            // attempt records
            runs_record_each_attempt,
            runs_record_bounded_errors_and_cancellation,
            runs_record_released_attempt,
            runs_record_rescue_and_ignore_stale_tokens,
            runs_pruned_with_their_job,
            output_lines_progress_and_checkpoints_per_attempt,
            output_reports_are_fenced,
            output_lines_are_mended_and_reports_checked,
            output_logs_pruned_with_their_job,
            // events and concurrency
            subscribe_jobs_available_and_finished,
            a_handed_over_insert_announces_only_what_waits,
            unit_of_work_commits_all_writes_together,
            unit_of_work_that_fails_leaves_nothing,
            fail_outcomes_state_and_events,
            rescued_lease_is_queued_and_announced,
            writes_state_and_events,
            held_back_jobs_are_announced_when_a_job_stops_running,
            concurrent_leases_are_exclusive,
            concurrent_leases_respect_singleton_and_ordering,
            // the event log
            log_records_every_change_in_order,
            log_reads_after_an_id_with_filters_and_limits,
            log_unit_of_work_logs_with_its_writes,
            log_prune_oldest_first_and_ids_not_reused,
            log_hint_follows_the_commit,
            log_progress_reports_are_logged,
            // idempotency keys
            idempotency_same_key_inserts_once_and_replays,
            idempotency_batch_answer_is_kept_whole,
            idempotency_other_request_with_the_key_is_refused,
            idempotency_keys_expire_and_are_pruned,
            idempotency_key_is_atomic_with_the_insert,
            idempotency_concurrent_uses_insert_once,
            // schedules
            schedules_create_read_replace_pause_delete,
            schedules_due_earliest_first_without_paused,
            schedules_occurrence_and_job_are_atomic,
            schedules_second_firing_of_a_time_inserts_nothing,
            schedules_history_latest_first,
            schedules_overlap_reads_the_previous_job,
            // tokens and the audit record
            tokens_create_list_revoke,
            tokens_refuse_duplicates_unknown_names_and_bad_input,
            tokens_at_the_limits_round_trip,
            audit_is_written_with_its_action,
            audit_pages_newest_first,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($factory:path; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::run($factory, $crate::$name);
            }
        )*
    };
}
