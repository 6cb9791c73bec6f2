-- Where each webhook is in the audit trail: every event up to last_id was delivered (or, past
-- notify.max_backlog, dropped and counted). A replica delivering holds the row until lease_until,
-- so two replicas never send one event twice at the same time.
CREATE TABLE webhook_cursors (
    webhook     TEXT PRIMARY KEY,
    last_id     BIGINT NOT NULL,
    lease_until BIGINT NOT NULL DEFAULT 0,
    dropped     BIGINT NOT NULL DEFAULT 0
);

-- What a new certificate renewed (an `issued` webhook event is then `renewed`).
CREATE INDEX certificates_renewed_by ON certificates (renewed_by) WHERE renewed_by IS NOT NULL;

-- When the operator was told a certificate went past its renewal window, or was about to expire,
-- without a successor (the renewal_overdue and expiring events, each sent once).
ALTER TABLE certificates ADD COLUMN overdue_notified_at BIGINT;
ALTER TABLE certificates ADD COLUMN expiring_notified_at BIGINT;
