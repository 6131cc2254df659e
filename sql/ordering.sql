-- Ordering: priorities, FIFO groups, and how they combine; every error of
-- the options (each failing statement is followed by its SQLSTATE).  Payloads
-- are printed, ids only compared.

-- Priorities: higher first, oldest first within a priority; 0 is the default.
SELECT queue.create('pr') IS NOT NULL AS created;
SELECT count(*) AS sent FROM (
  SELECT queue.send('pr', '"p0 first"')
  UNION ALL SELECT queue.send('pr', '"p5 first"', priority => 5)
  UNION ALL SELECT queue.send('pr', '"p1"', priority => 1)
  UNION ALL SELECT queue.send('pr', '"p5 second"', priority => 5)
  UNION ALL SELECT queue.send('pr', '"p0 second"', priority => 0)) s;
SELECT count(*) AS sent FROM queue.send_batch('pr', ARRAY['"b9 a"', '"b9 b"']::jsonb[], priority => 9);
SELECT payload, priority FROM queue.read('pr', 3);
SELECT payload, priority FROM queue.read('pr', 10);

-- A read takes the highest visible priority: a delayed urgent message waits.
SELECT queue.send('pr', '"urgent later"', delay => '1 hour', priority => 100) IS NOT NULL AS sent;
SELECT queue.send('pr', '"plain"') IS NOT NULL AS sent;
SELECT payload FROM queue.pop('pr', 10);

-- Priorities survive the dead-letter queue and redrive.
SELECT queue.create('pr_dlq') IS NOT NULL AS created;
SELECT queue.create('pr_dl', max_attempts => 1, dead_letter_queue => 'pr_dlq') IS NOT NULL AS created;
SELECT queue.send('pr_dl', '"dead low"'), queue.send('pr_dl', '"dead high"', priority => 7) \gset
SELECT count(*) AS read_once FROM queue.read('pr_dl', 10, visibility_timeout => '0');
SELECT count(*) AS dead_lettered_now FROM queue.read('pr_dl', 10);
SELECT payload, priority FROM queue.pop('pr_dlq', 10);
SELECT queue.send('pr_dlq', '"back low"'), queue.send('pr_dlq', '"back high"', priority => 3) \gset
SELECT queue.redrive('pr_dlq', 'pr') AS redriven;
SELECT payload, priority FROM queue.read('pr', 10);

-- Priorities are kept when a segment is recycled and its stragglers move
-- forward: of two leased messages moved, the later one with a priority still
-- comes first when both are visible again.
SELECT queue.create('pr_seg') IS NOT NULL AS created;
SELECT queue.send('pr_seg', '"older plain"') IS NOT NULL AS sent;
SELECT queue.send('pr_seg', '"later prioritized"', priority => 2) IS NOT NULL AS sent;
CREATE TABLE pr_held AS SELECT id, receipt FROM queue.read('pr_seg', 2, visibility_timeout => '1 hour');
SELECT queue.recycle('pr_seg') AS recycled_while_leased;
SELECT queue.recycle('pr_seg') AS recycled;
SELECT count(*) AS given_back FROM pr_held h, queue.nack('pr_seg', h.id, h.receipt) n WHERE n;
SELECT payload, priority FROM queue.read('pr_seg', 10);
DROP TABLE pr_held;

-- FIFO: one message of a group at a time, in send order; messages without a
-- group key are not held back.
SELECT queue.create('ff', fifo => true) IS NOT NULL AS created;
SELECT fifo, fair FROM queue.queues WHERE queue_name = 'ff';
SELECT count(*) AS sent FROM (
  SELECT queue.send('ff', '"a1"', group_key => 'a')
  UNION ALL SELECT queue.send('ff', '"b1"', group_key => 'b')
  UNION ALL SELECT queue.send('ff', '"a2"', group_key => 'a')
  UNION ALL SELECT queue.send('ff', '"none 1"')
  UNION ALL SELECT queue.send('ff', '"a3"', group_key => 'a')
  UNION ALL SELECT queue.send('ff', '"none 2"')) s;
