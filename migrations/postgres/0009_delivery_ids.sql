-- A delivery partner names an order by its own delivery id (Uber's
-- `delivery_id`), which the order keeps as `delivery_tracking_id`: indexed
-- so a partner's webhook finds its order in one lookup.

ALTER TABLE orders ADD COLUMN delivery_id TEXT;
CREATE INDEX orders_by_delivery_id ON orders (delivery_id);
