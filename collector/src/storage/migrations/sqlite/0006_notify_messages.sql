-- ballast-collector schema v6 (SQLite): every message a webhook sender posted (an OOM
-- notification, a "N more suppressed" summary, or a post that failed and may have
-- arrived anyway), so a webhook's rate limit is counted from the store: the messages of
-- the last window plus the rows claimed and in flight (notify_outbox leases), by any
-- collector. kind: oom | summary | failed. Keep in step with
-- ../postgres/0006_notify_messages.sql.
CREATE TABLE notify_messages (
    id INTEGER PRIMARY KEY,
    webhook TEXT NOT NULL,
    kind TEXT NOT NULL,
    sent_at_ms INTEGER NOT NULL
);
CREATE INDEX notify_messages_window ON notify_messages (webhook, sent_at_ms);
CREATE INDEX notify_messages_age ON notify_messages (sent_at_ms);
