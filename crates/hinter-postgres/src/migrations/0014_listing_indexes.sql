-- hinter schema, version 14 (PostgreSQL): listing indexes that a job's way through its active
-- states touches less (issue 13). A change of state is never a HOT update (`state` is
-- indexed), so every index whose predicate the new row version meets gets an entry: the
-- three listing indexes over every job ((state, seq), (queue, state, seq), (job, state, seq))
-- took nine of the twenty entries a job made from enqueue to success; now four.
--
-- Finished jobs, where most rows are and the listings people read most (the dead set), keep
-- three indexes, entered once when a job finishes. Active jobs keep two, by queue and state
-- and by name and state: a listing of an active state with neither reads it queue by queue
-- (the queues that hold the state, by `job_counts`).
--
-- A finished job has `finished_at`, an active one has not (as `jobs_finished` relies on
-- too); a listing names one state and says which of the two it is, so the planner can use
-- these partial indexes with any plan.
DROP INDEX jobs_state_seq;
DROP INDEX jobs_queue_state_seq;
DROP INDEX jobs_job_state;
CREATE INDEX jobs_done_state ON jobs (state, seq) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_done_queue ON jobs (queue, state, seq) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_done_job ON jobs (job, state, seq) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_active_queue ON jobs (queue, state, seq) WHERE finished_at IS NULL;
CREATE INDEX jobs_active_job ON jobs (job, state, seq) WHERE finished_at IS NULL;
