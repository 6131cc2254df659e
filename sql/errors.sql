--
-- Every error a user can cause, with its SQLSTATE (printed by \echo after
-- each failing statement), and proof that a rejected call leaves nothing
-- behind.  Privilege errors (42501) are in privileges.sql.
--
SELECT queue.create('ok') > 0 AS created;
SELECT queue.create('ok_dlq') > 0 AS created;

-- What exists before the rejected calls: compared at the end.
CREATE TEMP TABLE before AS
SELECT (SELECT count(*) FROM queue_internal.queue) AS catalog_rows,
       (SELECT count(*) FROM pg_class WHERE relnamespace = 'queue_internal'::regnamespace) AS relations;

--
-- Names: a lower-case letter or underscore, then lower-case letters,
-- digits and underscores, at most 48 characters.  Anything else is 42602;
-- NULL is 22023.
--
SELECT queue.create('Orders');
\echo :SQLSTATE
SELECT queue.create('ORDERS');
\echo :SQLSTATE
SELECT queue.create('orders;drop table x');
\echo :SQLSTATE
SELECT queue.create('orders"');
\echo :SQLSTATE
SELECT queue.create('orders''');
\echo :SQLSTATE
SELECT queue.create('a b');
\echo :SQLSTATE
SELECT queue.create('a-b');
\echo :SQLSTATE
SELECT queue.create('a.b');
\echo :SQLSTATE
SELECT queue.create('1abc');
\echo :SQLSTATE
SELECT queue.create('café');
\echo :SQLSTATE
SELECT queue.create(E'tab\there');
\echo :SQLSTATE
SELECT queue.create('');
\echo :SQLSTATE
SELECT queue.create(NULL);
\echo :SQLSTATE
SELECT queue.create(repeat('x', 49));
\echo :SQLSTATE
-- 49 characters differing only after the 48th from an existing name are
-- still refused, not truncated into a clash.
SELECT queue.create(repeat('y', 48)) > 0 AS created;
SELECT queue.create(repeat('y', 48) || 'z');
\echo :SQLSTATE
SELECT queue.drop(repeat('y', 48));

-- The same rule for every name argument of every function.
SELECT queue.alter('Bad');
\echo :SQLSTATE
SELECT queue.alter('ok', rename_to => 'Bad');
\echo :SQLSTATE
SELECT queue.alter('ok', rename_to => '');
\echo :SQLSTATE
SELECT queue.alter('ok', dead_letter_queue => 'Bad');
\echo :SQLSTATE
SELECT queue.create('x', dead_letter_queue => 'bad;');
\echo :SQLSTATE
SELECT queue.create('x', dead_letter_queue => '');
\echo :SQLSTATE
SELECT queue.drop('Bad');
\echo :SQLSTATE
SELECT queue.drop('Bad', if_exists => true);
\echo :SQLSTATE
SELECT queue.purge('Bad');
\echo :SQLSTATE
SELECT queue.grant('Bad', 'send', current_user::regrole);
\echo :SQLSTATE
SELECT queue.revoke('Bad', 'send', current_user::regrole);
\echo :SQLSTATE
SELECT queue.send('Bad', '1');
\echo :SQLSTATE
SELECT queue.send_batch('Bad', ARRAY['1']::jsonb[]);
\echo :SQLSTATE
SELECT queue.read('Bad');
\echo :SQLSTATE
SELECT queue.pop('Bad');
\echo :SQLSTATE
SELECT queue.ack('Bad', 1, 1);
\echo :SQLSTATE
SELECT queue.ack('Bad', ARRAY[1]::bigint[], ARRAY[1]::bigint[]);
\echo :SQLSTATE
SELECT queue.nack('Bad', 1, 1);
\echo :SQLSTATE
SELECT queue.set_visibility('Bad', 1, 1, '1 minute');
\echo :SQLSTATE
SELECT queue.archive('Bad', 1, 1);
\echo :SQLSTATE
SELECT queue.archived('Bad');
\echo :SQLSTATE
SELECT queue.redrive('Bad');
\echo :SQLSTATE
SELECT queue.redrive('ok_dlq', target => 'Bad');
\echo :SQLSTATE

