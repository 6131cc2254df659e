-- An external consumer's client transaction: BEGIN, read a batch into the
-- client, ack the good ones with the array form and write the ledger from
-- what the ack returned, COMMIT.  Poison messages are left to their lease.
BEGIN;
SELECT coalesce(array_agg(id), '{}') AS ids, coalesce(array_agg(receipt), '{}') AS receipts,
       coalesce(array_agg(attempts), '{}') AS atts
  FROM queue.read('soak_ext', 20, visibility_timeout => '5 seconds')
 WHERE NOT (payload->>'poison')::boolean \gset
INSERT INTO soak.processed (q, id, deliveries, how)
SELECT 'soak_ext', a.id, m.att, 'ack_tx'
  FROM queue.ack('soak_ext', :ids::bigint[], :receipts::bigint[]) AS a(id)
  JOIN unnest(:ids::bigint[], :atts::int[]) AS m(id, att) USING (id);
COMMIT;
