-- hinter schema, version 4: retention pruning finds old finished jobs of a state by
-- `finished_at`, oldest first, as the PostgreSQL schema's `jobs_finished` index does.
CREATE INDEX jobs_finished ON jobs (state, finished_at) WHERE finished_at IS NOT NULL;
