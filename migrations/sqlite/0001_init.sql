-- vacme store, SQLite. Times are Unix seconds (UTC). JSON columns hold wire-shaped values.

CREATE TABLE accounts (
    id             TEXT PRIMARY KEY,
    key_thumbprint TEXT NOT NULL UNIQUE,   -- RFC 7638 thumbprint of the account key
    jwk            TEXT NOT NULL,          -- canonical public JWK
    status         TEXT NOT NULL,          -- valid | deactivated | revoked
    contact        TEXT NOT NULL DEFAULT '[]',
    tos_agreed     INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL
);

CREATE TABLE nonces (
    value      TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE INDEX nonces_expiry ON nonces (expires_at);

CREATE TABLE orders (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    status          TEXT NOT NULL,         -- pending | ready | processing | valid | invalid
    expires_at      INTEGER NOT NULL,
    identifiers     TEXT NOT NULL,         -- JSON array of {type, value}, sorted
    not_before      INTEGER,
    not_after       INTEGER,
    error           TEXT,                  -- JSON problem document
    csr             BLOB,                  -- DER, set by finalize
    certificate_id  TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,               -- when the issuance worker may (re)try
    claimed_until   INTEGER,               -- lease of the worker signing it
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX orders_account ON orders (account_id, created_at);
CREATE INDEX orders_due ON orders (status, next_attempt_at);

CREATE TABLE authorizations (
    id               TEXT PRIMARY KEY,
    order_id         TEXT NOT NULL REFERENCES orders (id),
    account_id       TEXT NOT NULL REFERENCES accounts (id),
    identifier_type  TEXT NOT NULL,
    identifier_value TEXT NOT NULL,        -- for wildcards, the base domain
    wildcard         INTEGER NOT NULL DEFAULT 0,
    status           TEXT NOT NULL,
    expires_at       INTEGER NOT NULL,
    position         INTEGER NOT NULL      -- order of the order's identifiers
);
CREATE INDEX authorizations_order ON authorizations (order_id, position);

CREATE TABLE challenges (
    id              TEXT PRIMARY KEY,
    authz_id        TEXT NOT NULL REFERENCES authorizations (id),
    type            TEXT NOT NULL,         -- http-01 | dns-01 | tls-alpn-01
    token           TEXT NOT NULL,
    status          TEXT NOT NULL,         -- pending | processing | valid | invalid
    validated_at    INTEGER,
    error           TEXT,                  -- JSON problem document of the last attempt
    attempts        INTEGER NOT NULL DEFAULT 0,
    started_at      INTEGER,               -- when the client answered it
    next_attempt_at INTEGER,
    claimed_until   INTEGER
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
    not_before        INTEGER NOT NULL,
    not_after         INTEGER NOT NULL,
    revoked_at        INTEGER,
    revocation_reason INTEGER,
    created_at        INTEGER NOT NULL
);
CREATE INDEX certificates_serial ON certificates (serial);
