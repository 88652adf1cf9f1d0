-- Version 3: the API's tables (issue 8). Secrets are never stored: only their SHA-256.

CREATE TABLE IF NOT EXISTS api_keys (
    seq           INTEGER PRIMARY KEY,      -- insertion order, the tie-break of "newest first"
    id            TEXT    NOT NULL UNIQUE,  -- 24 lowercase hex chars, shown by `cutout keys list`
    user_id       TEXT    NOT NULL,         -- whose images the key uploads into
    name          TEXT    NOT NULL,
    prefix        TEXT    NOT NULL,         -- "cut_AbCd": recognisable, useless to an attacker
    secret_hash   TEXT    NOT NULL UNIQUE,  -- sha256 hex of the whole key
    created_on    TEXT    NOT NULL,         -- "YYYY-MM-DD HH:MM:SS", UTC
    last_used_on  TEXT,
    credits       REAL,                     -- allowance; NULL means unlimited
    credits_used  REAL    NOT NULL DEFAULT 0,
    revoked_on    TEXT
);
CREATE INDEX IF NOT EXISTS api_keys_user ON api_keys (user_id);

-- One row per (user, Idempotency-Key): claimed with status NULL, then the first answer.
CREATE TABLE IF NOT EXISTS idempotency (
    user_id     TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,  -- sha256 of method, path and body: a reuse must match
    created     REAL    NOT NULL,  -- unix time; rows older than a day are deleted
    status      INTEGER,
    body        TEXT,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency (created);

-- /v1.0/improve submissions, kept for the operator to look at (at most 12 MB each).
CREATE TABLE IF NOT EXISTS improvements (
    id             TEXT    PRIMARY KEY,
    key_id         TEXT    NOT NULL,
    user_id        TEXT    NOT NULL,
    created_on     TEXT    NOT NULL,
    image_filename TEXT,
    tag            TEXT,
    media_type     TEXT    NOT NULL,
    size_bytes     INTEGER NOT NULL,
    data           BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS improvements_key ON improvements (key_id);
