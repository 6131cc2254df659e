--
-- Messages: send, send_batch, read, pop, ack (one and many), nack,
-- set_visibility, archive and archived, delays, ordering, attempts, leases,
-- dead letters, redrive and the counters of queue.queues.
--
-- Ids, receipts and timestamps change from run to run: the output shows
-- payloads and comparisons, never the values themselves.
--
SELECT queue.create('m') > 0 AS created;

--
-- send returns a bigint id; ids increase; any JSON value is a payload.
--
SELECT pg_typeof(queue.send('m', '{"n": 1}'));
SELECT queue.send('m', '{"n": 2}', headers => '{"trace": "abc"}', group_key => 'customer_7') AS m2 \gset
SELECT queue.send('m', '"three"') AS m3 \gset
SELECT queue.send('m', '[4]') AS m4 \gset
SELECT queue.send('m', 'null') AS m5 \gset
SELECT queue.send('m', '6.5', delay => NULL, headers => NULL, group_key => NULL) AS m6 \gset
SELECT :m2 < :m3 AND :m3 < :m4 AND :m4 < :m5 AND :m5 < :m6 AS ids_increase;

--
-- read: oldest first, every field of queue.message.
--
CREATE TEMP TABLE got AS SELECT * FROM queue.read('m', 2);
SELECT payload, headers, group_key, attempts, last_error,
       enqueued_at BETWEEN now() - interval '1 minute' AND clock_timestamp() AS enqueued_recently,
       visible_at > now() + interval '25 seconds'
         AND visible_at <= clock_timestamp() + interval '30 seconds' AS hidden_30s,
       receipt IS NOT NULL AS has_receipt
  FROM got ORDER BY id;
SELECT count(DISTINCT receipt) AS receipts_in_one_read FROM got;
SELECT id = :m2 AS is_m2 FROM got ORDER BY id DESC LIMIT 1;
-- In-flight messages are skipped: the next read gets the third message.
SELECT payload, attempts FROM queue.read('m');
SELECT payload, attempts FROM queue.read('m', max_messages => 10, visibility_timeout => '1 hour');
SELECT count(*) AS nothing_visible FROM queue.read('m', 10);

--
-- ack: true once, then false; the receipt must match.
--
SELECT queue.ack('m', id, receipt) FROM got ORDER BY id;
SELECT queue.ack('m', id, receipt) FROM got ORDER BY id;
SELECT queue.ack('m', :m3, 12345);
SELECT queue.ack('m', -1, 1);

-- ack of many: returns the ids whose (id, receipt) still held a lease.
SELECT queue.send('m', '"r1"') AS r1 \gset
SELECT queue.send('m', '"r2"') AS r2 \gset
SELECT queue.send('m', '"r3"') AS r3 \gset
TRUNCATE got;
INSERT INTO got SELECT * FROM queue.read('m', 3);
SELECT payload FROM got ORDER BY id;
SELECT payload FROM got
 WHERE id IN (SELECT queue.ack('m',
                               ARRAY[:r1, :r2, :r3, :m2, NULL],
                               ARRAY[(SELECT receipt FROM got WHERE id = :r1),
                                     (SELECT receipt FROM got WHERE id = :r2) + 1,
                                     (SELECT receipt FROM got WHERE id = :r3),
                                     (SELECT receipt FROM got WHERE id = :r3),
                                     NULL]))
 ORDER BY id;
-- The same pairs again, and empty arrays: nothing.
SELECT count(*) FROM queue.ack('m', ARRAY[:r1, :r3], (SELECT array_agg(receipt ORDER BY id) FROM got WHERE id IN (:r1, :r3)));
SELECT count(*) FROM queue.ack('m', '{}'::bigint[], '{}'::bigint[]);
-- The pair whose receipt was wrong is still there.
SELECT queue.ack('m', id, receipt) FROM got WHERE id = :r2;
SELECT queue.purge('m');

--
-- pop: reads and deletes, oldest first, with no receipt.
--
SELECT count(*) FROM queue.send_batch('m', ARRAY['"p1"', '"p2"', '"p3"', '"p4"']::jsonb[]);
SELECT payload, attempts, receipt IS NULL AS no_receipt FROM queue.pop('m', 2);
-- pop skips messages in flight.
TRUNCATE got;
INSERT INTO got SELECT * FROM queue.read('m');
SELECT payload FROM got;
SELECT payload FROM queue.pop('m', 10);
SELECT count(*) AS after_pop FROM queue.pop('m');
SELECT queue.ack('m', id, receipt) FROM got;
SELECT count(*) AS empty FROM queue.read('m', 10);

