-- Seed 003's fine status after each event (the fulfillment lifecycle).
-- Events stored before it existed have none; their coarse status stands.

ALTER TABLE order_events ADD COLUMN tracking_status TEXT;
