-- hinter schema, version 12: what a job sends when it finishes (hinter_core::followup).
-- reply_to: the queue of its reply message; callback_url: where its outcome is posted;
-- correlation_id: carried by both. parent_id: on a reply or callback delivery, the job whose
-- outcome it carries (the job's record lists them).
ALTER TABLE jobs ADD COLUMN reply_to TEXT;
ALTER TABLE jobs ADD COLUMN correlation_id TEXT;
ALTER TABLE jobs ADD COLUMN callback_url TEXT;
ALTER TABLE jobs ADD COLUMN parent_id TEXT;
CREATE INDEX jobs_parent ON jobs (parent_id) WHERE parent_id IS NOT NULL;
