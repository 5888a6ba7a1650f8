-- ballast-collector schema v1 (SQLite). Keep in step with ../postgres/0001_init.sql:
-- same tables, columns and indexes; only the id and blob types differ.
CREATE TABLE tokens (
    host_id TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE rollups (
    id INTEGER PRIMARY KEY,
    host_id TEXT NOT NULL,
    key TEXT NOT NULL,
    captured_at_ms INTEGER NOT NULL,
    vm_uuid TEXT NOT NULL,
    vm_name TEXT NOT NULL,
    period_start_ms INTEGER NOT NULL,
    period_secs INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    maximum_kib INTEGER,
    actual_min INTEGER, actual_max INTEGER, actual_last INTEGER,
    available_min INTEGER, available_max INTEGER, available_last INTEGER,
    usable_min INTEGER, usable_max INTEGER, usable_last INTEGER,
    unused_min INTEGER, unused_max INTEGER, unused_last INTEGER,
    rss_min INTEGER, rss_max INTEGER, rss_last INTEGER,
    oom_kills INTEGER,
    alloc_stalls INTEGER,
    stale INTEGER NOT NULL,
    host_total_kib INTEGER,
    host_available_kib INTEGER,
    UNIQUE (host_id, key)
);
CREATE INDEX rollups_vm_time ON rollups (vm_uuid, period_start_ms);
CREATE INDEX rollups_time ON rollups (period_start_ms);

CREATE TABLE ooms (
    id INTEGER PRIMARY KEY,
    host_id TEXT NOT NULL,
    key TEXT NOT NULL,
    captured_at_ms INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    vm_uuid TEXT NOT NULL,
    vm_name TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    report_kind TEXT NOT NULL,
    report_verdict TEXT NOT NULL,
    killed_pid INTEGER,
    killed_comm TEXT,
    killed_anon_rss_kb INTEGER,
    corr_verdict TEXT NOT NULL,
    balloon_held_kb INTEGER,
    inflated_kb_before INTEGER,
    seconds_from_inflation INTEGER,
    event_json TEXT NOT NULL,
    correlation_json TEXT NOT NULL,
    UNIQUE (host_id, key)
);
CREATE INDEX ooms_time ON ooms (captured_at_ms, id);
CREATE INDEX ooms_vm_time ON ooms (vm_uuid, captured_at_ms);
CREATE INDEX ooms_host_time ON ooms (host_id, captured_at_ms);

CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    host_id TEXT NOT NULL,
    key TEXT NOT NULL,
    captured_at_ms INTEGER NOT NULL,
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
    updated_at_ms INTEGER NOT NULL
);
