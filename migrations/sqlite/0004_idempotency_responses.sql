-- Idempotency keys for every state-changing endpoint, not only order
-- changes: a record now holds either an order change's answer (the order
-- and the version it produced, stored with the change) or a whole answer
-- (status code and body bytes) of an endpoint whose effect is not one order
-- change. SQLite cannot drop NOT NULL, so the table is rebuilt.

CREATE TABLE idempotency_keys_v2 (
    scope       TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    -- An order change's answer: the order, its version and its JSON.
    order_id    TEXT,
    version     INTEGER,
    response    TEXT,
    -- A whole answer: the HTTP status code and the body, byte for byte.
    status      INTEGER,
    body        BLOB,
    created_at  TEXT    NOT NULL,
    PRIMARY KEY (scope, key),
    CHECK (
        (order_id IS NOT NULL AND version IS NOT NULL AND response IS NOT NULL
            AND status IS NULL AND body IS NULL)
        OR (order_id IS NULL AND version IS NULL AND response IS NULL
            AND status IS NOT NULL AND body IS NOT NULL)
    )
);

INSERT INTO idempotency_keys_v2
    (scope, key, fingerprint, order_id, version, response, created_at)
SELECT scope, key, fingerprint, order_id, version, response, created_at
FROM idempotency_keys;

DROP TABLE idempotency_keys;
ALTER TABLE idempotency_keys_v2 RENAME TO idempotency_keys;
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
