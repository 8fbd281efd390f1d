-- The latest driver fix of each order being delivered: one row per order,
-- replaced in place, written at most once per order every few seconds
-- (--location-write-interval). Fixes are not events: no version, no history.

CREATE TABLE driver_locations (
    order_id  TEXT    PRIMARY KEY REFERENCES orders (id),
    latitude  REAL    NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude REAL    NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    -- Metres, when the device said.
    accuracy  REAL    CHECK (accuracy >= 0),
    -- When the device took the fix: UTC, RFC 3339 with microseconds and a Z.
    at        TEXT    NOT NULL,
    -- The fix's place in the order's sequence (the live-location cursor),
    -- continued from here after a restart.
    seq       INTEGER NOT NULL CHECK (seq >= 1)
) WITHOUT ROWID;
