-- hinter schema, version 6 (PostgreSQL): the durable event log (hinter_core::event). Rows are
-- written by the transaction that changes the job, so they exist iff it commits. Their public
-- ids are not stored here: a transaction's events get theirs once it is settled (every
-- transaction with a lower xid has ended), through event_txs (see the crate doc, "Event log").
CREATE TABLE events (
    xid     xid8        NOT NULL DEFAULT pg_current_xact_id(),  -- the writing transaction
    seq     BIGSERIAL   NOT NULL,                               -- order inside it
    at      TIMESTAMPTZ NOT NULL,
    kind    TEXT        NOT NULL,
    job_id  UUID        NOT NULL,
    job     TEXT        NOT NULL,
    queue   TEXT        NOT NULL,
    attempt BIGINT      NOT NULL,
    data    JSON,                                               -- json: kept as written
    PRIMARY KEY (xid, seq)
);
-- Only the order inside a transaction matters (xid orders transactions), and a session's
-- cached values increase: a cache spares every event a visit to the sequence's page.
ALTER SEQUENCE events_seq_seq CACHE 1000;
-- No index on job_id: readers walk the log in order from their position (the primary key)
-- and filter, so a second index would be work every change pays for and no read uses.

-- One row per settled writing transaction, in xid order: the place of its events in the log.
-- An event's id is base + (seq - first_seq); base(next) = base(prev) + span(prev).
CREATE TABLE event_txs (
    xid       xid8   PRIMARY KEY,
    first_seq BIGINT NOT NULL,   -- min(seq) of its events
    span      BIGINT NOT NULL,   -- max(seq) - min(seq) + 1
    base      BIGINT NOT NULL UNIQUE
);

-- A run is inserted when its attempt starts and updated once when it ends, in no indexed
-- column: room left on each page lets that update stay on the page (a HOT update, no index
-- entries), which pays for part of the event rows above.
ALTER TABLE runs SET (fillfactor = 70);
