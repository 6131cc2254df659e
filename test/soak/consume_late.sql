-- A slow consumer: leases one message for 1 second, works for 0 to 2 seconds,
-- then acks with its receipt and writes the ledger only if the ack returned
-- true.  When the lease ran out and another consumer read the message in the
-- meantime, the ack must fail (the other holder acks it); either way the
-- ledger gets it once.
\set work random(0, 2000)
SELECT coalesce(max(id), 0) AS id, coalesce(max(receipt), 0) AS receipt,
       coalesce(max(attempts), 0) AS att, coalesce(bool_or((payload->>'poison')::boolean), true) AS poison
  FROM queue.read('soak_ext', 1, visibility_timeout => '1 second') \gset
\sleep :work ms
\if :poison
\else
WITH a AS (SELECT queue.ack('soak_ext', :id::bigint, :receipt::bigint) AS ok)
INSERT INTO soak.processed (q, id, deliveries, how)
SELECT 'soak_ext', :id::bigint, :att::int, 'late_ack' FROM a WHERE ok;
\endif
