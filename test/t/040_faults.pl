
# 040_faults.pl: the fault matrix, with a ledger and amcheck after each fault.
#
# Every message the test sends is recorded in `sent` by the statement that
# sends it, so a row exists exactly when the send committed.  The handler
# (owned by an ordinary role) and the external consumer record each message
# they handle in `processed`, with its delivery count, in the transaction
# that deletes the message, so a row exists exactly when the message's
# effect committed.  After each fault the test waits for the drain and then
# asserts, over everything sent since the start:
#
# - zero loss: every message sent to be handled is in `processed`, every
#   message meant to fail is in its dead-letter queue (and not processed),
#   and the only messages gone are those of an unlogged queue at a crash;
# - no duplicate effect: no message is in `processed` twice (handlers and
#   read + ack in one transaction both promise once);
# - no phantom: nothing is processed that no committed send sent;
# - amcheck is clean: verify_heapam on every table of queue_internal (and
#   their TOAST tables), bt_index_check with heapallindexed on every btree
#   index there;
# - the server serves: a send, read and ack round trip.
#
# The faults:
#
#  A. kill -9 of a drain worker in the middle of its batch (held in its
#     handler at an advisory-lock gate, so there is no race);
#  B. kill -9 of an ordinary backend in the middle of a send_batch (waiting
#     on the deduplication key of an uncommitted send, so it is known to be
#     inside the statement), while another has an open transaction with
#     sends;
#  C. kill -9 of the launcher while a backlog drains;
#  D. immediate shutdown under load: producers (send_batch, send, sends
#     rolled back), external consumers (read + ack, abandoned leases) and
#     the drain of a plain and of a FIFO queue all running (from then on,
#     each FIFO group must also have taken effect in send order);
#  E. an unlogged queue after a crash, with a consumer: empty afterwards,
#     the durable queue intact, and no error loop (the log stays free of
#     errors while its workers and maintenance keep running);
#  F. handlers that raise, return the wrong thing (ids not in the batch,
#     NULLs, an id twice), sleep forever (handler_timeout), or try COMMIT
#     and ROLLBACK: the message fails, never the server;
#  G. DROP DATABASE and DROP EXTENSION while a consumer's worker is busy;
#  H. max_worker_processes exhausted: three consumers want six workers,
#     two slots are free;
#  I. a synchronous streaming standby promoted while producers and the
#     drain run on the primary, which stops at once: no launcher nor worker
#     ran on the standby, every send the primary had committed is on the
#     promoted standby, whose launcher starts and drains the rest.
#
# 002_crash.pl, 004_segments.pl, 010_consumers.pl and 011_consumer_faults.pl
# test several of these in more detail (leases across a crash, recycling
# cut short, a standby's consumers); this file puts them in one matrix,
# each followed by the same ledger, amcheck and round-trip checks.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use FindBin;
use lib $FindBin::RealBin;
use QueueTest;
use Test::More;
use Time::HiRes qw(time usleep);

my $t_start = time;
my $faults = 0;

my $node = queue_node(
	'faults040', qq{
restart_after_crash = on
max_worker_processes = 16
queue.max_workers = 4
queue.worker_idle_timeout = '2s'
queue.maintenance_interval = '1s'
log_line_prefix = '%m [%p] %q%a '
});

sub sql { return $node->safe_psql('postgres', shift); }

sub as_app { return $node->safe_psql('postgres', "SET ROLE app;\n" . shift); }

