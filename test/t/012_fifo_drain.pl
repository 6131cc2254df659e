# 012_fifo_drain.pl: a FIFO queue drained by 8 in-server workers.
#
# One server with queue.max_workers = 8 and a consumer with max_concurrency
# 8 and batch_size 10 on a queue created with fifo => true.  Eight producer
# sessions send, concurrently, 200 groups of 20 messages each (a producer
# owns 25 groups and sends them three at a time, interleaved at random,
# each group in order, committing every 10 sends) and about 10% messages
# without a group key, while the consumer drains.  One message in four has
# a priority (1 to 3), so claims take the priority path too; segments of
# 64 kB make a group's messages span several segment tables.  In 20 groups
# message 7 fails on its first delivery: in 10 the handler raises, in 10 it
# reports the message as failed.
#
# The handler, owned by an ordinary role, writes a ledger row per message
# it handles, inside the drain's transaction, so a row exists exactly when
# a handling committed: the message's group and place in it, ord (a
# sequence's nextval, taken when the handler handles it: the handling
# order), when the handler call started, its top-level transaction and
# process, and pred_seen: whether the group's previous message was already
# in the ledger (committed) when the handler came to this one.  With
# track_commit_timestamp on, each handling transaction's commit time is
# known too.  From that ledger:
#
# - exactly once: the ledger holds every message sent, by id, each once,
#   and the queue is empty;
# - order: in every group, the handling order (ord) is the send order;
# - one at a time: in every group, each message's handling began only after
#   the previous message's handling had committed, checked twice, without
#   clocks (pred_seen: the handler saw the previous row committed) and with
#   them (the call started after the previous transaction's commit
#   timestamp).  Message k's handling so never overlaps message k-1's, which
#   never overlaps k-2's, ...: no two messages of a group were ever in
#   flight in two workers at once;
# - groups run in parallel: several workers handled messages, and
#   transactions handling messages of groups overlapped in time (a lock or
#   a head rule that serialized the groups would fail this);
# - a failed message holds its group back: the failing messages committed
#   on their second delivery, with the first one's error, at least
#   retry_backoff (300 ms) after the previous message of their group
#   committed, and the group's later messages came after them (by the order
#   and one-at-a-time checks above); queue.consumers counts 20 failures;
# - a stuck group holds back nothing else: while the handler of a group's
#   first message is held at a gate, messages without a group key and of
#   another group sent after the stuck group's next two messages are
#   handled, and those two are not; opened, the gate lets the stuck group
#   go on, in order;
# - an external reader holding a group's first message in an open
#   transaction holds back the drain on that group's second message only,
#   without priorities and with them; once the reader acks the first and
#   commits (no lease was written), the waiting workers are woken and
#   handle the second at once.
#
# The last one failed while the FIFO priority claim sorted after its filter
# (its ORDER BY priority named the output column priority::integer, which no
# index serves): the reader's queue.read(1) took the group lock of every
# visible prioritized head, and the drain handled none of the other groups
# until the reader's transaction ended.
#
# Against a queue created without fifo => true, the order, one-at-a-time,
# stuck-group and reader checks fail (checked by hand, not here).

use strict;
use warnings;

use IPC::Run ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use FindBin;
use lib $FindBin::RealBin;
use QueueTest;
use Test::More;
use Time::HiRes qw(time);

my $groups = 200;          # groups of the main phase, 0 .. 199
my $per_group = 20;        # messages per group, seq 1 .. 20
my $producers = 8;         # producer sessions; producer p owns groups p, p + 8, ...
my $fail_seq = 7;          # the message that fails once in the failing groups
my $retry_backoff = 0.3;   # seconds

my $node = queue_node(
	'fifo_drain', qq{
max_worker_processes = 20
queue.max_workers = 8
queue.worker_idle_timeout = '60s'
track_commit_timestamp = on
queue.segment_size = '64kB'
log_line_prefix = '%m [%p] %q%a '
});

sub sql { return $node->safe_psql('postgres', shift); }

my $t_start = time;

