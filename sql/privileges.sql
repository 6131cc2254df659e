--
-- Privileges: per-queue send, read and administer, granted and revoked
-- through the API and enforced in every function (42501); what PUBLIC may
-- execute; the internal schema out of reach; the view filtered by
-- privilege; and the API immune to search_path hijacking.
--
CREATE ROLE regress_queue_owner;
CREATE ROLE regress_queue_sender;
CREATE ROLE regress_queue_reader;
CREATE ROLE regress_queue_admin;
CREATE ROLE regress_queue_nobody;
CREATE ROLE regress_queue_group;
CREATE ROLE regress_queue_member IN ROLE regress_queue_group;
CREATE ROLE regress_queue_attacker;

--
-- The install script: what PUBLIC may execute, and how.
--
-- Every function but queue.create is executable by PUBLIC, because each
-- checks the caller's privilege on the queue it names.
SELECT p.oid::regprocedure AS executable_by_public
  FROM pg_proc p
 WHERE p.pronamespace = 'queue'::regnamespace
   AND has_function_privilege('public', p.oid, 'EXECUTE')
 ORDER BY p.oid::regprocedure::text;
SELECT p.oid::regprocedure AS not_executable_by_public
  FROM pg_proc p
 WHERE p.pronamespace = 'queue'::regnamespace
   AND NOT has_function_privilege('public', p.oid, 'EXECUTE')
 ORDER BY p.oid::regprocedure::text;
-- The C code switches to the owner itself after the privilege check, so the
-- only SECURITY DEFINER function is the event trigger that guards handlers,
-- with its search_path pinned; every function and the view documented.
SELECT oid::regprocedure AS security_definer, proconfig
  FROM pg_proc WHERE pronamespace IN ('queue'::regnamespace, 'queue_internal'::regnamespace) AND prosecdef;
SELECT p.oid::regprocedure AS undocumented
  FROM pg_proc p
 WHERE p.pronamespace = 'queue'::regnamespace AND obj_description(p.oid, 'pg_proc') IS NULL;
SELECT obj_description('queue.queues'::regclass, 'pg_class') IS NOT NULL AS view_documented;
-- PUBLIC may use schema queue and read the view; nothing in queue_internal.
SELECT has_schema_privilege('public', 'queue', 'USAGE') AS queue_usage,
       has_schema_privilege('public', 'queue', 'CREATE') AS queue_create,
       has_schema_privilege('public', 'queue_internal', 'USAGE') AS internal_usage,
       has_table_privilege('public', 'queue.queues', 'SELECT') AS view_select;
-- The extension is not trusted: only a superuser can install it.
SELECT trusted FROM pg_available_extension_versions WHERE name = 'queue';

--
-- Setup: queues pa (with dead-letter queue pa_dlq) and pb, owned by the
-- superuser running the test.
--
SELECT queue.create('pa_dlq') > 0 AS created;
SELECT queue.create('pa', max_attempts => 5, dead_letter_queue => 'pa_dlq') > 0 AS created;
SELECT queue.create('pb') > 0 AS created;
SELECT queue.send('pa', '"pa1"') AS pa1 \gset
SELECT receipt AS pa1r FROM queue.read('pa', visibility_timeout => '0') \gset