# The ledger, the handler and the external consumer's statement.  Payload
# flags tell the handler what to do: gate (wait at advisory lock (0, 1) for
# as long as the test holds it), sleep, raise, commit, rollback, forever,
# fail_me (returned as failed), strangers (return ids not in the batch).
my $setup_sql = q{
CREATE EXTENSION queue;
CREATE TABLE sent (
    id      bigint PRIMARY KEY,
    q       text NOT NULL,
    expect  text NOT NULL);     -- once, dead, unlogged, lost_by_crash
CREATE TABLE processed (
    id        bigint NOT NULL,
    q         text NOT NULL,
    attempts  int NOT NULL,
    tag       text,
    grp       text,
    seq       bigserial,          -- the order effects were made in
    pid       int DEFAULT pg_backend_pid(),
    xact      bigint DEFAULT txid_current());
GRANT SELECT, INSERT ON sent, processed TO app;
GRANT USAGE ON SEQUENCE processed_seq_seq TO app;
CREATE FUNCTION handler(msgs queue.message[]) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    failed bigint[];
    s float8;
BEGIN
    INSERT INTO processed (id, q, attempts, tag, grp)
    SELECT m.id, regexp_replace(current_setting('application_name'), '^queue consumer ', ''),
           m.attempts, m.payload->>'tag', m.group_key
      FROM unnest(msgs) m WHERE NOT m.payload ? 'fail_me' ORDER BY m.id;
    IF EXISTS (SELECT FROM unnest(msgs) m WHERE m.payload ? 'gate') THEN
        -- the batch's ids show in pg_locks; then wait at the gate
        PERFORM pg_advisory_xact_lock_shared(m.id) FROM unnest(msgs) m;
        PERFORM pg_advisory_xact_lock_shared(0, 1);
    END IF;
    SELECT max((m.payload->>'sleep')::float8) INTO s FROM unnest(msgs) m;
    IF s > 0 THEN
        PERFORM pg_sleep(s);
    END IF;
    IF EXISTS (SELECT FROM unnest(msgs) m WHERE m.payload ? 'forever') THEN
        PERFORM pg_sleep(3600);
    END IF;
    IF EXISTS (SELECT FROM unnest(msgs) m WHERE m.payload ? 'raise') THEN
        RAISE EXCEPTION 'poison message';
    END IF;
    IF EXISTS (SELECT FROM unnest(msgs) m WHERE m.payload ? 'commit') THEN
        COMMIT;
    END IF;
    IF EXISTS (SELECT FROM unnest(msgs) m WHERE m.payload ? 'rollback') THEN
        ROLLBACK;
    END IF;
    failed := ARRAY(SELECT m.id FROM unnest(msgs) m WHERE m.payload ? 'fail_me');
    IF EXISTS (SELECT FROM unnest(msgs) m WHERE m.payload ? 'strangers') THEN
        -- three ids that are not in the batch, and the failed ones twice
        failed := failed || ARRAY[NULL, -1, 9223372036854775807]::bigint[] || failed;
    END IF;
    RETURN failed;
END $$;
ALTER FUNCTION handler(queue.message[]) OWNER TO app;
CREATE EXTENSION amcheck;
};
sql(q{CREATE ROLE app LOGIN});
sql($setup_sql);

# Creates a queue (with a dead-letter queue if asked) app may use.
sub make_queue
{
	my ($queue, %opt) = @_;
	my $args = '';
	if ($opt{dlq})
	{
		sql(qq{SELECT queue.create('$opt{dlq}')});
		sql(qq{SELECT queue.grant('$opt{dlq}', 'all', 'app')});
		$args .= ", dead_letter_queue => '$opt{dlq}', max_attempts => $opt{max_attempts}";
	}
	$args .= ', logged => false' if $opt{unlogged};
	sql(qq{SELECT queue.create('$queue'$args)});
	sql(qq{SELECT queue.grant('$queue', 'all', 'app')});
	return;
}

# Sends n messages {"n": g, ...extra} in one send_batch and records them in
# the ledger in the same statement; returns the ids.
sub send_n
{
	my ($queue, $n, $extra, $expect, $db) = @_;
	$extra //= '{}';
	$expect //= 'once';
	return split /\n/, $node->safe_psql($db // 'postgres', qq{
INSERT INTO sent (id, q, expect)
SELECT id, '$queue', '$expect'
  FROM queue.send_batch('$queue', ARRAY(SELECT jsonb_build_object('n', g) || '$extra'::jsonb
                                         FROM generate_series(1, $n) g)) id
RETURNING id});
}

# The external consumer: reads and acks in one transaction, with the ledger.
sub ext_drain_sql
{
	my ($queue) = @_;
	return qq{
INSERT INTO processed (id, q, attempts, tag)
SELECT r.id, 'ext:$queue', r.attempts, r.payload->>'tag'
  FROM queue.read('$queue', 100) r
 WHERE queue.ack('$queue', r.id, r.receipt)};
}

# Waits until the ledger balances, then asserts zero loss, no duplicate and
# no phantom over everything sent so far.
sub check_ledger
{
	my ($what, $db) = @_;
	$db //= 'postgres';
	my $q = sub { return $node->safe_psql($db, shift); };
	wait_until($node,
		q{SELECT NOT EXISTS (SELECT FROM sent s WHERE s.expect = 'once'
		                       AND NOT EXISTS (SELECT FROM processed p WHERE p.id = s.id))},
		"$what: every message sent to be handled was handled", $db);
	is( $q->(
			q{SELECT count(*) FROM sent s WHERE s.expect = 'once'
			    AND NOT EXISTS (SELECT FROM processed p WHERE p.id = s.id)}),
		'0', "$what: none lost");
	is( $q->(q{SELECT count(*) FROM (SELECT id FROM processed GROUP BY id HAVING count(*) > 1) d}),
		'0', "$what: none took effect twice");
	is( $q->(q{SELECT count(*) FROM processed p WHERE NOT EXISTS (SELECT FROM sent s WHERE s.id = p.id)}),
		'0', "$what: nothing took effect that no committed send sent");
	is( $q->(q{SELECT count(*) FROM processed p JOIN sent s USING (id) WHERE s.expect <> 'once'}),
		'0', "$what: no message meant to fail or to be lost took effect");
	is( $q->(
			q{SELECT count(*) FROM (SELECT id, lag(id) OVER (PARTITION BY grp ORDER BY seq) AS prev
			                          FROM processed WHERE q = 'cfifo') o WHERE prev > id}),
		'0', "$what: each FIFO group took effect in send order");
	note "$what: ledger "
	  . $q->(q{SELECT count(*) || ' sent, ' || (SELECT count(*) FROM processed) || ' processed' FROM sent});
	return;
}

