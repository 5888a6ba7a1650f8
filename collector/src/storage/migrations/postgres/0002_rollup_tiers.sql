-- ballast-collector schema v2 (PostgreSQL): rollup tiers. Keep in step with
-- ../sqlite/0002_rollup_tiers.sql.
-- Minute rollups older than `retention.minute_rollup_hours` are compacted into one
-- hourly row per VM (period_secs = 3600) in the same table; the retention pass
-- finds the minute rows still to compact through this partial index, without
-- walking the hourly tier.
CREATE INDEX rollups_minute_time ON rollups (period_start_ms, id) WHERE period_secs < 3600;