--
-- A role with no grant: 42501 from every function, an empty view.
--
SET ROLE regress_queue_nobody;
SELECT queue.create('mine');
\echo :SQLSTATE
SELECT queue.alter('pa', visibility_timeout => '1 minute');
\echo :SQLSTATE
SELECT queue.drop('pa');
\echo :SQLSTATE
SELECT queue.drop('pa', if_exists => true);
\echo :SQLSTATE
SELECT queue.purge('pa');
\echo :SQLSTATE
SELECT queue.grant('pa', 'send', 'regress_queue_nobody');
\echo :SQLSTATE
SELECT queue.revoke('pa', 'send', 'regress_queue_nobody');
\echo :SQLSTATE
SELECT queue.send('pa', '1');
\echo :SQLSTATE
SELECT queue.send_batch('pa', ARRAY['1']::jsonb[]);
\echo :SQLSTATE
SELECT queue.read('pa');
\echo :SQLSTATE
SELECT queue.pop('pa');
\echo :SQLSTATE
SELECT queue.ack('pa', :pa1, :pa1r);
\echo :SQLSTATE
SELECT queue.ack('pa', ARRAY[:pa1]::bigint[], ARRAY[:pa1r]::bigint[]);
\echo :SQLSTATE
SELECT queue.nack('pa', :pa1, :pa1r);
\echo :SQLSTATE
SELECT queue.set_visibility('pa', :pa1, :pa1r, '1 minute');
\echo :SQLSTATE
SELECT queue.archive('pa', :pa1, :pa1r);
\echo :SQLSTATE
SELECT queue.archived('pa');
\echo :SQLSTATE
SELECT queue.redrive('pa_dlq');
\echo :SQLSTATE
SELECT count(*) AS queues_visible FROM queue.queues;
SELECT count(*) AS stats_visible FROM queue.queue_stats();
RESET ROLE;
-- Nothing happened to pa: its message is there with its lease.
SELECT queue.set_visibility('pa', :pa1, :pa1r, '0');

--
-- send: send and send_batch, nothing else.
--
SELECT queue.grant('pa', 'send', 'regress_queue_sender');
SET ROLE regress_queue_sender;
SELECT queue.send('pa', '"from sender"') > 0 AS sent;
SELECT count(*) FROM queue.send_batch('pa', ARRAY['"batch 1"', '"batch 2"']::jsonb[]);
SELECT queue.read('pa');
\echo :SQLSTATE
SELECT queue.pop('pa');
\echo :SQLSTATE
SELECT queue.ack('pa', :pa1, :pa1r);
\echo :SQLSTATE
SELECT queue.ack('pa', ARRAY[:pa1]::bigint[], ARRAY[:pa1r]::bigint[]);
\echo :SQLSTATE
SELECT queue.nack('pa', :pa1, :pa1r);
\echo :SQLSTATE
SELECT queue.set_visibility('pa', :pa1, :pa1r, '1 minute');
\echo :SQLSTATE
SELECT queue.archive('pa', :pa1, :pa1r);
\echo :SQLSTATE
SELECT queue.archived('pa');
\echo :SQLSTATE
SELECT queue.purge('pa');
\echo :SQLSTATE
SELECT queue.alter('pa', retention => '1 day');
\echo :SQLSTATE
SELECT queue.grant('pa', 'read', 'regress_queue_sender');
\echo :SQLSTATE
SELECT queue.drop('pa');
\echo :SQLSTATE
-- send on pa is not send on pb.
SELECT queue.send('pb', '1');
\echo :SQLSTATE
SELECT queue_name FROM queue.queues ORDER BY queue_name;
RESET ROLE;

