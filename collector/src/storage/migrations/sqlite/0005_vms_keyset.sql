-- ballast-collector schema v5 (SQLite): `GET /api/v1/vms` pages by (host, name, uuid):
-- ORDER BY + LIMIT and the cursor's row-value seek read this index in order instead of
-- sorting the whole fleet's inventory (50 000 VMs at 1000 hosts). BINARY (byte order)
-- is SQLite's default collation. Keep in step with ../postgres/0005_vms_keyset.sql.
CREATE INDEX vms_keyset ON vms (host_id, vm_name, vm_uuid);
