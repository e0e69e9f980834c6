-- hinter schema, version 4 (PostgreSQL): one row per attempt of a job, written in the
-- transaction that changes the job (lease inserts it `running`; complete, fail and release
-- finish it). outcome: running, succeeded, failed, cancelled, released (hinter_core::RunOutcome).
CREATE TABLE runs (
    id          BIGSERIAL   PRIMARY KEY,       -- creation order: a job's runs oldest first
    job_seq     BIGINT      NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
    attempt     BIGINT      NOT NULL,
    worker_id   TEXT        NOT NULL,
    lease_token BIGINT      NOT NULL,          -- the lease it ran under: fences its updates
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,                   -- NULL while running
    outcome     TEXT        NOT NULL DEFAULT 'running' CHECK (outcome IN
                    ('running', 'succeeded', 'failed', 'cancelled', 'released')),
    error       TEXT,                          -- bounded like the job's `errors` entries
    exit_code   INTEGER,
    duration_ms BIGINT,
    logs        JSONB                          -- the attempt's log lines; not written yet
) WITH (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);
CREATE INDEX runs_job ON runs (job_seq, lease_token);