--
-- read: read, pop, ack, nack, set_visibility, archive and archived;
-- not send, not administration, and only on the queue granted.
--
SELECT queue.grant('pa', 'read', 'regress_queue_reader');
SET ROLE regress_queue_reader;
CREATE TEMP TABLE got AS SELECT * FROM queue.read('pa', 2, visibility_timeout => '1 hour');
SELECT payload FROM got ORDER BY id;
SELECT queue.ack('pa', id, receipt) FROM got WHERE payload = '"pa1"';
SELECT queue.nack('pa', id, receipt, error => 'reader failed') FROM got WHERE payload = '"from sender"';
SELECT payload, attempts, last_error FROM queue.read('pa', visibility_timeout => '1 hour');
SELECT payload FROM queue.pop('pa');
TRUNCATE got;
INSERT INTO got SELECT * FROM queue.read('pa');
SELECT queue.set_visibility('pa', id, receipt, '2 hours') FROM got;
SELECT queue.archive('pa', id, receipt) FROM got;
SELECT payload FROM queue.archived('pa');
SELECT count(*) FROM queue.ack('pa', ARRAY[1]::bigint[], ARRAY[1]::bigint[]);
SELECT queue.send('pa', '1');
\echo :SQLSTATE
SELECT queue.send_batch('pa', ARRAY['1']::jsonb[]);
\echo :SQLSTATE
SELECT queue.purge('pa');
\echo :SQLSTATE
SELECT queue.alter('pa', retention => '1 day');
\echo :SQLSTATE
SELECT queue.grant('pa', 'send', 'regress_queue_reader');
\echo :SQLSTATE
SELECT queue.revoke('pa', 'read', 'regress_queue_reader');
\echo :SQLSTATE
SELECT queue.redrive('pa_dlq');
\echo :SQLSTATE
SELECT queue.drop('pa');
\echo :SQLSTATE
-- A reader of pa cannot touch pb (nor pa's dead-letter queue).
SELECT queue.read('pb');
\echo :SQLSTATE
SELECT queue.pop('pb');
\echo :SQLSTATE
SELECT queue.ack('pb', 1, 1);
\echo :SQLSTATE
SELECT queue.archived('pb');
\echo :SQLSTATE
SELECT queue.read('pa_dlq');
\echo :SQLSTATE
SELECT queue_name FROM queue.queues ORDER BY queue_name;
RESET ROLE;

--
-- Revoking takes the privilege away at once.
--
SELECT queue.revoke('pa', 'send', 'regress_queue_sender');
SELECT queue.revoke('pa', 'read', 'regress_queue_reader');
SET ROLE regress_queue_sender;
SELECT queue.send('pa', '1');
\echo :SQLSTATE
SELECT count(*) AS queues_visible FROM queue.queues;
SET ROLE regress_queue_reader;
SELECT queue.read('pa');
\echo :SQLSTATE
SELECT queue.archived('pa');
\echo :SQLSTATE
SELECT count(*) AS queues_visible FROM queue.queues;
RESET ROLE;
-- Revoking what was never granted is not an error.
SELECT queue.revoke('pa', 'administer', 'regress_queue_reader');
-- Granting twice, then revoking once, leaves nothing.
SELECT queue.grant('pa', 'send', 'regress_queue_sender');
SELECT queue.grant('pa', 'send', 'regress_queue_sender');
SELECT queue.revoke('pa', 'send', 'regress_queue_sender');
SET ROLE regress_queue_sender;
SELECT queue.send('pa', '1');
\echo :SQLSTATE
RESET ROLE;

--
-- Privileges granted to a group reach its members.
--
SELECT queue.grant('pb', 'read', 'regress_queue_group');
SELECT queue.send('pb', '"for the group"') > 0 AS sent;
SET ROLE regress_queue_member;
SELECT payload FROM queue.pop('pb');
SELECT queue.send('pb', '1');
\echo :SQLSTATE
RESET ROLE;
SELECT queue.revoke('pb', 'read', 'regress_queue_group');
SET ROLE regress_queue_member;
SELECT queue.pop('pb');
\echo :SQLSTATE
RESET ROLE;

--
-- administer: everything on that queue, including granting to others.
--
SELECT queue.grant('pa', 'administer', 'regress_queue_admin');
SET ROLE regress_queue_admin;
SELECT queue.send('pa', '"from admin"') > 0 AS sent;
SELECT payload FROM queue.pop('pa');
SELECT queue.alter('pa', visibility_timeout => '1 minute');
SELECT queue.grant('pa', 'send', 'regress_queue_sender');
SET ROLE regress_queue_sender;
SELECT queue.send('pa', '"granted by admin"') > 0 AS sent;
SET ROLE regress_queue_admin;
SELECT queue.revoke('pa', 'send', 'regress_queue_sender');
SELECT queue.purge('pa');
SELECT queue_name, visibility_timeout FROM queue.queues ORDER BY queue_name;
-- Administering pa is not administering pb, nor sending to it.
SELECT queue.purge('pb');
\echo :SQLSTATE
SELECT queue.send('pb', '1');
\echo :SQLSTATE
SELECT queue.alter('pb', visibility_timeout => '1 minute');
\echo :SQLSTATE
-- A dead-letter queue or redrive target must take sends from the caller.
SELECT queue.alter('pa', dead_letter_queue => 'pb');
\echo :SQLSTATE
-- pa's dead-letter queue is not administered by pa's administrator.
SELECT queue.redrive('pa_dlq');
\echo :SQLSTATE
RESET ROLE;
SELECT queue.grant('pa_dlq', 'administer', 'regress_queue_admin');
SELECT queue.send('pa_dlq', '"dead"') > 0 AS sent;
SET ROLE regress_queue_admin;
SELECT queue.redrive('pa_dlq', target => 'pb');
\echo :SQLSTATE
SELECT queue.redrive('pa_dlq', target => 'pa');
SELECT payload FROM queue.pop('pa');
RESET ROLE;

--
-- all: every privilege; revoking all takes every one away.
--
SELECT queue.grant('pb', 'all', 'regress_queue_nobody');
SET ROLE regress_queue_nobody;
SELECT queue.send('pb', '"all"') > 0 AS sent;
SELECT payload FROM queue.pop('pb');
SELECT queue.alter('pb', retention => '1 day');
SELECT queue_name, retention FROM queue.queues;
RESET ROLE;
SELECT queue.revoke('pb', 'all', 'regress_queue_nobody');
SET ROLE regress_queue_nobody;
SELECT queue.send('pb', '1');
\echo :SQLSTATE
SELECT queue.read('pb');
\echo :SQLSTATE
SELECT queue.alter('pb', reset => '{retention}');
\echo :SQLSTATE
SELECT count(*) AS queues_visible FROM queue.queues;
RESET ROLE;

--
-- queue.create needs EXECUTE, which the administrator grants.  The creator
-- owns the queue: everything on it, nothing on the others.
--
GRANT EXECUTE ON FUNCTION queue.create(text, boolean, interval, integer, text, interval, interval, boolean, boolean)
   TO regress_queue_owner;
SET ROLE regress_queue_owner;
SELECT queue.create('po') > 0 AS created;
-- A dead-letter queue the creator may not send to is refused, and the
-- queue is not created.
SELECT queue.create('po2', max_attempts => 1, dead_letter_queue => 'pb');
\echo :SQLSTATE
SELECT queue.send('po', '"own"') > 0 AS sent;
SELECT payload FROM queue.pop('po');
SELECT queue.grant('po', 'read', 'regress_queue_reader');
SELECT queue_name FROM queue.queues ORDER BY queue_name;
SELECT queue.send('pa', '1');
\echo :SQLSTATE
SELECT queue.drop('pb');
\echo :SQLSTATE
RESET ROLE;
SELECT queue_name FROM queue.queues WHERE queue_name LIKE 'po%' ORDER BY queue_name;
SET ROLE regress_queue_reader;
SELECT queue_name FROM queue.queues ORDER BY queue_name;
SELECT queue.drop('po');
\echo :SQLSTATE
SET ROLE regress_queue_owner;
SELECT queue.drop('po');
RESET ROLE;
REVOKE EXECUTE ON FUNCTION queue.create(text, boolean, interval, integer, text, interval, interval, boolean, boolean)
  FROM regress_queue_owner;
SET ROLE regress_queue_owner;
SELECT queue.create('po');
\echo :SQLSTATE
RESET ROLE;

--
-- Nobody reaches queue_internal directly, not even a role with every
-- privilege on a queue: the tables, the catalog and the sequence.
--
SELECT 'q' || id AS pa_table FROM queue.queues WHERE queue_name = 'pa' \gset
SELECT queue.grant('pa', 'all', 'regress_queue_admin');
SET ROLE regress_queue_admin;
-- terse: the statement's text would show the queue's id
\set VERBOSITY terse
SELECT * FROM queue_internal.queue;
\echo :SQLSTATE
UPDATE queue_internal.queue SET owner = 0;
\echo :SQLSTATE
SELECT * FROM queue_internal.:pa_table;
\echo :SQLSTATE
INSERT INTO queue_internal.:pa_table (visible_at, enqueued_at, payload) VALUES (now(), now(), '1');
\echo :SQLSTATE
SELECT nextval('queue_internal.message_id_seq');
\echo :SQLSTATE
CREATE TABLE queue_internal.planted (x int);
\echo :SQLSTATE
CREATE FUNCTION queue.planted() RETURNS int LANGUAGE sql AS 'SELECT 1';
\echo :SQLSTATE
\set VERBOSITY default
RESET ROLE;
SELECT r.rolname AS may_use_queue_internal
  FROM pg_roles r
 WHERE r.rolname LIKE 'regress_queue%'
   AND (has_schema_privilege(r.oid, 'queue_internal', 'USAGE')
        OR has_schema_privilege(r.oid, 'queue_internal', 'CREATE'));

--
-- search_path hijacking.  A role that may create objects in public plants
-- look-alikes of what the extension's statements use (now(), operators on
-- bigint, text and timestamptz, unnest, array_append, array_remove) and
-- temporary tables named like the internal ones, puts public first in its
-- search_path, and uses the API from a fresh session whose statement
-- caches are empty.  Every planted function raises an error, so a single
-- call of one would show.
--
GRANT CREATE ON SCHEMA public TO regress_queue_attacker;
SELECT queue.create('ph') > 0 AS created;
SELECT queue.create('ph_dlq') > 0 AS created;
SELECT queue.alter('ph', max_attempts => 1, dead_letter_queue => 'ph_dlq');
SELECT queue.grant('ph', 'all', 'regress_queue_attacker');
SELECT queue.grant('ph_dlq', 'all', 'regress_queue_attacker');
SELECT id AS ph_id FROM queue.queues WHERE queue_name = 'ph' \gset
\c
SET ROLE regress_queue_attacker;
CREATE FUNCTION public.hijacked() RETURNS boolean LANGUAGE plpgsql
  AS $$BEGIN RAISE EXCEPTION 'hijacked'; END$$;
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql
  AS $$BEGIN RAISE EXCEPTION 'hijacked now()'; END$$;
