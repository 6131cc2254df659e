
# 004_segments.pl: recycling segments loses nothing and delivers nothing
# twice, under load, with an old snapshot held, and across crashes.
#
# Part 1, a ledger under load.  Tiny segments (queue.segment_size = 16kB,
# queue.segment_age = 50ms) make the queue rotate and recycle many times a
# second while pgbench clients send (some with a delay), read and ack in one
# transaction, read and ack in a later one (leases written in between),
# read and nack with a delay (stragglers left behind in old segments), and
# call queue.recycle by hand.  Every send records its id in the same
# transaction, every delivery its (id, attempts), every successful ack its
# id, each under a primary key: a message delivered twice under the same
# attempt, or acked twice, makes a client fail.  All the while a separate
# session holds a REPEATABLE READ snapshot open.  At the end, after a drain,
# the acked ids are exactly the sent ids, the queue is empty, the tail of
# the ring moved on many times while the snapshot was held, and that
# session's snapshot was still open throughout.
#
# Part 2, crashes during a recycle.  The first segment holds messages in
# flight, delayed ones and one visible message, which keeps it from being
# drained (so that no automatic recycling gets there first).  A transaction
# pops that message, recycles the segment (copying its last messages
# forward, truncating it) and is cut short before it commits, by SIGKILL of
# its backend, then by an immediate shutdown; after each restart the queue
# holds the same messages with the same leases, and the ring is where it
# was.  The same recycle, committed, survives an immediate shutdown with the
# messages moved and their leases intact.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use FindBin;
use lib $FindBin::RealBin;
use QueueTest;
use Test::More;

# ---- part 1: the ledger ------------------------------------------------------

my $node = queue_node(
	'segments', qq{
queue.segment_size = 16kB
queue.segment_age = 50ms
max_connections = 40
});

sub sql { return $node->safe_psql('postgres', shift); }

sql('CREATE EXTENSION queue');
my $qid = sql(q{SELECT queue.create('t')});
sql(q{CREATE TABLE sent (id bigint PRIMARY KEY)});
sql(q{CREATE TABLE delivered (id bigint, attempts int, PRIMARY KEY (id, attempts))});
sql(q{CREATE TABLE acked (id bigint PRIMARY KEY)});

# An old snapshot, held open for the whole run.
my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
$holder->query_safe('SELECT count(*) FROM sent');
my $holder_pid = $holder->query_safe('SELECT pg_backend_pid()');
my $tail_before = sql(qq{SELECT tail FROM queue_internal.segment_ring WHERE queue_id = $qid});

$node->pgbench(
	'-n -M prepared -c 6 -j 3 -T 8 -h ' . $node->host . ' -p ' . $node->port . ' postgres',
	0,
	[qr{processed: [1-9]}],
	[qr{^$}],
	'send, read, ack, nack and recycle concurrently',
	{
		'004_send@5' => q{
WITH s AS (SELECT queue.send('t', '{"k": 1}') AS id) INSERT INTO sent SELECT id FROM s;
},
		'004_send_delayed@1' => q{
WITH s AS (SELECT id FROM queue.send_batch('t', ARRAY['1', '2', '3']::jsonb[], delay => '300 ms') AS id)
INSERT INTO sent SELECT id FROM s;
},
		'004_read_ack@4' => q{
WITH r AS (SELECT id, receipt, attempts FROM queue.read('t', 10, visibility_timeout => '1 hour')),
     d AS (INSERT INTO delivered SELECT id, attempts FROM r)
INSERT INTO acked SELECT id FROM r WHERE queue.ack('t', id, receipt);
},
		'004_read_ack_later@2' => q{
SELECT coalesce(array_agg(id), '{}') AS ids, coalesce(array_agg(receipt), '{}') AS rs,
       coalesce(array_agg(attempts), '{}') AS atts
  FROM queue.read('t', 5, visibility_timeout => '1 hour') \gset
INSERT INTO delivered SELECT * FROM unnest(:ids::bigint[], :atts::int[]);
\sleep 20 ms
INSERT INTO acked SELECT * FROM queue.ack('t', :ids::bigint[], :rs::bigint[]);
},
		'004_read_nack@1' => q{
WITH r AS (SELECT id, receipt, attempts FROM queue.read('t', 3, visibility_timeout => '1 hour')),
     d AS (INSERT INTO delivered SELECT id, attempts FROM r)
SELECT count(*) FROM r WHERE queue.nack('t', id, receipt, delay => '200 ms');
},
		'004_recycle@1' => q{
SELECT queue.recycle('t');
},
	});