# amcheck on every table of queue_internal (with its TOAST table) and every
# btree index on them.  Returns nothing; asserts that both ran on something
# and found nothing.
sub amcheck_clean
{
	my ($what, $db) = @_;
	$db //= 'postgres';
	my $rels = q{
	  SELECT c.oid, c.relkind, c.relam FROM pg_class c
	   WHERE c.relnamespace = 'queue_internal'::regnamespace
	  UNION ALL
	  SELECT t.oid, t.relkind, t.relam FROM pg_class c JOIN pg_class t ON t.oid = c.reltoastrelid
	   WHERE c.relnamespace = 'queue_internal'::regnamespace};
	my ($ret, $out, $err) = $node->psql(
		$db, qq{
WITH rels AS ($rels),
     tables AS (SELECT oid FROM rels WHERE relkind IN ('r', 'm', 't'))
SELECT (SELECT count(*) FROM tables) || '|' ||
       coalesce((SELECT string_agg(t.oid::regclass || ' block ' || v.blkno || ': ' || v.msg, '; ')
                   FROM tables t, LATERAL verify_heapam(t.oid, check_toast => true) v), '')});
	my ($ntables, $problems) = split /\|/, $out // '', 2;
	is($ret, 0, "$what: amcheck verify_heapam ran") or diag($err);
	cmp_ok($ntables // 0, '>=', 5, "$what: on the queue_internal tables ($ntables)");
	is($problems, '', "$what: verify_heapam finds nothing wrong");
	($ret, $out, $err) = $node->psql(
		$db, qq{
WITH rels AS ($rels)
SELECT count(*)
  FROM rels i JOIN pg_am am ON am.oid = i.relam,
       LATERAL (SELECT bt_index_check(i.oid, heapallindexed => true)) c
 WHERE i.relkind = 'i' AND am.amname = 'btree'});
	is($ret, 0, "$what: bt_index_check (heapallindexed) finds nothing wrong on $out btree indexes")
	  or diag($err);
	cmp_ok($out || 0, '>=', 5, "$what: it checked the queue_internal indexes");
	return;
}

# A send, read and ack round trip on the ping queue.
sub serves
{
	my ($what, $db) = @_;
	$db //= 'postgres';
	my $id = $node->safe_psql($db, qq{SELECT queue.send('ping', '{"ping": "$what"}')});
	my ($rid, $receipt, $payload) = split /\|/,
	  $node->safe_psql($db, q{SELECT id, receipt, payload->>'ping' FROM queue.read('ping')});
	is("$rid|$payload", "$id|$what", "$what: the server serves: send, then read");
	is($node->safe_psql($db, qq{SELECT queue.ack('ping', $rid, $receipt)}),
		't', "$what: and ack");
	return;
}

# Everything asserted after each fault.
sub after_fault
{
	my ($what) = @_;
	check_ledger($what);
	amcheck_clean($what);
	serves($what);
	return;
}

# Waits for a crash restart that began after $offset to finish.
sub wait_crash_restart
{
	my ($what, $offset, $pid) = @_;
	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
	ok($node->log_contains(qr/\(PID $pid\) was terminated by signal 9/, $offset),
		"$what: the postmaster saw PID $pid die and restarts the server");
	$node->wait_for_log(qr/database system is ready to accept connections/, $offset);
	wait_until($node, q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'queue launcher'},
		"$what: the launcher is back");
	return;
}

make_queue('ping');
make_queue('qa');
as_app(q{SELECT queue.subscribe('ca', 'qa', 'handler(queue.message[])', batch_size => 10,
                                max_concurrency => 2)});

# ---- A. kill -9 of a drain worker in the middle of its batch -----------------

note 'A. kill -9 of a drain worker mid-batch';
send_n('qa', 50);
check_ledger('A: before the fault');
my $gate = $node->background_psql('postgres');
$gate->query_safe('SELECT pg_advisory_lock(0, 1)');
send_n('qa', 30, '{"gate": true, "tag": "gated"}');
wait_until($node,
	q{SELECT count(*) > 0 FROM pg_stat_activity a JOIN queue.workers w USING (pid)
	  WHERE w.consumer_name = 'ca' AND w.state = 'handling' AND w.batch_messages = 10
	    AND a.wait_event = 'advisory'},
	'A: a worker waits in its handler, in the middle of a batch of 10');
my $victim = sql(
	q{SELECT min(pid) FROM pg_stat_activity a JOIN queue.workers w USING (pid)
	  WHERE w.consumer_name = 'ca' AND w.state = 'handling' AND w.batch_messages = 10
	    AND a.wait_event = 'advisory'});
my $batch = sql(
	qq{SELECT string_agg(((classid::bigint << 32) | objid::bigint)::text, ',') FROM pg_locks
	   WHERE locktype = 'advisory' AND objsubid = 1 AND pid = $victim});
