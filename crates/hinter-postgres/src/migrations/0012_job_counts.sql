-- hinter schema, version 12 (PostgreSQL): job counts per queue and state without counting
-- the jobs table on every read (issue 12).
--
-- A counter row per (queue, state) updated by every transaction that changes a job would
-- make concurrent workers wait for each other on that row. Instead, each statement that
-- inserts, updates or deletes jobs adds one row per (queue, state) it changed to
-- `job_count_deltas` (statement-level triggers over the statement's transition tables),
-- which is only ever inserted into; the maintenance leader (and `queue_list`) folds those
-- rows into the totals in `job_counts` now and then. A count is the total plus the deltas
-- not folded yet, read in one statement: exact in that statement's snapshot.
CREATE TABLE job_counts (
    queue text   NOT NULL,
    state text   NOT NULL,
    n     bigint NOT NULL,
    PRIMARY KEY (queue, state)
);
CREATE TABLE job_count_deltas (
    queue text   NOT NULL,
    state text   NOT NULL,
    n     bigint NOT NULL
) WITH (
    -- Rows are deleted by the batch every second or so: vacuum early.
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 10000
);

-- The functions find the tables in the schema they were created in, whatever the
-- search_path of the statement that fires them.
CREATE FUNCTION job_counts_inserted() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO job_count_deltas (queue, state, n)
        SELECT queue, state, count(*) FROM inserted_jobs GROUP BY queue, state;
    RETURN NULL;
END $$;

CREATE FUNCTION job_counts_updated() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    -- Heartbeats, progress and other updates that move no job add nothing.
    INSERT INTO job_count_deltas (queue, state, n)
        SELECT queue, state, sum(d) FROM (
            SELECT queue, state, 1 AS d FROM new_jobs
            UNION ALL
            SELECT queue, state, -1 FROM old_jobs
        ) AS moved
        GROUP BY queue, state HAVING sum(d) <> 0;
    RETURN NULL;
END $$;

CREATE FUNCTION job_counts_deleted() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO job_count_deltas (queue, state, n)
        SELECT queue, state, -count(*) FROM deleted_jobs GROUP BY queue, state;
    RETURN NULL;
END $$;

-- No job changes between the triggers' start and the first totals (older hinters may be
-- writing while this runs): the lock is held until the migration commits.
LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE;
CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS inserted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION job_counts_inserted();
CREATE TRIGGER jobs_count_update AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION job_counts_updated();
CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS deleted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION job_counts_deleted();
INSERT INTO job_counts (queue, state, n)
    SELECT queue, state, count(*) FROM jobs GROUP BY queue, state;

-- The longest-waiting queued job of a queue (its oldest `run_at`), found without reading
-- the queue's other jobs.
CREATE INDEX jobs_queued_since ON jobs (queue, run_at) WHERE state = 'queued';