my $tail_after = sql(qq{SELECT tail FROM queue_internal.segment_ring WHERE queue_id = $qid});
ok($tail_after - $tail_before >= 10,
	"segments were recycled under load ($tail_before -> $tail_after)");
is( sql(qq{SELECT backend_xmin IS NOT NULL FROM pg_stat_activity WHERE pid = $holder_pid}),
	't', 'the old snapshot was held open all along');
is($holder->query_safe('SELECT count(*) > 0 FROM sent'),
	'f', 'the holder still sees its old snapshot');

# Drain: whatever is left (delayed, nacked) is read and acked.
for my $i (1 .. 100)
{
	sql(q{
WITH r AS (SELECT id, receipt, attempts FROM queue.read('t', 1000, visibility_timeout => '1 hour')),
     d AS (INSERT INTO delivered SELECT id, attempts FROM r)
INSERT INTO acked SELECT id FROM r WHERE queue.ack('t', id, receipt)});
	last if sql(qq{SELECT count(*) FROM queue_internal.q$qid}) == 0;
	select(undef, undef, undef, 0.1);
}

my $sent = sql('SELECT count(*) FROM sent');
ok($sent > 500, "many messages sent ($sent)");
is(sql('SELECT count(*) FROM acked'), $sent, 'as many acked as sent');
is( sql(q{SELECT count(*) FROM sent s FULL JOIN acked a USING (id) WHERE s.id IS NULL OR a.id IS NULL}),
	'0', 'the acked ids are exactly the sent ids');
is(sql(qq{SELECT count(*) FROM queue_internal.q$qid}), '0', 'the queue is empty')
  or diag(sql(qq{SELECT m.id, m.tableoid::regclass, m.visible_at > now(), m.attempts, m.receipt IS NOT NULL,
                        (SELECT max(attempts) FROM delivered d WHERE d.id = m.id)
                   FROM queue_internal.q$qid m ORDER BY m.id}) . "\n"
              . sql(qq{SELECT * FROM queue_internal.segment_ring}));
ok(sql('SELECT count(*) FROM delivered WHERE attempts > 1') > 0,
	'some messages were delivered again after a nack');
is(sql(q{SELECT messages FROM queue.queues WHERE queue_name = 't'}),
	'0', 'the counters agree');
$holder->query_safe('COMMIT');
$holder->quit;

# With the snapshot gone, recycling and reading go on as before.
sql(q{SELECT count(*) FROM queue.send_batch('t', ARRAY['1', '2']::jsonb[])});
is(sql(q{SELECT count(*) FROM queue.pop('t', 10)}), '2', 'the queue still works');
$node->stop;

# ---- part 2: crashes during a recycle -----------------------------------------

my $crash = queue_node(
	'recycle_crash', qq{
restart_after_crash = on
});

sub csql { return $crash->safe_psql('postgres', shift); }

csql('CREATE EXTENSION queue');
my $cid = csql(q{SELECT queue.create('c')});
csql(q{CREATE TABLE leases (id bigint, receipt bigint)});

