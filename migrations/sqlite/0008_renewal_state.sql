-- The renewal state of each certificate (active, due, overdue, renewed, expired, revoked) and
-- the client that holds it.

-- The certificate that renewed this one: a later certificate of the same account for the same
-- names, or one whose order said `replaces` (RFC 9773) this one. Set when the successor is
-- recorded, in the same transaction.
ALTER TABLE certificates ADD COLUMN renewed_by TEXT;

-- Certificates recorded before: the earliest later certificate of the same account and names...
UPDATE certificates SET renewed_by = (
    SELECT n.id FROM certificates n
    WHERE n.account_id = certificates.account_id AND n.identifiers = certificates.identifiers
      AND (n.created_at > certificates.created_at OR (n.created_at = certificates.created_at AND n.id > certificates.id))
    ORDER BY n.created_at, n.id LIMIT 1
);
-- ...or the first certificate of an order that replaced it.
UPDATE certificates SET renewed_by = (
    SELECT c.id FROM orders o JOIN certificates c ON c.order_id = o.id
    WHERE o.replaces = certificates.ari_id ORDER BY c.created_at, c.id LIMIT 1
) WHERE renewed_by IS NULL AND ari_id IS NOT NULL;

-- A new certificate finds the ones it renews.
CREATE INDEX certificates_unrenewed ON certificates (account_id, identifiers) WHERE renewed_by IS NULL;
-- The certificates whose state moves with time (neither renewed nor revoked): the renewal-state
-- refresh reads them, and the next expiries come from them.
CREATE INDEX certificates_live ON certificates (not_after) WHERE renewed_by IS NULL AND revoked_at IS NULL;

-- Renewed and revoked certificates, counted as they become so (a renewed certificate that is
-- then revoked counts as revoked): what /metrics shows without counting rows.
INSERT INTO totals (name, n) VALUES ('revoked', (SELECT COUNT(*) FROM certificates WHERE revoked_at IS NOT NULL));
INSERT INTO totals (name, n) VALUES
    ('renewed', (SELECT COUNT(*) FROM certificates WHERE renewed_by IS NOT NULL AND revoked_at IS NULL));
CREATE TRIGGER certificates_final_insert AFTER INSERT ON certificates
BEGIN
    UPDATE totals SET n = n + 1
    WHERE name = CASE WHEN NEW.revoked_at IS NOT NULL THEN 'revoked' WHEN NEW.renewed_by IS NOT NULL THEN 'renewed' END;
END;
CREATE TRIGGER certificates_final_update AFTER UPDATE OF revoked_at, renewed_by ON certificates
WHEN (CASE WHEN OLD.revoked_at IS NOT NULL THEN 'revoked' WHEN OLD.renewed_by IS NOT NULL THEN 'renewed' END)
     IS NOT (CASE WHEN NEW.revoked_at IS NOT NULL THEN 'revoked' WHEN NEW.renewed_by IS NOT NULL THEN 'renewed' END)
BEGIN
    UPDATE totals SET n = n - 1
    WHERE name = CASE WHEN OLD.revoked_at IS NOT NULL THEN 'revoked' WHEN OLD.renewed_by IS NOT NULL THEN 'renewed' END;
    UPDATE totals SET n = n + 1
    WHERE name = CASE WHEN NEW.revoked_at IS NOT NULL THEN 'revoked' WHEN NEW.renewed_by IS NOT NULL THEN 'renewed' END;
END;

-- Who holds it: the User-Agent and address (the forwarded one behind server.trusted_proxies)
-- of the client that created the order.
ALTER TABLE orders ADD COLUMN client_user_agent TEXT;
ALTER TABLE orders ADD COLUMN client_ip TEXT;
