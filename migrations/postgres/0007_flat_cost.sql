-- Every statement on a request or worker path finds its rows through an index, and history
-- (orders finished long ago, their authorizations and challenges) stays out of the indexes the
-- workers and the clean-up read.

-- The workers' queues hold only what is in flight.
DROP INDEX challenges_due;
CREATE INDEX challenges_due ON challenges (next_attempt_at) WHERE status = 'processing';
DROP INDEX orders_due;
CREATE INDEX orders_due ON orders (next_attempt_at) WHERE status = 'processing';

-- The clean-up: what is still open and may expire, and what expired without a certificate.
CREATE INDEX authorizations_pending ON authorizations (expires_at) WHERE status = 'pending';
CREATE INDEX orders_open ON orders (expires_at) WHERE status IN ('pending', 'ready');
CREATE INDEX orders_unissued ON orders (expires_at) WHERE status = 'invalid' AND certificate_id IS NULL;

-- The account an EAB key bound: SQLite looks it up when an account row is written.
CREATE INDEX eab_keys_account ON eab_keys (account_id);

-- Revocation by serial, whatever leading zeros the client sent.
CREATE INDEX certificates_serial_digits ON certificates (ltrim(serial, '0'));
-- Revocations the CA has not confirmed.
CREATE INDEX certificates_unconfirmed ON certificates (revoked_at) WHERE revoked_at IS NOT NULL AND ca_revoked_at IS NULL;

-- What /metrics shows, kept as counters: accounts and certificates are never deleted.
CREATE TABLE totals (
    name TEXT PRIMARY KEY,
    n    BIGINT NOT NULL
);
INSERT INTO totals (name, n) VALUES ('accounts', (SELECT COUNT(*) FROM accounts));
INSERT INTO totals (name, n) VALUES ('certificates', (SELECT COUNT(*) FROM certificates));
CREATE FUNCTION totals_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE totals SET n = n + 1 WHERE name = TG_TABLE_NAME;
    RETURN NULL;
END;
$$;
CREATE TRIGGER accounts_total AFTER INSERT ON accounts FOR EACH ROW EXECUTE FUNCTION totals_count();
CREATE TRIGGER certificates_total AFTER INSERT ON certificates FOR EACH ROW EXECUTE FUNCTION totals_count();
