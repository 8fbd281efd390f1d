-- Orders as event streams: the current snapshot of each order, and the
-- append-only events that produced it, one per version.

CREATE TABLE orders (
    id          TEXT        PRIMARY KEY,
    customer_id TEXT        NOT NULL,
    status      TEXT        NOT NULL,
    -- Grows by one per event; the optimistic-locking check compares it.
    version     BIGINT      NOT NULL CHECK (version >= 1),
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    -- The whole order as JSON, as clients see it.
    data        JSONB       NOT NULL
);

CREATE INDEX orders_by_status ON orders (status);

CREATE TABLE order_events (
    order_id        TEXT        NOT NULL REFERENCES orders (id),
    version         BIGINT      NOT NULL CHECK (version >= 1),
    at              TIMESTAMPTZ NOT NULL,
    kind            TEXT        NOT NULL,
    -- The order's status after this event.
    status          TEXT        NOT NULL,
    updated_by      TEXT,
    notes           TEXT,
    metadata        JSONB,
    idempotency_key TEXT,
    PRIMARY KEY (order_id, version)
);

-- Events are the audit trail: never changed, never removed.
CREATE FUNCTION order_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'order_events is append-only';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER order_events_append_only
    BEFORE UPDATE OR DELETE ON order_events
    FOR EACH ROW EXECUTE FUNCTION order_events_append_only();

-- The answers to requests that carried an Idempotency-Key, stored in the
-- same transaction as the change they made; kept 24 hours.
CREATE TABLE idempotency_keys (
    scope       TEXT        NOT NULL,
    key         TEXT        NOT NULL,
    fingerprint TEXT        NOT NULL,
    order_id    TEXT        NOT NULL,
    version     BIGINT      NOT NULL,
    response    TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