--
-- send_batch: ids in array order; headers, group_key and delay apply to all.
--
CREATE TEMP TABLE batch AS
SELECT id, n
  FROM queue.send_batch('m', ARRAY['{"b": 1}', '{"b": 2}', '{"b": 3}']::jsonb[],
                        headers => '{"h": true}', group_key => 'g') WITH ORDINALITY AS s(id, n);
SELECT n, id > lag(id) OVER (ORDER BY n) AS increasing FROM batch ORDER BY n;
SELECT b.n, r.payload, r.headers, r.group_key
  FROM queue.read('m', 10) r JOIN batch b USING (id) ORDER BY r.id;
SELECT count(*) FROM queue.send_batch('m', '{}'::jsonb[]);
SELECT count(*) FROM queue.send_batch('m', ARRAY['1', '2']::jsonb[], delay => '1 hour');
SELECT count(*) AS delayed_batch_hidden FROM queue.read('m', 10);
SELECT queue.purge('m');

--
-- Leases.  A read with a zero visibility timeout makes the message visible
-- again at once.  Until someone else reads it, the old receipt still works
-- (as in SQS)...
--
SELECT queue.send('m', '"lease"') AS l1 \gset
SELECT receipt AS lr1, attempts FROM queue.read('m', visibility_timeout => '0') \gset
SELECT :attempts AS attempts_after_first_read;
SELECT queue.set_visibility('m', :l1, :lr1, '0');
-- ...but once another read took it, the first holder can do nothing with
-- it: ack, nack, set_visibility and archive all return false.
SELECT receipt AS lr2, attempts FROM queue.read('m', visibility_timeout => '1 hour') \gset
SELECT :attempts AS attempts_after_second_read, :lr2 <> :lr1 AS new_receipt;
SELECT queue.ack('m', :l1, :lr1);
SELECT queue.nack('m', :l1, :lr1);
SELECT queue.set_visibility('m', :l1, :lr1, '0');
SELECT queue.archive('m', :l1, :lr1);
SELECT count(*) AS still_hidden FROM queue.read('m');
SELECT queue.ack('m', :l1, :lr2);

--
-- nack: visible again after its delay, with the error as last_error; the
-- receipt dies with the nack.  The attempt count goes on.
--
SELECT queue.send('m', '"nacked"') AS n1 \gset
SELECT receipt AS nr1 FROM queue.read('m') \gset
SELECT queue.nack('m', :n1, :nr1, error => 'first failure');
SELECT queue.ack('m', :n1, :nr1);
SELECT payload, attempts, last_error FROM queue.read('m', visibility_timeout => '0');
-- the read above took a new receipt; get it again to nack without an error
SELECT receipt AS nr2 FROM queue.read('m') \gset
SELECT queue.nack('m', :n1, :nr2);
SELECT payload, attempts, last_error AS kept_error FROM queue.read('m', visibility_timeout => '0');
SELECT receipt AS nr3 FROM queue.read('m') \gset
SELECT queue.nack('m', :n1, :nr3, delay => '1 hour', error => 'second failure');
SELECT count(*) AS hidden_by_delay FROM queue.read('m');
SELECT messages, visible, in_flight, delayed FROM queue.queues WHERE queue_name = 'm';
SELECT queue.purge('m');

--
-- set_visibility: extends or shortens the lease.
--
SELECT queue.send('m', '"vis"') AS v1 \gset
SELECT receipt AS vr FROM queue.read('m', visibility_timeout => '0') \gset
SELECT queue.set_visibility('m', :v1, :vr, '1 hour');
SELECT count(*) AS hidden_for_an_hour FROM queue.read('m');
SELECT in_flight FROM queue.queues WHERE queue_name = 'm';
SELECT queue.set_visibility('m', :v1, :vr, '0');
SELECT payload, attempts FROM queue.read('m');
SELECT queue.set_visibility('m', :v1, :vr, '1 hour');
SELECT queue.purge('m');

