-- Version 5: /v1.0/improve submissions keep their bytes in files (improvements/<id>), like every
-- other image, not inside the row: five 12 MB submissions had grown the database from 1.2 to
-- 59 MB, and every query of the file paid for them. Rows made before keep their bytes in `data`
-- until `cutout improvements purge` removes them.

CREATE TABLE improvements_v5 (
    id             TEXT    PRIMARY KEY,
    key_id         TEXT    NOT NULL,
    user_id        TEXT    NOT NULL,
    created_on     TEXT    NOT NULL,
    image_filename TEXT,
    tag            TEXT,
    media_type     TEXT    NOT NULL,
    size_bytes     INTEGER NOT NULL,
    file           TEXT,             -- its name under improvements/ (new rows)
    data           BLOB              -- the bytes of rows made before version 5
);
INSERT INTO improvements_v5 (id, key_id, user_id, created_on, image_filename, tag, media_type,
                             size_bytes, data)
    SELECT id, key_id, user_id, created_on, image_filename, tag, media_type, size_bytes, data
    FROM improvements;
DROP TABLE improvements;
ALTER TABLE improvements_v5 RENAME TO improvements;
CREATE INDEX IF NOT EXISTS improvements_key ON improvements (key_id);