my @batch = split /,/, $batch;
is(scalar(@batch), 10, 'A: its batch holds 10 messages');
is(sql(qq{SELECT count(*) FROM processed WHERE id IN ($batch)}), '0',
	'A: none of their effects has committed');
my $offset = -s $node->logfile;
ok(kill('KILL', $victim), "A: SIGKILL to drain worker $victim");
$faults++;
wait_crash_restart('A', $offset, $victim);
eval { $gate->quit; };
after_fault('A');
is(sql(qq{SELECT count(*) || ',' || count(*) FILTER (WHERE pid = $victim) FROM processed WHERE id IN ($batch)}),
	'10,0', 'A: the killed batch took effect once, in another worker');

# ---- B. kill -9 of an ordinary backend mid-send --------------------------------

note 'B. kill -9 of a backend in the middle of a send_batch';
my $max_before = sql(q{SELECT max(id) FROM sent});
# an open transaction with sends, ledger rows and a batch, never committed
my $open = $node->background_psql('postgres', on_error_stop => 0);
$open->query_safe('BEGIN');
$open->query_safe(
	q{INSERT INTO sent SELECT queue.send('qa', '{"tag": "open"}'), 'qa', 'once'});
$open->query_safe(
	q{INSERT INTO sent SELECT id, 'qa', 'once'
	    FROM queue.send_batch('qa', ARRAY['{"tag": "open"}', '{"tag": "open"}']::jsonb[]) id});
# an uncommitted send holds deduplication key kgate...
my $holder = $node->background_psql('postgres', on_error_stop => 0);
$holder->query_safe('BEGIN');
$holder->query_safe(q{SELECT queue.send('qa', '{"tag": "holder"}', dedup_key => 'kgate')});
# ...so that a send_batch whose last key is kgate stops inside the statement
my $batcher = $node->background_psql('postgres', on_error_stop => 0);
my $batcher_pid = $batcher->query_safe('SELECT pg_backend_pid()');
$batcher->query_until(qr/start/, q{\echo start
INSERT INTO sent (id, q, expect)
SELECT id, 'qa', 'once'
  FROM queue.send_batch('qa', ARRAY(SELECT '{"tag": "batch"}'::jsonb FROM generate_series(1, 50)),
                        dedup_keys => ARRAY(SELECT 'kb' || g FROM generate_series(1, 49) g) || 'kgate'::text) id;
});
wait_until($node,
	qq{SELECT wait_event_type = 'Lock' AND query LIKE '%send_batch%' FROM pg_stat_activity
	   WHERE pid = $batcher_pid},
	'B: the send_batch waits inside the statement, on the uncommitted key');
# meanwhile committed sends go on
send_n('qa', 20, '{"tag": "committed"}');
$offset = -s $node->logfile;
ok(kill('KILL', $batcher_pid), "B: SIGKILL to backend $batcher_pid in the middle of its send_batch");
$faults++;
wait_crash_restart('B', $offset, $batcher_pid);
eval { $open->quit; };
eval { $holder->quit; };
eval { $batcher->quit; };
after_fault('B');
wait_until($node, q{SELECT messages = 0 FROM queue.queues WHERE queue_name = 'qa'}, 'B: the queue is empty');
is(sql(q{SELECT count(*) FROM processed WHERE tag IN ('open', 'holder', 'batch')}),
	'0', 'B: no message of the uncommitted sends exists or took effect');
is(sql(qq{SELECT count(*) FROM processed WHERE tag = 'committed' AND id > $max_before}),
	'20', 'B: the committed sends around the fault all took effect');
# the keys the killed statement and the open transaction had reserved are free
my $k1 = sql(q{INSERT INTO sent SELECT queue.send('qa', '{"tag": "kb1"}', dedup_key => 'kb1'), 'qa', 'once' RETURNING id});
my $kg = sql(q{INSERT INTO sent SELECT queue.send('qa', '{"tag": "kgate"}', dedup_key => 'kgate'), 'qa', 'once' RETURNING id});
cmp_ok($k1, '>', $max_before, 'B: the key of the killed send_batch enqueues a new message');
cmp_ok($kg, '>', $k1, 'B: so does the key of the uncommitted send');
is(sql(q{SELECT queue.send('qa', '{}', dedup_key => 'kb1')}), $k1,
	'B: and the key then deduplicates as usual');
check_ledger('B: after the keys');

# ---- C. kill -9 of the launcher --------------------------------------------------

note 'C. kill -9 of the launcher while a backlog drains';
my @c_ids = send_n('qa', 300, '{"sleep": 0.01, "tag": "c"}');
wait_until($node, q{SELECT count(*) >= 50 FROM processed WHERE tag = 'c'}, 'C: draining');
my $launcher = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'queue launcher'});
like($launcher, qr/^\d+$/, 'C: one launcher');
my $c_done = sql(q{SELECT count(*) FROM processed WHERE tag = 'c'});
$offset = -s $node->logfile;
ok(kill('KILL', $launcher), "C: SIGKILL to the launcher $launcher ($c_done of 300 handled)");
$faults++;
wait_crash_restart('C', $offset, $launcher);
after_fault('C');
cmp_ok(sql(q{SELECT count(*) FROM processed WHERE tag = 'c'}), '==', 300,
	'C: the whole backlog took effect');

