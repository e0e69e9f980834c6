-- hinter schema, version 9 (PostgreSQL): what a running attempt reports besides its outcome.
-- (Versions 7 and 8 belong to other features; the runner applies every version above the
-- database's, in order, so a gap is fine.)
-- The job's last progress ({"percent","message","at"}) and checkpoint.
ALTER TABLE jobs ADD COLUMN progress json, ADD COLUMN checkpoint json;
-- Log lines per job and attempt, in the order written (id). One worker writes a job's
-- lines at a time, each report after the previous one committed, so a job's lines commit in
-- id order and a reader following with `after` misses none. stream: stdout, stderr, hinter.
CREATE TABLE job_logs (
    id       BIGSERIAL   PRIMARY KEY,
    job_seq  BIGINT      NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
    attempt  BIGINT      NOT NULL,
    at       TIMESTAMPTZ NOT NULL,
    stream   TEXT        NOT NULL CHECK (stream IN ('stdout', 'stderr', 'hinter')),
    line     TEXT        NOT NULL
);
CREATE INDEX job_logs_job ON job_logs (job_seq, id);