--
-- Delays: a delayed message is invisible until its delay passes; a read
-- with wait finds it when it becomes visible.  A wait on an empty queue
-- returns nothing after the wait.
--
SELECT queue.send('m', '"later"', delay => '1 hour') > 0 AS sent;
SELECT count(*) AS not_yet FROM queue.read('m');
SELECT delayed, visible, oldest_visible_age FROM queue.queues WHERE queue_name = 'm';
SELECT queue.purge('m');
SELECT queue.send('m', '"soon"', delay => '0.3 seconds') > 0 AS sent;
SELECT count(*) AS not_yet FROM queue.read('m');
SELECT count(*) AS got_it,
       bool_and(clock_timestamp() >= enqueued_at + interval '0.3 seconds') AS not_before_its_delay,
       clock_timestamp() - statement_timestamp() < interval '4 seconds' AS did_not_wait_out
  FROM queue.read('m', wait => '5 seconds');
SELECT count(*) AS got_nothing,
       clock_timestamp() - statement_timestamp() >= interval '0.2 seconds' AS waited
  FROM queue.read('m', wait => '0.2 seconds');
SELECT count(*) AS got_nothing FROM queue.read('m', wait => NULL);
SELECT queue.purge('m');

--
-- A rolled-back read leaves the message as it was.
--
SELECT queue.send('m', '"rb"') > 0 AS sent;
BEGIN;
SELECT payload, attempts FROM queue.read('m');
ROLLBACK;
SELECT payload, attempts FROM queue.read('m');
SELECT queue.purge('m');

--
-- archive and archived; retention prunes old archived messages.
--
SELECT queue.create('ar', retention => '10 minutes') > 0 AS created;
SELECT queue.send('ar', '"a1"', headers => '{"k": 1}', group_key => 'ga') AS a1 \gset
SELECT queue.send('ar', '"a2"') AS a2 \gset
SELECT receipt AS ar1 FROM queue.read('ar', visibility_timeout => '0') \gset
SELECT queue.nack('ar', :a1, :ar1, error => 'kept in the archive');
SELECT receipt AS ar1 FROM queue.read('ar') \gset
SELECT receipt AS ar2 FROM queue.read('ar') \gset
SELECT queue.archive('ar', :a1, :ar1);
SELECT pg_sleep(0.01);
SELECT queue.archive('ar', :a2, :ar2);
SELECT queue.archive('ar', :a2, :ar2);
SELECT queue.ack('ar', :a1, :ar1);
SELECT id = :a1 AS is_a1, payload, headers, group_key, attempts, last_error,
       enqueued_at <= archived_at AS enqueued_first,
       archived_at BETWEEN now() - interval '1 minute' AND clock_timestamp() AS archived_recently
  FROM queue.archived('ar');
SELECT messages, acked_total FROM queue.queues WHERE queue_name = 'ar';
-- With retention 0, the next archive prunes everything archived before it.
SELECT queue.alter('ar', retention => '0');
SELECT queue.send('ar', '"a3"') AS a3 \gset
SELECT receipt AS ar3 FROM queue.read('ar') \gset
SELECT pg_sleep(0.01);
SELECT queue.archive('ar', :a3, :ar3);
SELECT payload FROM queue.archived('ar');
-- Without retention, archived messages stay.
SELECT queue.alter('ar', reset => '{retention}');
SELECT queue.send('ar', '"a4"') AS a4 \gset
SELECT receipt AS ar4 FROM queue.read('ar') \gset
SELECT pg_sleep(0.01);
SELECT queue.archive('ar', :a4, :ar4);
SELECT payload FROM queue.archived('ar');
SELECT queue.drop('ar');

--
-- Large payloads (stored out of line) come back whole from read, pop,
-- archived and the dead-letter queue.
--
SELECT queue.create('big') > 0 AS created;
CREATE TEMP TABLE bigdoc AS
SELECT jsonb_build_object('s', string_agg(md5(i::text), '')) AS doc FROM generate_series(1, 5000) i;
SELECT length(doc->>'s') FROM bigdoc;
SELECT queue.send('big', doc, headers => doc) > 0 AS sent FROM bigdoc;
SELECT queue.send('big', doc) > 0 AS sent FROM bigdoc;
SELECT p.payload = b.doc AS same_payload, p.headers = b.doc AS same_headers
  FROM queue.pop('big') p, bigdoc b;