# The ledger, the handler, and what the producers sent.  A message's payload
# holds its group (grp, NULL without a group key) and its place in the group
# (seq); "fail" makes its first delivery fail ("raise": the handler raises;
# "return": it returns the id as failed); "gate" holds the handler until a
# row is in gate_open, showing advisory lock 4242 meanwhile.
sql(q{
CREATE ROLE app LOGIN;
CREATE EXTENSION queue;
CREATE SEQUENCE ledger_ord;
CREATE TABLE ledger (
    ord         bigint NOT NULL,
    id          bigint NOT NULL,
    grp         int,
    seq         int,
    phase       text,
    priority    int,
    attempts    int,
    last_error  text,
    pred_seen   bool,
    call_start  timestamptz,
    at          timestamptz DEFAULT clock_timestamp(),
    xact        bigint DEFAULT txid_current(),
    pid         int DEFAULT pg_backend_pid());
-- not unique: a message handled twice must show, not fail its handler
CREATE INDEX ON ledger (grp, seq);
CREATE TABLE gate_open (x int);
CREATE TABLE sent (id bigint PRIMARY KEY, grp int, seq int, phase text);
GRANT ALL ON ledger, gate_open TO app;
GRANT USAGE ON SEQUENCE ledger_ord TO app;

CREATE FUNCTION handler(msgs queue.message[]) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
    m queue.message;
    g int;
    s int;
    failed bigint[] := '{}';
BEGIN
    FOREACH m IN ARRAY msgs LOOP
        g := (m.payload->>'grp')::int;
        s := (m.payload->>'seq')::int;
        IF m.payload ? 'gate' THEN
            PERFORM pg_advisory_xact_lock_shared(4242);
            WHILE NOT EXISTS (SELECT FROM gate_open) LOOP
                PERFORM pg_sleep(0.01);
            END LOOP;
        END IF;
        IF m.payload->>'fail' = 'raise' AND m.attempts = 1 THEN
            RAISE EXCEPTION 'fails once: group % seq %', g, s;
        END IF;
        IF m.payload->>'fail' = 'return' AND m.attempts = 1 THEN
            failed := failed || m.id;
            CONTINUE;
        END IF;
        -- each statement has a new snapshot: pred_seen is whether the
        -- previous message's handling had committed by now
        INSERT INTO ledger (ord, id, grp, seq, phase, priority, attempts, last_error, pred_seen,
                            call_start)
        VALUES (nextval('ledger_ord'), m.id, g, s, m.payload->>'phase', m.priority, m.attempts,
                m.last_error,
                g IS NULL OR s = 1
                OR EXISTS (SELECT FROM ledger l WHERE l.grp = g AND l.seq = s - 1),
                t0);
        PERFORM pg_sleep(0.001);
    END LOOP;
    RETURN failed;
END $$;
ALTER FUNCTION handler(queue.message[]) OWNER TO app;

-- Producer p: its groups p, p + nprod, ... three at a time, the next
-- message of a random one of them each time (or, one time in ten, a
-- message without a group key), committing every 10 sends.  One message
-- in four has a priority (1 to 3), which must not change a group's order.
CREATE PROCEDURE produce(p int, nprod int, ngroups int, nseq int, fail_seq int)
LANGUAGE plpgsql AS $$
DECLARE
    pending int[] := ARRAY(SELECT generate_series(p, ngroups - 1, nprod));
    active int[] := '{}';
    nxt int[] := '{}';
    i int;
    g int;
    s int;
    n int := 0;
    id bigint;
BEGIN
    PERFORM setseed(p::float8 / (nprod + 1));
    LOOP
        WHILE cardinality(active) < 3 AND cardinality(pending) > 0 LOOP
            active := active || pending[1];
            nxt := nxt || 1;
            pending := pending[2:];
        END LOOP;
        EXIT WHEN cardinality(active) = 0;
        IF random() < 0.1 THEN
            id := queue.send('fifo', jsonb_build_object('grp', NULL, 'phase', 'main'),
                priority => CASE WHEN random() < 0.25 THEN 1 + floor(random() * 3)::int ELSE 0 END);
            INSERT INTO sent VALUES (id, NULL, NULL, 'main');
        ELSE
            i := 1 + floor(random() * cardinality(active))::int;
            g := active[i];
            s := nxt[i];
            id := queue.send('fifo',
                jsonb_build_object('grp', g, 'seq', s, 'phase', 'main')
                || CASE WHEN s = fail_seq AND g % 20 = 1 THEN '{"fail": "raise"}'::jsonb
                        WHEN s = fail_seq AND g % 20 = 11 THEN '{"fail": "return"}'
                        ELSE '{}' END,
                group_key => 'g' || g,
                priority => CASE WHEN random() < 0.25 THEN 1 + floor(random() * 3)::int ELSE 0 END);
            INSERT INTO sent VALUES (id, g, s, 'main');
            IF s = nseq THEN
                active := active[:i - 1] || active[i + 1:];
                nxt := nxt[:i - 1] || nxt[i + 1:];
            ELSE
                nxt[i] := s + 1;
            END IF;
        END IF;
        n := n + 1;
        IF n % 10 = 0 THEN
            COMMIT;
        END IF;
    END LOOP;
END $$;

SELECT queue.create('fifo', fifo => true);
SELECT queue.grant('fifo', 'all', 'app');
});
$node->safe_psql('postgres', q{SET ROLE app;
SELECT queue.subscribe('fifo_c', 'fifo', 'handler(queue.message[])',
                       batch_size => 10, max_concurrency => 8,
                       retry_backoff => '300ms', handler_timeout => '60s')});

