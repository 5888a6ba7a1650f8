-- ballast-collector schema v7 (SQLite): a VM is identified by (host, uuid), not by its
-- uuid alone. Two hosts may each run a VM with the same uuid (every standalone Proxmox
-- host has a VM `100`); keyed by uuid, the second host's inventory overwrote the
-- first's row and the OOM judgement read the other host's configuration and balloon
-- history. Keep in step with ../postgres/0007_vms_by_host_uuid.sql.
--
-- SQLite cannot change a primary key in place: the table is rebuilt. Every existing
-- row keeps the host of its own host_id column. A VM whose row an older collector let
-- another host overwrite comes back from its OOMs as a minimal row (state `unknown`,
-- as a VM first seen in an OOM gets), until its host's next inventory fills it in.
CREATE TABLE vms_v7 (
    host_id TEXT NOT NULL,
    vm_uuid TEXT NOT NULL,
    vm_name TEXT NOT NULL,
    state TEXT NOT NULL,
    config_json TEXT,
    findings_json TEXT,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (host_id, vm_uuid)
);
INSERT INTO vms_v7 (host_id, vm_uuid, vm_name, state, config_json, findings_json, updated_at_ms)
    SELECT host_id, vm_uuid, vm_name, state, config_json, findings_json, updated_at_ms FROM vms;
INSERT INTO vms_v7 (host_id, vm_uuid, vm_name, state, config_json, findings_json, updated_at_ms)
    SELECT host_id, vm_uuid, MAX(vm_name), 'unknown', NULL, NULL, MAX(captured_at_ms)
    FROM ooms WHERE true GROUP BY host_id, vm_uuid
    ON CONFLICT (host_id, vm_uuid) DO NOTHING;
DROP TABLE vms;
ALTER TABLE vms_v7 RENAME TO vms;
CREATE INDEX vms_host ON vms (host_id);
CREATE INDEX vms_keyset ON vms (host_id, vm_name, vm_uuid);
-- The old `/api/v1/vms/{uuid}/...` paths find the hosts of a uuid.
CREATE INDEX vms_uuid ON vms (vm_uuid);
-- A VM's balloon history and OOMs are read by (host, uuid).
DROP INDEX rollups_vm_time;
CREATE INDEX rollups_vm_time ON rollups (host_id, vm_uuid, period_start_ms);
CREATE INDEX ooms_host_vm_time ON ooms (host_id, vm_uuid, captured_at_ms);
