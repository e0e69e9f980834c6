-- hinter schema, version 13: job counts per queue and state, so that listing queues reads a
-- few rows instead of counting every job (issue 12). The writer adds what each group changed
-- in the group's transaction (counts.rs); here they start from the jobs there are.
CREATE TABLE job_counts (
    queue TEXT    NOT NULL,
    state TEXT    NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (queue, state)
) WITHOUT ROWID;
INSERT INTO job_counts (queue, state, n)
    SELECT queue, state, COUNT(*) FROM jobs GROUP BY queue, state;
-- The longest-waiting queued job of a queue (its oldest `run_at`), found without reading
-- the queue's other jobs.
CREATE INDEX jobs_queued_since ON jobs (queue, run_at) WHERE state = 'queued';
