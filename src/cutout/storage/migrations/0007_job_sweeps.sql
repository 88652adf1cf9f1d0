-- Version 7: an index for the reaper's hourly sweep of orphaned input photos (stop 28), which
-- looks its candidates up by `input`: with 200,000 items, 17.7 ms a batch of 500 without it,
-- 0.6 ms with it. (The retention's query on `jobs` goes through job_items_job already: 7.3
-- against 6.9 ms with an index on (status, finished_at), so none is added for it.)
CREATE INDEX IF NOT EXISTS job_items_input ON job_items (input);
