-- ballast-collector schema v8 (SQLite): an OOM stored from a copy cut before its end
-- (the guest's console stalled, the VM went away) is replaced by its completion, which
-- the agent sends later under the same key. `report_partial` says which rows may still
-- be completed; a complete row is never overwritten. Keep in step with
-- ../postgres/0008_oom_completion.sql.
ALTER TABLE ooms ADD COLUMN report_partial INTEGER NOT NULL DEFAULT 0;
UPDATE ooms SET report_partial = 1 WHERE json_extract(event_json, '$.report.partial') = 1;
