-- hinter schema, version 15: one index fewer for every lease and completion (issue 13).
-- `jobs_running_by_name` served only the singleton check ("is a job of this name running?"),
-- and `jobs_active_job` (job, state, seq) over the unfinished jobs answers it as well: a
-- running job is never finished (`finished_at` is NULL until a job ends, and set back to NULL
-- when a finished job is retried), so the checks say `finished_at IS NULL` too and the
-- planner can take the partial index. A changed row gets a new entry in each index whose
-- predicate it meets, so every lease writes one index entry fewer.
DROP INDEX jobs_running_by_name;
