-- A consumer's transaction: lease a batch of up to 100, take the payloads to
-- the client, ack the batch with the array form, commit.
BEGIN;
SELECT coalesce(array_agg(id), '{}') AS ids, coalesce(array_agg(receipt), '{}') AS receipts,
       array_agg(payload) AS payloads
  FROM queue.read('bench', 100) \gset
SELECT count(*) FROM queue.ack('bench', :ids::bigint[], :receipts::bigint[]);
END;
