-- hinter schema, version 1.
-- Times are microseconds since the Unix epoch (UTC), the precision PostgreSQL keeps too.
CREATE TABLE jobs (
    seq              INTEGER PRIMARY KEY,      -- enqueue order; FIFO and cursors
    id               TEXT    NOT NULL UNIQUE,
    job              TEXT    NOT NULL,
    queue            TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    priority         INTEGER NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    run_at           INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    unique_key       TEXT,
    ordering_key     TEXT,
    timeout_ms       INTEGER,
    singleton        INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker_id        TEXT,
    lease_token      INTEGER,
    lease_expires_at INTEGER,
    deadline_at      INTEGER,                  -- started_at + timeout while running
    errors           TEXT    NOT NULL DEFAULT '[]',
    result           TEXT
);

-- Leasing: the best queued job of a queue.
CREATE INDEX jobs_queued ON jobs (queue, priority DESC, seq) WHERE state = 'queued';
-- Promotion of due scheduled jobs.
CREATE INDEX jobs_scheduled ON jobs (run_at) WHERE state = 'scheduled';
-- Rescue of expired leases and timed-out jobs.
CREATE INDEX jobs_lease_expiry ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_deadline ON jobs (deadline_at) WHERE state = 'running' AND deadline_at IS NOT NULL;
-- Singleton guard: is a job of this name running?
CREATE INDEX jobs_running_by_name ON jobs (job) WHERE state = 'running';
-- Ordering guard: the oldest unfinished job per (queue, ordering_key).
CREATE INDEX jobs_ordering ON jobs (queue, ordering_key, seq)
    WHERE ordering_key IS NOT NULL AND state IN ('scheduled', 'queued', 'running');
-- Duplicate detection.
CREATE INDEX jobs_unique ON jobs (job, unique_key, seq) WHERE unique_key IS NOT NULL;
-- Listing by state with a cursor, pruning, and counts per queue.
CREATE INDEX jobs_state_seq ON jobs (state, seq);
CREATE INDEX jobs_queue_state ON jobs (queue, state);

CREATE TABLE queues (
    name   TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0
);
