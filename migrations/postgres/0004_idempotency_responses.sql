-- Idempotency keys for every state-changing endpoint, not only order
-- changes: a record now holds either an order change's answer (the order
-- and the version it produced, stored with the change) or a whole answer
-- (status code and body bytes) of an endpoint whose effect is not one order
-- change.

ALTER TABLE idempotency_keys
    ALTER COLUMN order_id DROP NOT NULL,
    ALTER COLUMN version DROP NOT NULL,
    ALTER COLUMN response DROP NOT NULL,
    -- A whole answer: the HTTP status code and the body, byte for byte.
    ADD COLUMN status INTEGER,
    ADD COLUMN body BYTEA,
    ADD CONSTRAINT idempotency_keys_one_answer CHECK (
        (order_id IS NOT NULL AND version IS NOT NULL AND response IS NOT NULL
            AND status IS NULL AND body IS NULL)
        OR (order_id IS NULL AND version IS NULL AND response IS NULL
            AND status IS NOT NULL AND body IS NOT NULL)
    );
