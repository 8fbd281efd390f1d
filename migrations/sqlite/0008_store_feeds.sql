-- The store's order feed (GET /tracking/store/{store_id}/orders): each
-- store numbers the changes to its orders, 1, 2, 3, ... in commit order,
-- and each order row keeps the number of its latest change. A tablet's
-- cursor is such a number: "the changes after this one".
--
-- The counter row is bumped inside the commit's transaction, so it also
-- serialises commits per store: a number is never visible before a
-- smaller one of the same store.

ALTER TABLE orders ADD COLUMN store_id TEXT;
ALTER TABLE orders ADD COLUMN store_seq INTEGER;
CREATE INDEX orders_by_store_seq ON orders (store_id, store_seq);

CREATE TABLE store_feeds (
    store_id TEXT   PRIMARY KEY,
    seq      INTEGER NOT NULL
);
