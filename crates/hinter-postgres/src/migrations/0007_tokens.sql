-- hinter schema, version 7: API tokens and the audit record of admin actions.
-- A token is stored by the SHA-256 of its secret (hex), never the secret. Revoking a token
-- deletes its row (the audit record keeps who made and revoked it), so a name can be used
-- again.
CREATE TABLE tokens (
    name       TEXT        PRIMARY KEY,
    hash       TEXT        NOT NULL UNIQUE,
    scopes     TEXT[]      NOT NULL,
    queues     TEXT[],                      -- NULL: every queue
    created_at TIMESTAMPTZ NOT NULL
);

-- Admin actions (cancel, retry, pause, resume, token changes), each written in the
-- transaction of its action. Listed newest first; ids only order entries.
CREATE TABLE audit (
    id     BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     TIMESTAMPTZ NOT NULL,
    actor  TEXT        NOT NULL,            -- a token's name, 'cli' or '(no auth)'
    action TEXT        NOT NULL,
    target TEXT        NOT NULL,
    detail JSON                             -- NULL for none
);
