-- hinter schema, version 16: one index fewer for every lease and completion (issue 13).
-- `jobs_running_by_name` served only the singleton check ("is a job of this name running?"),
-- and `jobs_active_job` (job, state) over the unfinished jobs answers it as well: a running
-- job is never finished (`finished_at` is NULL until a job ends, and set back to NULL when a
-- finished job is retried), so the check says `finished_at IS NULL` too and SQLite takes the
-- partial index. A job's way from queued to succeeded then touches two B-tree entries fewer.
DROP INDEX jobs_running_by_name;
