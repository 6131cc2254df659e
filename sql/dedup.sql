-- Deduplication keys: send and send_batch with dedup_key(s), the window,
-- and every error of the feature.
SELECT queue.create('dd', dedup_window => '1 second') IS NOT NULL AS created;

-- The second send with a key returns the first message's id and enqueues nothing.
SELECT queue.send('dd', '"first"', dedup_key => 'order-1') AS first_id \gset
SELECT queue.send('dd', '"again"', dedup_key => 'order-1') = :first_id AS same_id;
SELECT queue.send('dd', '"other"', dedup_key => 'order-2') <> :first_id AS new_id;
SELECT queue.send('dd', '"no key"') <> :first_id AS without_key;
SELECT messages, sent_total FROM queue.queues WHERE queue_name = 'dd';

-- The key holds after the message is gone: it is a window, not a lookup.
SELECT count(*) AS acked FROM queue.read('dd', 10) m, queue.ack('dd', m.id, m.receipt) a WHERE a;
SELECT queue.send('dd', '"after ack"', dedup_key => 'order-1') = :first_id AS still_same;
SELECT messages FROM queue.queues WHERE queue_name = 'dd';

-- After the window the key is free again.
SELECT pg_sleep(1.1);
SELECT queue.send('dd', '"later"', dedup_key => 'order-1') <> :first_id AS new_after_window;

-- send_batch: one key (or NULL) per payload; a key repeated in the batch
-- returns the first id of the batch.
SELECT array_agg(id ORDER BY n) AS ids
  FROM queue.send_batch('dd', ARRAY['"a"', '"b"', '"c"', '"d"']::jsonb[],
                        dedup_keys => ARRAY['k1', NULL, 'k1', 'order-2']) WITH ORDINALITY AS t(id, n) \gset
SELECT (:'ids'::bigint[])[1] = (:'ids'::bigint[])[3] AS repeated_key_same_id,
       (:'ids'::bigint[])[2] <> (:'ids'::bigint[])[1] AS null_key_new_id;
SELECT payload FROM queue.read('dd', 10) ORDER BY id;

-- Keys of an unlogged queue live in the unlogged table, and move with alter.
SELECT queue.alter('dd', logged => false);
SELECT count(*) > 0 AS moved FROM queue_internal.dedup_unlogged;
SELECT queue.send('dd', '"x"', dedup_key => 'k1') = (:'ids'::bigint[])[1] AS key_kept;
SELECT queue.alter('dd', logged => true);

-- The window is a setting of the queue.
SELECT queue.alter('dd', dedup_window => '1 hour');
SELECT dedup_window FROM queue.queues WHERE queue_name = 'dd';
SELECT queue.alter('dd', reset => ARRAY['dedup_window']);
SELECT dedup_window FROM queue.queues WHERE queue_name = 'dd';

-- Errors, each with its SQLSTATE
SELECT queue.send('dd', '1', dedup_key => '');
\echo :SQLSTATE
SELECT queue.send('dd', '1', dedup_key => repeat('k', 257));
\echo :SQLSTATE
SELECT queue.send_batch('dd', ARRAY['1', '2']::jsonb[], dedup_keys => ARRAY['k']);
\echo :SQLSTATE
SELECT queue.send_batch('dd', ARRAY['1']::jsonb[], dedup_keys => ARRAY['']);
\echo :SQLSTATE
SELECT queue.create('dd2', dedup_window => '0');
\echo :SQLSTATE
SELECT queue.create('dd2', dedup_window => '8 days');
\echo :SQLSTATE
SELECT queue.alter('dd', dedup_window => '-1 second');
\echo :SQLSTATE

-- Dropping the queue forgets its keys.
SELECT queue.drop('dd');
SELECT count(*) AS keys_left FROM queue_internal.dedup;
