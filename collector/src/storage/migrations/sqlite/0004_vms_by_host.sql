-- ballast-collector schema v4 (SQLite): the inventory of one host (`GET /api/v1/vms?host=`,
-- the dashboard's host page) reads its VMs through an index instead of scanning the
-- whole fleet's inventory (50 000 VMs at 1000 hosts). Keep in step with
-- ../postgres/0004_vms_by_host.sql.
CREATE INDEX vms_host ON vms (host_id);
