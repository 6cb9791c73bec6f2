-- The audit trail: every issuance, refusal, revocation and account change, newest last.
CREATE TABLE audit_events (
    id             BIGSERIAL PRIMARY KEY,
    at             BIGINT NOT NULL,
    event          TEXT NOT NULL,           -- issued | order_refused | finalize_refused | ca_refused |
                                            -- validation_failed | paused | unpaused | revoked |
                                            -- account_created | account_deactivated
    actor          TEXT NOT NULL,           -- account:<id> | certificate-key | admin | vacme
    account_id     TEXT,
    order_id       TEXT,
    certificate_id TEXT,
    serial         TEXT,
    identifiers    TEXT NOT NULL DEFAULT '[]',  -- JSON array of {type, value}
    client_ip      TEXT,
    detail         TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_account ON audit_events (account_id, at);
