-- hinter schema, version 9: idempotency keys of enqueues (hinter_core::store::IdempotentInsert).
-- A row is written in the transaction that inserts its jobs, with the answer those jobs got,
-- so a request repeated after a lost reply gets that answer instead of new jobs. Version 8
-- belongs to another change; the runner applies every version above the database's.
CREATE TABLE idempotency_keys (
    scope       TEXT    NOT NULL,              -- whose key: a hash of the caller's credentials
    key         TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,              -- a hash of the request the key was used for
    created_at  INTEGER NOT NULL,              -- microseconds since the epoch
    expires_at  INTEGER NOT NULL,
    answer      TEXT    NOT NULL,              -- JSON: the inserted jobs as answered
    PRIMARY KEY (scope, key)
);
-- Pruning, earliest expiry first.
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);
