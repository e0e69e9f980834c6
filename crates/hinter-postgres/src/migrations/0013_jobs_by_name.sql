-- hinter schema, version 13 (PostgreSQL): listing jobs by queue or by name, with or without
-- a state (`GET /api/v1/jobs?queue=…&job=…&state=…`), reads a state's jobs in enqueue order
-- from an index: (queue, state, seq) replaces (queue, state), whose other use, counting
-- jobs per queue, ended with migration 12, and (job, state, seq) is new.
CREATE INDEX jobs_queue_state_seq ON jobs (queue, state, seq);
DROP INDEX jobs_queue_state;
CREATE INDEX jobs_job_state ON jobs (job, state, seq);
