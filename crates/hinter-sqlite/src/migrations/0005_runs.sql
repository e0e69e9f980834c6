-- hinter schema, version 5: one row per attempt of a job, written in the transaction that
-- changes the job (lease inserts it `running`; complete, fail and release finish it).
-- outcome: running, succeeded, failed, cancelled, released (hinter_core::RunOutcome).
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,           -- creation order: a job's runs oldest first
    job_seq     INTEGER NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    worker_id   TEXT    NOT NULL,
    lease_token INTEGER NOT NULL,              -- the lease it ran under: fences its updates
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,                       -- NULL while running
    outcome     TEXT    NOT NULL DEFAULT 'running',
    error       TEXT,                          -- bounded like the job's `errors` entries
    exit_code   INTEGER,
    duration_ms INTEGER,
    logs        TEXT                           -- the attempt's log lines (JSON); not written yet
);
CREATE INDEX runs_job ON runs (job_seq, lease_token);
-- Foreign keys are not enforced on hinter's connections: deleting a job (retention) deletes
-- its runs here.
CREATE TRIGGER jobs_delete_runs AFTER DELETE ON jobs
BEGIN
    DELETE FROM runs WHERE job_seq = OLD.seq;
END;
