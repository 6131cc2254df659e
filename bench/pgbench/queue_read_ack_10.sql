-- A consumer's transaction: lease a batch of up to 10, take the payloads to
-- the client, ack the batch with the array form, commit.  The queue's name
-- comes from pgbench: -D queue=bench (bench/run) or another (bench/fifo.sh).
BEGIN;
SELECT coalesce(array_agg(id), '{}') AS ids, coalesce(array_agg(receipt), '{}') AS receipts,
       array_agg(payload) AS payloads
  FROM queue.read(:queue, 10) \gset
SELECT count(*) FROM queue.ack(:queue, :ids::bigint[], :receipts::bigint[]);
END;
