--
-- Consumers: queue.subscribe, queue.alter_consumer, queue.pause,
-- queue.resume and queue.unsubscribe, every error a user can cause through
-- them (the SQLSTATE is printed by \echo after each failing statement), the
-- views queue.consumers and queue.workers, and one drain by a worker.
--
-- The library is preloaded, so drain workers really run here.  To keep the
-- output free of timing, every consumer below is paused in the transaction
-- that subscribes it, except those of queue cr, which the test waits for
-- with regress_wait_for() and shows only in states that last.
--
CREATE ROLE regress_cons_owner LOGIN;
CREATE ROLE regress_cons_member LOGIN IN ROLE regress_cons_owner;
CREATE ROLE regress_cons_admin LOGIN;
CREATE ROLE regress_cons_other LOGIN;
CREATE ROLE regress_cons_nologin NOLOGIN;

-- Polls a condition (an SQL expression) until it holds; false after the
-- timeout.  The views read shared memory, and each EXECUTE takes a new
-- snapshot, so a worker's progress shows while this runs.
CREATE FUNCTION regress_wait_for(condition text, timeout interval DEFAULT '60 seconds')
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    ok boolean;
    deadline timestamptz := clock_timestamp() + timeout;
BEGIN
    LOOP
        EXECUTE 'SELECT ' || condition INTO ok;
        IF ok THEN
            RETURN true;
        END IF;
        IF clock_timestamp() > deadline THEN
            RETURN false;
        END IF;
        PERFORM pg_sleep(0.02);
    END LOOP;
END $$;

--
-- Queues: cq (max_attempts 5, dead-letter queue cq_dlq) and cq_plain (no
-- dead-letter queue), owned by the superuser running the test.
-- regress_cons_owner and regress_cons_nologin may read cq; regress_cons_admin
-- administers it; regress_cons_other holds nothing.
--
SELECT queue.create('cq_dlq') > 0 AS created;
SELECT queue.create('cq', max_attempts => 5, dead_letter_queue => 'cq_dlq') > 0 AS created;
SELECT queue.create('cq_plain') > 0 AS created;
SELECT queue.grant('cq', 'read', 'regress_cons_owner');
SELECT queue.grant('cq_plain', 'read', 'regress_cons_owner');
SELECT queue.grant('cq', 'read', 'regress_cons_nologin');
SELECT queue.grant('cq', 'administer', 'regress_cons_admin');

--
-- Handlers.  A handler takes queue.message[] and returns bigint[] (the ids
-- that failed) or void.  Functions are executable by PUBLIC unless revoked.
--
CREATE TABLE regress_ledger (id bigint, payload jsonb, who text);
GRANT INSERT ON regress_ledger TO regress_cons_owner;
CREATE FUNCTION regress_handler(messages queue.message[]) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    m queue.message;
    failed bigint[] := '{}';
BEGIN
    FOREACH m IN ARRAY messages LOOP
        IF m.payload ? 'poison' THEN
            RAISE EXCEPTION 'poison';
        END IF;
        IF m.payload ? 'fail' THEN
            failed := failed || m.id;
            CONTINUE;
        END IF;
        IF m.payload ? 'sleep' THEN
            PERFORM pg_sleep((m.payload->>'sleep')::float8);
        END IF;
        INSERT INTO regress_ledger VALUES (m.id, m.payload, current_user);
    END LOOP;
    RETURN failed;
END $$;
CREATE FUNCTION regress_void_handler(messages queue.message[]) RETURNS void
LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION regress_secret_handler(messages queue.message[]) RETURNS void
LANGUAGE sql AS $$ SELECT $$;
REVOKE EXECUTE ON FUNCTION regress_secret_handler(queue.message[]) FROM PUBLIC;
-- Wrong signatures.
CREATE FUNCTION regress_bad_jsonb(messages jsonb) RETURNS bigint[]
LANGUAGE sql AS $$ SELECT NULL::bigint[] $$;
CREATE FUNCTION regress_bad_element(messages queue.message) RETURNS bigint[]
LANGUAGE sql AS $$ SELECT NULL::bigint[] $$;
CREATE FUNCTION regress_bad_int4s(messages queue.message[]) RETURNS int[]
LANGUAGE sql AS $$ SELECT NULL::int[] $$;
CREATE FUNCTION regress_bad_bigint(messages queue.message[]) RETURNS bigint
LANGUAGE sql AS $$ SELECT NULL::bigint $$;
CREATE FUNCTION regress_bad_setof(messages queue.message[]) RETURNS SETOF bigint
LANGUAGE sql AS $$ SELECT NULL::bigint $$;
CREATE FUNCTION regress_bad_two(messages queue.message[], extra int DEFAULT 0) RETURNS bigint[]
LANGUAGE sql AS $$ SELECT NULL::bigint[] $$;
CREATE PROCEDURE regress_bad_proc(messages queue.message[])
LANGUAGE sql AS $$ SELECT $$;

