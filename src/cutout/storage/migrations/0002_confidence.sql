-- Version 2: each cut-out's confidence score (issue 7). Both columns stay NULL for records made
-- before it, and for engines that cannot score themselves (the remote ObjectCut, a single model).

ALTER TABLE records ADD COLUMN confidence REAL;          -- in [0, 1]
ALTER TABLE records ADD COLUMN needs_review INTEGER;     -- 0 or 1: confidence was below the threshold
