-- Rate limits (docs/security.md) are counted from these rows, so they hold across restarts.

-- The client address that created an account (accounts per address per hour).
ALTER TABLE accounts ADD COLUMN created_ip TEXT;
CREATE INDEX accounts_created_ip ON accounts (created_ip, created_at);

-- When a challenge failed for good (failed validations per account and name per hour).
ALTER TABLE challenges ADD COLUMN failed_at BIGINT;
CREATE INDEX authorizations_account_name ON authorizations (account_id, identifier_value, identifier_type);
CREATE INDEX authorizations_account_status ON authorizations (account_id, status);

-- Names an account may not order or validate until an administrator lifts the pause.
CREATE TABLE validation_pauses (
    account_id       TEXT NOT NULL REFERENCES accounts (id),
    identifier_type  TEXT NOT NULL,
    identifier_value TEXT NOT NULL,
    paused_at        BIGINT NOT NULL,
    failures         BIGINT NOT NULL,        -- failures in the hour that led to the pause
    lifted_at        BIGINT,                 -- NULL while paused
    PRIMARY KEY (account_id, identifier_type, identifier_value)
);