-- What exists before the rejected calls: compared at the end.
CREATE TEMP TABLE before AS
SELECT (SELECT count(*) FROM queue_internal.consumer) AS consumers;

--
-- The install script: new objects are documented, the views have these
-- columns, and PUBLIC may read them.
--
SELECT p.oid::regprocedure AS consumer_function, p.prorettype::regtype AS returns,
       obj_description(p.oid, 'pg_proc') IS NOT NULL AS documented
  FROM pg_proc p
 WHERE p.pronamespace = 'queue'::regnamespace
   AND p.proname IN ('subscribe', 'alter_consumer', 'pause', 'resume', 'unsubscribe',
                     'consumer_stats', 'worker_stats')
 ORDER BY p.proname;
-- The event trigger that keeps handlers from being dropped, and its function.
SELECT evtname, evtevent, evtfoid::regprocedure AS function,
       obj_description(oid, 'pg_event_trigger') IS NOT NULL AS documented,
       obj_description(evtfoid, 'pg_proc') IS NOT NULL AS function_documented
  FROM pg_event_trigger WHERE evtname LIKE 'queue%';
SELECT c.oid::regclass AS relation, obj_description(c.oid, 'pg_class') IS NOT NULL AS documented
  FROM pg_class c
 WHERE c.oid IN ('queue.consumers'::regclass, 'queue.workers'::regclass,
                 'queue_internal.consumer'::regclass)
 ORDER BY c.oid::regclass::text;
SELECT attnum, attname, format_type(atttypid, atttypmod) AS type
  FROM pg_attribute WHERE attrelid = 'queue.consumers'::regclass AND attnum > 0
 ORDER BY attnum;
SELECT attnum, attname, format_type(atttypid, atttypmod) AS type
  FROM pg_attribute WHERE attrelid = 'queue.workers'::regclass AND attnum > 0
 ORDER BY attnum;
SELECT has_table_privilege('public', 'queue.consumers', 'SELECT') AS consumers_select,
       has_table_privilege('public', 'queue.workers', 'SELECT') AS workers_select,
       has_table_privilege('public', 'queue_internal.consumer', 'SELECT') AS catalog_select;

SET ROLE regress_cons_owner;

--
-- Names: the allow-list of queue names, for consumer names too (42602);
-- NULL is 22023.
--
SELECT queue.subscribe('Bad', 'cq', 'regress_void_handler(queue.message[])');
\echo :SQLSTATE
SELECT queue.subscribe('a-b', 'cq', 'regress_void_handler(queue.message[])');
\echo :SQLSTATE
SELECT queue.subscribe('1abc', 'cq', 'regress_void_handler(queue.message[])');
\echo :SQLSTATE
SELECT queue.subscribe('c"; drop table x', 'cq', 'regress_void_handler(queue.message[])');
\echo :SQLSTATE
SELECT queue.subscribe('', 'cq', 'regress_void_handler(queue.message[])');
\echo :SQLSTATE
SELECT queue.subscribe(repeat('c', 49), 'cq', 'regress_void_handler(queue.message[])');
\echo :SQLSTATE
SELECT queue.subscribe(NULL, 'cq', 'regress_void_handler(queue.message[])');
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'Bad', 'regress_void_handler(queue.message[])');
\echo :SQLSTATE
SELECT queue.subscribe('c1', repeat('q', 49), 'regress_void_handler(queue.message[])');
\echo :SQLSTATE
SELECT queue.subscribe('c1', NULL, 'regress_void_handler(queue.message[])');
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', NULL);
\echo :SQLSTATE
SELECT queue.alter_consumer('Bad');
\echo :SQLSTATE
SELECT queue.alter_consumer(NULL);
\echo :SQLSTATE
SELECT queue.pause('Bad');
\echo :SQLSTATE
SELECT queue.pause(NULL);
\echo :SQLSTATE
SELECT queue.resume('Bad');
\echo :SQLSTATE
SELECT queue.resume(NULL);
\echo :SQLSTATE
SELECT queue.unsubscribe('Bad');
\echo :SQLSTATE
SELECT queue.unsubscribe(repeat('c', 49), if_exists => true);
\echo :SQLSTATE
SELECT queue.unsubscribe(NULL);
\echo :SQLSTATE