CREATE FUNCTION public.hijack_int8(bigint, bigint) RETURNS boolean LANGUAGE sql
  AS 'SELECT public.hijacked()';
CREATE FUNCTION public.hijack_text(text, text) RETURNS boolean LANGUAGE sql
  AS 'SELECT public.hijacked()';
CREATE FUNCTION public.hijack_tstz(timestamptz, timestamptz) RETURNS boolean LANGUAGE sql
  AS 'SELECT public.hijacked()';
CREATE OPERATOR public.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = public.hijack_int8);
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.hijack_text);
CREATE OPERATOR public.<= (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = public.hijack_tstz);
CREATE OPERATOR public.> (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = public.hijack_tstz);
CREATE OPERATOR public.< (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = public.hijack_tstz);
CREATE FUNCTION public.unnest(bigint[]) RETURNS SETOF bigint LANGUAGE plpgsql
  AS $$BEGIN RAISE EXCEPTION 'hijacked unnest(bigint[])'; END$$;
CREATE FUNCTION public.unnest(jsonb[]) RETURNS SETOF jsonb LANGUAGE plpgsql
  AS $$BEGIN RAISE EXCEPTION 'hijacked unnest(jsonb[])'; END$$;
CREATE FUNCTION public.array_append(oid[], oid) RETURNS oid[] LANGUAGE plpgsql
  AS $$BEGIN RAISE EXCEPTION 'hijacked array_append'; END$$;
