-- ballast-collector schema v3 (SQLite): the webhook notification outbox. Keep in step
-- with ../postgres/0003_notify_outbox.sql.
-- One row per (new OOM, webhook whose filter it matched), written in the transaction
-- that stored the OOM. state: pending | sent | failed | suppressed | summarized.
-- A sender claims rows by writing a lease (lease_owner, lease_until_ms) first.
CREATE TABLE notify_outbox (
    id INTEGER PRIMARY KEY,
    oom_id INTEGER NOT NULL,
    webhook TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until_ms INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    UNIQUE (oom_id, webhook)
);
CREATE INDEX notify_outbox_due ON notify_outbox (webhook, state, next_attempt_ms);
CREATE INDEX notify_outbox_lease ON notify_outbox (lease_owner);
CREATE INDEX notify_outbox_done ON notify_outbox (state, updated_at_ms);