--
-- Unknown queue, consumer or function: 42704 (42883 for a function, from
-- PostgreSQL's regprocedure input).
--
SELECT queue.subscribe('c1', 'nosuch', 'regress_void_handler(queue.message[])');
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_nosuch(queue.message[])');
\echo :SQLSTATE
SELECT queue.alter_consumer('nosuch', batch_size => 5);
\echo :SQLSTATE
SELECT queue.pause('nosuch');
\echo :SQLSTATE
SELECT queue.resume('nosuch');
\echo :SQLSTATE
SELECT queue.unsubscribe('nosuch');
\echo :SQLSTATE
-- With if_exists, a notice and false.
SELECT queue.unsubscribe('nosuch', if_exists => true);

--
-- subscribe: settings out of range are 22023.
--
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', batch_size => 0);
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', batch_size => 10001);
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', batch_window => '-1 second');
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', batch_window => '5 minutes 0.000001 seconds');
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', max_concurrency => 0);
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', max_concurrency => 1001);
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', rate_limit => 0);
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', rate_limit => -1);
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', rate_limit => 1000000.5);
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', rate_limit => 'NaN');
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', rate_limit => 'Infinity');
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', max_attempts => 0);
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', max_attempts => 1001);
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', retry_backoff => '-1 second');
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', retry_backoff => '7 days 0.000001 seconds',
                       max_retry_backoff => '7 days');
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', max_retry_backoff => '-1 second');
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', max_retry_backoff => '7 days 0.000001 seconds');
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', handler_timeout => '0');
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', handler_timeout => '12 hours 0.000001 seconds');
\echo :SQLSTATE
-- The cap on retries must not be below the first delay.
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', retry_backoff => '10 seconds',
                       max_retry_backoff => '5 seconds');
\echo :SQLSTATE
-- Settings with a default must not be NULL (NULL means "none" only for
-- rate_limit and max_attempts, and "the larger of 5 minutes and
-- retry_backoff" for max_retry_backoff).
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', batch_size => NULL);
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', batch_window => NULL);
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', max_concurrency => NULL);
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', retry_backoff => NULL);
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])', handler_timeout => NULL);
\echo :SQLSTATE
-- max_attempts needs a dead-letter queue on the queue.
SELECT queue.subscribe('c1', 'cq_plain', 'regress_void_handler(queue.message[])', max_attempts => 3);
\echo :SQLSTATE

--
-- subscribe: a handler with the wrong signature is 42P13; one the owner may
-- not execute is 42501.
--
SELECT queue.subscribe('c1', 'cq', 'regress_bad_jsonb(jsonb)');
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_bad_element(queue.message)');
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_bad_int4s(queue.message[])');
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_bad_bigint(queue.message[])');
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_bad_setof(queue.message[])');
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_bad_two(queue.message[], int)');
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_bad_proc(queue.message[])');
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'pg_catalog.now()');
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq', 'regress_secret_handler(queue.message[])');
\echo :SQLSTATE
RESET ROLE;

--
-- subscribe: who may own a consumer.
--
-- A role without the read privilege on the queue: 42501.
SET ROLE regress_cons_other;
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])');
\echo :SQLSTATE
RESET ROLE;
-- A role that cannot log in (drain workers connect as the owner): 42501.
SET ROLE regress_cons_nologin;
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])');
\echo :SQLSTATE
RESET ROLE;
-- A superuser: 42501 while queue.allow_superuser_consumers is off (its
-- default), a setting no session may change for itself.
SHOW queue.allow_superuser_consumers;
SELECT queue.subscribe('c1', 'cq', 'regress_void_handler(queue.message[])');
\echo :SQLSTATE
SET queue.allow_superuser_consumers = on;
\echo :SQLSTATE

-- Nothing was created by the rejected calls.
SELECT count(*) = (SELECT consumers FROM before) AS no_consumer_created FROM queue_internal.consumer;