TRUNCATE got;
INSERT INTO got SELECT * FROM queue.read('big');
SELECT g.payload = b.doc AS same_payload, g.headers IS NULL AS no_headers FROM got g, bigdoc b;
SELECT queue.archive('big', id, receipt) FROM got;
SELECT a.payload = b.doc AS same_archived FROM queue.archived('big') a, bigdoc b;
-- Through the dead-letter queue and back.
SELECT queue.create('big_dlq') > 0 AS created;
SELECT queue.alter('big', max_attempts => 1, dead_letter_queue => 'big_dlq');
SELECT queue.send('big', doc) > 0 AS sent FROM bigdoc;
SELECT count(*) FROM queue.read('big', visibility_timeout => '0');
SELECT count(*) FROM queue.read('big');
SELECT r.payload = b.doc AS same_dead_letter
  FROM queue.read('big_dlq', visibility_timeout => '0') r, bigdoc b;
SELECT queue.redrive('big_dlq');
SELECT p.payload = b.doc AS same_redriven FROM queue.pop('big') p, bigdoc b;
SELECT queue.drop('big');
SELECT queue.drop('big_dlq');

--
-- Dead letters.  max_attempts 2: a message read a third time goes to the
-- dead-letter queue instead, with its payload, headers, group key, id,
-- last error, and attempts = how many times it was delivered.
--
SELECT queue.create('work_dlq') > 0 AS created;
SELECT queue.create('work', max_attempts => 2, dead_letter_queue => 'work_dlq') > 0 AS created;
SELECT queue.send('work', '{"job": 1}', headers => '{"h": 1}', group_key => 'k1') AS w1 \gset
SELECT receipt AS wr FROM queue.read('work') \gset
SELECT queue.nack('work', :w1, :wr, error => 'boom 1');
SELECT receipt AS wr, attempts FROM queue.read('work') \gset
SELECT :attempts AS second_delivery;
SELECT queue.nack('work', :w1, :wr, error => 'boom 2');
SELECT count(*) AS third_read_gets_nothing FROM queue.read('work');
-- attempts counts every delivery: two from work, this one from work_dlq.
SELECT id = :w1 AS same_id, payload, headers, group_key, attempts, last_error
  FROM queue.read('work_dlq', visibility_timeout => '0');
-- The old receipt is dead too.
SELECT queue.ack('work', :w1, :wr);
SELECT queue_name, messages, visible, in_flight, dead_letters, sent_total, acked_total,
       dead_lettered_total
  FROM queue.queues WHERE queue_name LIKE 'work%' ORDER BY queue_name;

-- A dead message found by a batch read does not shorten the batch: the
-- read goes on to the next visible messages.
SELECT queue.alter('work', max_attempts => 1);
SELECT queue.send('work', '{"job": 2}') AS w2 \gset
SELECT queue.send('work', '{"job": 3}') AS w3 \gset
SELECT queue.send('work', '{"job": 4}') AS w4 \gset
SELECT receipt AS wr FROM queue.read('work') \gset
SELECT queue.nack('work', :w2, :wr);
SELECT payload, attempts FROM queue.read('work', 2, visibility_timeout => '1 hour');
SELECT payload, attempts FROM queue.read('work_dlq', 10, visibility_timeout => '0');
SELECT queue.purge('work');

-- Even with a zero visibility timeout, a batch read hands out each message
-- once, and a message it hands out is not dead-lettered behind the reader's
-- back: the reader can still ack it.
SELECT queue.alter('work', max_attempts => 2);
SELECT queue.send('work', '{"job": 5}') AS w5 \gset
SELECT receipt AS wr FROM queue.read('work') \gset
SELECT queue.nack('work', :w5, :wr);
SELECT receipt AS wr FROM queue.read('work') \gset
SELECT queue.nack('work', :w5, :wr);
SELECT queue.send('work', '{"job": 6}') AS w6 \gset
TRUNCATE got;
INSERT INTO got SELECT * FROM queue.read('work', 10, visibility_timeout => '0');
SELECT payload, attempts FROM got ORDER BY id, attempts;
SELECT queue.purge('work');
SELECT queue.alter('work', max_attempts => 1);
SELECT queue.send('work', '{"job": 7}') AS w7 \gset
SELECT receipt AS wr FROM queue.read('work') \gset
SELECT queue.nack('work', :w7, :wr);
SELECT queue.send('work', '{"job": 8}') AS w8 \gset
TRUNCATE got;
INSERT INTO got SELECT * FROM queue.read('work', 10, visibility_timeout => '0');
SELECT payload, attempts FROM got ORDER BY id, attempts;
SELECT queue.ack('work', id, receipt) FROM got ORDER BY id, attempts;
SELECT payload FROM queue.read('work_dlq', 10, visibility_timeout => '0') ORDER BY id;
SELECT queue.purge('work');