# ---- D. immediate shutdown under load -----------------------------------------------

note 'D. immediate shutdown under load';
make_queue('qext');
sql(q{SELECT queue.create('qfifo', fifo => true); SELECT queue.grant('qfifo', 'all', 'app')});
# batches of 10 for 8 groups: a claim that cannot fill its batch from the
# groups' heads (it once walked the whole backlog, and the drain after the
# restart took minutes)
as_app(q{SELECT queue.subscribe('cfifo', 'qfifo', 'handler(queue.message[])', batch_size => 10,
                                max_concurrency => 2)});
# producers: batches and single sends to both queues, every seventh
# transaction rolled back; the ledger rows go with the sends
# $batches: the queue of the batches; $singles: the queue of single sends
# with headers and a group key, if any; $pause: seconds between rounds
sub producer_sql
{
	my ($batches, $singles, $pause, $fifo, $groups) = @_;
	$pause //= 0;
	# batches to a FIFO queue, in groups of this producer's own (so that its
	# send order is the groups' order)
	my $fifo_sql = !$fifo ? '' : qq{
        INSERT INTO sent (id, q, expect)
        SELECT id, '$fifo', 'once'
          FROM queue.send_batch('$fifo', ARRAY(SELECT jsonb_build_object('i', i, 'tag', 'd')
                                                 FROM generate_series(1, 1 + i % 5)),
                                group_key => '$groups' || i % 4) id;};
	my $single = !$singles ? '' : qq{
        INSERT INTO sent (id, q, expect)
        SELECT queue.send('$singles', jsonb_build_object('i', i, 'tag', 'd'),
                          headers => '{"h": 1}', group_key => 'g' || i % 3), '$singles', 'once';};
	return qq{
DO \$\$
DECLARE i int := 0;
BEGIN
    LOOP
        i := i + 1;
        INSERT INTO sent (id, q, expect)
        SELECT id, '$batches', 'once'
          FROM queue.send_batch('$batches', ARRAY(SELECT jsonb_build_object('i', i, 'tag', 'd')
                                                    FROM generate_series(1, 1 + i % 20))) id;$single$fifo_sql
        IF i % 7 = 0 THEN
            ROLLBACK;
        ELSE
            COMMIT;
        END IF;
        PERFORM pg_sleep($pause);
    END LOOP;
END \$\$;
};
}
# external consumers: read + ack + ledger in one transaction; every fifth
# round takes a lease of 1 s and abandons it (delivered again later)
my $consumer_sql = q{
DO $$
DECLARE i int := 0;
BEGIN
    LOOP
        i := i + 1;
        IF i % 5 = 0 THEN
            PERFORM count(*) FROM queue.read('qext', 3, visibility_timeout => '1 second');
        ELSE
            INSERT INTO processed (id, q, attempts, tag)
            SELECT r.id, 'ext:qext', r.attempts, r.payload->>'tag'
              FROM queue.read('qext', 10, wait => '100 milliseconds') r
             WHERE queue.ack('qext', r.id, r.receipt);
        END IF;
        COMMIT;
    END LOOP;
END $$;
};
my @load;
for my $sql (producer_sql('qa', 'qext', 0.002, 'qfifo', 'p1-'), producer_sql('qa', 'qext', 0.002, 'qfifo', 'p2-'),
	$consumer_sql, $consumer_sql)
{
	my $s = $node->background_psql('postgres', on_error_stop => 0);
	$s->query_until(qr/start/, "\\echo start\n$sql");
	push @load, $s;
}
wait_until($node,
	q{SELECT count(*) >= 1000 FROM processed p JOIN sent s USING (id) WHERE s.q = 'qa' AND p.tag = 'd'},
	'D: producers and the drain are running');
wait_until($node, q{SELECT count(*) >= 200 FROM processed WHERE q = 'ext:qext'},
	'D: the external consumers are running');
wait_until($node, q{SELECT count(*) >= 200 FROM processed WHERE q = 'cfifo'},
	'D: the FIFO queue\'s consumer is running');
# leases abandoned for sure (the consumers' own abandoned reads may find the
# queue empty): messages sent and leased in one committed transaction
sql(q{BEGIN;
      INSERT INTO sent (id, q, expect)
      SELECT queue.send('qext', jsonb_build_object('i', -s, 'tag', 'd'), headers => '{"h": 1}'),
             'qext', 'once'
        FROM generate_series(1, 5) s;
      SELECT count(*) FROM queue.read('qext', 100, visibility_timeout => '1 second');
      COMMIT;});
my $d_sent = sql(q{SELECT count(*) FROM sent});
$node->stop('immediate');
$faults++;
pass("D: immediate shutdown with the load running ($d_sent sent so far)");
$node->start;
eval { $_->quit; } for @load;
wait_until($node, q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'queue launcher'},
	'D: the launcher is back');
