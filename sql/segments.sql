--
-- Segments: a queue's ring of segment tables, recycled with TRUNCATE, and
-- queue.recycle, which runs the recycling by hand.  Automatic recycling is
-- left out of the way here (segment_size and segment_age at their maximum),
-- so that every step below is the one the test asks for.
--
SET queue.segment_size = '1GB';
SET queue.segment_age = '24h';
SELECT queue.create('seg') AS seg_id \gset

-- Four segment tables, children of q<id>, named from the id.
SELECT c.relname = 's' || :seg_id || '_' || i AS named_from_id,
       p.relname = 'q' || :seg_id AS child_of_parent
  FROM generate_series(0, 3) i
  JOIN pg_class c ON c.relname = 's' || :seg_id || '_' || i
                 AND c.relnamespace = 'queue_internal'::regnamespace
  JOIN pg_inherits h ON h.inhrelid = c.oid
  JOIN pg_class p ON p.oid = h.inhparent
 ORDER BY i;
SELECT segments, bytes > 0 AS has_bytes FROM queue.queues WHERE queue_name = 'seg';

-- recycle on a queue whose only segment is empty: nothing to do.
SELECT queue.recycle('seg');
SELECT segments FROM queue.queues WHERE queue_name = 'seg';

-- Messages in the first segment: one acked, one in flight (leased for an
-- hour), one delayed by a nack; recycle starts a new segment.
SELECT count(*) FROM queue.send_batch('seg', ARRAY['1', '2', '3', '4']::jsonb[]);
CREATE TEMP TABLE r1 AS SELECT * FROM queue.read('seg', 3, visibility_timeout => '1 hour');
SELECT queue.ack('seg', id, receipt) FROM r1 WHERE payload = '1';
SELECT queue.nack('seg', id, receipt, delay => '1 hour') FROM r1 WHERE payload = '3';
SELECT queue.recycle('seg') AS recycled;
SELECT segments FROM queue.queues WHERE queue_name = 'seg';
-- New messages go to the new segment.
SELECT queue.send('seg', '5') > 0 AS sent;
SELECT tableoid::regclass::text ~ '_1$' AS in_second_segment, payload
  FROM queue_internal.q:seg_id ORDER BY id;

-- The first segment still holds a visible message (4): not drained, not recycled.
SELECT queue.recycle('seg') AS recycled;
SELECT segments FROM queue.queues WHERE queue_name = 'seg';
-- Once 4 is delivered, only hidden messages are left there: the segment
-- is recycled, its messages move forward with their ids, leases and
-- attempts, and the reads go on in id order.
CREATE TEMP TABLE r2 AS SELECT * FROM queue.read('seg', 1, visibility_timeout => '1 hour');
SELECT payload FROM r2;
SELECT queue.recycle('seg') AS recycled;
SELECT segments FROM queue.queues WHERE queue_name = 'seg';
SELECT tableoid::regclass::text ~ '_1$' AS in_second_segment, payload, attempts,
       receipt IS NOT NULL AS leased
  FROM queue_internal.q:seg_id ORDER BY id;
-- The lease taken before the move still holds, and only it.
SELECT queue.ack('seg', id, receipt + 1) AS wrong_receipt FROM r1 WHERE payload = '2';
SELECT queue.ack('seg', id, receipt) AS acked FROM r1 WHERE payload = '2';
SELECT queue.set_visibility('seg', id, receipt, '0') AS visible_again FROM r2;
SELECT payload, attempts FROM queue.read('seg', 10);
SELECT messages, visible, in_flight, delayed FROM queue.queues WHERE queue_name = 'seg';
DROP TABLE r1, r2;

-- A delayed message moved forward into the segment of newer messages is
-- delivered before them, in id order, once its time has come.
SELECT queue.purge('seg');
SELECT queue.send('seg', '"early"', delay => '1 second') > 0 AS sent;
SELECT queue.recycle('seg') AS recycled;
SELECT count(*) FROM queue.send_batch('seg', ARRAY['"late1"', '"late2"']::jsonb[]);
SELECT queue.recycle('seg') + queue.recycle('seg') + queue.recycle('seg') >= 1 AS recycled;
SELECT count(DISTINCT tableoid) AS segments_holding_them FROM queue_internal.q:seg_id;
SELECT count(*) AS visible_now FROM queue.read('seg', 10, visibility_timeout => '0');
SELECT pg_sleep(1.1);
SELECT payload FROM queue.pop('seg', 10);

--
-- Errors: recycle needs the administer privilege, a READ COMMITTED and
-- writable transaction, and a queue that exists.
--
SELECT queue.recycle('no_such_queue');
\echo :SQLSTATE
SELECT queue.recycle('Bad Name');
\echo :SQLSTATE
SELECT queue.recycle(NULL);
\echo :SQLSTATE
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT queue.recycle('seg');
\echo :SQLSTATE
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT queue.recycle('seg');
\echo :SQLSTATE
ROLLBACK;
BEGIN READ ONLY;
SELECT queue.recycle('seg');
\echo :SQLSTATE
ROLLBACK;
CREATE ROLE regress_queue_segment_reader;
SELECT queue.grant('seg', 'read', 'regress_queue_segment_reader');
SET ROLE regress_queue_segment_reader;
SELECT queue.recycle('seg');
\echo :SQLSTATE
RESET ROLE;
SELECT queue.grant('seg', 'administer', 'regress_queue_segment_reader');
SET ROLE regress_queue_segment_reader;
SELECT queue.recycle('seg') >= 0 AS allowed;
RESET ROLE;

-- The function and the settings are documented.
SELECT obj_description('queue.recycle(text)'::regprocedure, 'pg_proc') IS NOT NULL AS documented;
SELECT name, setting, unit, context FROM pg_settings
 WHERE name IN ('queue.segment_size', 'queue.segment_age') ORDER BY name;

-- Dropping the queue drops its segments too.
SELECT queue.drop('seg');
SELECT count(*) AS segments_left FROM pg_class
 WHERE relnamespace = 'queue_internal'::regnamespace AND relname ~ ('^s' || :seg_id || '_');
SELECT count(*) AS rings_left FROM queue_internal.segment_ring WHERE queue_id = :seg_id;
DROP ROLE regress_queue_segment_reader;
RESET queue.segment_size;
RESET queue.segment_age;
