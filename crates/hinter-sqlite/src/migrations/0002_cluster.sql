-- hinter schema, version 2: live processes and leadership.
CREATE TABLE processes (
    id                TEXT PRIMARY KEY,
    host              TEXT    NOT NULL,
    pid               INTEGER NOT NULL,
    role              TEXT    NOT NULL,
    queues            TEXT    NOT NULL,   -- JSON array
    concurrency       INTEGER NOT NULL,
    started_at        INTEGER NOT NULL,
    last_heartbeat_at INTEGER NOT NULL
);
CREATE INDEX processes_heartbeat ON processes (last_heartbeat_at);

CREATE TABLE leaders (
    name       TEXT PRIMARY KEY,
    holder     TEXT    NOT NULL,
    term       INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
