-- hinter schema, version 11 (PostgreSQL): what a job sends when it finishes
-- (hinter_core::followup). reply_to: the queue of its reply message; callback_url: where its
-- outcome is posted; correlation_id: carried by both. parent_id: on a reply or callback
-- delivery, the job whose outcome it carries (no foreign key: retention prunes each on its
-- own).
ALTER TABLE jobs ADD COLUMN reply_to text, ADD COLUMN correlation_id text,
    ADD COLUMN callback_url text, ADD COLUMN parent_id uuid;
CREATE INDEX jobs_parent ON jobs (parent_id) WHERE parent_id IS NOT NULL;
