-- ballast-collector schema v7 (PostgreSQL): a VM is identified by (host, uuid), not by
-- its uuid alone. Two hosts may each run a VM with the same uuid (every standalone
-- Proxmox host has a VM `100`); keyed by uuid, the second host's inventory overwrote
-- the first's row and the OOM judgement read the other host's configuration and
-- balloon history. Keep in step with ../sqlite/0007_vms_by_host_uuid.sql.
--
-- Every existing row keeps the host of its own host_id column. A VM whose row an older
-- collector let another host overwrite comes back from its OOMs as a minimal row
-- (state `unknown`, as a VM first seen in an OOM gets), until its host's next
-- inventory fills it in.
ALTER TABLE vms DROP CONSTRAINT vms_pkey;
ALTER TABLE vms ADD PRIMARY KEY (host_id, vm_uuid);
INSERT INTO vms (host_id, vm_uuid, vm_name, state, config_json, findings_json, updated_at_ms)
    SELECT host_id, vm_uuid, MAX(vm_name), 'unknown', NULL, NULL, MAX(captured_at_ms)
    FROM ooms WHERE true GROUP BY host_id, vm_uuid
    ON CONFLICT (host_id, vm_uuid) DO NOTHING;
-- The old `/api/v1/vms/{uuid}/...` paths find the hosts of a uuid.
CREATE INDEX vms_uuid ON vms (vm_uuid);
-- A VM's balloon history and OOMs are read by (host, uuid).
DROP INDEX rollups_vm_time;
CREATE INDEX rollups_vm_time ON rollups (host_id, vm_uuid, period_start_ms);
CREATE INDEX ooms_host_vm_time ON ooms (host_id, vm_uuid, captured_at_ms);
