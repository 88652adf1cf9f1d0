-- Version 6: batch jobs (issue 14). A job and one item per photo; the input photos live in
-- files under job_inputs/ (like every other image), named by `input`. Times are epoch seconds.

CREATE TABLE IF NOT EXISTS jobs (
    id          TEXT    PRIMARY KEY,
    user_id     TEXT    NOT NULL,
    key_id      TEXT,
    status      TEXT    NOT NULL,    -- queued | running | done | cancelled
    options     TEXT    NOT NULL,    -- JSON: the output options
    options_key TEXT    NOT NULL,
    webhook_url TEXT,
    webhook_secret TEXT,            -- signs the webhook (derived from the key)
    total       INTEGER NOT NULL,
    created_at  REAL    NOT NULL,
    started_at  REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_user ON jobs (user_id, created_at);

CREATE TABLE IF NOT EXISTS job_items (
    id          TEXT    PRIMARY KEY,
    job_id      TEXT    NOT NULL,
    user_id     TEXT    NOT NULL,
    idx         INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    status      TEXT    NOT NULL,    -- queued | running | done | failed | cancelled
    attempts    INTEGER NOT NULL DEFAULT 0,
    lease_until REAL,
    record_id   TEXT    NOT NULL,
    image_id    TEXT,
    error       TEXT,
    error_code  TEXT,
    input       TEXT,
    url         TEXT,
    sha256      TEXT,
    options_key TEXT    NOT NULL,
    charged     INTEGER NOT NULL DEFAULT 0,
    started_at  REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS job_items_job ON job_items (job_id, idx);
CREATE INDEX IF NOT EXISTS job_items_due ON job_items (status, lease_until);
CREATE INDEX IF NOT EXISTS job_items_dedup ON job_items (user_id, sha256, options_key, status);