# the external consumers are gone: the test drains what they left
for (1 .. 50)
{
	sql(ext_drain_sql('qext'));
	last if sql(q{SELECT messages = 0 FROM queue.queues WHERE queue_name = 'qext'}) eq 't';
	usleep(200_000);
}
after_fault('D');
cmp_ok(sql(q{SELECT count(*) FROM processed WHERE q = 'ext:qext' AND attempts > 1}),
	'>', 0, 'D: abandoned leases were delivered again (at-least-once), and took effect once');
is(sql(q{SELECT messages FROM queue.queues WHERE queue_name = 'qext'}), '0',
	'D: the external queue is empty');
is(sql(q{SELECT count(DISTINCT grp) FROM processed WHERE q = 'cfifo'}), '8',
	'D: the FIFO queue had eight groups');
as_app(q{SELECT queue.unsubscribe('cfifo')});

# ---- E. an unlogged queue after a crash ------------------------------------------------

note 'E. an unlogged queue after a crash';
make_queue('qun', unlogged => 1);
make_queue('qd');
as_app(q{SELECT queue.subscribe('cun', 'qun', 'handler(queue.message[])', batch_size => 10);
         SELECT queue.subscribe('cd', 'qd', 'handler(queue.message[])', batch_size => 10);
         SELECT queue.pause('cun'); SELECT queue.pause('cd');});
send_n('qun', 100, '{"tag": "unlogged"}', 'unlogged');
send_n('qd', 100, '{"tag": "durable"}');
is(sql(q{SELECT string_agg(queue_name || ':' || messages, ',' ORDER BY queue_name)
         FROM queue.queues WHERE queue_name IN ('qun', 'qd')}),
	'qd:100,qun:100', 'E: 100 messages wait in each queue');
my $bg = $node->background_psql('postgres');
my $bg_pid = $bg->query_safe('SELECT pg_backend_pid()');
$offset = -s $node->logfile;
ok(kill('KILL', $bg_pid), "E: SIGKILL to backend $bg_pid");
$faults++;
wait_crash_restart('E', $offset, $bg_pid);
eval { $bg->quit; };
my $ready = $node->wait_for_log(qr/database system is ready to accept connections/, $offset);
is(sql(q{SELECT string_agg(queue_name || ':' || messages, ',' ORDER BY queue_name)
         FROM queue.queues WHERE queue_name IN ('qun', 'qd')}),
	'qd:100,qun:0', 'E: the unlogged queue is empty, the durable one intact');
is(sql(q{SELECT count(*) FROM queue.read('qun', 1000)}), '0', 'E: the unlogged queue reads nothing');
# what the crash took is what the contract says it may take, nothing more
sql(q{UPDATE sent SET expect = 'lost_by_crash' WHERE expect = 'unlogged'
      AND NOT EXISTS (SELECT FROM processed p WHERE p.id = sent.id)});
is(sql(q{SELECT count(*) FROM sent WHERE expect = 'lost_by_crash'}), '100',
	'E: exactly the 100 unlogged messages are gone');
as_app(q{SELECT queue.resume('cun'); SELECT queue.resume('cd');});
send_n('qun', 50, '{"tag": "unlogged after"}');
after_fault('E');
is(sql(q{SELECT count(*) FROM processed WHERE tag = 'unlogged after'}), '50',
	'E: the unlogged queue\'s consumer handles new messages');
# a few maintenance intervals more with the workers busy: no error loop
my $launcher_e = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'queue launcher'});
send_n('qun', 30, '{"sleep": 0.05, "tag": "unlogged later"}');
send_n('qd', 30, '{"sleep": 0.05, "tag": "durable later"}');
sleep(3);
check_ledger('E: three seconds later');
is(sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'queue launcher'}), $launcher_e,
	'E: the launcher kept running');