CREATE FUNCTION public.array_remove(oid[], oid) RETURNS oid[] LANGUAGE plpgsql
  AS $$BEGIN RAISE EXCEPTION 'hijacked array_remove'; END$$;
CREATE FUNCTION public.nextval(regclass) RETURNS bigint LANGUAGE plpgsql
  AS $$BEGIN RAISE EXCEPTION 'hijacked nextval'; END$$;
CREATE TEMP TABLE queue (id bigint, name text);
CREATE TEMP TABLE q:ph_id (id bigint);
CREATE TEMP SEQUENCE message_id_seq;
SET search_path = public, pg_catalog;
-- The traps are armed: the role's own queries fall into them.
SELECT now();
SELECT 1::bigint = 1::bigint;
SELECT unnest(ARRAY[1::bigint]);
-- The API is not fooled.
SELECT queue.send('ph', '"h1"') IS NOT NULL AS sent;
SELECT count(*) FROM queue.send_batch('ph', ARRAY['"h2"', '"h3"']::jsonb[]);
CREATE TEMP TABLE got AS SELECT * FROM queue.read('ph', 2);
SELECT payload FROM got ORDER BY id;
SELECT queue.ack('ph', id, receipt + 1) FROM got ORDER BY id;
SELECT queue.set_visibility('ph', id, receipt, '1 hour') FROM got ORDER BY id;
SELECT count(*) FROM queue.ack('ph', ARRAY(SELECT id FROM got ORDER BY id),
                                     ARRAY(SELECT receipt + 1 FROM got ORDER BY id));