-- pop dead-letters too.
SELECT queue.send('work', '{"job": 9}') AS w9 \gset
SELECT receipt AS wr FROM queue.read('work') \gset
SELECT queue.nack('work', :w9, :wr);
SELECT count(*) AS popped FROM queue.pop('work');
SELECT payload, attempts FROM queue.read('work_dlq', 10, visibility_timeout => '0')
 WHERE id = :w9;

--
-- redrive: dead letters go back to the queue they came from (attempts
-- start again, last_error stays), oldest first, at most max_messages.
--
SELECT queue.purge('work_dlq');
SELECT queue.create('work_b', max_attempts => 1, dead_letter_queue => 'work_dlq') > 0 AS created;
SELECT queue.create('elsewhere') > 0 AS created;
CREATE TEMP TABLE sent AS
SELECT q, queue.send(q, jsonb_build_object('q', q, 'i', i)) AS id
  FROM (VALUES (1, 'work'), (2, 'work_b'), (3, 'work'), (4, 'work_b')) v(i, q)
 ORDER BY i;
-- Fail each once; the next reads dead-letter all four.
SELECT count(*) FROM (SELECT queue.nack(q, r.id, r.receipt, error => 'failed in ' || q)
                        FROM (VALUES ('work'), ('work_b')) v(q),
                             LATERAL queue.read(q, 10) r) n;
SELECT count(*) FROM queue.read('work', 10);
SELECT count(*) FROM queue.read('work_b', 10);
-- One more, sent straight to the dead-letter queue: it has no origin.
SELECT queue.send('work_dlq', '{"direct": true}') > 0 AS sent;
SELECT queue_name, messages, dead_letters, dead_lettered_total FROM queue.queues
 WHERE queue_name LIKE 'work%' ORDER BY queue_name;
-- Reads of the redriven messages below must not dead-letter them again.
SELECT queue.alter('work', max_attempts => 10);
SELECT queue.alter('work_b', max_attempts => 10);
SELECT queue.redrive('work_dlq', max_messages => 1);
SELECT payload, attempts, last_error FROM queue.read('work', 10, visibility_timeout => '0');
SELECT queue.redrive('work_dlq');
SELECT payload, attempts, last_error FROM queue.read('work', 10, visibility_timeout => '0') ORDER BY id;
SELECT payload, attempts, last_error FROM queue.read('work_b', 10, visibility_timeout => '0') ORDER BY id;
SELECT payload FROM queue.read('work_dlq', 10, visibility_timeout => '0');
SELECT queue_name, messages, dead_letters FROM queue.queues
 WHERE queue_name LIKE 'work%' ORDER BY queue_name;
-- Ids survive the round trip.
SELECT count(*) AS same_ids FROM sent s
  JOIN (SELECT id FROM queue.read('work', 10, visibility_timeout => '0')
        UNION ALL
        SELECT id FROM queue.read('work_b', 10, visibility_timeout => '0')) r USING (id);
