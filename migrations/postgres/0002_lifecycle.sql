-- Certificate lifecycle: revocation pushed to the CA, key rollover, external account binding,
-- renewal information (RFC 9773) and profiles.

-- The EAB key an account was created with (its scope limits the account's orders).
ALTER TABLE accounts ADD COLUMN eab_kid TEXT;

ALTER TABLE orders ADD COLUMN profile TEXT;           -- the profile named on newOrder, or the default
ALTER TABLE orders ADD COLUMN replaces TEXT;          -- RFC 9773 certID (certificates.ari_id) of the certificate it renews

ALTER TABLE certificates ADD COLUMN profile TEXT;
ALTER TABLE certificates ADD COLUMN ari_id TEXT;      -- RFC 9773 certID: base64url(AKI) "." base64url(serial)
ALTER TABLE certificates ADD COLUMN ca_revoked_at BIGINT;   -- when the CA confirmed the revocation
CREATE INDEX certificates_ari ON certificates (ari_id);
CREATE INDEX certificates_account ON certificates (account_id, created_at);
CREATE INDEX orders_replaces ON orders (replaces);

-- External account binding keys (RFC 8555 §7.3.4). The HMAC key is never stored: it is derived
-- from the server's EAB secret and the kid, so a copy of the database reveals no key.
CREATE TABLE eab_keys (
    kid        TEXT PRIMARY KEY,
    scope      TEXT NOT NULL DEFAULT '[]', -- JSON array of name patterns; empty: whatever policy allows
    profile    TEXT,                       -- orders of bound accounts use this profile
    comment    TEXT NOT NULL DEFAULT '',
    expires_at BIGINT,                     -- unused keys stop working at this time
    created_at BIGINT NOT NULL,
    used_at    BIGINT,                     -- single use: set when an account is bound
    account_id TEXT REFERENCES accounts (id),
    revoked_at BIGINT
);