--
-- subscribe: the happy path.  A consumer returns its id; the view shows its
-- settings.  Paused in the same transaction, it never starts a worker.
--
SET ROLE regress_cons_owner;
BEGIN;
SELECT queue.subscribe('c1', 'cq', 'regress_handler(queue.message[])') AS c1_id \gset
SELECT queue.pause('c1');
COMMIT;
SELECT :c1_id > 0 AS positive_id;
-- The defaults.  max_attempts shows the queue's (5) while the consumer has none.
SELECT consumer_name, queue_name, handler, owner, state, batch_size, batch_window,
       max_concurrency, rate_limit, max_attempts, retry_backoff, max_retry_backoff,
       handler_timeout, active_workers, batches, messages, failures, last_error,
       last_error_at, backlog, paused
  FROM queue.consumers;
-- Every setting given.
BEGIN;
SELECT queue.subscribe('c2', 'cq', 'regress_void_handler(queue.message[])',
                       batch_size => 100, batch_window => '250 milliseconds',
                       max_concurrency => 4, rate_limit => 12.5, max_attempts => 3,
                       retry_backoff => '2 seconds', handler_timeout => '1 minute',
                       max_retry_backoff => '1 hour') > :c1_id AS c2_after_c1;
SELECT queue.pause('c2');
COMMIT;
-- The bounds are accepted.
BEGIN;
SELECT queue.subscribe(repeat('c', 48), 'cq', 'regress_void_handler(queue.message[])',
                       batch_size => 10000, batch_window => '5 minutes',
                       max_concurrency => 1000, rate_limit => 1000000, max_attempts => 1000,
                       retry_backoff => '7 days', handler_timeout => '12 hours',
                       max_retry_backoff => '7 days') > 0 AS subscribed;
SELECT queue.pause(repeat('c', 48));
COMMIT;
BEGIN;
SELECT queue.subscribe('c_low', 'cq', 'regress_void_handler(queue.message[])',
                       batch_size => 1, batch_window => '0', max_concurrency => 1,
                       rate_limit => 0.001, max_attempts => 1, retry_backoff => '10 milliseconds',
                       handler_timeout => '1 millisecond', max_retry_backoff => '10 milliseconds') > 0 AS subscribed;
SELECT queue.pause('c_low');
COMMIT;
SELECT consumer_name, batch_size, batch_window, max_concurrency, rate_limit, max_attempts,
       retry_backoff, max_retry_backoff, handler_timeout, state, paused
  FROM queue.consumers ORDER BY consumer_name;
-- NULL where it means "none", and a first delay above the default cap,
-- which the cap then follows.
BEGIN;
SELECT queue.subscribe('c_cap', 'cq', 'regress_void_handler(queue.message[])',
                       rate_limit => NULL, max_attempts => NULL, retry_backoff => '10 minutes',
                       max_retry_backoff => NULL) > 0 AS subscribed;
SELECT queue.pause('c_cap');
COMMIT;
SELECT consumer_name, rate_limit, max_attempts, retry_backoff, max_retry_backoff
  FROM queue.consumers WHERE consumer_name = 'c_cap';
SELECT queue.unsubscribe('c_cap');
-- A rolled back subscribe leaves nothing.
BEGIN;
SELECT queue.subscribe('c_gone', 'cq', 'regress_void_handler(queue.message[])') > 0 AS subscribed;
ROLLBACK;
SELECT count(*) AS c_gone FROM queue.consumers WHERE consumer_name = 'c_gone';
-- A consumer name is unique in the database, whatever its queue: 42710.
SELECT queue.subscribe('c1', 'cq', 'regress_handler(queue.message[])');
\echo :SQLSTATE
SELECT queue.subscribe('c1', 'cq_plain', 'regress_void_handler(queue.message[])');
\echo :SQLSTATE
RESET ROLE;