-- NULL names: 22023.
SELECT queue.alter(NULL);
\echo :SQLSTATE
SELECT queue.drop(NULL);
\echo :SQLSTATE
SELECT queue.drop(NULL, if_exists => true);
\echo :SQLSTATE
SELECT queue.purge(NULL);
\echo :SQLSTATE
SELECT queue.grant(NULL, 'send', current_user::regrole);
\echo :SQLSTATE
SELECT queue.revoke(NULL, 'send', current_user::regrole);
\echo :SQLSTATE
SELECT queue.send(NULL, '1');
\echo :SQLSTATE
SELECT queue.send_batch(NULL, ARRAY['1']::jsonb[]);
\echo :SQLSTATE
SELECT queue.read(NULL);
\echo :SQLSTATE
SELECT queue.pop(NULL);
\echo :SQLSTATE
SELECT queue.ack(NULL, 1, 1);
\echo :SQLSTATE
SELECT queue.ack(NULL, ARRAY[1]::bigint[], ARRAY[1]::bigint[]);
\echo :SQLSTATE
SELECT queue.nack(NULL, 1, 1);
\echo :SQLSTATE
SELECT queue.set_visibility(NULL, 1, 1, '1 minute');
\echo :SQLSTATE
SELECT queue.archive(NULL, 1, 1);
\echo :SQLSTATE
SELECT queue.archived(NULL);
\echo :SQLSTATE
SELECT queue.redrive(NULL);
\echo :SQLSTATE

--
-- Unknown queues: 42704, in every function.
--
SELECT queue.alter('nosuch');
\echo :SQLSTATE
SELECT queue.alter('ok', dead_letter_queue => 'nosuch');
\echo :SQLSTATE
SELECT queue.create('x', dead_letter_queue => 'nosuch');
\echo :SQLSTATE
SELECT queue.drop('nosuch');
\echo :SQLSTATE
SELECT queue.purge('nosuch');
\echo :SQLSTATE
SELECT queue.grant('nosuch', 'send', current_user::regrole);
\echo :SQLSTATE
SELECT queue.revoke('nosuch', 'send', current_user::regrole);
\echo :SQLSTATE
SELECT queue.send('nosuch', '1');
\echo :SQLSTATE
SELECT queue.send_batch('nosuch', ARRAY['1']::jsonb[]);
\echo :SQLSTATE
SELECT queue.read('nosuch');
\echo :SQLSTATE
SELECT queue.pop('nosuch');
\echo :SQLSTATE
SELECT queue.ack('nosuch', 1, 1);
\echo :SQLSTATE
SELECT queue.ack('nosuch', ARRAY[1]::bigint[], ARRAY[1]::bigint[]);
\echo :SQLSTATE
SELECT queue.nack('nosuch', 1, 1);
\echo :SQLSTATE
SELECT queue.set_visibility('nosuch', 1, 1, '1 minute');
\echo :SQLSTATE
SELECT queue.archive('nosuch', 1, 1);
\echo :SQLSTATE
SELECT queue.archived('nosuch');
\echo :SQLSTATE
SELECT queue.redrive('nosuch');
\echo :SQLSTATE
SELECT queue.redrive('ok_dlq', target => 'nosuch');
\echo :SQLSTATE

--
-- Duplicates: 42710.
--
SELECT queue.create('ok');
\echo :SQLSTATE
SELECT queue.create('ok', logged => false, visibility_timeout => '1 minute');
\echo :SQLSTATE
SELECT queue.alter('ok', rename_to => 'ok_dlq');
\echo :SQLSTATE

