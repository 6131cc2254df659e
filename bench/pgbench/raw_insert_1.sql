-- The raw limit for queue_send_1: one row per transaction into a plain table.
INSERT INTO bench_raw (payload) VALUES (:payload::jsonb);
