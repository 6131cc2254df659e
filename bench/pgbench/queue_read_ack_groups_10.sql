-- queue_read_ack_10.sql with per_group: in a FIFO queue, a read takes up to
-- :per_group consecutive messages of a group (bench/fifo.sh passes
-- -D per_group=...).
BEGIN;
SELECT coalesce(array_agg(id), '{}') AS ids, coalesce(array_agg(receipt), '{}') AS receipts,
       array_agg(payload) AS payloads
  FROM queue.read(:queue, 10, per_group => :per_group) \gset
SELECT count(*) FROM queue.ack(:queue, :ids::bigint[], :receipts::bigint[]);
END;
