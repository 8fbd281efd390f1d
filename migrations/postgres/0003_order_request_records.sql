-- The order-request requestor's and processor's own records (tracked
-- requests with their follow-up notes; sellers, proposals and notes), one row
-- per side and request, rewritten whole on every change. Loaded at start:
-- they are diagnostics lists the API shows in full anyway.

CREATE TABLE order_request_records (
    -- Listing order: a request is listed where it was first saved.
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- `requestor` or `processor`.
    side         TEXT  NOT NULL,
    order_req_id TEXT  NOT NULL,
    -- The side's record as JSON.
    record       JSONB NOT NULL,
    UNIQUE (side, order_req_id)
);