--
-- alter_consumer: settings out of range are 22023, as in subscribe.
--
SELECT queue.alter_consumer('c1', batch_size => 0);
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', batch_size => 10001);
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', batch_window => '-1 second');
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', batch_window => '5 minutes 0.000001 seconds');
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', max_concurrency => 0);
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', max_concurrency => 1001);
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', rate_limit => 0);
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', rate_limit => 1000001);
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', rate_limit => 'NaN');
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', max_attempts => 0);
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', max_attempts => 1001);
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', retry_backoff => '-1 second');
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', retry_backoff => '7 days 0.000001 seconds');
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', max_retry_backoff => '-1 second');
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', max_retry_backoff => '7 days 0.000001 seconds');
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', handler_timeout => '0');
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', handler_timeout => '12 hours 0.000001 seconds');
\echo :SQLSTATE
-- The cap against the first delay: the new value against the one kept.
SELECT queue.alter_consumer('c1', retry_backoff => '6 minutes');
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', max_retry_backoff => '0.5 seconds');
\echo :SQLSTATE
-- max_attempts on a consumer of a queue without a dead-letter queue.
SET ROLE regress_cons_owner;
BEGIN;
SELECT queue.subscribe('c_plain', 'cq_plain', 'regress_void_handler(queue.message[])') > 0 AS subscribed;
SELECT queue.pause('c_plain');
COMMIT;
RESET ROLE;
SELECT queue.alter_consumer('c_plain', max_attempts => 3);
\echo :SQLSTATE
-- reset names only settings that have a default.
SELECT queue.alter_consumer('c1', reset => '{nosuch}');
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', reset => '{BATCH_SIZE}');
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', reset => '{handler}');
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', reset => '{paused}');
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', reset => ARRAY['batch_size', NULL]);
\echo :SQLSTATE
-- A new handler: the same checks as subscribe, made for the owner (who
-- will run it), not for the caller.
SELECT queue.alter_consumer('c1', handler => 'regress_bad_jsonb(jsonb)');
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', handler => 'regress_bad_element(queue.message)');
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', handler => 'regress_bad_int4s(queue.message[])');
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', handler => 'regress_bad_bigint(queue.message[])');
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', handler => 'regress_bad_setof(queue.message[])');
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', handler => 'regress_bad_two(queue.message[], int)');
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', handler => 'regress_bad_proc(queue.message[])');
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', handler => 'regress_secret_handler(queue.message[])');
\echo :SQLSTATE
-- None of that changed c1.
SELECT consumer_name, handler, batch_size, batch_window, max_concurrency, rate_limit,
       max_attempts, retry_backoff, max_retry_backoff, handler_timeout
  FROM queue.consumers WHERE consumer_name = 'c1';

--
-- alter_consumer: the happy path.  NULL leaves a setting as it is.
--
SELECT queue.alter_consumer('c1', batch_size => 50, batch_window => '1 second',
                            max_concurrency => 3, rate_limit => 100, max_attempts => 2,
                            retry_backoff => '10 seconds', handler_timeout => '5 seconds',
                            max_retry_backoff => '10 minutes');
SELECT queue.alter_consumer('c1');
SELECT queue.alter_consumer('c1', handler => 'regress_void_handler(queue.message[])');
SELECT consumer_name, handler, batch_size, batch_window, max_concurrency, rate_limit,
       max_attempts, retry_backoff, max_retry_backoff, handler_timeout, paused
  FROM queue.consumers WHERE consumer_name = 'c1';
-- reset returns settings to their defaults; a setting given with it wins.
SELECT queue.alter_consumer('c1', reset => '{batch_window, rate_limit, max_attempts, handler_timeout}');
SELECT consumer_name, batch_size, batch_window, max_concurrency, rate_limit, max_attempts,
       retry_backoff, max_retry_backoff, handler_timeout
  FROM queue.consumers WHERE consumer_name = 'c1';
SELECT queue.alter_consumer('c1', batch_size => 7,
                            reset => '{batch_size, max_concurrency, retry_backoff, max_retry_backoff}');
SELECT consumer_name, batch_size, batch_window, max_concurrency, rate_limit, max_attempts,
       retry_backoff, max_retry_backoff, handler_timeout
  FROM queue.consumers WHERE consumer_name = 'c1';
SELECT queue.alter_consumer('c1', reset => '{}');
SELECT queue.alter_consumer('c1', reset => '{batch_size}', handler => 'regress_handler(queue.message[])');
SELECT consumer_name, handler, batch_size, batch_window, max_concurrency, rate_limit,
       max_attempts, retry_backoff, max_retry_backoff, handler_timeout, paused
  FROM queue.consumers WHERE consumer_name = 'c1';
-- Altering does not resume a paused consumer.
SELECT state, paused FROM queue.consumers WHERE consumer_name = 'c1';