CREATE TABLE ff_held AS SELECT id, receipt, payload FROM queue.read('ff', 10);
SELECT payload FROM ff_held ORDER BY id;
-- in flight: a and b wait
SELECT payload FROM queue.read('ff', 10);
-- a1 done: a2 is next, a3 still waits behind it
SELECT queue.ack('ff', id, receipt) AS acked FROM ff_held WHERE payload = '"a1"';
SELECT payload FROM queue.read('ff', 10, visibility_timeout => '0');
-- an expired lease gives the group back, to the same message
SELECT payload, attempts FROM queue.pop('ff', 10);
SELECT payload FROM queue.pop('ff', 10);
-- b1's lease is still held: b's later messages wait for it
SELECT queue.send('ff', '"b2"', group_key => 'b') IS NOT NULL AS sent;
SELECT payload FROM queue.read('ff', 10);
SELECT queue.nack('ff', id, receipt) AS given_back FROM ff_held WHERE payload = '"b1"';
SELECT payload FROM queue.pop('ff', 10);
SELECT payload FROM queue.pop('ff', 10);

-- A delayed or failed message holds its group back until it is delivered.
SELECT queue.send('ff', '"c1 delayed"', group_key => 'c', delay => '1 hour') IS NOT NULL AS sent;
SELECT queue.send('ff', '"c2"', group_key => 'c') IS NOT NULL AS sent;
SELECT queue.send('ff', '"d1"', group_key => 'd') IS NOT NULL AS sent;
SELECT payload FROM queue.read('ff', 10);

-- In a FIFO queue the order of a group wins over priority; across groups,
-- priority decides among the heads.
SELECT queue.create('ffp', fifo => true) IS NOT NULL AS created;
SELECT count(*) AS sent FROM (
  SELECT queue.send('ffp', '"x1 low"', group_key => 'x')
  UNION ALL SELECT queue.send('ffp', '"x2 urgent"', group_key => 'x', priority => 9)
  UNION ALL SELECT queue.send('ffp', '"y1 mid"', group_key => 'y', priority => 4)
  UNION ALL SELECT queue.send('ffp', '"z1 low"', group_key => 'z')) s;
SELECT payload FROM queue.pop('ffp', 10);
SELECT payload FROM queue.pop('ffp', 10);
-- A read locks only the groups of the messages it takes (a group lock shows
-- in pg_locks as an advisory lock with objsubid 20821), with priorities too.
SELECT count(*) AS sent FROM generate_series(1, 50) g,
  LATERAL queue.send('ffp', to_jsonb(g), group_key => 'p' || g, priority => g % 3) s;
BEGIN;
SELECT payload FROM queue.read('ffp', 2);
SELECT count(*) AS group_locks FROM pg_locks
 WHERE locktype = 'advisory' AND objsubid = 20821 AND pid = pg_backend_pid();
ROLLBACK;
SELECT count(*) AS drained FROM queue.pop('ffp', 100);
-- A read that finds a group in flight tests its later messages and keeps
-- none of its lock: the lock is let go as soon as the head test fails.
SELECT count(*) AS sent FROM queue.send_batch('ffp', ARRAY['"q1"', '"q2"', '"q3"']::jsonb[],
                                              group_key => 'q');
SELECT payload FROM queue.read('ffp', 1);
BEGIN;
SELECT count(*) AS got FROM queue.read('ffp', 5);
SELECT count(*) AS group_locks FROM pg_locks
 WHERE locktype = 'advisory' AND objsubid = 20821 AND pid = pg_backend_pid();
ROLLBACK;
SELECT queue.purge('ffp') AS purged;
-- A message given back with a delay holds its group back also once reads
-- have moved past it (the segment then lists it apart, as hidden): the head
-- test looks below where reads start.  A read looks at a segment again
-- after 5 ms: the sleeps let the reads move on.
SELECT queue.create('ffs', fifo => true) IS NOT NULL AS created;
SELECT count(*) AS sent FROM queue.send_batch('ffs', ARRAY['"s1"', '"s2"']::jsonb[],
                                              group_key => 's');