--
-- queue.create and queue.alter: settings out of range are 22023.
--
SELECT queue.create('x', logged => NULL);
\echo :SQLSTATE
SELECT queue.create('x', visibility_timeout => NULL);
\echo :SQLSTATE
SELECT queue.create('x', visibility_timeout => '-1 second');
\echo :SQLSTATE
SELECT queue.create('x', visibility_timeout => '12 hours 0.000001 seconds');
\echo :SQLSTATE
SELECT queue.create('x', visibility_timeout => '1 mon');
\echo :SQLSTATE
SELECT queue.create('x', visibility_timeout => '1000000 years');
\echo :SQLSTATE
SELECT queue.create('x', visibility_timeout => '-1000000 years');
\echo :SQLSTATE
SELECT queue.create('x', max_attempts => 0, dead_letter_queue => 'ok_dlq');
\echo :SQLSTATE
SELECT queue.create('x', max_attempts => -1, dead_letter_queue => 'ok_dlq');
\echo :SQLSTATE
SELECT queue.create('x', max_attempts => 1001, dead_letter_queue => 'ok_dlq');
\echo :SQLSTATE
SELECT queue.create('x', max_attempts => 3);
\echo :SQLSTATE
SELECT queue.create('x', dead_letter_queue => 'x');
\echo :SQLSTATE
SELECT queue.create('x', retention => '-1 day');
\echo :SQLSTATE
SELECT queue.create('x', retention => '3651 days');
\echo :SQLSTATE
SELECT queue.create('x', retention => '122 months');
\echo :SQLSTATE

SELECT queue.alter('ok', visibility_timeout => '-1 second');
\echo :SQLSTATE
SELECT queue.alter('ok', visibility_timeout => '13 hours');
\echo :SQLSTATE
SELECT queue.alter('ok', max_attempts => 0);
\echo :SQLSTATE
SELECT queue.alter('ok', max_attempts => 1001);
\echo :SQLSTATE
SELECT queue.alter('ok', max_attempts => 3);
\echo :SQLSTATE
SELECT queue.alter('ok', dead_letter_queue => 'ok');
\echo :SQLSTATE
SELECT queue.alter('ok', retention => '-1 day');
\echo :SQLSTATE
SELECT queue.alter('ok', retention => '3651 days');
\echo :SQLSTATE
SELECT queue.alter('ok', reset => '{colour}');
\echo :SQLSTATE
SELECT queue.alter('ok', reset => '{VISIBILITY_TIMEOUT}');
\echo :SQLSTATE
SELECT queue.alter('ok', reset => '{logged}');
\echo :SQLSTATE
SELECT queue.alter('ok', reset => ARRAY['retention', NULL]);
\echo :SQLSTATE
-- Dropping the dead-letter queue from under max_attempts is refused.
SELECT queue.alter('ok', max_attempts => 3, dead_letter_queue => 'ok_dlq');
SELECT queue.alter('ok', reset => '{dead_letter_queue}');
\echo :SQLSTATE
-- A rejected alter changes nothing, not even the settings it would have
-- changed before the bad one.
SELECT queue.alter('ok', visibility_timeout => '5 minutes', retention => '-1 day');
\echo :SQLSTATE
SELECT queue.alter('ok', visibility_timeout => '5 minutes', rename_to => 'ok_dlq');
\echo :SQLSTATE
SELECT queue_name, visibility_timeout, max_attempts, dead_letter_queue, retention
  FROM queue.queues WHERE queue_name = 'ok';

--
-- queue.drop: a queue another queue uses as its dead-letter queue: 2BP01.
--
SELECT queue.drop('ok_dlq');
\echo :SQLSTATE
SELECT queue.drop('ok_dlq', if_exists => true);
\echo :SQLSTATE
SELECT queue.alter('ok', reset => '{max_attempts, dead_letter_queue}');

--
-- queue.grant and queue.revoke: unknown privilege or NULL: 22023; an
-- unknown role is refused by the regrole type (42704).
--
CREATE ROLE regress_queue_err;
SELECT queue.grant('ok', 'write', 'regress_queue_err');
\echo :SQLSTATE
SELECT queue.grant('ok', 'SEND', 'regress_queue_err');
\echo :SQLSTATE
SELECT queue.grant('ok', '', 'regress_queue_err');
\echo :SQLSTATE
SELECT queue.grant('ok', NULL, 'regress_queue_err');
\echo :SQLSTATE
SELECT queue.grant('ok', 'send', NULL);
\echo :SQLSTATE
SELECT queue.revoke('ok', 'delete', 'regress_queue_err');
\echo :SQLSTATE
SELECT queue.revoke('ok', NULL, 'regress_queue_err');
\echo :SQLSTATE
SELECT queue.revoke('ok', 'read', NULL);
\echo :SQLSTATE
SELECT queue.grant('ok', 'send', 'regress_queue_nosuch');
\echo :SQLSTATE
DROP ROLE regress_queue_err;

