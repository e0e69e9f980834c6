-- hinter schema, version 14: listing jobs by name (`GET /api/v1/jobs?job=…`, with or
-- without a state) reads the name's jobs of a state in enqueue order from an index (the
-- rowid, `seq`, ends every index), as `jobs_queue_state` does for a queue.
CREATE INDEX jobs_job_state ON jobs (job, state);
