-- The time vacme first sent this order to the CA. An order still processing with it set may
-- have been signed by a call whose answer was lost (vacme killed, a timeout): the worker looks
-- for that certificate before signing again.
ALTER TABLE orders ADD COLUMN sign_started_at BIGINT;