--
-- queue.send and queue.send_batch.
--
SELECT queue.send('ok', NULL);
\echo :SQLSTATE
SELECT queue.send('ok', '1', delay => '-1 second');
\echo :SQLSTATE
SELECT queue.send('ok', '1', delay => '7 days 1 second');
\echo :SQLSTATE
SELECT queue.send('ok', '1', headers => '[1, 2]');
\echo :SQLSTATE
SELECT queue.send('ok', '1', headers => '"text"');
\echo :SQLSTATE
SELECT queue.send('ok', '1', headers => 'null');
\echo :SQLSTATE
SELECT queue.send('ok', '1', group_key => '');
\echo :SQLSTATE
SELECT queue.send('ok', '1', group_key => repeat('k', 257));
\echo :SQLSTATE
SELECT queue.send('ok', '1', group_key => repeat('k', 256)) > 0 AS longest_group_key_ok;
SELECT queue.send('ok', '1', delay => '7 days') > 0 AS longest_delay_ok;
SELECT queue.send_batch('ok', NULL);
\echo :SQLSTATE
SELECT queue.send_batch('ok', ARRAY['1', NULL]::jsonb[]);
\echo :SQLSTATE
SELECT queue.send_batch('ok', array_fill('1'::jsonb, ARRAY[10001]));
\echo :SQLSTATE
SELECT queue.send_batch('ok', ARRAY['1']::jsonb[], delay => '-1 second');
\echo :SQLSTATE
SELECT queue.send_batch('ok', ARRAY['1']::jsonb[], delay => '8 days');
\echo :SQLSTATE
SELECT queue.send_batch('ok', ARRAY['1']::jsonb[], headers => '[]');
\echo :SQLSTATE
SELECT queue.send_batch('ok', ARRAY['1']::jsonb[], group_key => '');
\echo :SQLSTATE
SELECT count(*) AS largest_batch_ok FROM queue.send_batch('ok', array_fill('1'::jsonb, ARRAY[10000]));
SELECT queue.purge('ok');
-- In a read-only transaction every function that writes is refused with
-- 25006, naming itself, before it looks up a consumer or checks a handler.
BEGIN READ ONLY;
DO $$
DECLARE
  call text;
  state text;
  msg text;
BEGIN
  FOREACH call IN ARRAY ARRAY[
    $q$SELECT queue.send('ok', '1')$q$,
    $q$SELECT queue.send('ok', '1', dedup_key => 'k')$q$,
    $q$SELECT queue.send_batch('ok', ARRAY['1']::jsonb[])$q$,
    $q$SELECT queue.read('ok')$q$,
    $q$SELECT queue.pop('ok')$q$,
    $q$SELECT queue.ack('ok', 1, 1)$q$,
    $q$SELECT queue.ack('ok', ARRAY[1]::bigint[], ARRAY[1]::bigint[])$q$,
    $q$SELECT queue.nack('ok', 1, 1)$q$,
    $q$SELECT queue.set_visibility('ok', 1, 1, '1 minute')$q$,
    $q$SELECT queue.archive('ok', 1, 1)$q$,
    $q$SELECT queue.create('ro_new')$q$,
    $q$SELECT queue.alter('ok', max_attempts => 3)$q$,
    $q$SELECT queue.drop('ok')$q$,
    $q$SELECT queue.purge('ok')$q$,
    $q$SELECT queue.grant('ok', 'send', 'pg_monitor')$q$,
    $q$SELECT queue.revoke('ok', 'send', 'pg_monitor')$q$,
    $q$SELECT queue.redrive('ok')$q$,
    $q$SELECT queue.recycle('ok')$q$,
    $q$SELECT queue.subscribe('c_ro', 'ok', 'now()')$q$,
    $q$SELECT queue.alter_consumer('c_ro', batch_size => 5)$q$,
    $q$SELECT queue.pause('c_ro')$q$,
    $q$SELECT queue.resume('c_ro')$q$,
    $q$SELECT queue.unsubscribe('c_ro')$q$]
  LOOP
    BEGIN
      EXECUTE call;
      RAISE NOTICE '%: no error', call;
    EXCEPTION WHEN OTHERS THEN
      GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
      RAISE NOTICE '%: % %', call, state, msg;
    END;
  END LOOP;
