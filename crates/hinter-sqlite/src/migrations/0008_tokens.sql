-- hinter schema, version 8: API tokens and the audit record of admin actions.
-- A token is stored by the SHA-256 of its secret (hex), never the secret. Revoking a token
-- deletes its row (the audit record keeps who made and revoked it), so a name can be used
-- again.
CREATE TABLE tokens (
    name       TEXT PRIMARY KEY,
    hash       TEXT    NOT NULL UNIQUE,
    scopes     TEXT    NOT NULL,            -- JSON array of scope names
    queues     TEXT,                        -- JSON array; NULL: every queue
    created_at INTEGER NOT NULL             -- microseconds since the epoch
);

-- Admin actions (cancel, retry, pause, resume, token changes), each written in the
-- transaction of its action. AUTOINCREMENT: ids are never reused.
CREATE TABLE audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,                -- microseconds since the epoch
    actor  TEXT    NOT NULL,                -- a token's name, 'cli' or '(no auth)'
    action TEXT    NOT NULL,
    target TEXT    NOT NULL,
    detail TEXT                             -- JSON, NULL for none
);