# --- main phase: 8 producers, 8 workers ---------------------------------------------

note 'main phase';
my @prod;
for my $p (0 .. $producers - 1)
{
	my %h = (out => '', err => '');
	$h{h} = IPC::Run::start(
		[
			'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
			'-c', "CALL produce($p, $producers, $groups, $per_group, $fail_seq)"
		],
		'>', \$h{out}, '2>', \$h{err},
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	push @prod, \%h;
}
my $producers_ok = 1;
for my $h (@prod)
{
	$h->{h}->finish;
	if ($h->{h}->result != 0)
	{
		$producers_ok = 0;
		diag("producer failed: $h->{err}");
	}
}
ok($producers_ok, "$producers concurrent producers sent their groups");
my $t_sent = time;
my $nsent = sql(q{SELECT count(*) FROM sent});
is(sql(q{SELECT count(*) FROM sent WHERE grp IS NOT NULL}),
	$groups * $per_group, "$groups groups of $per_group messages sent, and "
	  . ($nsent - $groups * $per_group) . ' without a group key');

wait_until($node,
	q{SELECT (SELECT count(*) FROM ledger) >= (SELECT count(*) FROM sent)
	     AND (SELECT messages = 0 FROM queue.queues WHERE queue_name = 'fifo')},
	'the consumer drains the queue');
note sprintf('drained %.1f s after the producers were done, %.1f s after the start',
	time - $t_sent, time - $t_start);

# exactly once
is( sql(q{SELECT count(*) || ',' || count(DISTINCT id) FROM ledger WHERE phase = 'main'}),
	"$nsent,$nsent", 'every message was handled, each once');
is( sql(q{SELECT count(*) FROM sent s FULL JOIN (SELECT * FROM ledger WHERE phase = 'main') l USING (id)
		  WHERE s.id IS NULL OR l.id IS NULL
		     OR s.grp IS DISTINCT FROM l.grp OR s.seq IS DISTINCT FROM l.seq}),
	'0', 'the ledger holds exactly the messages sent, by id, group and place');

# order
my $out_of_order = sql(q{
SELECT count(*) FROM (
    SELECT seq, row_number() OVER (PARTITION BY grp ORDER BY ord) AS k
    FROM ledger WHERE phase = 'main' AND grp IS NOT NULL) o
WHERE seq <> k});
is($out_of_order, '0', 'in every group, messages were handled in send order');

# one at a time: without clocks ...
is(sql(q{SELECT count(*) FROM ledger WHERE phase = 'main' AND NOT pred_seen}),
	'0',
	'in every group, each message\'s handler found the previous message\'s handling committed');

# ... and with them.  A message handled in its predecessor's transaction (a
# batch holding two messages of a group) only needs to come after it.
sql(q{
CREATE VIEW handled AS
SELECT l.*, pg_xact_commit_timestamp((l.xact % 4294967296)::text::xid) AS committed
FROM ledger l});
my ($overlaps, $same_batch, $min_gap) = split /\|/, sql(q{
SELECT count(*) FILTER (WHERE c.xact <> p.xact AND c.call_start <= p.committed),
       count(*) FILTER (WHERE c.xact = p.xact),
       min(extract(epoch FROM c.call_start - p.committed)) FILTER (WHERE c.xact <> p.xact)
FROM handled c JOIN handled p ON p.grp = c.grp AND p.seq = c.seq - 1
WHERE c.phase = 'main'});
is($overlaps, '0',
	'in every group, each message\'s handler call began after the previous message\'s transaction committed');
is(sql(q{SELECT count(*) FROM handled WHERE committed IS NULL}),
	'0', 'every handling transaction has a commit timestamp');
note "pairs of consecutive messages of a group in one batch: $same_batch; "
  . "least gap between a commit and the next handler call of its group: ${min_gap}s";

# groups run in parallel
my ($pids, $batches) =
  split /\|/, sql(q{SELECT count(DISTINCT pid), count(DISTINCT xact) FROM ledger WHERE phase = 'main'});
cmp_ok($pids, '>', 1, "more than one worker handled messages ($pids)");
my $parallel = sql(q{
WITH x AS (SELECT xact, min(call_start) AS s, min(committed) AS e
           FROM handled WHERE phase = 'main' AND grp IS NOT NULL GROUP BY xact)
SELECT max((SELECT count(*) FROM x y WHERE y.s <= x.s AND y.e > x.s)) FROM x});
cmp_ok($parallel, '>=', 2,
	"transactions handling groups overlapped in time: groups ran in parallel (at most $parallel at once)");
my $prioritized = sql(
	q{SELECT count(*) FROM ledger WHERE phase = 'main' AND grp IS NOT NULL AND priority > 0});
note "$batches batches in $pids workers, up to $parallel with grouped messages at once; "
  . "$prioritized grouped messages had a priority; segment ring (head/tail): "
  . sql(q{SELECT head || '/' || tail FROM queue_internal.segment_ring});

# a failed message holds its group back
my $nfail = grep { $_ % 20 == 1 || $_ % 20 == 11 } 0 .. $groups - 1;
is( sql(qq{SELECT count(*) FROM ledger WHERE phase = 'main' AND seq = $fail_seq
		   AND grp % 20 IN (1, 11) AND attempts = 2}),
	$nfail, "the $nfail failing messages committed on their second delivery");
is( sql(qq{SELECT count(*) FROM ledger WHERE phase = 'main' AND seq = $fail_seq
		   AND (grp % 20 = 1 AND last_error LIKE '%fails once: group ' || grp || ' seq $fail_seq'
		     OR grp % 20 = 11 AND last_error = 'the handler reported the message as failed')}),
	$nfail, '... with the error of the first one');
is( sql(q{SELECT count(*) FROM ledger WHERE phase = 'main' AND attempts <> 1
		  AND NOT coalesce(grp % 20 IN (1, 11) AND seq = } . $fail_seq . ', false)'),
	'0', 'every other message committed on its first delivery');
my $min_wait = sql(qq{
SELECT min(extract(epoch FROM c.call_start - p.committed))
FROM handled c JOIN handled p ON p.grp = c.grp AND p.seq = c.seq - 1
WHERE c.phase = 'main' AND c.seq = $fail_seq AND c.grp % 20 IN (1, 11)});
cmp_ok($min_wait, '>=', $retry_backoff,
	"their retry came retry_backoff or more after the previous message of the group ($min_wait s)");
is(sql(q{SELECT failures FROM queue.consumers WHERE consumer_name = 'fifo_c'}),
	$nfail, "queue.consumers counts $nfail failures");

# --- a stuck group holds back nothing else ---------------------------------------------

note 'stuck group';
cmp_ok(sql(q{SELECT count(*) FROM queue.workers WHERE consumer_name = 'fifo_c'}),
	'>=', 2, 'the consumer still has idle workers');
# group 1000's first message is held at the gate
my $stuck_id = sql(q{
SELECT queue.send('fifo', '{"grp": 1000, "seq": 1, "phase": "stuck", "gate": true}', group_key => 'g1000')});
wait_until($node,
	q{SELECT count(*) = 1 FROM pg_locks l JOIN queue.workers w USING (pid)
	  WHERE l.locktype = 'advisory' AND l.objid = 4242 AND l.granted},
	'stuck: a worker\'s handler is held at the gate with group 1000\'s first message');
# then, in this order: group 1000's next two, 30 without a key, group 1001
sql(q{
BEGIN;
SELECT queue.send('fifo', jsonb_build_object('grp', 1000, 'seq', s, 'phase', 'stuck'), group_key => 'g1000')
FROM generate_series(2, 3) s;
SELECT queue.send('fifo', '{"grp": null, "phase": "free"}') FROM generate_series(1, 30);
SELECT queue.send('fifo', jsonb_build_object('grp', 1001, 'seq', s, 'phase', 'free'), group_key => 'g1001')
FROM generate_series(1, 5) s;
COMMIT;});
wait_until($node, q{SELECT count(*) = 35 FROM ledger WHERE phase = 'free'},
	'stuck: the 30 messages without a key and group 1001, sent after it, are handled');
is(sql(q{SELECT count(*) FROM gate_open}), '0', 'stuck: ... while the gate is still closed');
is(sql(q{SELECT count(*) FROM ledger WHERE grp = 1000}),
	'0', 'stuck: group 1000\'s second and third messages, sent before them, are not handled');
is( sql(q{SELECT string_agg(seq::text, ',' ORDER BY ord) FROM ledger WHERE grp = 1001}),
	'1,2,3,4,5', 'stuck: group 1001 is handled in order');
sql(q{INSERT INTO gate_open VALUES (1)});
wait_until($node, q{SELECT count(*) = 3 FROM ledger WHERE grp = 1000},
	'stuck: once the gate opens, the stuck group is handled');
is( sql(q{SELECT string_agg(seq || ':' || pred_seen, ',' ORDER BY ord) FROM ledger WHERE grp = 1000}),
	'1:true,2:true,3:true', 'stuck: in order, one at a time');
is(sql(qq{SELECT count(*) FROM ledger WHERE grp = 1000 AND seq = 1 AND id = $stuck_id}),
	'1', 'stuck: the gated message is handled once');

# --- an external reader holding a group's head -------------------------------------------

# The consumer is paused while the messages are sent, so that the reader
# (a session reading in an open transaction) takes a group's first message
# before the drain sees any; then the consumer resumes.
my $reader = $node->background_psql('postgres');

sub pause_consumer
{
	my ($what) = @_;
	$node->safe_psql('postgres', q{SET ROLE app; SELECT queue.pause('fifo_c')});
	wait_until($node, q{SELECT count(*) = 0 FROM queue.workers WHERE consumer_name = 'fifo_c'},
		"$what: the paused consumer's workers leave");
	return;
}

sub resume_consumer
{
	$node->safe_psql('postgres', q{SET ROLE app; SELECT queue.resume('fifo_c')});
	return;
}

# Reads one message in the reader's open transaction: (id, receipt, group).
sub reader_takes_one
{
	$reader->query_safe('BEGIN');
	return split /,/,
	  $reader->query_safe(
		q{SELECT id || ',' || receipt || ',' || (payload->>'grp') FROM queue.read('fifo', 1)});
}

# Polls a query for up to $secs seconds; true when it returned 't'.
sub true_within
{
	my ($query, $secs) = @_;
	my $deadline = time + $secs;
	while (time < $deadline)
	{
		return 1 if sql($query) eq 't';
		Time::HiRes::sleep(0.1);
	}
	return 0;
}

note 'a reader holding a group';
pause_consumer('reader');
sql(q{
BEGIN;
SELECT queue.send('fifo', jsonb_build_object('grp', 2000, 'seq', s, 'phase', 'reader'), group_key => 'g2000')
FROM generate_series(1, 2) s;
SELECT queue.send('fifo', jsonb_build_object('grp', g, 'seq', 1, 'phase', 'reader'), group_key => 'g' || g)
FROM generate_series(2001, 2020) g;
COMMIT;});
my ($rid, $receipt, $rgrp) = reader_takes_one();
is($rgrp, '2000', 'reader: the reader holds group 2000\'s first message, in an open transaction');
resume_consumer();
wait_until($node, q{SELECT count(*) = 20 FROM ledger WHERE grp BETWEEN 2001 AND 2020},
	'reader: the drain handles the 20 other groups meanwhile');
is(sql(q{SELECT count(*) FROM ledger WHERE grp = 2000}),
	'0', 'reader: but not group 2000\'s second message');
$reader->query_safe(qq{SELECT queue.ack('fifo', $rid, $receipt)});
$reader->query_safe('COMMIT');
# the commit that freed the group wakes the waiting workers
ok( true_within(q{SELECT count(*) = 1 FROM ledger WHERE grp = 2000}, 5),
	'reader: once the reader acked the first message and committed, waiting workers handle the second within 5 s');
is(sql(q{SELECT count(*) FROM ledger WHERE grp = 2000 AND seq = 2}),
	'1', 'reader: group 2000\'s second message is handled, once');

note 'a reader holding a group, with priorities';
pause_consumer('reader, priorities');
sql(q{
BEGIN;
SELECT queue.send('fifo', jsonb_build_object('grp', 3000, 'seq', s, 'phase', 'reader'), group_key => 'g3000',
                  priority => 9)
FROM generate_series(1, 2) s;
SELECT queue.send('fifo', jsonb_build_object('grp', g, 'seq', 1, 'phase', 'reader'), group_key => 'g' || g,
                  priority => 1)
FROM generate_series(3001, 3020) g;
COMMIT;});
($rid, $receipt, $rgrp) = reader_takes_one();
is($rgrp, '3000', 'reader, priorities: the reader holds group 3000\'s first message (the highest priority)');
resume_consumer();
ok( true_within(q{SELECT count(*) = 20 FROM ledger WHERE grp BETWEEN 3001 AND 3020}, 10),
	'reader, priorities: the drain handles the 20 other groups meanwhile');
is(sql(q{SELECT count(*) FROM ledger WHERE grp = 3000}),
	'0', 'reader, priorities: but not group 3000\'s messages');
# a rollback wakes the workers: the reader's message is theirs again
$reader->query_safe('ROLLBACK');
wait_until($node, q{SELECT count(*) = 22 FROM ledger WHERE grp BETWEEN 3000 AND 3020},
	'reader, priorities: once the reader rolls back, every message is handled');
is(sql(q{SELECT string_agg(seq::text, ',' ORDER BY ord) FROM ledger WHERE grp = 3000}),
	'1,2', 'reader, priorities: group 3000 in order');
$reader->quit;

wait_until($node, q{SELECT messages = 0 FROM queue.queues WHERE queue_name = 'fifo'},
	'the queue is empty');
is(sql(q{SELECT count(*) - count(DISTINCT id) FROM ledger}), '0', 'no message handled twice');

ok(!$node->log_contains(qr/PANIC|TRAP:|terminated by signal/), 'no crash in the server log');
note sprintf('012_fifo_drain took %.0f s', time - $t_start);
$node->safe_psql('postgres', q{SET ROLE app; SELECT queue.unsubscribe('fifo_c')});
$node->stop;
done_testing();