END $$;
-- reading is fine
SELECT count(*) AS archived FROM queue.archived('ok');
ROLLBACK;
SELECT count(*) AS nothing_sent FROM queue.pop('ok', 10);

-- Payload and headers above queue.max_payload_size: 54000, before anything
-- is written, and the size is counted with the headers.
SET queue.max_payload_size = 1024;
SELECT queue.send('ok', to_jsonb(repeat('p', 2000)));
\echo :SQLSTATE
SELECT queue.send('ok', to_jsonb(repeat('p', 600)), headers => jsonb_build_object('h', repeat('h', 600)));
\echo :SQLSTATE
SELECT queue.send_batch('ok', ARRAY['1', to_jsonb(repeat('p', 2000))]);
\echo :SQLSTATE
SELECT queue.send_batch('ok', ARRAY['1', to_jsonb(repeat('p', 600))],
                        headers => jsonb_build_object('h', repeat('h', 600)));
\echo :SQLSTATE
SELECT queue.send('ok', to_jsonb(repeat('p', 600))) > 0 AS small_enough;
SELECT count(*) FROM queue.send_batch('ok', ARRAY[to_jsonb(repeat('p', 600)), '1']);
SELECT queue.purge('ok');
RESET queue.max_payload_size;
SELECT queue.send('ok', to_jsonb(repeat('p', 2000))) > 0 AS fits_the_default;
SELECT queue.purge('ok');
-- The setting itself: bounds, a reserved prefix, fixed at server start.
SET queue.max_payload_size = 1023;
\echo :SQLSTATE
SET queue.max_payload_sise = 2048;
\echo :SQLSTATE
SET queue.max_queues = 10;
\echo :SQLSTATE

--
-- queue.read and queue.pop.
--
SELECT queue.read('ok', max_messages => 0);
\echo :SQLSTATE
SELECT queue.read('ok', max_messages => -1);
\echo :SQLSTATE
SELECT queue.read('ok', max_messages => 10001);
\echo :SQLSTATE
SELECT queue.read('ok', max_messages => NULL);
\echo :SQLSTATE
SELECT queue.read('ok', visibility_timeout => '-1 second');
\echo :SQLSTATE
SELECT queue.read('ok', visibility_timeout => '12 hours 1 second');
\echo :SQLSTATE
SELECT queue.read('ok', wait => '-1 second');
\echo :SQLSTATE
SELECT queue.read('ok', wait => '1 hour 1 second');
\echo :SQLSTATE
SELECT queue.read('ok', per_group => 0);
\echo :SQLSTATE
SELECT queue.read('ok', per_group => 10001);
\echo :SQLSTATE
SELECT queue.read('ok', per_group => NULL);
\echo :SQLSTATE
SELECT queue.pop('ok', 1, per_group => 0);
\echo :SQLSTATE
SELECT count(*) AS largest_batch_ok FROM queue.read('ok', max_messages => 10000);
SELECT queue.pop('ok', 0);
\echo :SQLSTATE
SELECT queue.pop('ok', 10001);
\echo :SQLSTATE
SELECT queue.pop('ok', NULL);
\echo :SQLSTATE
-- A wait cannot see new messages from a REPEATABLE READ or SERIALIZABLE
-- snapshot: 0A000.  Without wait, reading there is fine.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) FROM queue.read('ok');
SELECT queue.read('ok', wait => '1 second');
\echo :SQLSTATE
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT queue.read('ok', wait => '1 second');
\echo :SQLSTATE
ROLLBACK;

