-- hinter schema, version 8 (PostgreSQL): idempotency keys of enqueues
-- (hinter_core::store::IdempotentInsert). A row is taken (inserted with no answer) before the
-- jobs are inserted and given their answer after, all in one transaction: a concurrent use of
-- the key waits on the primary key for that transaction and then reads the committed answer.
-- Version 7 belongs to another change; the runner applies every version above the database's.
CREATE TABLE idempotency_keys (
    scope       TEXT        NOT NULL,  -- whose key: a hash of the caller's credentials
    key         TEXT        NOT NULL,
    fingerprint TEXT        NOT NULL,  -- a hash of the request the key was used for
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    answer      TEXT,                  -- JSON: the inserted jobs as answered; set before commit
    PRIMARY KEY (scope, key)
);
-- Pruning, earliest expiry first.
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);
