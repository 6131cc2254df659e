-- queue_read_ack_<n>.sql with per_group: in a FIFO queue, a read of up to
-- :batch messages takes up to :per_group consecutive messages of a group
-- (bench/fifo.sh passes -D batch=... -D per_group=...).
BEGIN;
SELECT coalesce(array_agg(id), '{}') AS ids, coalesce(array_agg(receipt), '{}') AS receipts,
       array_agg(payload) AS payloads
  FROM queue.read(:queue, :batch, per_group => :per_group) \gset
SELECT count(*) FROM queue.ack(:queue, :ids::bigint[], :receipts::bigint[]);
END;
