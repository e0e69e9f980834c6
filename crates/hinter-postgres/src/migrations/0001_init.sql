-- hinter schema, version 1 (PostgreSQL). The same tables and index ideas as the SQLite
-- schema; times are timestamptz (microseconds), ids uuid.
CREATE TABLE jobs (
    seq              BIGSERIAL   PRIMARY KEY,  -- enqueue order; FIFO and cursors
    id               UUID        NOT NULL UNIQUE,
    job              TEXT        NOT NULL,
    queue            TEXT        NOT NULL,
    payload          JSON        NOT NULL,     -- json, not jsonb: kept exactly as sent
    state            TEXT        NOT NULL CHECK (state IN
                         ('scheduled', 'queued', 'running', 'succeeded', 'dead', 'cancelled')),
    priority         INTEGER     NOT NULL,
    attempt          BIGINT      NOT NULL DEFAULT 0,
    max_attempts     BIGINT      NOT NULL,
    run_at           TIMESTAMPTZ NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    unique_key       TEXT,
    ordering_key     TEXT,
    timeout_ms       BIGINT,
    singleton        BOOLEAN     NOT NULL DEFAULT false,
    cancel_requested BOOLEAN     NOT NULL DEFAULT false,
    worker_id        TEXT,
    lease_token      BIGINT,
    lease_expires_at TIMESTAMPTZ,
    deadline_at      TIMESTAMPTZ,              -- started_at + timeout while running
    errors           JSONB       NOT NULL DEFAULT '[]',
    result           JSON
) WITH (
    -- A queue table churns: vacuum it early so leasing does not wade through dead rows.
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
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
-- Listing by state with a cursor, and counts per queue.
CREATE INDEX jobs_state_seq ON jobs (state, seq);
CREATE INDEX jobs_queue_state ON jobs (queue, state);
-- Retention pruning.
CREATE INDEX jobs_finished ON jobs (state, finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE queues (
    name   TEXT    PRIMARY KEY,
    paused BOOLEAN NOT NULL DEFAULT false
);
