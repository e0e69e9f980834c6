-- hinter schema, version 5: which machine and pid namespace a process runs in, so a restarted
-- process can tell that a leader on its machine is gone.
ALTER TABLE processes ADD COLUMN machine TEXT NOT NULL DEFAULT '';
