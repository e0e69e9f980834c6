-- hinter schema, version 2: live processes and leadership.
CREATE TABLE processes (
    id                TEXT        PRIMARY KEY,
    host              TEXT        NOT NULL,
    pid               BIGINT      NOT NULL,
    role              TEXT        NOT NULL,
    queues            TEXT[]      NOT NULL,
    concurrency       BIGINT      NOT NULL,
    started_at        TIMESTAMPTZ NOT NULL,
    last_heartbeat_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX processes_heartbeat ON processes (last_heartbeat_at);

CREATE TABLE leaders (
    name       TEXT        PRIMARY KEY,
    holder     TEXT        NOT NULL,
    term       BIGINT      NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
