-- The raw limit for queue_send_100: the same 100 payloads in one INSERT.
INSERT INTO bench_raw (payload) SELECT unnest(:payloads::jsonb[]);