SELECT count(*) AS sent FROM queue.send_batch('ffs', ARRAY['"n1"', '"n2"', '"n3"']::jsonb[]);
CREATE TEMP TABLE ffs_held AS SELECT * FROM queue.read('ffs', 1);
SELECT payload FROM ffs_held;
SELECT queue.nack('ffs', id, receipt, delay => '1 hour') AS given_back FROM ffs_held;
SELECT pg_sleep(0.02), payload FROM queue.read('ffs', 1);
SELECT pg_sleep(0.02), payload FROM queue.read('ffs', 1);
SELECT pg_sleep(0.02), payload FROM queue.read('ffs', 10);
SELECT payload FROM queue.read('ffs', 10);

-- per_group: a read of a FIFO queue takes up to per_group consecutive
-- messages of a group, in order: the heads of max_messages / per_group
-- groups (rounded up), then each one's next messages, then, when groups
-- ran short, the heads of more.  A group's run stops at a message that is
-- not visible.  A nack gives back, with the nacked message, the later
-- messages of its group that the same read took; their lease is lost, and
-- the attempt their read counted is taken back.
SELECT queue.create('ffr', fifo => true) IS NOT NULL AS created;
SELECT count(*) AS sent FROM (
  SELECT queue.send('ffr', '"r1"', group_key => 'r')
  UNION ALL SELECT queue.send('ffr', '"t1"', group_key => 't')
  UNION ALL SELECT queue.send('ffr', '"r2"', group_key => 'r')
  UNION ALL SELECT queue.send('ffr', '"u1"', group_key => 'u')
  UNION ALL SELECT queue.send('ffr', '"t2"', group_key => 't')
  UNION ALL SELECT queue.send('ffr', '"r3"', group_key => 'r')
  UNION ALL SELECT queue.send('ffr', '"t3 delayed"', group_key => 't', delay => '1 hour')
  UNION ALL SELECT queue.send('ffr', '"r4"', group_key => 'r')
  UNION ALL SELECT queue.send('ffr', '"t4"', group_key => 't')
  UNION ALL SELECT queue.send('ffr', '"r5"', group_key => 'r')) s;
CREATE TABLE ffr_held AS SELECT * FROM queue.read('ffr', 6, per_group => 3);
SELECT payload, attempts FROM ffr_held;
SELECT count(DISTINCT receipt) AS receipts FROM ffr_held;
-- every group is in flight, or waits behind t3
SELECT payload FROM queue.read('ffr', 10, per_group => 10);
-- r2 fails: r3 comes back with it, unhandled; r1 is done
SELECT in_flight, delayed FROM queue.queues WHERE queue_name = 'ffr';
SELECT queue.nack('ffr', id, receipt) AS nacked FROM ffr_held WHERE payload = '"r2"';
SELECT in_flight, delayed FROM queue.queues WHERE queue_name = 'ffr';
SELECT queue.ack('ffr', id, receipt) AS r3_acked FROM ffr_held WHERE payload = '"r3"';
SELECT queue.ack('ffr', id, receipt) AS r1_acked FROM ffr_held WHERE payload = '"r1"';
SELECT payload, attempts FROM queue.read('ffr', 10, per_group => 10);
-- pop takes runs too; per_group has no effect on a plain queue
SELECT queue.send('ffr', '"u2"', group_key => 'u') IS NOT NULL AS sent;
SELECT queue.ack('ffr', id, receipt) AS u1_acked FROM ffr_held WHERE payload = '"u1"';
SELECT queue.send('ffr', '"u3"', group_key => 'u') IS NOT NULL AS sent;
SELECT payload FROM queue.pop('ffr', 5, per_group => 5);
SELECT queue.create('plain_runs') IS NOT NULL AS created;
SELECT count(*) AS sent FROM queue.send_batch('plain_runs', ARRAY['1', '2', '3']::jsonb[],
                                              group_key => 'k');
