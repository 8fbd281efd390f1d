-- Orders as event streams: the current snapshot of each order, and the
-- append-only events that produced it, one per version.

CREATE TABLE orders (
    id          TEXT    PRIMARY KEY,
    customer_id TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    -- Grows by one per event; the optimistic-locking check compares it.
    version     INTEGER NOT NULL CHECK (version >= 1),
    -- UTC, RFC 3339 with microseconds and a Z: sorts as text.
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    -- The whole order as JSON, as clients see it.
    data        TEXT    NOT NULL
);

CREATE INDEX orders_by_status ON orders (status);

CREATE TABLE order_events (
    order_id        TEXT    NOT NULL REFERENCES orders (id),
    version         INTEGER NOT NULL CHECK (version >= 1),
    at              TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    -- The order's status after this event.
    status          TEXT    NOT NULL,
    updated_by      TEXT,
    notes           TEXT,
    -- A JSON object, or NULL.
    metadata        TEXT,
    idempotency_key TEXT,
    PRIMARY KEY (order_id, version)
) WITHOUT ROWID;

-- Events are the audit trail: never changed, never removed.
CREATE TRIGGER order_events_no_update BEFORE UPDATE ON order_events
BEGIN
    SELECT RAISE(ABORT, 'order_events is append-only');
END;

CREATE TRIGGER order_events_no_delete BEFORE DELETE ON order_events
BEGIN
    SELECT RAISE(ABORT, 'order_events is append-only');
END;

-- The answers to requests that carried an Idempotency-Key, stored in the
-- same transaction as the change they made; kept 24 hours.
CREATE TABLE idempotency_keys (
    scope       TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    order_id    TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    response    TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
