-- An external consumer in one statement: leases up to 10 messages (waiting up
-- to 200 ms for one), acks the good ones and writes the ids the ack returned
-- into the ledger, nacks the poison ones.  Ack and ledger commit together, so
-- each acked message is in the ledger exactly once.
WITH r AS (SELECT * FROM queue.read('soak_ext', 10, visibility_timeout => '5 seconds',
                                    wait => '200 milliseconds')),
     good AS (SELECT * FROM r WHERE NOT (payload->>'poison')::boolean),
     acked AS (SELECT id FROM queue.ack('soak_ext',
                                        (SELECT coalesce(array_agg(id), '{}') FROM good),
                                        (SELECT coalesce(array_agg(receipt), '{}') FROM good)) AS id),
     ledger AS (INSERT INTO soak.processed (q, id, deliveries, how)
                SELECT 'soak_ext', r.id, r.attempts, 'ack' FROM acked JOIN r USING (id)
                RETURNING 1),
     nacked AS (SELECT queue.nack('soak_ext', id, receipt, error => 'poison') AS ok
                  FROM r WHERE (payload->>'poison')::boolean)
SELECT (SELECT count(*) FROM ledger) AS acked, (SELECT count(*) FROM nacked) AS nacked;