-- The message sent straight to the dead-letter queue has no origin to go to.
SELECT queue.redrive('work_dlq');
-- With a target, dead letters go there whatever their origin, oldest first.
SELECT queue.alter('work', max_attempts => 1);
SELECT queue.alter('work_b', max_attempts => 1);
SELECT count(*) FROM queue.read('work', 10);
SELECT count(*) FROM queue.read('work_b', 10);
SELECT queue.redrive('work_dlq', target => 'elsewhere', max_messages => 2);
SELECT payload FROM queue.read('elsewhere', 10, visibility_timeout => '0') ORDER BY id;
SELECT queue.redrive('work_dlq', target => 'elsewhere');
SELECT payload, attempts FROM queue.read('elsewhere', 10) ORDER BY id;
SELECT count(*) AS dlq_empty FROM queue.read('work_dlq', 10);
SELECT queue.redrive('work_dlq', target => 'elsewhere');
-- Dead letters whose queue was dropped stay, with a notice; a target takes them.
SELECT queue.purge('elsewhere');
SELECT queue.send('work_b', '"orphan"') AS o1 \gset
SELECT receipt AS orr FROM queue.read('work_b') \gset
SELECT queue.nack('work_b', :o1, :orr);
SELECT count(*) FROM queue.read('work_b');
SELECT queue.drop('work_b');
SELECT queue.redrive('work_dlq');
SELECT queue.redrive('work_dlq', target => 'elsewhere');
SELECT payload, attempts FROM queue.read('elsewhere');
-- A dead letter someone holds a lease on stays until the lease ends.
SELECT queue.purge('elsewhere');
SELECT queue.send('work_dlq', '"leased"') AS d1 \gset
SELECT receipt AS dr FROM queue.read('work_dlq', visibility_timeout => '1 hour') \gset
SELECT queue.redrive('work_dlq', target => 'elsewhere');
SELECT queue.set_visibility('work_dlq', :d1, :dr, '0');
SELECT queue.redrive('work_dlq', target => 'elsewhere');
SELECT payload FROM queue.read('elsewhere');

--
-- Counters in queue.queues: totals since server start, counted at commit.
--
SELECT queue.create('cnt') > 0 AS created;
SELECT messages, visible, in_flight, delayed, oldest_visible_age, dead_letters,
       sent_total, acked_total, dead_lettered_total
  FROM queue.queues WHERE queue_name = 'cnt';
SELECT queue.send('cnt', '1') > 0 AS sent;
SELECT count(*) FROM queue.send_batch('cnt', ARRAY['2', '3', '4', '5']::jsonb[]);
SELECT queue.send('cnt', '6', delay => '1 hour') > 0 AS sent;
-- Rolled back, fully or to a savepoint: not counted.
BEGIN;
SELECT queue.send('cnt', '7') > 0 AS sent;
ROLLBACK;
BEGIN;
SELECT queue.send('cnt', '8') > 0 AS sent;
SAVEPOINT s;
SELECT queue.send('cnt', '9') > 0 AS sent;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT messages, visible, in_flight, delayed, oldest_visible_age BETWEEN '0' AND '1 minute' AS has_age,
       sent_total, acked_total
  FROM queue.queues WHERE queue_name = 'cnt';
TRUNCATE got;
INSERT INTO got SELECT * FROM queue.read('cnt', 3);
SELECT messages, visible, in_flight, delayed FROM queue.queues WHERE queue_name = 'cnt';
SELECT queue.ack('cnt', id, receipt) FROM got WHERE payload = '1';
SELECT count(*) FROM queue.ack('cnt', (SELECT array_agg(id) FROM got WHERE payload <> '1'),
                                (SELECT array_agg(receipt) FROM got WHERE payload <> '1'));
SELECT count(*) FROM queue.pop('cnt');
SELECT id AS c1, receipt AS cr1 FROM queue.read('cnt') \gset
SELECT queue.archive('cnt', :c1, :cr1);
SELECT messages, visible, in_flight, delayed,
       oldest_visible_age BETWEEN '0' AND '1 minute' AS has_age,
       sent_total, acked_total
  FROM queue.queues WHERE queue_name = 'cnt';
-- nack and lost leases are not acks.
SELECT queue.send('cnt', '10') > 0 AS sent;
SELECT id AS c2, receipt AS cr2, payload AS cp FROM queue.read('cnt') \gset
SELECT :'cp' AS oldest_visible_was_read;
SELECT queue.nack('cnt', :c2, :cr2);
SELECT queue.ack('cnt', :c2, :cr2);
SELECT queue.set_visibility('cnt', :c2, :cr2, '0');
SELECT messages, visible, sent_total, acked_total FROM queue.queues WHERE queue_name = 'cnt';
-- A zero visibility timeout makes a message visible at once, in the view too.
SELECT id AS c3, receipt AS cr3 FROM queue.read('cnt') \gset
SELECT messages, visible, in_flight, delayed FROM queue.queues WHERE queue_name = 'cnt';
SELECT queue.set_visibility('cnt', :c3, :cr3, '0');
SELECT messages, visible, in_flight, delayed FROM queue.queues WHERE queue_name = 'cnt';
SELECT count(*) FROM queue.read('cnt', 10, visibility_timeout => '0');
SELECT messages, visible, in_flight, delayed FROM queue.queues WHERE queue_name = 'cnt';
-- purge empties the queue without counting acks.
SELECT queue.purge('cnt');
SELECT messages, visible, delayed, sent_total, acked_total FROM queue.queues WHERE queue_name = 'cnt';

