-- ballast-collector schema v1 (PostgreSQL). Keep in step with ../sqlite/0001_init.sql:
-- same tables, columns and indexes; only the id and blob types differ.
CREATE TABLE tokens (
    host_id TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE rollups (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host_id TEXT NOT NULL,
    key TEXT NOT NULL,
    captured_at_ms BIGINT NOT NULL,
    vm_uuid TEXT NOT NULL,
    vm_name TEXT NOT NULL,
    period_start_ms BIGINT NOT NULL,
    period_secs BIGINT NOT NULL,
    samples BIGINT NOT NULL,
    maximum_kib BIGINT,
    actual_min BIGINT, actual_max BIGINT, actual_last BIGINT,
    available_min BIGINT, available_max BIGINT, available_last BIGINT,
    usable_min BIGINT, usable_max BIGINT, usable_last BIGINT,
    unused_min BIGINT, unused_max BIGINT, unused_last BIGINT,
    rss_min BIGINT, rss_max BIGINT, rss_last BIGINT,
    oom_kills BIGINT,
    alloc_stalls BIGINT,
    stale BIGINT NOT NULL,
    host_total_kib BIGINT,
    host_available_kib BIGINT,
    UNIQUE (host_id, key)
);
CREATE INDEX rollups_vm_time ON rollups (vm_uuid, period_start_ms);
CREATE INDEX rollups_time ON rollups (period_start_ms);

CREATE TABLE ooms (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host_id TEXT NOT NULL,
    key TEXT NOT NULL,
    captured_at_ms BIGINT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    vm_uuid TEXT NOT NULL,
    vm_name TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    report_kind TEXT NOT NULL,
    report_verdict TEXT NOT NULL,
    killed_pid BIGINT,
    killed_comm TEXT,
    killed_anon_rss_kb BIGINT,
    corr_verdict TEXT NOT NULL,
    balloon_held_kb BIGINT,
    inflated_kb_before BIGINT,
    seconds_from_inflation BIGINT,
    event_json TEXT NOT NULL,
    correlation_json TEXT NOT NULL,
    UNIQUE (host_id, key)
);
CREATE INDEX ooms_time ON ooms (captured_at_ms, id);
CREATE INDEX ooms_vm_time ON ooms (vm_uuid, captured_at_ms);
CREATE INDEX ooms_host_time ON ooms (host_id, captured_at_ms);

CREATE TABLE events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host_id TEXT NOT NULL,
    key TEXT NOT NULL,
    captured_at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    vm_uuid TEXT,
    body_json TEXT NOT NULL,
    UNIQUE (host_id, key)
);
CREATE INDEX events_time ON events (captured_at_ms);

CREATE TABLE vms (
    vm_uuid TEXT PRIMARY KEY,
    host_id TEXT NOT NULL,
    vm_name TEXT NOT NULL,
    state TEXT NOT NULL,
    config_json TEXT,
    findings_json TEXT,
    updated_at_ms BIGINT NOT NULL
);
