-- hinter schema, version 10 (PostgreSQL): schedules and their occurrences
-- (hinter_core::schedule). Version 9 belongs to another change; the runner applies every
-- version above the database's. An occurrence is written in the transaction that inserts its
-- job, and (schedule, fire_time) is its primary key: however many servers try, one records it.
CREATE TABLE schedules (
    name         TEXT        NOT NULL PRIMARY KEY,
    spec         TEXT        NOT NULL,  -- JSON: hinter_core::schedule::ScheduleSpec
    source       TEXT        NOT NULL,  -- 'api' or 'settings.job'
    paused       BOOLEAN     NOT NULL DEFAULT FALSE,
    next_fire_at TIMESTAMPTZ,           -- NULL: nothing left to fire
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
-- The scheduler's due query and its sleep until the earliest.
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE NOT paused AND next_fire_at IS NOT NULL;
CREATE TABLE schedule_occurrences (
    schedule    TEXT        NOT NULL REFERENCES schedules (name) ON DELETE CASCADE,
    fire_time   TIMESTAMPTZ NOT NULL,
    outcome     TEXT        NOT NULL,   -- fired, skipped, missed
    reason      TEXT,
    job_id      UUID,                   -- the job fired (no foreign key: pruned jobs)
    fired_by    TEXT,                  -- the process that recorded it (its id in /api/v1/workers)
    recorded_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (schedule, fire_time)
);
