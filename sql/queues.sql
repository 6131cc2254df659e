--
-- Queues: queue.create, queue.alter, queue.drop, queue.purge and the view
-- queue.queues, with every option.  Errors are in errors.sql, privileges in
-- privileges.sql.
--

-- A new queue: durable, 30 second visibility timeout, no limit, no archive
-- retention.  create returns the queue's id, the same the view shows.
SELECT queue.create('plain') AS plain_id \gset
SELECT id = :plain_id AS same_id, queue_name, logged, visibility_timeout,
       max_attempts, dead_letter_queue, retention,
       messages, visible, in_flight, delayed, oldest_visible_age, dead_letters,
       sent_total, acked_total, dead_lettered_total,
       created_at <= now() AS created_in_the_past
  FROM queue.queues;

-- Its tables are named from its id in queue_internal, never from its name:
-- q<id> holds the messages, a<id> the archive, both WAL-logged.
SELECT c.relname = 'q' || :plain_id AS messages_table,
       c.relname = 'a' || :plain_id AS archive_table,
       c.relpersistence
  FROM pg_class c
 WHERE c.relnamespace = 'queue_internal'::regnamespace
   AND c.relkind = 'r'
   AND c.relname IN ('q' || :plain_id, 'a' || :plain_id)
 ORDER BY c.relname DESC;
SELECT count(*) AS relations_named_after_the_queue
  FROM pg_class WHERE relname LIKE '%plain%';

-- An unlogged queue: both of its tables are unlogged.
SELECT queue.create('fast', logged => false) AS fast_id \gset
SELECT c.relname = 'q' || :fast_id AS messages_table, c.relpersistence
  FROM pg_class c
 WHERE c.relnamespace = 'queue_internal'::regnamespace
   AND c.relname IN ('q' || :fast_id, 'a' || :fast_id)
 ORDER BY c.relname DESC;
SELECT queue_name, logged FROM queue.queues ORDER BY queue_name;
SELECT :fast_id > :plain_id AS ids_increase;

-- alter logged rewrites both tables (and their indexes) as logged or
-- unlogged; the messages and their leases stay.  NULL changes nothing.
SELECT queue.send('fast', '"kept"') AS fast_m \gset
SELECT receipt AS fast_r FROM queue.read('fast') \gset
SELECT queue.alter('fast', logged => true);
SELECT logged FROM queue.queues WHERE queue_name = 'fast';
SELECT relkind, relpersistence, count(*)
  FROM pg_class
 WHERE relnamespace = 'queue_internal'::regnamespace AND relname ~ ('^[qa]' || :fast_id || '(_|$)')
 GROUP BY 1, 2 ORDER BY 1, 2;
SELECT queue.set_visibility('fast', :fast_m, :fast_r, '0');
SELECT queue.alter('fast', logged => false);
SELECT queue.alter('fast', logged => NULL);
SELECT logged FROM queue.queues WHERE queue_name = 'fast';
SELECT relkind, relpersistence, count(*)
  FROM pg_class
 WHERE relnamespace = 'queue_internal'::regnamespace AND relname ~ ('^[qa]' || :fast_id || '(_|$)')
 GROUP BY 1, 2 ORDER BY 1, 2;
SELECT queue.alter('fast', logged => false);
SELECT payload, attempts FROM queue.pop('fast');

-- Every option at once.  Intervals are kept as days and time (a month
-- counts 30 days).
SELECT queue.create('jobs_dlq') > 0 AS created;
SELECT queue.create('jobs',
                    logged => true,
                    visibility_timeout => '90 seconds',
                    max_attempts => 3,
                    dead_letter_queue => 'jobs_dlq',
                    retention => '1 mon 2 days 03:00') > 0 AS created;
SELECT queue_name, logged, visibility_timeout, max_attempts, dead_letter_queue, retention
  FROM queue.queues WHERE queue_name LIKE 'jobs%' ORDER BY queue_name;

