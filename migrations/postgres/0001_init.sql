-- vacme store, PostgreSQL: the schema of migrations/sqlite, version for version. Times are Unix
-- seconds (UTC) in BIGINT; JSON columns hold wire-shaped values as TEXT.

CREATE TABLE accounts (
    id             TEXT PRIMARY KEY,
    key_thumbprint TEXT NOT NULL UNIQUE,   -- RFC 7638 thumbprint of the account key
    jwk            TEXT NOT NULL,          -- canonical public JWK
    status         TEXT NOT NULL,          -- valid | deactivated | revoked
    contact        TEXT NOT NULL DEFAULT '[]',
    tos_agreed     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at     BIGINT NOT NULL
);

CREATE TABLE nonces (
    value      TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX nonces_expiry ON nonces (expires_at);

CREATE TABLE orders (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    status          TEXT NOT NULL,         -- pending | ready | processing | valid | invalid
    expires_at      BIGINT NOT NULL,
    identifiers     TEXT NOT NULL,         -- JSON array of {type, value}, sorted
    not_before      BIGINT,
    not_after       BIGINT,
    error           TEXT,                  -- JSON problem document
    csr             BYTEA,                 -- DER, set by finalize
    certificate_id  TEXT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,                -- when the issuance worker may (re)try
    claimed_until   BIGINT,                -- lease of the worker signing it
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    seq             BIGSERIAL NOT NULL     -- insertion order (SQLite's rowid), for the paged orders list
);
CREATE INDEX orders_account ON orders (account_id, created_at, seq);
CREATE INDEX orders_due ON orders (status, next_attempt_at);

CREATE TABLE authorizations (
    id               TEXT PRIMARY KEY,
    order_id         TEXT NOT NULL REFERENCES orders (id),
    account_id       TEXT NOT NULL REFERENCES accounts (id),
    identifier_type  TEXT NOT NULL,
    identifier_value TEXT NOT NULL,        -- for wildcards, the base domain
    wildcard         BOOLEAN NOT NULL DEFAULT FALSE,
    status           TEXT NOT NULL,
    expires_at       BIGINT NOT NULL,
    position         BIGINT NOT NULL       -- order of the order's identifiers
);
CREATE INDEX authorizations_order ON authorizations (order_id, position);

CREATE TABLE challenges (
    id              TEXT PRIMARY KEY,
    authz_id        TEXT NOT NULL REFERENCES authorizations (id),
    type            TEXT NOT NULL,         -- http-01 | dns-01 | tls-alpn-01
    token           TEXT NOT NULL,
    status          TEXT NOT NULL,         -- pending | processing | valid | invalid
    validated_at    BIGINT,
    error           TEXT,                  -- JSON problem document of the last attempt
    attempts        BIGINT NOT NULL DEFAULT 0,
    started_at      BIGINT,                -- when the client answered it
    next_attempt_at BIGINT,
    claimed_until   BIGINT
);
CREATE INDEX challenges_authz ON challenges (authz_id);
CREATE INDEX challenges_due ON challenges (status, next_attempt_at);

CREATE TABLE certificates (
    id                TEXT PRIMARY KEY,
    order_id          TEXT NOT NULL UNIQUE REFERENCES orders (id),
    account_id        TEXT NOT NULL REFERENCES accounts (id),
    serial            TEXT NOT NULL,       -- lower-case hex
    issuer            TEXT NOT NULL,       -- vault | local
    identifiers       TEXT NOT NULL,       -- JSON array, as on the order
    chain_pem         TEXT NOT NULL,       -- leaf first, as downloaded
    not_before        BIGINT NOT NULL,
    not_after         BIGINT NOT NULL,
    revoked_at        BIGINT,
    revocation_reason BIGINT,
    created_at        BIGINT NOT NULL
);
CREATE INDEX certificates_serial ON certificates (serial);