SELECT payload FROM queue.read('plain_runs', 3, per_group => 1);
SELECT queue.drop('plain_runs') AS dropped;
DROP TABLE ffr_held;
SELECT queue.drop('ffr') AS dropped;

-- Fair queues: turns go round-robin across group keys, one message a key a
-- turn, from where the last read stopped; messages without a key have one
-- turn a round.  A key with many messages waiting does not hold back another
-- key's single one.
SELECT queue.create('fa', fair => true) IS NOT NULL AS created;
SELECT count(*) AS sent FROM queue.send_batch('fa',
  ARRAY['"big 1"', '"big 2"', '"big 3"', '"big 4"', '"big 5"', '"big 6"']::jsonb[], group_key => 'big');
SELECT queue.send('fa', '"a 1"', group_key => 'a') IS NOT NULL AS sent;
SELECT queue.send('fa', '"b 1"', group_key => 'b') IS NOT NULL AS sent;
SELECT queue.send('fa', '"no key"') IS NOT NULL AS sent;
SELECT payload FROM queue.read('fa', 2);
SELECT payload FROM queue.read('fa', 2);
SELECT payload FROM queue.read('fa', 10);
-- within a key, priority first
SELECT count(*) AS sent FROM (
  SELECT queue.send('fa', '"c low"', group_key => 'c')
  UNION ALL SELECT queue.send('fa', '"c high"', group_key => 'c', priority => 3)
  UNION ALL SELECT queue.send('fa', '"d low"', group_key => 'd')) s;
SELECT payload FROM queue.pop('fa', 10);
-- fair and FIFO: one message a group at a time, groups in turns
SELECT queue.create('faf', fair => true, fifo => true) IS NOT NULL AS created;
SELECT count(*) AS sent FROM (
  SELECT queue.send('faf', '"x1"', group_key => 'x')
  UNION ALL SELECT queue.send('faf', '"x2"', group_key => 'x')
  UNION ALL SELECT queue.send('faf', '"y1"', group_key => 'y')
  UNION ALL SELECT queue.send('faf', '"n1"')
  UNION ALL SELECT queue.send('faf', '"n2"')) s;
SELECT payload FROM queue.pop('faf', 10);
SELECT payload FROM queue.pop('faf', 10);
SELECT fifo, fair FROM queue.queues WHERE queue_name IN ('fa', 'faf') ORDER BY queue_name;

-- Errors: priority out of range or NULL, fifo or fair NULL: 22023.
SELECT queue.send('pr', '"x"', priority => -1);
\echo :SQLSTATE
SELECT queue.send('pr', '"x"', priority => 32768);
\echo :SQLSTATE
SELECT queue.send('pr', '"x"', priority => NULL);
\echo :SQLSTATE
SELECT queue.send_batch('pr', ARRAY['"x"']::jsonb[], priority => 40000);
\echo :SQLSTATE
SELECT queue.create('bad', fifo => NULL);
\echo :SQLSTATE
SELECT queue.create('bad', fair => NULL);
\echo :SQLSTATE
-- A FIFO queue is read in READ COMMITTED only: 0A000.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM queue.read('ff');
\echo :SQLSTATE
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT * FROM queue.pop('ff');
\echo :SQLSTATE
ROLLBACK;
-- A plain queue still can.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) FROM queue.read('pr');
ROLLBACK;
-- The claims' head test, called by hand (only the extension's owner can):
-- 55000.
SELECT queue_internal.fifo_head(id, 'g', 1, now(), now()) FROM queue.queues WHERE queue_name = 'ff';
\echo :SQLSTATE

DROP TABLE ff_held, ffs_held;
SELECT queue.drop(q) FROM unnest(ARRAY['pr_dl', 'pr_dlq', 'pr', 'pr_seg', 'ff', 'ffp', 'ffs', 'fa', 'faf']) q;
