-- Background runs are owned: the instance running one holds a lease on it,
-- renewed by heartbeat. Another instance takes a run over only once its
-- lease has expired, so work that must run once runs once. Runs recorded
-- before leases existed have none, and are taken over at once.

ALTER TABLE background_runs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE background_runs ADD COLUMN lease_until TIMESTAMPTZ NOT NULL DEFAULT '-infinity';
CREATE INDEX background_runs_by_owner ON background_runs (owner);
