-- The same read and array-form ack as queue_read_ack_100.sql, in one statement:
-- one round trip, as for the raw DELETE, so that the difference to it is the
-- extension's own cost rather than the client's extra round trips.
WITH r AS (SELECT id, receipt, payload FROM queue.read('bench', 100)),
     a AS (SELECT count(*) AS acked
             FROM queue.ack('bench', (SELECT coalesce(array_agg(id), '{}') FROM r),
                             (SELECT coalesce(array_agg(receipt), '{}') FROM r)))
SELECT r.id, r.payload, (SELECT acked FROM a) AS acked FROM r;
