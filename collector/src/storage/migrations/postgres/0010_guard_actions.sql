-- ballast-collector schema v10 (PostgreSQL): the guard's actions (issue 19 item 3). Keep in
-- step with ../sqlite/0010_guard_actions.sql.
-- One row per guard decision (Event::Guard), written when its event is first stored
-- in `events` (by key), so a re-sent batch adds no second row; UNIQUE (host_id,
-- event_key) holds that too. `mode` and `outcome` are the wire names, `level_rank` the
-- risk as a rank (0 ok, 1 elevated, 2 critical), sizes in KiB; drivers and signals as
-- JSON. Retention deletes a row with the small events (by `at_ms`).
CREATE TABLE guard_actions (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host_id TEXT NOT NULL,
    event_key TEXT NOT NULL,
    vm_uuid TEXT NOT NULL,
    vm_name TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    mode TEXT NOT NULL,
    outcome TEXT NOT NULL,
    level_rank BIGINT NOT NULL,
    episode_started_at_ms BIGINT,
    actual_before_kib BIGINT,
    target_kib BIGINT,
    maximum_kib BIGINT,
    deficit_kib BIGINT,
    exhaustion_secs BIGINT,
    host_available_kib BIGINT,
    host_reserve_kib BIGINT,
    floor_before_kib BIGINT,
    floor_after_kib BIGINT,
    drivers_json TEXT NOT NULL,
    signals_json TEXT NOT NULL,
    detail TEXT NOT NULL,
    UNIQUE (host_id, event_key)
);
CREATE INDEX guard_actions_vm ON guard_actions (host_id, vm_uuid, at_ms);
CREATE INDEX guard_actions_time ON guard_actions (at_ms, id);
