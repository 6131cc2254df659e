-- The raw limit for queue_read_ack_100: delete up to 100 of the oldest rows in one statement
-- (the LIMIT is a literal so that the prepared statement's plan stays fast).
DELETE FROM bench_raw WHERE id IN (SELECT id FROM bench_raw ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED) RETURNING *;