--
-- queue.ack, nack, set_visibility and archive: NULL ids and receipts,
-- bad arrays, out-of-range delays and timeouts.
--
SELECT queue.ack('ok', NULL, 1);
\echo :SQLSTATE
SELECT queue.ack('ok', 1, NULL);
\echo :SQLSTATE
SELECT queue.ack('ok', NULL::bigint[], ARRAY[1]::bigint[]);
\echo :SQLSTATE
SELECT queue.ack('ok', ARRAY[1]::bigint[], NULL::bigint[]);
\echo :SQLSTATE
SELECT queue.ack('ok', ARRAY[1, 2]::bigint[], ARRAY[1]::bigint[]);
\echo :SQLSTATE
SELECT queue.ack('ok', ARRAY[1]::bigint[], ARRAY[1, 2]::bigint[]);
\echo :SQLSTATE
SELECT queue.ack('ok', '{}'::bigint[], ARRAY[1]::bigint[]);
\echo :SQLSTATE
SELECT queue.ack('ok', ARRAY[[1, 2], [3, 4]]::bigint[], ARRAY[1, 2, 3, 4]::bigint[]);
\echo :SQLSTATE
SELECT queue.ack('ok', ARRAY[1, 2, 3, 4]::bigint[], ARRAY[[1, 2], [3, 4]]::bigint[]);
\echo :SQLSTATE
SELECT queue.nack('ok', NULL, 1);
\echo :SQLSTATE
SELECT queue.nack('ok', 1, NULL);
\echo :SQLSTATE
SELECT queue.nack('ok', 1, 1, delay => '-1 second');
\echo :SQLSTATE
SELECT queue.nack('ok', 1, 1, delay => '8 days');
\echo :SQLSTATE
SELECT queue.set_visibility('ok', NULL, 1, '1 minute');
\echo :SQLSTATE
SELECT queue.set_visibility('ok', 1, NULL, '1 minute');
\echo :SQLSTATE
SELECT queue.set_visibility('ok', 1, 1, NULL);
\echo :SQLSTATE
SELECT queue.set_visibility('ok', 1, 1, '-1 second');
\echo :SQLSTATE
SELECT queue.set_visibility('ok', 1, 1, '13 hours');
\echo :SQLSTATE
SELECT queue.archive('ok', NULL, 1);
\echo :SQLSTATE
SELECT queue.archive('ok', 1, NULL);
\echo :SQLSTATE
-- Out-of-range arguments are refused even with a valid lease, and the
-- lease is untouched.
SELECT queue.send('ok', '"lease"') AS m1 \gset
SELECT receipt AS r1 FROM queue.read('ok') \gset
SELECT queue.nack('ok', :m1, :r1, delay => '-1 second');
\echo :SQLSTATE
SELECT queue.set_visibility('ok', :m1, :r1, '13 hours');
\echo :SQLSTATE
SELECT queue.ack('ok', :m1, :r1);

--
-- queue.redrive.
--
SELECT queue.redrive('ok_dlq', max_messages => 0);
\echo :SQLSTATE
SELECT queue.redrive('ok_dlq', max_messages => -5);
\echo :SQLSTATE
SELECT queue.redrive('ok_dlq', target => 'ok_dlq');
\echo :SQLSTATE

--
-- A transaction that used a queue cannot be prepared (0A000).
--
BEGIN;
SELECT queue.send('ok', '1') > 0 AS sent;
PREPARE TRANSACTION 'regress_queue_prepared';
\echo :SQLSTATE
SELECT count(*) AS nothing_sent FROM queue.read('ok');
-- A read alone counts too: its leases are written at commit.
SELECT queue.send('ok', '1') > 0 AS sent;
BEGIN;
SELECT count(*) AS read FROM queue.read('ok');
PREPARE TRANSACTION 'regress_queue_prepared';
\echo :SQLSTATE
SELECT count(*) AS still_there FROM queue.pop('ok');

--
-- Nothing above left anything behind: no queue, no table, no message.
--
SELECT queue_name FROM queue.queues ORDER BY queue_name;
SELECT b.catalog_rows = (SELECT count(*) FROM queue_internal.queue) AS same_catalog,
       b.relations = (SELECT count(*) FROM pg_class
                       WHERE relnamespace = 'queue_internal'::regnamespace) AS same_relations
  FROM before b;
SELECT count(*) AS messages_left FROM queue.read('ok', 100);
SELECT queue_name, logged, visibility_timeout, max_attempts, dead_letter_queue, retention,
       messages, sent_total
  FROM queue.queues ORDER BY queue_name;

SELECT queue.drop('ok');
SELECT queue.drop('ok_dlq');
