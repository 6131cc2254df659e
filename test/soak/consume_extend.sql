-- A consumer that extends its lease: leases one message for 2 seconds, after
-- 1 second extends it to 30 seconds with set_visibility, then acks.  The
-- extension may fail if the box stalled past the lease and another consumer
-- took the message; but once it succeeded, nobody else can take the message
-- within 30 s, so the ack must succeed.  When it does not, the transaction
-- rolls back and soak.anomaly records the message and where it is now
-- (test/soak/check.sql fails the soak on any anomaly).
SELECT coalesce(max(id), 0) AS id, coalesce(max(receipt), 0) AS receipt,
       coalesce(max(attempts), 0) AS att, coalesce(bool_or((payload->>'poison')::boolean), true) AS poison
  FROM queue.read('soak_ext', 1, visibility_timeout => '2 seconds') \gset
\if :poison
\else
\sleep 1000 ms
SELECT queue.set_visibility('soak_ext', :id::bigint, :receipt::bigint, '30 seconds') AS extended,
       clock_timestamp() AS extended_at \gset
\if :extended
BEGIN;
SELECT queue.ack('soak_ext', :id::bigint, :receipt::bigint) AS acked \gset
\if :acked
INSERT INTO soak.processed (q, id, deliveries, how) VALUES ('soak_ext', :id, :att, 'extended_ack');
COMMIT;
\else
ROLLBACK;
INSERT INTO soak.anomaly (id, receipt, what, extended_at, now_row)
SELECT :id, :receipt, 'ack failed after a successful set_visibility', :extended_at::timestamptz,
       soak.queue_row('soak_ext', :id::bigint);
\endif
\endif
\endif