# Segment 0: 2 acked, 3 in flight, 2 delayed by a nack, 1 visible (0); a
# rotation moves sends to segment 1, which gets 2 more.
csql(q{SELECT count(*) FROM queue.send_batch('c', ARRAY(SELECT to_jsonb(g) FROM generate_series(1, 7) g))});
csql(q{SELECT queue.send('c', '0')});
csql(q{
CREATE TEMP TABLE r AS SELECT * FROM queue.read('c', 7, visibility_timeout => '1 hour');
SELECT count(CASE WHEN payload::int <= 2 THEN queue.ack('c', id, receipt) END) FROM r;
SELECT count(CASE WHEN payload::int >= 6 THEN queue.nack('c', id, receipt, delay => '1 hour') END) FROM r;
INSERT INTO leases SELECT id, receipt FROM r WHERE payload::int BETWEEN 3 AND 5;
});
csql(q{SELECT queue.recycle('c')});
csql(q{SELECT count(*) FROM queue.send_batch('c', ARRAY['8', '9']::jsonb[])});

my $state_sql = qq{SELECT string_agg(id || ':' || payload || ':' || attempts || ':' || (receipt IS NOT NULL),
                                     ',' ORDER BY id) FROM queue_internal.q$cid};
my $ring_sql = qq{SELECT head || '/' || tail FROM queue_internal.segment_ring WHERE queue_id = $cid};
my $state = csql($state_sql);
my $ring = csql($ring_sql);
is($ring, '1/0', 'two segments in use before the recycle');

# Pops the visible message and recycles, in a transaction left open; returns the session.
sub recycle_uncommitted
{
	my $bg = $crash->background_psql('postgres', on_error_stop => 0);
	$bg->query_safe('BEGIN');
	is($bg->query_safe(q{SELECT payload FROM queue.pop('c')}), '0', 'the visible message popped');
	is($bg->query_safe(q{SELECT queue.recycle('c')}), '1', 'the recycle copied and truncated');
	is($bg->query_safe(qq{SELECT count(*) FROM queue_internal.s${cid}_0}),
		'0', 'the old segment is empty inside the recycle');
	return $bg;
}

sub check_after_restart
{
	my ($what) = @_;
	is(csql($state_sql), $state, "$what: the same messages, attempts and leases");
	is(csql($ring_sql), $ring, "$what: the ring is where it was");
}

for my $how ('SIGKILL', 'immediate shutdown')
{
	my $bg = recycle_uncommitted();
	if ($how eq 'SIGKILL')
	{
		my $pid = $bg->query_safe('SELECT pg_backend_pid()');
		ok(kill('KILL', $pid), "sent SIGKILL to the recycling backend $pid");
		$crash->poll_query_until('postgres', 'SELECT 1', '1')
		  or die 'no crash restart';
	}
	else
	{
		$crash->stop('immediate');
		$crash->start;
	}
	eval { $bg->quit };
	check_after_restart($how);
}

# A committed recycle survives an immediate shutdown.
my $bg = recycle_uncommitted();
$bg->query_safe('COMMIT');
$bg->quit;
my $moved = csql($state_sql);
$crash->stop('immediate');
$crash->start;
is(csql($state_sql), $moved, 'the moved messages survive an immediate shutdown');
my $without_popped = join(',', grep { !/^\d+:0:0:false$/ } split(/,/, $state));
is($moved, $without_popped, 'and they are the messages from before the move, less the one popped');
is( csql(qq{SELECT count(DISTINCT tableoid) FROM queue_internal.q$cid}),
	'1', 'all of them now in one segment');
is(csql(q{SELECT count(*) FROM leases l WHERE queue.ack('c', l.id, l.receipt)}),
	'3', 'the leases taken before the move still ack');
is(csql(q{SELECT string_agg(payload::text, ',' ORDER BY id) FROM queue.pop('c', 10)}),
	'8,9', 'the rest is delivered; the delayed ones wait');
is(csql(q{SELECT messages, delayed FROM queue.queues WHERE queue_name = 'c'}),
	'2|2', 'two delayed messages left, counted');
$crash->stop;

done_testing();
