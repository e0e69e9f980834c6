-- hinter schema, version 3: a job's error history is bounded (first and last entries kept);
-- the number of entries dropped from its middle.
ALTER TABLE jobs ADD COLUMN errors_omitted INTEGER NOT NULL DEFAULT 0;