-- The bounds themselves are accepted, and so is every shape of valid name:
-- a leading underscore, digits after the first character, 48 characters.
SELECT queue.create('_edge_low', visibility_timeout => '0', max_attempts => 1,
                    dead_letter_queue => 'jobs_dlq', retention => '0') > 0 AS created;
SELECT queue.create('edge_high_2', visibility_timeout => '12 hours', max_attempts => 1000,
                    dead_letter_queue => 'jobs_dlq', retention => '3650 days') > 0 AS created;
SELECT queue.create(repeat('x', 48)) > 0 AS created;
SELECT length(queue_name), visibility_timeout, max_attempts, retention
  FROM queue.queues
 WHERE queue_name IN ('_edge_low', 'edge_high_2', repeat('x', 48))
 ORDER BY queue_name;

-- NULL for an optional setting means "none" (max_attempts, dead_letter_queue,
-- retention).
SELECT queue.create('nulls', max_attempts => NULL, dead_letter_queue => NULL,
                    retention => NULL) > 0 AS created;
SELECT max_attempts, dead_letter_queue, retention FROM queue.queues WHERE queue_name = 'nulls';

--
-- queue.alter
--
SELECT queue.alter('plain', visibility_timeout => '2 minutes');
SELECT queue.alter('plain', retention => '36 hours');
SELECT queue.alter('plain', dead_letter_queue => 'jobs_dlq');
SELECT queue.alter('plain', max_attempts => 5);
SELECT queue_name, visibility_timeout, max_attempts, dead_letter_queue, retention
  FROM queue.queues WHERE queue_name = 'plain';

-- All arguments NULL: nothing changes.
SELECT queue.alter('plain');
SELECT queue.alter('plain', visibility_timeout => NULL, max_attempts => NULL,
                   dead_letter_queue => NULL, retention => NULL, rename_to => NULL,
                   reset => NULL);
SELECT queue_name, visibility_timeout, max_attempts, dead_letter_queue, retention
  FROM queue.queues WHERE queue_name = 'plain';

-- A new visibility timeout is what the next read uses by default.
SELECT queue.send('plain', '{"n": 1}') > 0 AS sent;
CREATE TEMP TABLE got AS SELECT * FROM queue.read('plain');
SELECT payload, visible_at > now() + interval '110 seconds'
                AND visible_at <= clock_timestamp() + interval '120 seconds' AS hidden_two_minutes
  FROM got;

-- A new dead-letter queue.
SELECT queue.alter('plain', dead_letter_queue => 'nulls');
SELECT dead_letter_queue FROM queue.queues WHERE queue_name = 'plain';

-- reset returns settings to their defaults; an empty list changes nothing.
SELECT queue.alter('plain', reset => '{}');
SELECT queue.alter('plain', reset => '{visibility_timeout, retention}');
SELECT queue_name, visibility_timeout, max_attempts, dead_letter_queue, retention
  FROM queue.queues WHERE queue_name = 'plain';
SELECT queue.alter('plain', reset => '{max_attempts, dead_letter_queue}');
SELECT queue_name, visibility_timeout, max_attempts, dead_letter_queue, retention
  FROM queue.queues WHERE queue_name = 'plain';

-- A value given with reset of the same setting wins over the reset.
SELECT queue.alter('plain', visibility_timeout => '45 seconds', reset => '{visibility_timeout}');
SELECT visibility_timeout FROM queue.queues WHERE queue_name = 'plain';
-- Resetting dead_letter_queue while max_attempts is set in the same call is
-- refused (errors.sql); resetting both and setting a new pair in one call works.
SELECT queue.alter('plain', max_attempts => 2, dead_letter_queue => 'jobs_dlq',
                   reset => '{max_attempts, dead_letter_queue}');
SELECT max_attempts, dead_letter_queue FROM queue.queues WHERE queue_name = 'plain';
SELECT queue.alter('plain', reset => '{max_attempts, dead_letter_queue}');

-- rename_to: same id, same messages and leases, same settings; the old
-- name is gone.
SELECT queue.alter('plain', rename_to => 'plain');
SELECT queue.alter('plain', rename_to => 'renamed');
SELECT queue_name, id = :plain_id AS same_id, visibility_timeout
  FROM queue.queues WHERE queue_name IN ('plain', 'renamed');