--
-- Leases taken and used in one transaction.  A read locks its messages and
-- writes their lease when the transaction commits, for those not acked by
-- then; nothing of this shows from outside.
--
SELECT queue.create('tx') AS tx_id \gset
SELECT count(*) FROM queue.send_batch('tx', ARRAY['1', '2', '3', '4']::jsonb[]);
BEGIN;
CREATE TEMP TABLE tx1 AS SELECT * FROM queue.read('tx', 2);
-- A second read in the same transaction gets other messages.
CREATE TEMP TABLE tx2 AS SELECT * FROM queue.read('tx', 10);
SELECT (SELECT array_agg(payload ORDER BY id) FROM tx1) AS first_read,
       (SELECT array_agg(payload ORDER BY id) FROM tx2) AS second_read;
-- The first read's messages: one acked with its receipt, one with a wrong one.
SELECT queue.ack('tx', id, receipt) AS acked FROM tx1 WHERE payload = '1';
SELECT queue.ack('tx', id, receipt + 1) AS wrong_receipt FROM tx1 WHERE payload = '2';
SELECT queue.ack('tx', id, receipt) AS acked_twice FROM tx1 WHERE payload = '1';
-- The batch form, with one good pair and one bad.
SELECT count(*) AS acked FROM queue.ack('tx',
    ARRAY(SELECT id FROM tx2 ORDER BY id),
    ARRAY(SELECT CASE WHEN payload = '3' THEN receipt ELSE receipt + 1 END FROM tx2 ORDER BY id));
-- A nack writes the lease first, so the delivery counts.
SELECT queue.nack('tx', id, receipt, error => 'later') AS nacked FROM tx2 WHERE payload = '4';
COMMIT;
-- Left: 2, leased with the first read's receipt, and 4, visible, nacked.
SELECT m.payload, m.attempts, m.receipt = t.receipt AS first_read_lease, m.last_error
  FROM queue_internal.q:tx_id m LEFT JOIN tx1 t USING (id) ORDER BY m.id;
SELECT messages, visible, in_flight, acked_total FROM queue.queues WHERE queue_name = 'tx';
DROP TABLE tx1, tx2;
SELECT queue.purge('tx');
-- Savepoints: a read in a rolled-back savepoint leases nothing; an ack in a
-- rolled-back savepoint is undone, and the lease stands.
SELECT count(*) FROM queue.send_batch('tx', ARRAY['5', '6']::jsonb[]);
BEGIN;
SAVEPOINT s1;
SELECT count(*) AS read_then_undone FROM queue.read('tx', 1);
ROLLBACK TO SAVEPOINT s1;
CREATE TEMP TABLE tx3 AS SELECT * FROM queue.read('tx', 2);
SAVEPOINT s2;
SELECT bool_and(queue.ack('tx', id, receipt)) AS acked FROM tx3;
ROLLBACK TO SAVEPOINT s2;
COMMIT;
SELECT m.payload, m.attempts, m.receipt = t.receipt AS leased, m.visible_at > now() AS hidden
  FROM queue_internal.q:tx_id m JOIN tx3 t USING (id) ORDER BY m.id;
SELECT count(*) AS acked_now FROM queue.ack('tx', ARRAY(SELECT id FROM tx3), ARRAY(SELECT receipt FROM tx3));
DROP TABLE tx3;
-- A lease written early in a savepoint that is rolled back is written again
-- at commit, and acks still find it.
SELECT count(*) FROM queue.send_batch('tx', ARRAY['7', '8']::jsonb[]);
BEGIN;
CREATE TEMP TABLE tx4 AS SELECT * FROM queue.read('tx', 2);
SAVEPOINT s3;
SELECT bool_and(queue.set_visibility('tx', id, receipt, '1 hour')) AS extended FROM tx4;
ROLLBACK TO SAVEPOINT s3;
SELECT queue.ack('tx', id, receipt) AS acked FROM tx4 WHERE payload = '7';
COMMIT;
SELECT m.payload, m.attempts, m.receipt = t.receipt AS leased
  FROM queue_internal.q:tx_id m JOIN tx4 t USING (id) ORDER BY m.id;
