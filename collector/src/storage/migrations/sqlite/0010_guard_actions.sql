-- ballast-collector schema v10 (SQLite): the guard's actions (issue 19 item 3). Keep in
-- step with ../postgres/0010_guard_actions.sql.
-- One row per guard decision (Event::Guard), written when its event is first stored
-- in `events` (by key), so a re-sent batch adds no second row; UNIQUE (host_id,
-- event_key) holds that too. `mode` and `outcome` are the wire names, `level_rank` the
-- risk as a rank (0 ok, 1 elevated, 2 critical), sizes in KiB; drivers and signals as
-- JSON. Retention deletes a row with the small events (by `at_ms`).
CREATE TABLE guard_actions (
    id INTEGER PRIMARY KEY,
    host_id TEXT NOT NULL,
    event_key TEXT NOT NULL,
    vm_uuid TEXT NOT NULL,
    vm_name TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    mode TEXT NOT NULL,
    outcome TEXT NOT NULL,
    level_rank INTEGER NOT NULL,
    episode_started_at_ms INTEGER,
    actual_before_kib INTEGER,
    target_kib INTEGER,
    maximum_kib INTEGER,
    deficit_kib INTEGER,
    exhaustion_secs INTEGER,
    host_available_kib INTEGER,
    host_reserve_kib INTEGER,
    floor_before_kib INTEGER,
    floor_after_kib INTEGER,
    drivers_json TEXT NOT NULL,
    signals_json TEXT NOT NULL,
    detail TEXT NOT NULL,
    UNIQUE (host_id, event_key)
);
CREATE INDEX guard_actions_vm ON guard_actions (host_id, vm_uuid, at_ms);
CREATE INDEX guard_actions_time ON guard_actions (at_ms, id);