--
-- Who may change a consumer: its owner (and members of the owner role),
-- the administrators of its queue and superusers; only the owner (or a
-- superuser) may give it another handler.  Others get 42501.
--
SET ROLE regress_cons_other;
SELECT queue.alter_consumer('c1', batch_size => 5);
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', handler => 'regress_void_handler(queue.message[])');
\echo :SQLSTATE
SELECT queue.pause('c1');
\echo :SQLSTATE
SELECT queue.resume('c1');
\echo :SQLSTATE
SELECT queue.unsubscribe('c1');
\echo :SQLSTATE
SELECT queue.unsubscribe('c1', if_exists => true);
\echo :SQLSTATE
-- Nor does it see the consumers of a queue it may not read.
SELECT count(*) AS consumers_seen FROM queue.consumers;
RESET ROLE;
SET ROLE regress_cons_admin;
SELECT queue.alter_consumer('c1', handler => 'regress_void_handler(queue.message[])');
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', batch_size => 5);
SELECT queue.pause('c1');
SELECT consumer_name, owner, batch_size FROM queue.consumers WHERE consumer_name = 'c1';
RESET ROLE;
SET ROLE regress_cons_member;
SELECT queue.alter_consumer('c1', batch_size => 6, handler => 'regress_void_handler(queue.message[])');
SELECT consumer_name, handler, owner, batch_size FROM queue.consumers WHERE consumer_name = 'c1';
RESET ROLE;
-- A superuser may change the handler, checked against the owner's rights.
SELECT queue.alter_consumer('c1', handler => 'regress_secret_handler(queue.message[])');
\echo :SQLSTATE
SELECT queue.alter_consumer('c1', handler => 'regress_handler(queue.message[])', reset => '{batch_size}');
SELECT consumer_name, handler, owner, batch_size FROM queue.consumers WHERE consumer_name = 'c1';

--
-- pause and resume toggle paused; repeating either changes nothing.
-- resume is done inside a transaction that pauses again, so no worker starts.
--
SET ROLE regress_cons_owner;
SELECT queue.pause('c1');
SELECT consumer_name, state, paused FROM queue.consumers WHERE consumer_name = 'c1';
BEGIN;
SELECT queue.resume('c1');
SELECT paused FROM queue.consumers WHERE consumer_name = 'c1';
SELECT queue.resume('c1');
SELECT paused FROM queue.consumers WHERE consumer_name = 'c1';
SELECT queue.pause('c1');
COMMIT;
SELECT consumer_name, state, paused FROM queue.consumers WHERE consumer_name = 'c1';
-- A rolled back change is no change.
BEGIN;
SELECT queue.alter_consumer('c1', batch_size => 99);
ROLLBACK;
SELECT batch_size FROM queue.consumers WHERE consumer_name = 'c1';
RESET ROLE;

--
-- What a consumer depends on cannot be dropped (2BP01): its handler, its
-- owner role, its queue.
--
DROP FUNCTION regress_handler(queue.message[]);
\echo :SQLSTATE
DROP FUNCTION regress_bad_jsonb(jsonb), regress_handler(queue.message[]);
\echo :SQLSTATE
SELECT count(*) AS still_there FROM pg_proc WHERE proname IN ('regress_handler', 'regress_bad_jsonb');
-- (terse: the detail names the database, which depends on how the suite runs)
\set VERBOSITY terse
DROP ROLE regress_cons_owner;
\echo :SQLSTATE
DROP ROLE regress_cons_other, regress_cons_owner;
\echo :SQLSTATE
\set VERBOSITY default
SELECT count(*) AS roles_left FROM pg_roles WHERE rolname IN ('regress_cons_owner', 'regress_cons_other');
SELECT queue.drop('cq');
\echo :SQLSTATE
SELECT queue.drop('cq', if_exists => true);
\echo :SQLSTATE
SELECT queue.drop('cq_plain');
\echo :SQLSTATE

