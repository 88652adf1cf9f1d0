-- Version 1 of the embedded store: one row per record. Image bytes are not here: they live in
-- files named after the record id (``images/<id>.original``, ``images/<id>.processed``).
-- Databases made before migrations existed already hold this (with user_version 1), so every
-- statement is idempotent.

CREATE TABLE IF NOT EXISTS records (
    -- Insertion order: the tie-break of "newest first" when created_on (whole seconds) is
    -- equal. A plain INTEGER PRIMARY KEY hands out max(seq) + 1, so it only ever grows among
    -- the rows that exist.
    seq                 INTEGER PRIMARY KEY,
    id                  TEXT    NOT NULL UNIQUE,  -- 24 lowercase hex chars, like an ObjectId
    user_id             TEXT    NOT NULL,
    image_name          TEXT    NOT NULL,
    created_on          TEXT    NOT NULL,         -- "YYYY-MM-DD HH:MM:SS", UTC
    engine              TEXT    NOT NULL,
    model               TEXT    NOT NULL,
    original_media_type TEXT    NOT NULL,
    original_size_bytes INTEGER NOT NULL,
    original_width      INTEGER NOT NULL,
    original_height     INTEGER NOT NULL,
    original_sha256     TEXT    NOT NULL,
    processed_media_type TEXT   NOT NULL,
    processed_size_bytes INTEGER NOT NULL,
    processed_width     INTEGER NOT NULL,
    processed_height    INTEGER NOT NULL,
    processed_sha256    TEXT    NOT NULL
);

-- Serves both "this user's records, newest first" and the per-user count of the limit check.
CREATE INDEX IF NOT EXISTS records_user_created ON records (user_id, created_on);