SELECT queue.drop('plain', if_exists => true);
SELECT messages, in_flight FROM queue.queues WHERE queue_name = 'renamed';
SELECT queue.ack('renamed', id, receipt) FROM got;
SELECT messages, in_flight FROM queue.queues WHERE queue_name = 'renamed';
SELECT queue.alter('renamed', rename_to => 'plain');

-- Renaming a dead-letter queue keeps it attached.
SELECT queue.alter('jobs_dlq', rename_to => 'jobs_dead');
SELECT queue_name, dead_letter_queue FROM queue.queues WHERE queue_name = 'jobs';
SELECT queue.alter('jobs_dead', rename_to => 'jobs_dlq');

--
-- queue.purge: deletes every message (visible, in flight and delayed),
-- returns how many, and keeps the archive.
--
SELECT count(*) FROM queue.send_batch('fast', ARRAY['1', '2', '3', '4']::jsonb[]);
SELECT queue.send('fast', '5', delay => '1 hour') > 0 AS sent_delayed;
SELECT id AS fast_m1, receipt AS fast_r1 FROM queue.read('fast') \gset
SELECT queue.archive('fast', :fast_m1, :fast_r1);
SELECT count(*) AS in_flight_now FROM queue.read('fast');
SELECT queue.purge('fast');
SELECT count(*) AS left_after_purge FROM queue.read('fast', 10);
SELECT payload FROM queue.archived('fast');
SELECT messages, visible, in_flight, delayed FROM queue.queues WHERE queue_name = 'fast';
SELECT queue.purge('fast');
-- The queue still works after a purge.
SELECT queue.send('fast', '6') > 0 AS sent;
SELECT payload FROM queue.pop('fast');

--
-- queue.drop: removes the catalog row and both tables.
--
SELECT queue.drop('fast');
SELECT count(*) AS tables_left
  FROM pg_class
 WHERE relnamespace = 'queue_internal'::regnamespace
   AND relname IN ('q' || :fast_id, 'a' || :fast_id);
SELECT count(*) AS queues_named_fast FROM queue.queues WHERE queue_name = 'fast';
-- if_exists: a notice and false instead of an error; NULL means false.
SELECT queue.drop('fast', if_exists => true);
SELECT queue.drop('fast', if_exists => NULL);
\echo :SQLSTATE
-- A queue that is a dead-letter queue can go once nothing points at it.
SELECT queue.alter('jobs', reset => '{max_attempts, dead_letter_queue}');
SELECT queue.alter('_edge_low', reset => '{max_attempts, dead_letter_queue}');
SELECT queue.alter('edge_high_2', reset => '{max_attempts, dead_letter_queue}');
SELECT queue.drop('jobs_dlq');
-- A queue with messages drops with them.
SELECT queue.send('jobs', '{}') > 0 AS sent;
SELECT queue.drop('jobs');

-- A dropped name can be used again; the new queue has a new id and is empty.
SELECT queue.create('jobs') AS jobs_id_2 \gset
SELECT count(*) AS messages_in_new_jobs FROM queue.read('jobs', 10);

-- One statement can create a dead-letter queue and the queue that uses it.
SELECT queue.create('same_dlq') > 0 AS created,
       queue.create('same_q', max_attempts => 1, dead_letter_queue => 'same_dlq') > 0 AS created;
SELECT queue_name, dead_letter_queue FROM queue.queues WHERE queue_name LIKE 'same%' ORDER BY 1;
SELECT queue.drop('same_q'), queue.drop('same_dlq');

SELECT queue.drop(q) FROM unnest(ARRAY['plain', 'jobs', 'nulls', '_edge_low', 'edge_high_2',
                                        repeat('x', 48)]) AS q;
SELECT count(*) AS queues_left FROM queue.queues;
SELECT count(*) AS tables_left FROM pg_class WHERE relnamespace = 'queue_internal'::regnamespace
   AND relkind IN ('r', 'i') AND relname ~ '^[qa][0-9]+';
