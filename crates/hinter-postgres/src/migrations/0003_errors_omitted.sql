-- hinter schema, version 3 (PostgreSQL): a job's error history is bounded (first and last
-- entries kept); the number of entries dropped from its middle.
ALTER TABLE jobs ADD COLUMN errors_omitted BIGINT NOT NULL DEFAULT 0;
