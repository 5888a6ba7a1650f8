-- ballast-collector schema v5 (PostgreSQL): `GET /api/v1/vms` pages by (host, name, uuid)
-- in byte order: ORDER BY + LIMIT and the cursor's row-value seek (all COLLATE "C", as
-- SQLite's BINARY) read this index in order instead of sorting the whole fleet's
-- inventory (50 000 VMs at 1000 hosts). vms_host stays for the default-collation
-- `host_id = ?` lookups. Keep in step with ../sqlite/0005_vms_keyset.sql.
CREATE INDEX vms_keyset ON vms (host_id COLLATE "C", vm_name COLLATE "C", vm_uuid COLLATE "C");