my $log_e = slurp_file($node->logfile, $ready);
my @errors_e = $log_e =~ /^.*(?:ERROR|FATAL|PANIC):.*$/mg;
is(scalar(@errors_e), 0, 'E: no error in the log since the restart (no error loop)')
  or diag(join("\n", @errors_e[ 0 .. ($#errors_e < 9 ? $#errors_e : 9) ]));
my $launcher_starts = () = $log_e =~ /queue launcher started/g;
cmp_ok($launcher_starts, '<=', 1, 'E: the launcher started once since the restart');
sql(q{SELECT queue.unsubscribe('cun'); SELECT queue.unsubscribe('cd')});

# ---- F. handlers that misbehave ---------------------------------------------------------

note 'F. handlers that raise, return the wrong thing, sleep forever, COMMIT';
make_queue('qh', dlq => 'qh_dlq', max_attempts => 2);
make_queue('qf', dlq => 'qf_dlq', max_attempts => 1);
as_app(q{BEGIN;
SELECT queue.subscribe('ch', 'qh', 'handler(queue.message[])', batch_size => 10,
                       retry_backoff => '10ms', max_retry_backoff => '50ms');
SELECT queue.pause('ch');
SELECT queue.subscribe('cf', 'qf', 'handler(queue.message[])', batch_size => 1,
                       handler_timeout => '500ms', retry_backoff => '10ms');
COMMIT;});
$offset = -s $node->logfile;
my %bad;
for my $flag (qw(raise commit rollback fail_me))
{
	# the failed message also returns ids not in its batch, and itself twice
	my $extra = $flag eq 'fail_me' ? ', "strangers": true' : '';
	($bad{$flag}) = send_n('qh', 1, qq{{"$flag": true, "tag": "$flag"$extra}}, 'dead');
}
send_n('qh', 40, '{"tag": "good"}');
# a batch whose handler returns ids that are not in it (and NULL)
send_n('qh', 5, '{"strangers": true, "tag": "strangers"}');
($bad{forever}) = send_n('qf', 1, '{"forever": true, "tag": "forever"}', 'dead');
send_n('qf', 3, '{"tag": "after forever"}');
as_app(q{SELECT queue.resume('ch')});
wait_until($node, q{SELECT messages = 4 FROM queue.queues WHERE queue_name = 'qh_dlq'},
	'F: four poison messages reach the dead-letter queue');
wait_until($node, q{SELECT messages = 1 FROM queue.queues WHERE queue_name = 'qf_dlq'},
	'F: the handler that sleeps forever is cancelled, its message dead-lettered');
after_fault('F');
my %dead = map { my ($id, $a, $e) = split /\|/; ($id => [ $a, $e ]) } split /\n/,
  sql(q{SELECT id, attempts, last_error FROM queue.read('qh_dlq', 10)
        UNION ALL SELECT id, attempts, last_error FROM queue.read('qf_dlq', 10)});
my %want = (
	raise => qr/^P0001: poison message/,
	commit => qr/^2D000: invalid transaction termination/,
	rollback => qr/^2D000: invalid transaction termination/,
	fail_me => qr/^the handler reported the message as failed$/,
	forever => qr/^57014: canceling statement due to statement timeout/);
for my $flag (sort keys %want)
{
	my $d = $dead{ $bad{$flag} } // [ '', '' ];
	like($d->[1], $want{$flag}, "F: $flag: dead-lettered with its error");
	# attempts counts deliveries; the read above is one more
	is($d->[0], $flag eq 'forever' ? 2 : 3, "F: $flag: after max_attempts deliveries");
}
is(sql(q{SELECT count(*) FROM processed WHERE tag IN ('good', 'strangers', 'after forever')}),
	'48', 'F: the good messages of the same batches took effect, once each');
ok($node->log_contains(qr/returned 3 ids that are not in its batch/, $offset),
	'F: ids not in the batch (NULL, -1, 2^63-1) were ignored with a warning');
ok(!$node->log_contains(qr/terminated by signal|PANIC|TRAP:|all server processes terminated/, $offset),
	'F: no backend crashed');
as_app(q{SELECT queue.unsubscribe('ch'); SELECT queue.unsubscribe('cf')});

# ---- G. DROP DATABASE and DROP EXTENSION with busy consumers ----------------------------

note 'G. DROP DATABASE and DROP EXTENSION with busy consumers';
my $g_ids_before = sql(q{SELECT count(*) FROM processed});
# one consumer busy in postgres all along: the drops must not disturb it
send_n('qa', 100, '{"sleep": 0.02, "tag": "g"}');
for my $db (qw(gdb gext))
{
	sql("CREATE DATABASE $db");
	$node->safe_psql($db, $setup_sql);
	$node->safe_psql($db,
		q{SELECT queue.create('qg'); SELECT queue.grant('qg', 'all', 'app');
		  SET ROLE app; SELECT queue.subscribe('cg', 'qg', 'handler(queue.message[])', batch_size => 1)});
	send_n('qg', 200, '{"sleep": 0.2}', 'once', $db);
	wait_until($node,
		q{SELECT count(*) = 1 FROM queue.workers WHERE consumer_name = 'cg' AND state = 'handling'},
		"G: $db: a worker is busy in its handler", $db);
}
my ($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE gdb', timeout => 60);
$faults++;
is($ret, 0, 'G: DROP DATABASE with a busy worker succeeds') or diag($err);
($ret, $out, $err) = $node->psql('gext', 'DROP EXTENSION queue CASCADE', timeout => 60);
$faults++;
is($ret, 0, 'G: DROP EXTENSION with a busy worker succeeds') or diag($err);
wait_until($node,
	q{SELECT count(*) = 0 FROM pg_stat_activity
	  WHERE backend_type = 'queue drain worker' AND datname IN ('gdb', 'gext')},
	'G: their workers are gone');
# (the schema queue itself stays, empty: CREATE EXTENSION made it for the
# control file's schema, so it is not a member of the extension)
is( $node->safe_psql('gext',
		q{SELECT count(*) FROM pg_namespace n LEFT JOIN pg_proc p ON p.pronamespace = n.oid
		   WHERE n.nspname = 'queue_internal' OR p.oid IS NOT NULL AND n.nspname = 'queue'}),
	'0', 'G: the extension\'s objects are gone');
$node->safe_psql('gext', q{CREATE EXTENSION queue; SELECT queue.create('ping')});
serves('G: gext, the extension created again', 'gext');
after_fault('G');
cmp_ok(sql(q{SELECT count(*) FROM processed WHERE tag = 'g'}), '==', 100,
	'G: the consumer of the other database drained on');

# ---- H. max_worker_processes exhausted ------------------------------------------------------

note 'H. max_worker_processes exhausted';
# 4 slots: the logical replication launcher and the queue launcher take two,
# so three consumers that want two workers each share what is left
$node->stop;
$node->append_conf('postgresql.conf', 'max_worker_processes = 4');
$node->start;
wait_until($node, q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'queue launcher'},
	'H: the launcher runs with max_worker_processes = 4');
for my $c (qw(h1 h2 h3))
{
	make_queue("q$c");
	as_app(qq{SELECT queue.subscribe('$c', 'q$c', 'handler(queue.message[])', batch_size => 5,
	                                 max_concurrency => 2)});
}
$offset = -s $node->logfile;
send_n("q$_", 50, '{"sleep": 0.01, "tag": "h"}') for qw(h1 h2 h3);
$faults++;
after_fault('H');
is(sql(q{SELECT count(*) FROM processed WHERE tag = 'h'}), '150',
	'H: the three backlogs took effect');
ok($node->log_contains(qr/could not start a worker: no background worker slot is free/, $offset),
	'H: the launcher did run out of worker slots');
ok(!$node->log_contains(qr/terminated by signal|PANIC|TRAP:/, $offset), 'H: nothing crashed');

my ($n_sent, $n_processed) = split /\|/,
  sql(q{SELECT (SELECT count(*) FROM sent) || '|' || (SELECT count(*) FROM processed)});
$node->stop;

# ---- I. a streaming standby promoted under load ----------------------------------------

note 'I. a synchronous standby promoted under load';
my $primary = PostgreSQL::Test::Cluster->new('primary040');
$primary->init(allows_streaming => 1);
$primary->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'queue'
queue.max_workers = 2
queue.worker_idle_timeout = '2s'
log_line_prefix = '%m [%p] %q%a '
});
$primary->start;
$primary->safe_psql('postgres', 'CREATE ROLE app LOGIN');
$primary->safe_psql('postgres', $setup_sql);
$node = $primary;
make_queue('ping');
make_queue('qp');
as_app(q{SELECT queue.subscribe('cp', 'qp', 'handler(queue.message[])', batch_size => 100,
                                max_concurrency => 2)});
$primary->backup('backup');
my $standby = PostgreSQL::Test::Cluster->new('standby040');
$standby->init_from_backup($primary, 'backup', has_streaming => 1);
$standby->start;
$primary->append_conf('postgresql.conf', qq{synchronous_standby_names = '*'});
$primary->reload;
wait_until($node, q{SELECT sync_state = 'sync' FROM pg_stat_replication},
	'I: the standby replicates synchronously');
@load = ();
for (1 .. 2)
{
	my $s = $primary->background_psql('postgres', on_error_stop => 0);
	$s->query_until(qr/start/, "\\echo start\n" . producer_sql('qp', undef, 0.01));
	push @load, $s;
}
wait_until($node, q{SELECT count(*) >= 500 FROM processed}, 'I: the primary sends and drains');
# the standby runs no launcher and no worker, although messages replicate
my $busy = 0;
for (1 .. 10)
{
	$busy += $standby->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity
		  WHERE backend_type IN ('queue launcher', 'queue drain worker', 'queue maintenance')});
	usleep(100_000);
}
is($busy, 0, 'I: no launcher nor worker on the standby, sampled over 1 s');
my ($acked, $backlog) = split /\|/, $primary->safe_psql('postgres',
	q{SELECT (SELECT count(*) FROM sent) || '|' || (SELECT messages FROM queue.queues WHERE queue_name = 'qp')});
note "I: $backlog messages queued on the primary when it stops";
$primary->stop('immediate');
$faults++;
eval { $_->quit; } for @load;
$standby->promote;
$node = $standby;
wait_until($node, q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'queue launcher'},
	'I: once promoted, the launcher starts');
cmp_ok(sql('SELECT count(*) FROM sent'), '>=', $acked,
	"I: every send the primary had committed before it went down is there ($acked)");
send_n('qp', 100, '{"tag": "promoted"}');
after_fault('I');
is(sql(q{SELECT count(*) FROM processed WHERE tag = 'promoted'}), '100',
	'I: the promoted standby\'s workers handle new messages');
my ($i_sent, $i_processed) = split /\|/,
  sql(q{SELECT (SELECT count(*) FROM sent) || '|' || (SELECT count(*) FROM processed)});
$n_sent += $i_sent;
$n_processed += $i_processed;
$standby->stop;

note sprintf('040_faults: %d faults, %d messages sent, %d effects, %.0f s',
	$faults, $n_sent, $n_processed, time - $t_start);
done_testing();
