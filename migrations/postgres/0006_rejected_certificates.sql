-- Certificates the CA signed that did not match their order (other names, another key): never
-- delivered, revoked in the CA at once. revoked_at stays NULL until the CA confirmed the
-- revocation; the clean-up run pushes those again. No foreign key to orders: clean-up deletes
-- invalid orders, and this record must outlive them.
CREATE TABLE rejected_certificates (
    id          TEXT PRIMARY KEY,
    serial      TEXT NOT NULL,
    order_id    TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    identifiers TEXT NOT NULL DEFAULT '[]',  -- JSON array of {type, value}: what the CA put in it
    leaf_pem    TEXT NOT NULL,
    mount       TEXT,
    reason      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX rejected_certificates_pending ON rejected_certificates (revoked_at);
