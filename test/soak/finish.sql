-- The soak's final drain of soak_ext, run in a loop by test/soak.sh once the
-- load has stopped: what consume_ack.sql does, 100 at a time.
WITH r AS (SELECT * FROM queue.read('soak_ext', 100, visibility_timeout => '30 seconds')),
     good AS (SELECT * FROM r WHERE NOT (payload->>'poison')::boolean),
     acked AS (SELECT id FROM queue.ack('soak_ext',
                                        (SELECT coalesce(array_agg(id), '{}') FROM good),
                                        (SELECT coalesce(array_agg(receipt), '{}') FROM good)) AS id),
     ledger AS (INSERT INTO soak.processed (q, id, deliveries, how)
                SELECT 'soak_ext', r.id, r.attempts, 'finish' FROM acked JOIN r USING (id)
                RETURNING 1),
     nacked AS (SELECT queue.nack('soak_ext', id, receipt, error => 'poison') AS ok
                  FROM r WHERE (payload->>'poison')::boolean)
SELECT (SELECT count(*) FROM ledger) + (SELECT count(*) FROM nacked);
