-- Version 4: touched-up cut-outs and thumbnails (the page's studio, issue 10).
-- A record's two files stay as they were: images/<id>.original and images/<id>.processed (the
-- model's cut-out, never overwritten, so "reset to the model's result" always works). Every
-- other image of a record is a row here naming its own file, which starts with "<id>." so the
-- record's delete and the orphan sweep find it.

-- Bumped by every saved edit or reset: pages use it to name the current cut-out in URLs.
ALTER TABLE records ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS record_images (
    record_id     TEXT    NOT NULL,         -- records.id
    kind          TEXT    NOT NULL,         -- 'edit', 'thumb:original', 'thumb:processed'
    file          TEXT    NOT NULL UNIQUE,  -- its name under images/
    media_type    TEXT    NOT NULL,
    size_bytes    INTEGER NOT NULL,
    width         INTEGER NOT NULL,
    height        INTEGER NOT NULL,
    sha256        TEXT    NOT NULL,
    source_sha256 TEXT,                     -- thumbnails: the image they were made from
    PRIMARY KEY (record_id, kind)
);
