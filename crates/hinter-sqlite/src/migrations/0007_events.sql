-- hinter schema, version 7: the durable event log (hinter_core::event). One row per change of
-- a job, written in the transaction of the change. Writes are serialised (one writer at a
-- time, across processes too), so `id` order is commit order: a reader that resumes after
-- the last id it handled misses nothing. Ids are never reused: pruning always keeps the
-- newest row, so the next id is always above every id handed out (cheaper than
-- AUTOINCREMENT, which writes `sqlite_sequence` on every insert).
CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,                  -- microseconds since the epoch
    kind    TEXT    NOT NULL,                  -- hinter_core::EventKind
    job_seq INTEGER NOT NULL,                  -- the job's `seq`: an integer to index
    job_id  TEXT    NOT NULL,
    job     TEXT    NOT NULL,
    queue   TEXT    NOT NULL,
    attempt INTEGER NOT NULL,
    data    TEXT                               -- JSON, NULL for kinds without data
);
-- A job's timeline, and readers that follow one job.
CREATE INDEX events_job ON events (job_seq, id);