SELECT count(*) FROM queue.ack('ph', ARRAY(SELECT id FROM got ORDER BY id),
                                     ARRAY(SELECT receipt FROM got ORDER BY id));
SELECT payload FROM queue.pop('ph');
SELECT queue.send('ph', '"h4"') IS NOT NULL AS sent;
TRUNCATE got;
INSERT INTO got SELECT * FROM queue.read('ph');
SELECT queue.nack('ph', id, receipt, error => 'hijack test') FROM got;
SELECT count(*) AS dead_lettered FROM queue.read('ph');
SELECT queue.redrive('ph_dlq');
TRUNCATE got;
INSERT INTO got SELECT * FROM queue.read('ph', wait => '0.1 seconds');
SELECT payload, attempts, last_error FROM got;
SELECT queue.archive('ph', id, receipt) FROM got;
SELECT payload FROM queue.archived('ph');
SELECT queue.grant('ph', 'read', 'regress_queue_reader');
SELECT queue.revoke('ph', 'read', 'regress_queue_reader');
SELECT queue.alter('ph', retention => '1 day', rename_to => 'ph2');
SELECT queue_name, retention, messages, sent_total, acked_total, dead_lettered_total
  FROM queue.queues ORDER BY queue_name;
SELECT queue.purge('ph2');
SELECT queue.alter('ph2', reset => '{max_attempts, dead_letter_queue}');
SELECT queue.drop('ph_dlq');
SELECT queue.drop('ph2');
SELECT count(*) AS rows_in_planted_tables
  FROM (SELECT id FROM pg_temp.queue UNION ALL SELECT id FROM pg_temp.q:ph_id) t;
RESET search_path;
RESET ROLE;
-- The catalog was not disturbed either.
SELECT queue_name FROM queue.queues ORDER BY queue_name;

--
-- Clean up.
--
SELECT queue.alter('pa', reset => '{max_attempts, dead_letter_queue}');
SELECT queue.drop(q) FROM unnest(ARRAY['pa', 'pa_dlq', 'pb']) AS q;
DROP OWNED BY regress_queue_attacker;
REVOKE CREATE ON SCHEMA public FROM regress_queue_attacker;
DROP ROLE regress_queue_owner, regress_queue_sender, regress_queue_reader,
          regress_queue_admin, regress_queue_nobody, regress_queue_member,
          regress_queue_group, regress_queue_attacker;
SELECT count(*) AS queues_left FROM queue.queues;
