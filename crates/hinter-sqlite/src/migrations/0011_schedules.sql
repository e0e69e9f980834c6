-- hinter schema, version 11: schedules and their occurrences (hinter_core::schedule).
-- Version 10 belongs to another change; the runner applies every version above the
-- database's. An occurrence is written in the transaction that inserts its job, and
-- (schedule, fire_time) is its primary key: however many servers try, one records it.
CREATE TABLE schedules (
    name         TEXT    NOT NULL PRIMARY KEY,
    spec         TEXT    NOT NULL,             -- JSON: hinter_core::schedule::ScheduleSpec
    source       TEXT    NOT NULL,             -- 'api' or 'settings.job'
    paused       INTEGER NOT NULL DEFAULT 0,
    next_fire_at INTEGER,                      -- microseconds; NULL: nothing left to fire
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
-- The scheduler's due query and its sleep until the earliest.
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE paused = 0 AND next_fire_at IS NOT NULL;
CREATE TABLE schedule_occurrences (
    schedule    TEXT    NOT NULL,
    fire_time   INTEGER NOT NULL,              -- microseconds
    outcome     TEXT    NOT NULL,              -- fired, skipped, missed
    reason      TEXT,
    job_id      TEXT,                          -- the job fired (no foreign key: pruned jobs)
    fired_by    TEXT,                          -- the process that recorded it (its id in /api/v1/workers)
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (schedule, fire_time)
);