--
-- A superuser may own a consumer once queue.allow_superuser_consumers is
-- on (set in the server's configuration; restored right after).
--
ALTER SYSTEM SET queue.allow_superuser_consumers = on;
SELECT pg_reload_conf();
-- Each statement below is a new command, between which the session reads
-- the reloaded configuration; they stop sleeping once it has.
\set ECHO none
\o /dev/null
SELECT 'SELECT pg_sleep(0.05) WHERE current_setting(''queue.allow_superuser_consumers'') = ''off'''
  FROM generate_series(1, 400) \gexec
\o
\set ECHO all
SHOW queue.allow_superuser_consumers;
BEGIN;
SELECT queue.subscribe('c_super', 'cq', 'regress_void_handler(queue.message[])') > 0 AS subscribed;
SELECT queue.pause('c_super');
COMMIT;
SELECT consumer_name, owner = current_user::regrole AS owned_by_me, paused
  FROM queue.consumers WHERE consumer_name = 'c_super';
ALTER SYSTEM RESET queue.allow_superuser_consumers;
SELECT pg_reload_conf();
\set ECHO none
\o /dev/null
SELECT 'SELECT pg_sleep(0.05) WHERE current_setting(''queue.allow_superuser_consumers'') = ''on'''
  FROM generate_series(1, 400) \gexec
\o
\set ECHO all
SHOW queue.allow_superuser_consumers;
SELECT queue.subscribe('c_super2', 'cq', 'regress_void_handler(queue.message[])');
\echo :SQLSTATE
SELECT queue.unsubscribe('c_super');

--
-- unsubscribe: true when it dropped the consumer; the name is free again.
--
SET ROLE regress_cons_admin;
SELECT queue.unsubscribe('c2');
SELECT queue.unsubscribe('c2');
\echo :SQLSTATE
SELECT queue.unsubscribe('c2', if_exists => true);
RESET ROLE;
SET ROLE regress_cons_owner;
BEGIN;
SELECT queue.subscribe('c2', 'cq', 'regress_void_handler(queue.message[])') > :c1_id AS subscribed_again;
SELECT queue.pause('c2');
COMMIT;
-- A rolled back unsubscribe keeps the consumer.
BEGIN;
SELECT queue.unsubscribe('c2');
ROLLBACK;
SELECT consumer_name, queue_name FROM queue.consumers ORDER BY consumer_name;
SELECT queue.unsubscribe(c) FROM unnest(ARRAY['c2', 'c_low', 'c_plain', repeat('c', 48)]) AS c;
RESET ROLE;
SELECT queue.drop('cq_plain');

--
-- A drain.  Consumer c_run of queue cr (dead-letter queue cr_dlq) runs:
-- the launcher starts a worker, which connects as the owner and waits.
--
SELECT queue.create('cr_dlq') > 0 AS created;
SELECT queue.create('cr', dead_letter_queue => 'cr_dlq') > 0 AS created;
SELECT queue.grant('cr', 'read', 'regress_cons_owner');
SET ROLE regress_cons_owner;
SELECT queue.subscribe('c_run', 'cr', 'regress_handler(queue.message[])',
                       max_attempts => 1, retry_backoff => '10 milliseconds') > 0 AS subscribed;
SELECT regress_wait_for($$EXISTS (SELECT FROM queue.workers
                                   WHERE consumer_name = 'c_run' AND state = 'waiting')$$) AS worker_waiting;
SELECT consumer_name, queue_name, state, pid > 0 AS has_pid, started_at <= now() AS started,
       batch_started_at, batch_messages, batches, messages
  FROM queue.workers WHERE consumer_name = 'c_run';
SELECT consumer_name, state, active_workers, backlog, paused
  FROM queue.consumers WHERE consumer_name = 'c_run';
RESET ROLE;
-- The worker is a background worker of its own type, connected as the owner.
SELECT backend_type, usename, application_name
  FROM pg_stat_activity WHERE pid IN (SELECT pid FROM queue.workers WHERE consumer_name = 'c_run');
-- A role that may not read the queue sees neither the consumer nor its worker.
SET ROLE regress_cons_other;
SELECT (SELECT count(*) FROM queue.consumers) AS consumers_seen,
       (SELECT count(*) FROM queue.workers) AS workers_seen;
RESET ROLE;
-- A sent batch is handled in one transaction; the poison message is
-- isolated (the batch is bisected) and, after max_attempts (1), moved to
-- the dead-letter queue with its error; the message the handler reported
-- as failed goes the same way.  The good ones commit once, as the owner.
SELECT count(*) AS sent
  FROM queue.send_batch('cr', ARRAY['{"n": 1}', '{"poison": true}', '{"n": 2}',
                                    '{"fail": true}', '{"n": 3}']::jsonb[]);
SELECT regress_wait_for($$(SELECT messages + failures = 5 FROM queue.consumers
                            WHERE consumer_name = 'c_run')$$) AS drained;
SELECT payload, who FROM regress_ledger ORDER BY id;
SELECT payload, attempts, last_error FROM queue.read('cr_dlq', 10) ORDER BY id;
SELECT consumer_name, messages, failures, last_error, last_error_at IS NOT NULL AS error_time,
       batches >= 1 AS counted_batches, observed_rate >= 0 AS rate, backlog
  FROM queue.consumers WHERE consumer_name = 'c_run';
SELECT queue_name, messages, acked_total, dead_lettered_total
  FROM queue.queues WHERE queue_name IN ('cr', 'cr_dlq') ORDER BY queue_name;
-- A change applies to the running consumer from its next batch: a handler
-- that outlives handler_timeout is cancelled, and its message fails.
SELECT queue.alter_consumer('c_run', handler_timeout => '200 milliseconds');
SELECT queue.send('cr', '{"sleep": 30}') > 0 AS sent;
SELECT regress_wait_for($$(SELECT failures = 3 FROM queue.consumers
                            WHERE consumer_name = 'c_run')$$) AS timed_out;
SELECT payload, attempts, last_error FROM queue.read('cr_dlq', 10) ORDER BY id;
SELECT count(*) AS handled FROM regress_ledger;
-- Paused, the consumer's worker leaves, and messages wait.
SELECT queue.pause('c_run');
SELECT regress_wait_for($$NOT EXISTS (SELECT FROM queue.workers WHERE consumer_name = 'c_run')$$) AS worker_gone;
SELECT queue.send('cr', '{"n": 4}') > 0 AS sent;
SELECT pg_sleep(0.5);
SELECT state, active_workers, backlog FROM queue.consumers WHERE consumer_name = 'c_run';
SELECT count(*) AS handled FROM regress_ledger;
-- Resumed, it drains them.
SELECT queue.resume('c_run');
SELECT regress_wait_for($$(SELECT count(*) = 4 FROM regress_ledger)$$) AS drained;
SELECT payload, who FROM regress_ledger ORDER BY id;
-- The queue's dead-letter queue cannot be taken away while the consumer has
-- max_attempts (2BP01).
SELECT queue.alter('cr', reset => '{dead_letter_queue}');
\echo :SQLSTATE
SELECT dead_letter_queue FROM queue.queues WHERE queue_name = 'cr';
-- An owner that may no longer read the queue gets no more messages: the
-- worker checks before every batch, and fails.
SELECT queue.revoke('cr', 'read', 'regress_cons_owner');
SELECT queue.send('cr', '{"n": 5}') > 0 AS sent;
SELECT regress_wait_for($$(SELECT last_error LIKE '42501:%' FROM queue.consumers
                            WHERE consumer_name = 'c_run')$$) AS refused;
SELECT last_error FROM queue.consumers WHERE consumer_name = 'c_run';
SELECT count(*) AS handled FROM regress_ledger;
-- Granted again, the message is handled (after the launcher's backoff).
SELECT queue.grant('cr', 'read', 'regress_cons_owner');
SELECT regress_wait_for($$(SELECT count(*) = 5 FROM regress_ledger)$$) AS drained;
-- Unsubscribed, its worker leaves too.
SELECT queue.unsubscribe('c_run');
SELECT regress_wait_for($$NOT EXISTS (SELECT FROM queue.workers WHERE consumer_name = 'c_run')$$) AS worker_gone;
SELECT count(*) AS consumers_of_cr FROM queue.consumers WHERE queue_name = 'cr';

--
-- Clean up.  c1 goes last, so the drop of its queue is refused until then.
--
SELECT queue.unsubscribe('c1');
SELECT consumer_name FROM queue.consumers;
SELECT count(*) AS catalog_rows FROM queue_internal.consumer;
SELECT queue.drop(q) FROM unnest(ARRAY['cq', 'cq_dlq', 'cr', 'cr_dlq']) AS q;
DROP TABLE regress_ledger;
DROP FUNCTION regress_handler(queue.message[]), regress_void_handler(queue.message[]),
              regress_secret_handler(queue.message[]), regress_bad_jsonb(jsonb),
              regress_bad_element(queue.message), regress_bad_int4s(queue.message[]),
              regress_bad_bigint(queue.message[]), regress_bad_setof(queue.message[]),
              regress_bad_two(queue.message[], int), regress_wait_for(text, interval);
DROP PROCEDURE regress_bad_proc(queue.message[]);
-- DROP ROLE also asks the launcher's registry, which forgets an
-- unsubscribed consumer only once the maintenance its unsubscribe asked for
-- has run: until then the owner's drop may be refused, so retry a while.
DO $$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '60 seconds';
BEGIN
    LOOP
        BEGIN
            DROP ROLE regress_cons_owner, regress_cons_member, regress_cons_admin,
                      regress_cons_other, regress_cons_nologin;
            RETURN;
        EXCEPTION WHEN dependent_objects_still_exist THEN
            IF clock_timestamp() > deadline THEN
                RAISE;
            END IF;
            PERFORM pg_sleep(0.05);
        END;
    END LOOP;
END $$;
SELECT count(*) AS roles_left FROM pg_roles WHERE rolname LIKE 'regress_cons%';
SELECT count(*) AS queues_left FROM queue.queues;
