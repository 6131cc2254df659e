-- 100 messages per transaction through queue.send_batch (:payloads holds 100).
SELECT count(*) FROM queue.send_batch('bench', :payloads::jsonb[]);