SELECT queue.ack('tx', id, receipt) AS acked FROM tx4 WHERE payload = '8';
DROP TABLE tx4;
-- Reads from two queues, a nack on one: the other's lease is written too.
SELECT queue.create('tx_b') AS tx_b_id \gset
SELECT queue.send('tx', '9') > 0 AS sent, queue.send('tx_b', '10') > 0 AS sent;
BEGIN;
CREATE TEMP TABLE tx5 AS SELECT 'tx' AS q, * FROM queue.read('tx');
INSERT INTO tx5 SELECT 'tx_b', * FROM queue.read('tx_b');
SELECT queue.nack('tx', id, receipt) AS nacked FROM tx5 WHERE q = 'tx';
COMMIT;
SELECT m.payload, m.attempts, m.receipt = t.receipt AS leased
  FROM queue_internal.q:tx_b_id m JOIN tx5 t USING (id);
SELECT queue.ack('tx_b', id, receipt) AS acked FROM tx5 WHERE q = 'tx_b';
DROP TABLE tx5;
-- A queue dropped after a read in the same transaction: the commit goes through.
BEGIN;
SELECT count(*) AS read FROM queue.read('tx_b');
SELECT queue.send('tx_b', '11') > 0 AS sent;
SELECT count(*) AS read FROM queue.read('tx_b');
SELECT queue.drop('tx_b');
COMMIT;
SELECT count(*) AS tx_b_left FROM queue.queues WHERE queue_name = 'tx_b';
-- An ack of a message this transaction read and then purged finds nothing.
SELECT queue.send('tx', '12') > 0 AS sent;
BEGIN;
CREATE TEMP TABLE tx6 AS SELECT * FROM queue.read('tx', 10);
SELECT queue.purge('tx') AS purged;
SELECT bool_or(queue.ack('tx', id, receipt)) AS acked FROM tx6;
COMMIT;
DROP TABLE tx6;

-- Large payloads are stored out of line and come back whole: one built in
-- the call, and one read from another table, where it is stored out of
-- line already (the send copies it rather than pointing at that table).
SELECT queue.create('big') > 0 AS created;
CREATE TABLE big_src AS
  SELECT jsonb_build_object('blob', string_agg(md5(i::text), '')) AS p
    FROM generate_series(1, 4000) AS i;
SELECT pg_column_size(p) > 100000 AS stored_large FROM big_src;
SELECT queue.send('big', jsonb_build_object('blob', repeat('x', 300000))) > 0 AS sent;
SELECT queue.send('big', (SELECT p FROM big_src)) > 0 AS sent;
-- send_batch writes its rows in one multi-insert: the same two large
-- payloads, then 300 small ones, over several pages.
SELECT count(*) AS sent
  FROM queue.send_batch('big', ARRAY[(SELECT p FROM big_src), jsonb_build_object('blob', repeat('y', 300000))]
                               || (SELECT array_agg(jsonb_build_object('n', i) ORDER BY i)
                                     FROM generate_series(1, 300) AS i));
DROP TABLE big_src;
SELECT length(payload->>'blob') AS blob_length, md5(payload->>'blob') AS blob_md5
  FROM queue.read('big', 2) ORDER BY id;
SELECT length(payload->>'blob') AS blob_length, md5(payload->>'blob') AS blob_md5
  FROM queue.read('big', 2) ORDER BY id;
SELECT count(*) AS small, bool_and((payload->>'n')::int = n) AS in_send_order
  FROM (SELECT payload, row_number() OVER (ORDER BY id) AS n FROM queue.read('big', 1000)) AS s;
SELECT md5(string_agg(md5(i::text), '')) AS expected_md5 FROM generate_series(1, 4000) AS i;
SELECT queue.drop('big');

SELECT queue.drop(q) FROM unnest(ARRAY['m', 'cnt', 'work', 'elsewhere', 'work_dlq', 'tx']) AS q;
SELECT count(*) AS queues_left FROM queue.queues;
