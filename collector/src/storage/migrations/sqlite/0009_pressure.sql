-- ballast-collector schema v9 (SQLite): memory pressure (issue 19). Keep in step with
-- ../postgres/0009_pressure.sql.
-- A rollup's pressure (BalloonRollup.pressure) beside its figures: NULL in
-- `pressure_risk` means the rollup carried none (no signal source, or an agent older
-- than schema version 2). Risk is a rank (0 ok, 1 elevated, 2 critical); each source a
-- 0/1 flag; rates are stored in thousandths (`*_milli`, so both engines keep integers);
-- each rate is the period's peak, the MemAvailable slope its lowest, the PSI totals the
-- last. The hourly tier keeps the highest of each (of the totals too: they only grow
-- but for a guest reboot), the lowest slope (storage/tiers.rs).
ALTER TABLE rollups ADD COLUMN pressure_risk INTEGER;
ALTER TABLE rollups ADD COLUMN pressure_src_counters INTEGER;
ALTER TABLE rollups ADD COLUMN pressure_src_stats INTEGER;
ALTER TABLE rollups ADD COLUMN pressure_src_psi INTEGER;
ALTER TABLE rollups ADD COLUMN alloc_stalls_per_s_milli INTEGER;
ALTER TABLE rollups ADD COLUMN direct_scan_kib_per_s_milli INTEGER;
ALTER TABLE rollups ADD COLUMN direct_reclaim_kib_per_s_milli INTEGER;
ALTER TABLE rollups ADD COLUMN async_scan_kib_per_s_milli INTEGER;
ALTER TABLE rollups ADD COLUMN async_reclaim_kib_per_s_milli INTEGER;
ALTER TABLE rollups ADD COLUMN major_faults_per_s_milli INTEGER;
ALTER TABLE rollups ADD COLUMN swap_in_kib_per_s_milli INTEGER;
ALTER TABLE rollups ADD COLUMN available_slope_kib_per_s_milli INTEGER;
ALTER TABLE rollups ADD COLUMN psi_some_avg10_milli INTEGER;
ALTER TABLE rollups ADD COLUMN psi_full_avg10_milli INTEGER;
ALTER TABLE rollups ADD COLUMN psi_some_total_us INTEGER;
ALTER TABLE rollups ADD COLUMN psi_full_total_us INTEGER;

-- One row per pressure episode, named by (host, VM, started_at_ms); its start, peak
-- and end events (stored once each in `events` by key) update the row: the worst
-- level, the newest start/peak's drivers, signals and exhaustion prediction, the
-- highest stall and PSI figures and deficit, whether any phase sat at the balloon
-- floor, and the end. `ended_at_ms` NULL: open (no end received yet).
CREATE TABLE pressure_episodes (
    id INTEGER PRIMARY KEY,
    host_id TEXT NOT NULL,
    vm_uuid TEXT NOT NULL,
    started_at_ms INTEGER NOT NULL,
    vm_name TEXT NOT NULL,
    last_at_ms INTEGER NOT NULL,
    peak_at_ms INTEGER,
    ended_at_ms INTEGER,
    worst_rank INTEGER NOT NULL,
    drivers_json TEXT NOT NULL,
    exhaustion_secs INTEGER,
    signals_json TEXT NOT NULL,
    peak_alloc_stalls_milli INTEGER,
    peak_psi_some_milli INTEGER,
    peak_psi_full_milli INTEGER,
    deficit_kib INTEGER,
    at_balloon_floor INTEGER NOT NULL,
    balloon_floor_kib INTEGER,
    actual_kib INTEGER,
    maximum_kib INTEGER,
    UNIQUE (host_id, vm_uuid, started_at_ms)
);
CREATE INDEX pressure_episodes_open ON pressure_episodes (last_at_ms) WHERE ended_at_ms IS NULL;
CREATE INDEX pressure_episodes_time ON pressure_episodes (last_at_ms, id);
