-- Background work that must outlive the process: what was running, so a
-- restart resumes it instead of forgetting it (workflow simulations).

CREATE TABLE background_runs (
    kind       TEXT NOT NULL,
    order_id   TEXT NOT NULL,
    -- The run's settings as JSON (a simulation's speed).
    params     TEXT NOT NULL,
    started_at TEXT NOT NULL,
    PRIMARY KEY (kind, order_id)
);
