-- ballast-collector schema v12 (SQLite): OpenStack nova's identity of a VM (issue 20
-- item 4). Keep in step with ../postgres/0012_openstack.sql.
-- The inventory's `openstack` (ballast_model::NovaInstance) as JSON, and its project id
-- and name in columns of their own for `?project=`. Written by the inventory upsert
-- with the rest of the row (the newest inventory wins; a VM nova did not define has
-- NULL). Tenant text: escaped wherever shown.
ALTER TABLE vms ADD COLUMN openstack_json TEXT;
ALTER TABLE vms ADD COLUMN os_project_id TEXT;
ALTER TABLE vms ADD COLUMN os_project_name TEXT;
CREATE INDEX vms_os_project_id ON vms (os_project_id) WHERE os_project_id IS NOT NULL;
CREATE INDEX vms_os_project_name ON vms (os_project_name) WHERE os_project_name IS NOT NULL;
