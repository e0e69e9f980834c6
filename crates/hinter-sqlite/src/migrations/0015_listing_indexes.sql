-- hinter schema, version 15: listing indexes that a job's way through its active states
-- touches less (issue 13). Indexes over (state, …) for every job had an entry deleted and
-- another inserted at each change of state: three indexes, fifteen B-tree operations per job
-- from enqueue to success, a third of the writer's work in a drain.
--
-- Finished jobs, where most rows are and the listings people read most (the dead set), keep
-- three indexes: by state, by queue and state, by name and state; a job enters them once,
-- when it finishes. Active jobs keep two, by queue and state and by name and state: a listing
-- of an active state with neither reads it queue by queue (the queues that hold the state, by
-- `job_counts`).
--
-- A finished job has `finished_at`, an active one has not (as `jobs_finished` relies on
-- too). The predicates say it that way, not with the states: a listing names one state,
-- and SQLite uses a partial index only for a query whose terms contain its predicate.
-- The rowid, `seq`, ends every index, so each gives a state's jobs in enqueue order.
DROP INDEX jobs_state_seq;
DROP INDEX jobs_queue_state;
DROP INDEX jobs_job_state;
CREATE INDEX jobs_done_state ON jobs (state, seq) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_done_queue ON jobs (queue, state) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_done_job ON jobs (job, state) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_active_queue ON jobs (queue, state) WHERE finished_at IS NULL;
CREATE INDEX jobs_active_job ON jobs (job, state) WHERE finished_at IS NULL;
