-- hinter schema, version 10: what a running attempt reports besides its outcome.
-- (Versions 8 and 9 belong to other features; the runner applies every version above the
-- database's, in order, so a gap is fine.)
-- The job's last progress ({"percent","message","at"}) and checkpoint, both JSON text.
ALTER TABLE jobs ADD COLUMN progress TEXT;
ALTER TABLE jobs ADD COLUMN checkpoint TEXT;
-- Log lines per job and attempt, in the order written (id). stream: stdout, stderr, hinter.
CREATE TABLE job_logs (
    id       INTEGER PRIMARY KEY,
    job_seq  INTEGER NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
    attempt  INTEGER NOT NULL,
    at       INTEGER NOT NULL,
    stream   TEXT    NOT NULL,
    line     TEXT    NOT NULL
);
CREATE INDEX job_logs_job ON job_logs (job_seq, id);
-- Foreign keys are not enforced on hinter's connections: deleting a job (retention) deletes
-- its log here.
CREATE TRIGGER jobs_delete_logs AFTER DELETE ON jobs
BEGIN
    DELETE FROM job_logs WHERE job_seq = OLD.seq;
END;
