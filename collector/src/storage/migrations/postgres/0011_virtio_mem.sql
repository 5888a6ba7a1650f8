-- ballast-collector schema v11 (PostgreSQL): virtio-mem (issue 20 item 1). Keep in step with
-- ../sqlite/0011_virtio_mem.sql.
-- A rollup's virtio-mem devices (BalloonRollup.virtio_mem) summed over the VM's devices
-- beside its balloon figures, so the memory series and the hourly tier read them with
-- the row: plugged and requested as min/max/last (each the sum over the devices of the
-- device's min, max, last), the devices' maximum size summed, and the longest any
-- device had been unconverged at the period's end. NULL in `vmem_max_kib` and
-- `vmem_plugged_last` means the rollup carried no device (a VM without virtio-mem, or
-- an agent older than schema version 3). The hourly tier keeps the smallest min, the
-- largest max, the newest last, the largest size and unconverged time (storage/tiers.rs).
ALTER TABLE rollups ADD COLUMN vmem_plugged_min BIGINT;
ALTER TABLE rollups ADD COLUMN vmem_plugged_max BIGINT;
ALTER TABLE rollups ADD COLUMN vmem_plugged_last BIGINT;
ALTER TABLE rollups ADD COLUMN vmem_requested_min BIGINT;
ALTER TABLE rollups ADD COLUMN vmem_requested_max BIGINT;
ALTER TABLE rollups ADD COLUMN vmem_requested_last BIGINT;
ALTER TABLE rollups ADD COLUMN vmem_max_kib BIGINT;
ALTER TABLE rollups ADD COLUMN vmem_unconverged_secs BIGINT;

-- Each device of a rollup, one row per (host, rollup key, device id): written with the
-- rollup's own key, so a re-sent rollup adds nothing. Minute rows are folded into
-- hourly rows (key `~hour/<vm uuid>/<hour start ms>`) with the rollups, and deleted
-- after `retention.rollup_days` like them. The device id is guest-side configuration
-- text (QEMU id, libvirt alias): escaped wherever shown. Sizes KiB.
CREATE TABLE virtio_mem_rollups (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host_id TEXT NOT NULL,
    rollup_key TEXT NOT NULL,
    device_id TEXT NOT NULL,
    captured_at_ms BIGINT NOT NULL,
    vm_uuid TEXT NOT NULL,
    period_start_ms BIGINT NOT NULL,
    period_secs BIGINT NOT NULL,
    node BIGINT,
    block_size_kib BIGINT,
    max_size_kib BIGINT,
    requested_min BIGINT,
    requested_max BIGINT,
    requested_last BIGINT,
    plugged_min BIGINT,
    plugged_max BIGINT,
    plugged_last BIGINT,
    unconverged_secs BIGINT,
    UNIQUE (host_id, rollup_key, device_id)
);
CREATE INDEX virtio_mem_rollups_vm ON virtio_mem_rollups (host_id, vm_uuid, period_start_ms);
CREATE INDEX virtio_mem_rollups_minute_time ON virtio_mem_rollups (period_start_ms, id)
    WHERE period_secs < 3600;
CREATE INDEX virtio_mem_rollups_time ON virtio_mem_rollups (period_start_ms, id);

-- One row per virtio-mem resize event (Event::MemoryDevice), written when its event is
-- first stored in `events` (by key), so a re-sent batch adds no second row; UNIQUE
-- (host_id, event_key) holds that too. `at_ms` is the agent's capture time (host
-- clock), `phase` the wire name (requested, resized, stuck, converged). Retention
-- deletes a row with the small events (by `at_ms`).
CREATE TABLE memory_device_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host_id TEXT NOT NULL,
    event_key TEXT NOT NULL,
    vm_uuid TEXT NOT NULL,
    vm_name TEXT NOT NULL,
    device_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    phase TEXT NOT NULL,
    requested_kib BIGINT,
    plugged_kib BIGINT,
    previous_requested_kib BIGINT,
    previous_plugged_kib BIGINT,
    block_size_kib BIGINT,
    max_size_kib BIGINT,
    unconverged_since_ms BIGINT,
    UNIQUE (host_id, event_key)
);
CREATE INDEX memory_device_events_vm ON memory_device_events (host_id, vm_uuid, at_ms, id);
CREATE INDEX memory_device_events_device ON memory_device_events (host_id, vm_uuid, device_id, at_ms, id);
CREATE INDEX memory_device_events_time ON memory_device_events (at_ms, id);
-- The stuck ones alone, for the scrape's count of VMs with a resize stuck now (the
-- statement names the phase as a literal so both engines can use this index).
CREATE INDEX memory_device_events_stuck ON memory_device_events (host_id, vm_uuid, device_id)
    WHERE phase = 'stuck';
